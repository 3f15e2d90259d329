"""The methods: the maths of each method family, from arrays to arrays (import the one you need).

- :mod:`vesselfield.methods.sdf_car`: SDF-CAR, the NeCA baseline and their ablations
  (two-view X-ray reconstruction).
- :mod:`vesselfield.methods.implicit_vessel`: implicit neural vessel models (Alblas et al., after
  IGR): fits to surface points, nested walls, smooth CSG blending.

Each module holds its config dataclass (every default, presets as named constructors), its model
and its objective; files are read and written by :mod:`vesselfield.pipelines`. The old names
``methods.xray`` and ``methods.inr`` are deprecated aliases for one release.
"""
