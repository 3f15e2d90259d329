"""Abdominal aortic aneurysm phantoms: lumen inside thrombus inside wall, with exact SDFs.

Construction (all distances in mm, negative inside):

- lumen ``L``: a :class:`VesselTree` of round cones along a gently curved aorta (radius ~10 mm)
  that splits into two iliac arteries; ``f_L = min_i d_i`` (see :mod:`vesselfield.phantoms.sdf`).
- sac ``S``: one round cone (two spheres of ~20-30 mm radius along the aorta), set off the
  lumen's axis (eccentric); ``f_S`` is its exact SDF.
- thrombus ``T = L u S``: ``f_T = min(f_L, f_S)``.
- wall ``W = T (+) ball(w)`` (the thrombus dilated by the wall thickness w): ``f_W = f_T - w``.

Nesting holds everywhere by construction: ``f_W = f_T - w < f_T = min(f_L, f_S) <= f_L``. Outside
the sac the thrombus surface is the lumen surface (no thrombus in the healthy aorta).

Exactness: ``f_L``, ``f_T`` and ``f_W`` are exact signed distances outside their own surfaces
and their zero level sets are exactly the surfaces (a min of SDFs is the exact distance to the
union outside it, and dilating the exact outside distance by w is exact outside the dilation).
Inside, each is >= the true signed distance, i.e. it never overstates the depth: a min of
members gives the deepest member's depth, and for ``0 < f_T < w`` the ball of radius
``w - f_T`` lies in the dilation, so the true depth is at least ``w - f_T``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.tree import VesselTree

SURFACE_NAMES = ("lumen", "thrombus", "wall")
STEP_MM = 2.0  # node spacing of the lumen tree; round cones are exact tapers, no need for less
_AORTA_MM = 130.0  # length of the aorta from the renal level to the bifurcation


def _aaa_geometry(seed: int):
    """Lumen tree, sac round cone ((a, b, ra, rb)) and a readable summary, all seeded."""
    rng = np.random.default_rng([int(seed), 7])
    # Aorta: from z = +130 mm (below the renal arteries) to the bifurcation at z = 0, with a
    # gentle lateral and anterior-posterior bow.
    n = int(_AORTA_MM / STEP_MM) + 1
    s = np.linspace(0.0, 1.0, n)
    bow_x, bow_y = rng.uniform(-6.0, 6.0), rng.uniform(-5.0, 3.0)
    aorta = np.column_stack([bow_x * np.sin(np.pi * s), bow_y * np.sin(np.pi * s), _AORTA_MM * (1 - s)])
    r_top, r_bif = rng.uniform(10.0, 11.5), rng.uniform(8.5, 9.5)
    aorta_r = r_top + (r_bif - r_top) * s
    points, radius, parent, labels = [aorta], [aorta_r], [np.r_[-1, np.arange(n - 1)]], [np.full(n, 1)]
    count = n
    for side, label in ((1.0, 2), (-1.0, 3)):
        angle = np.deg2rad(rng.uniform(20.0, 32.0))
        length = rng.uniform(45.0, 55.0)
        m = int(np.ceil(length / STEP_MM))
        u = np.arange(1, m + 1) / m
        curve = np.column_stack([
            side * length * np.sin(angle) * u + side * rng.uniform(-3.0, 3.0) * np.sin(np.pi * u),
            rng.uniform(0.0, 6.0) * u ** 2,
            -length * np.cos(angle) * u,
        ])
        points.append(aorta[-1] + curve)
        r0, r1 = rng.uniform(6.0, 7.0), rng.uniform(4.5, 5.5)
        radius.append(r0 + (r1 - r0) * u)
        par = np.arange(count - 1, count + m - 1)
        par[0] = n - 1
        parent.append(par)
        labels.append(np.full(m, label))
        count += m
    lumen = VesselTree(np.concatenate(points), np.concatenate(radius), np.concatenate(parent),
                       np.concatenate(labels))

    # Sac: a round cone along the infrarenal aorta, leaving a neck of >= 25 mm above it and
    # >= 5 mm of aorta below it, set off the axis towards a random anterior direction.
    z_mid = rng.uniform(48.0, 62.0)
    half_len = rng.uniform(4.0, 14.0)
    ra, rb = rng.uniform(18.0, 27.0), rng.uniform(18.0, 27.0)

    def on_aorta(z):
        t = 1 - z / _AORTA_MM
        return np.array([bow_x * np.sin(np.pi * t), bow_y * np.sin(np.pi * t), z])

    lumen_r = r_top + (r_bif - r_top) * (1 - z_mid / _AORTA_MM)
    phi = rng.uniform(-np.pi, 0.0)  # anterior half (-y in LPS)
    direction = np.array([np.cos(phi), np.sin(phi), 0.0])
    ecc = rng.uniform(0.0, 0.6) * (min(ra, rb) - lumen_r - 2.0)
    a = on_aorta(z_mid + half_len) + ecc * direction
    b = on_aorta(z_mid - half_len) + ecc * direction
    summary = {"sac_radius_mm": (ra, rb), "sac_length_mm": 2 * half_len, "eccentricity_mm": ecc,
               "aorta_radius_mm": (r_top, r_bif)}
    return lumen, (a, b, ra, rb), summary


class AAAPhantom:
    """A seeded abdominal aortic aneurysm with nested lumen, thrombus and wall surfaces.

    Args:
        seed: varies the aorta's bow and radii, the iliac angles, and the sac's size,
            length, height and eccentricity (same seed -> same phantom).
        wall_thickness_mm: thickness of the wall around the thrombus (and healthy lumen).
        center_mm: the phantom is shifted so that its wall's bounding box is centred here
            (LPS mm).

    The SDFs are those of the module docstring; ``sdfs`` returns all three.
    """

    surface_names = SURFACE_NAMES

    def __init__(self, seed: int = 0, *, wall_thickness_mm: float = 2.0,
                 center_mm: Sequence[float] = (0.0, 0.0, 0.0)):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise VesselfieldError(f"seed must be a non-negative integer, got {seed!r}")
        if not (np.isfinite(wall_thickness_mm) and wall_thickness_mm > 0):
            raise VesselfieldError(f"wall_thickness_mm must be positive, got {wall_thickness_mm}")
        center = np.asarray(center_mm, float)
        if center.shape != (3,) or not np.all(np.isfinite(center)):
            raise VesselfieldError(f"center_mm must be three finite numbers, got {center_mm!r}")
        self.seed = int(seed)
        self.wall_thickness_mm = float(wall_thickness_mm)
        lumen, (a, b, ra, rb), self.summary = _aaa_geometry(seed)
        lo_l, hi_l = lumen.bounds_mm()
        lo = np.minimum(lo_l, np.minimum(a - ra, b - rb)) - self.wall_thickness_mm
        hi = np.maximum(hi_l, np.maximum(a + ra, b + rb)) + self.wall_thickness_mm
        shift = center - (lo + hi) / 2
        self.lumen_tree = lumen.translated(shift)
        self.sac = (a + shift, b + shift, float(ra), float(rb))
        self._bounds = (lo + shift, hi + shift)
        self._cones = None

    # ------------------------------------------------------------------------------ SDFs
    def _lumen_cones(self):
        if self._cones is None:
            from vesselfield.phantoms.sdf import RoundCones

            self._cones = RoundCones.from_tree(self.lumen_tree)
        return self._cones

    def _all(self, points_mm, max_distance_mm: float | None = None):
        from vesselfield.phantoms.sdf import round_cone_sdf, tree_sdf

        f_l = tree_sdf(self._lumen_cones(), points_mm, max_distance_mm=max_distance_mm)
        f_s = round_cone_sdf(points_mm, *self.sac)
        if isinstance(f_l, np.ndarray):
            f_t = np.minimum(f_l, f_s)
        else:
            import torch

            f_t = torch.minimum(f_l, f_s)
        return f_l, f_t, f_t - self.wall_thickness_mm

    def sdf(self, points_mm, surface: str = "wall"):
        """(..., 3) points, mm -> (...,) signed distance to one surface ("lumen", "thrombus",
        "wall"), mm; NumPy in -> NumPy out, torch in -> torch out (differentiable)."""
        if surface not in SURFACE_NAMES:
            raise VesselfieldError(f"unknown AAA surface {surface!r}: use one of {', '.join(SURFACE_NAMES)}")
        if surface == "lumen":
            from vesselfield.phantoms.sdf import tree_sdf

            return tree_sdf(self._lumen_cones(), points_mm)
        return self._all(points_mm)[SURFACE_NAMES.index(surface)]

    def sdfs(self, points_mm):
        """(..., 3) points, mm -> (..., 3) signed distances to lumen, thrombus, wall, mm."""
        f = self._all(points_mm)
        if isinstance(f[0], np.ndarray):
            return np.stack(f, axis=-1)
        import torch

        return torch.stack(f, dim=-1)

    def sdf_volume(self, grid: VolumeGrid, surface: str = "wall") -> np.ndarray:
        """float32 (X, Y, Z) signed distance of one surface at the voxel centres, mm."""
        from vesselfield.phantoms.sdf import sdf_volume

        return sdf_volume(lambda p: self.sdf(p, surface), grid)

    def label_volume(self, grid: VolumeGrid) -> np.ndarray:
        """uint8 (X, Y, Z) labels at the voxel centres: 0 background, 1 lumen, 2 thrombus, 3 wall."""
        if not isinstance(grid, VolumeGrid):
            raise VesselfieldError(f"grid must be a VolumeGrid, got {type(grid).__name__}")
        points = grid.voxel_centers_mm(np.float32).reshape(-1, 3)
        # Only signs matter: the lumen distance may be clamped beyond the wall's reach.
        f_l, f_t, f_w = self._all(points, max_distance_mm=self.wall_thickness_mm + 1.0)
        labels = np.where(f_l < 0, 1, np.where(f_t < 0, 2, np.where(f_w < 0, 3, 0))).astype(np.uint8)
        return labels.reshape(grid.shape)

    # ----------------------------------------------------------------------------- extent
    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) corners of a box holding the wall, mm."""
        return self._bounds[0].copy(), self._bounds[1].copy()

    def default_grid(self, spacing_mm: float = 1.0, margin_mm: float = 5.0) -> VolumeGrid:
        """An isotropic grid covering the wall with ``margin_mm`` to spare on every side."""
        if not (np.isfinite(spacing_mm) and spacing_mm > 0 and margin_mm >= 0):
            raise VesselfieldError("spacing_mm must be > 0 and margin_mm >= 0")
        lo, hi = self.bounds_mm()
        shape = np.ceil((hi - lo + 2 * margin_mm) / spacing_mm).astype(int) + 1
        return VolumeGrid.centered(shape, spacing_mm, (lo + hi) / 2)
