"""Reconstruction methods (import the sub-module you need; each imports torch).

- :mod:`vesselfield.methods.xray`: SDF-CAR and the NeCA baseline (two-view X-ray).
"""
