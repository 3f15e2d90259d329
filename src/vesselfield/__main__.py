from vesselfield.cli import main

main()
