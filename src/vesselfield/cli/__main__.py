from vesselfield.cli.app import main

main()
