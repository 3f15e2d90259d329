"""Benchmark harness: cases x methods -> per-case CSV and the papers' mean ± std tables.

- :mod:`vesselfield.bench.xray`: ``vesselfield benchmark xray``, two-view X-ray reconstruction
  (SDF-CAR, NeCA and the ablations) on coronary phantoms, volume folders or the XCAT tree.

Importing this package imports nothing heavy; import the sub-module you need.
"""
