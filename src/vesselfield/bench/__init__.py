"""Benchmarks: cases x methods -> jobs -> local processes or Ray -> per-case CSV and the papers' tables.

- :mod:`vesselfield.bench.harness`: the generic part every benchmark uses: jobs with a settings
  fingerprint and a ``metrics.json`` record (resume, retry), executors (inline, spawned
  processes, Ray), results CSV, mean ± std and median [IQR] tables, machine description;
- :mod:`vesselfield.bench.xray`: ``vesselfield benchmark xray``, two-view X-ray reconstruction
  (SDF-CAR, NeCA and the ablations) on coronary phantoms, volume folders or the XCAT tree;
- :mod:`vesselfield.bench.robustness`: ``vesselfield study robustness``, implicit vessel models
  against the number of surface points (Alblas et al. 2022, Fig. 3).

Importing this package imports nothing heavy; import the sub-module you need.
"""
