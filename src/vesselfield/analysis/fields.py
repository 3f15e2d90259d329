"""Continuous wall functions the analysis measures on: negative inside, zero on the wall.

A :class:`WallField` is evaluated at any world point (LPS mm), not only at voxel centres, so
the cross-sections are measured on the continuous surface:

- an SDF volume: its cubic B-spline interpolant (exact for polynomials up to degree 3, so a
  smooth distance field's zero level moves by much less than a voxel);
- a binary mask or a mesh's partial-volume occupancy: ``0.5 - o(x)`` where ``o`` is the cubic
  B-spline *approximation* of the occupancy (a smoothing of about 0.58 voxel per axis, in each
  axis's own voxels, so an anisotropic mask becomes a smooth surface without thresholding a
  resampled mask). Its values are not distances (``is_distance`` False);
- a function (a network, an exact phantom SDF) evaluated in batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from vesselfield.grid import VolumeGrid


@dataclass
class WallField:
    """A scalar field of world points whose zero level is the vessel wall.

    Attributes:
        evaluate: (N, 3) float64 LPS mm -> (N,) float64, negative inside.
        lo_mm, hi_mm: (3,) the box where the field is defined, mm.
        spacing_mm: the data's own finest spacing, mm (None for a function: no grid).
        is_distance: True when the values are signed distances in mm (an SDF), so |f| at a
            centreline point is the inscribed-sphere radius.
        kind: what it came from (``sdf``, ``mask``, ``mesh``, ``network``, ``swc``).
        coarsest_mm: the data's largest voxel spacing, mm (None for a function): a narrowing
            shorter than this is not resolved by the data and is not called a lesion.
        topology_evaluate: a cheaper evaluation for sampling the topology grid (a volume's
            trilinear interpolant: only the sign matters there), or None to use ``evaluate``.
    """

    evaluate: Callable[[np.ndarray], np.ndarray]
    lo_mm: np.ndarray
    hi_mm: np.ndarray
    spacing_mm: float | None
    is_distance: bool
    kind: str
    batch_points: int = 1 << 20
    coarsest_mm: float | None = None
    topology_evaluate: Callable[[np.ndarray], np.ndarray] | None = None

    def __call__(self, points_mm) -> np.ndarray:
        pts = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        if len(pts) <= self.batch_points:
            return np.asarray(self.evaluate(pts), dtype=np.float64).reshape(-1)
        return np.concatenate([np.asarray(self.evaluate(pts[i:i + self.batch_points]), dtype=np.float64).reshape(-1)
                               for i in range(0, len(pts), self.batch_points)])


def _spline_evaluator(values: np.ndarray, grid: VolumeGrid, *, interpolate: bool, sign: float = 1.0,
                      offset: float = 0.0) -> Callable:
    """``offset + sign * s(x)``: ``s`` the cubic B-spline interpolant (``interpolate``) or approximant of
    ``values`` on ``grid``, at world points."""
    from scipy import ndimage

    data = np.asarray(values, dtype=np.float32 if not interpolate else np.float64)
    if interpolate:  # interpolating cubic B-spline: coefficients once, then cheap evaluations
        data = ndimage.spline_filter(data, order=3, mode="nearest")
    origin = np.asarray(grid.origin_mm, dtype=np.float64)
    spacing = np.asarray(grid.spacing_mm, dtype=np.float64)

    def evaluate(points_mm: np.ndarray) -> np.ndarray:
        ijk = ((points_mm - origin) / spacing).T
        out = ndimage.map_coordinates(data, ijk, order=3, mode="nearest", prefilter=False).astype(np.float64)
        return offset + sign * out

    return evaluate


def _linear_evaluator(values: np.ndarray, grid: VolumeGrid, *, sign: float = 1.0, offset: float = 0.0) -> Callable:
    from scipy import ndimage

    data = np.asarray(values, dtype=np.float32)
    origin = np.asarray(grid.origin_mm, dtype=np.float64)
    spacing = np.asarray(grid.spacing_mm, dtype=np.float64)

    def evaluate(points_mm: np.ndarray) -> np.ndarray:
        ijk = ((points_mm - origin) / spacing).T
        return offset + sign * ndimage.map_coordinates(data, ijk, order=1, mode="nearest").astype(np.float64)

    return evaluate


def sdf_volume_field(sdf_mm, grid: VolumeGrid, *, kind: str = "sdf") -> WallField:
    """The cubic B-spline interpolant of a signed distance volume (mm, negative inside)."""
    grid.check_array(sdf_mm, "SDF volume")
    lo, hi = grid.bounds_mm
    return WallField(_spline_evaluator(sdf_mm, grid, interpolate=True), np.asarray(lo, float),
                     np.asarray(hi, float), float(min(grid.spacing_mm)), True, kind,
                     coarsest_mm=float(max(grid.spacing_mm)), topology_evaluate=_linear_evaluator(sdf_mm, grid))


def occupancy_field(occupancy, grid: VolumeGrid, *, kind: str = "mask", interpolate: bool = False) -> WallField:
    """``0.5 - o(x)``: ``o`` the cubic B-spline approximation of an occupancy in [0, 1] (a mesh's
    partial volumes: a smoothing of ~0.58 voxel), or its interpolant (``interpolate``: an occupancy
    that is already smooth, a reconstruction's); the wall is its 0.5 level."""
    grid.check_array(occupancy, "occupancy")
    lo, hi = grid.bounds_mm
    return WallField(_spline_evaluator(occupancy, grid, interpolate=interpolate, sign=-1.0, offset=0.5),
                     np.asarray(lo, float), np.asarray(hi, float), float(min(grid.spacing_mm)), False, kind,
                     coarsest_mm=float(max(grid.spacing_mm)),
                     topology_evaluate=_linear_evaluator(occupancy, grid, sign=-1.0, offset=0.5))


def function_field(fn: Callable[[np.ndarray], np.ndarray], lo_mm, hi_mm, *, kind: str, is_distance: bool = True,
                   batch_points: int = 1 << 18) -> WallField:
    """A field from a function of (N, 3) world points (a network, an exact phantom SDF)."""
    return WallField(fn, np.asarray(lo_mm, float), np.asarray(hi_mm, float), None, is_distance, kind, batch_points)


def tree_field(tree, *, margin_mm: float | None = None) -> WallField:
    """The exact SDF of a :class:`~vesselfield.tree.VesselTree`'s union of round cones (an SWC tree)."""
    from vesselfield.phantoms.sdf import RoundCones, tree_sdf

    lo, hi = tree.bounds_mm()
    margin = float(np.max(tree.radius_mm)) if margin_mm is None else float(margin_mm)
    cones = RoundCones.from_tree(tree)

    # Values beyond the largest radius are clamped there (the narrow band of tree_sdf, much faster):
    # the analysis needs the sign everywhere and the value only near the wall and inside.
    band_mm = float(np.max(tree.radius_mm)) + 1.0

    def evaluate(points_mm: np.ndarray) -> np.ndarray:
        return np.asarray(tree_sdf(cones, points_mm, max_distance_mm=band_mm), dtype=np.float64).reshape(-1)

    return function_field(evaluate, lo - margin, hi + margin, kind="swc", is_distance=True)
