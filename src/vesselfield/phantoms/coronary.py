"""Synthetic coronary trees with exact signed distances.

The trees are drawn on a model heart: a half-ellipsoid whose base (the atrioventricular plane)
faces the patient's right, posterior and up and whose apex points left, anterior and down, as
in LPS anatomy. A point on it is ``(t, phi, rho)``: ``t`` from the base (0) to the apex (1)
along the long axis, ``phi`` the azimuth about that axis (0 anterior, +90 deg towards the
patient's left, 180 posterior, -90 right) and ``rho`` the fraction of the surface radius
(1 on the epicardium, < 1 inside the aortic root where the ostia sit). Branches are smooth
curves through a few such control points plus seeded low-frequency wiggles (tortuosity),
resampled every 0.7 mm, with radii tapering linearly from their origin to about 0.5 mm.

Left tree (branch ids in ``labels``): 1 LM, 2 LAD, 3 LCx, then the diagonals and the obtuse
marginals. Right tree: 1 RCA along the right AV groove to the crux, then the conus branch, the
acute marginals, the PDA and (for some seeds) a posterolateral branch. ``coronary_branch_names``
gives the name of every id. The whole tree is translated so that its bounding box (radii
included) is centred on ``center_mm``; it then fits the default 128^3 x 0.8 mm volume with a
margin >= 3 mm.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.tree import VesselTree

STEP_MM = 0.7
"""Spacing of the centreline nodes along every branch, mm."""

DEFAULT_SHAPE = (128, 128, 128)
DEFAULT_SPACING_MM = 0.8
_MARGIN_MM = 3.0

# Model heart (mm): surface radius at the base and base-to-apex length, scaled to fit the
# default volume (an adult heart is ~1.5x larger).
_R0_MM = 36.0
_H_MM = 80.0
_OFFSET_MM = 1.5  # vessel centre above the epicardium (epicardial fat)


def default_coronary_grid() -> VolumeGrid:
    """The default coronary volume: 128^3 voxels of 0.8 mm centred on the origin (±51.2 mm)."""
    return VolumeGrid.centered(DEFAULT_SHAPE, DEFAULT_SPACING_MM)


def _heart_frame() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit long axis (base -> apex) and the azimuth-0 (anterior) and +90 (left) directions."""
    axis = np.array([0.55, -0.45, -0.70])
    axis /= np.linalg.norm(axis)
    anterior = np.array([0.0, -1.0, 0.0])
    e0 = anterior - anterior.dot(axis) * axis
    e0 /= np.linalg.norm(e0)
    e90 = np.cross(axis, e0)
    if e90[0] < 0:  # +90 deg must point to the patient's left (+x in LPS)
        e90 = -e90
    return axis, e0, e90


def _surface_points(t, phi_deg, rho) -> np.ndarray:
    """(n,) heart coordinates -> (n, 3) mm on the model heart (before centring)."""
    axis, e0, e90 = _heart_frame()
    t, phi, rho = (np.asarray(v, float) for v in (t, np.deg2rad(phi_deg), rho))
    radius = _R0_MM * np.sqrt(np.clip(1.0 - np.clip(t, 0.0, None) ** 2, 0.0, None))
    r = rho * radius + _OFFSET_MM
    return (t[:, None] * _H_MM * axis + r[:, None] * (np.cos(phi)[:, None] * e0 + np.sin(phi)[:, None] * e90))


class _Builder:
    """Accumulates nodes branch by branch."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.points: list[np.ndarray] = []
        self.coords: list[np.ndarray] = []  # (t, phi, rho) of each node
        self.radius: list[np.ndarray] = []
        self.parent: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.names: dict[int, str] = {}
        self.count = 0

    def node_coords(self, node: int) -> np.ndarray:
        return np.concatenate(self.coords)[node]

    def node_radius(self, node: int) -> float:
        return float(np.concatenate(self.radius)[node])

    def branch(self, name: str, control, r_start: float, r_end: float, parent: int = -1,
               wiggle_mm: float = 1.2) -> np.ndarray:
        """Add a branch through ``control`` (k, 3) heart coordinates; returns its node ids.

        With ``parent >= 0`` the curve starts at that node (not repeated) and its first
        new node is one step away; otherwise the first node is a root.
        """
        from scipy.interpolate import CubicSpline

        control = np.asarray(control, float)
        if parent >= 0:
            control = np.vstack([self.node_coords(parent), control])
        # Chord-length parameter in mm-like units so that the spline speed is even.
        scaled = np.column_stack([control[:, 0] * _H_MM, np.deg2rad(control[:, 1]) * _R0_MM,
                                  control[:, 2] * _R0_MM])
        knots = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(scaled, axis=0), axis=1))]
        spline = CubicSpline(knots, control, bc_type="natural")
        u = np.linspace(0.0, knots[-1], 4000)
        tpr = spline(u)
        xyz = _surface_points(*tpr.T)
        arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(xyz, axis=0), axis=1))]
        # Tortuosity: a few smooth sinusoids of arc length across the vessel, ramped in over
        # the first 8 mm so that a side branch still leaves its parent's node.
        ramp = np.clip(arc / 8.0, 0.0, 1.0) ** 2 * (3 - 2 * np.clip(arc / 8.0, 0.0, 1.0))
        wig = np.zeros((len(u), 2))
        for j in range(2):
            for _ in range(3):
                amp = self.rng.uniform(0.2, 0.6) * wiggle_mm  # three of them: peak <= 1.8 wiggle_mm
                wavelength = self.rng.uniform(12.0, 35.0)
                phase = self.rng.uniform(0.0, 2 * np.pi)
                wig[:, j] += amp * np.sin(2 * np.pi * arc / wavelength + phase)
        wig *= ramp[:, None]
        surf_r = _R0_MM * np.sqrt(np.clip(1 - np.clip(tpr[:, 0], 0, None) ** 2, 0.04, None))
        tpr = tpr + np.column_stack([wig[:, 0] / _H_MM, np.rad2deg(wig[:, 1] / surf_r), np.zeros(len(u))])
        xyz = _surface_points(*tpr.T)
        if parent >= 0:
            xyz[0] = np.concatenate(self.points)[parent]
        arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(xyz, axis=0), axis=1))]
        n_steps = max(1, int(np.ceil(arc[-1] / STEP_MM)))
        s = np.linspace(0.0, arc[-1], n_steps + 1)
        nodes = np.column_stack([np.interp(s, arc, xyz[:, i]) for i in range(3)])
        coords = np.column_stack([np.interp(s, arc, tpr[:, i]) for i in range(3)])
        radii = r_start + (r_end - r_start) * s / arc[-1]
        if parent >= 0:
            nodes, coords, radii = nodes[1:], coords[1:], radii[1:]
        ids = np.arange(self.count, self.count + len(nodes))
        parents = ids - 1
        parents[0] = parent
        label = len(self.names) + 1
        self.names[label] = name
        self.points.append(nodes)
        self.coords.append(coords)
        self.radius.append(radii)
        self.parent.append(parents)
        self.labels.append(np.full(len(nodes), label))
        self.count += len(nodes)
        return ids

    def tree(self) -> VesselTree:
        return VesselTree(np.concatenate(self.points), np.concatenate(self.radius),
                          np.concatenate(self.parent), np.concatenate(self.labels))


def _at(ids: np.ndarray, fraction: float) -> int:
    return int(ids[min(len(ids) - 1, int(round(fraction * (len(ids) - 1))))])


def _side_branch(b: _Builder, name: str, parent_ids, fraction, dt, dphi, r_ratio=0.65, wiggle_mm=1.0):
    """A side branch leaving ``parent_ids`` at ``fraction`` of its length, heading by (dt, dphi)."""
    node = _at(parent_ids, fraction)
    t0, phi0, _ = b.node_coords(node)
    r0 = float(np.clip(r_ratio * b.node_radius(node), 0.6, 1.6))
    end_r = b.rng.uniform(0.5, 0.55)
    control = [(t0 + 0.35 * dt, phi0 + 0.3 * dphi, 1.0),
               (min(t0 + dt, 0.92), phi0 + dphi, 1.0)]
    return b.branch(name, control, r0, min(end_r, r0), parent=node, wiggle_mm=wiggle_mm)


def _left(b: _Builder) -> None:
    rng = b.rng
    lm_phi = rng.uniform(30.0, 40.0)
    lm = b.branch("LM", [(-0.10, lm_phi + 5, 0.62), (-0.05, lm_phi + 3, 0.8), (0.0, lm_phi, 1.0)],
                  2.5, 2.3, wiggle_mm=0.2)
    lad_end = rng.uniform(0.88, 0.95)
    lad = b.branch("LAD", [(0.12, lm_phi - 18, 1.0), (0.45, 8.0, 1.0), (0.75, 3.0, 1.0),
                           (lad_end, rng.uniform(-12.0, -4.0), 1.0)],
                   2.1, rng.uniform(0.5, 0.6), parent=lm[-1])
    lcx = b.branch("LCx", [(0.02, lm_phi + 35, 1.0), (0.05, lm_phi + 80, 1.0),
                           (rng.uniform(0.08, 0.14), lm_phi + rng.uniform(120.0, 140.0), 1.0)],
                   1.9, rng.uniform(0.5, 0.7), parent=lm[-1])
    n_diag = int(rng.integers(2, 4))
    for i, f in enumerate(np.sort(rng.uniform(0.12, 0.55, n_diag))):
        _side_branch(b, f"D{i + 1}", lad, f, dt=rng.uniform(0.3, 0.45), dphi=rng.uniform(35.0, 50.0))
    n_marg = int(rng.integers(2, 4))
    for i, f in enumerate(np.sort(rng.uniform(0.3, 0.9, n_marg))):
        _side_branch(b, f"OM{i + 1}", lcx, f, dt=rng.uniform(0.45, 0.6), dphi=rng.uniform(5.0, 20.0))


def _right(b: _Builder) -> None:
    rng = b.rng
    rca = b.branch("RCA", [(-0.10, -35.0, 0.62), (-0.03, -40.0, 0.9), (0.02, -60.0, 1.0),
                           (0.05, -95.0, 1.0), (0.08, -135.0, 1.0),
                           (rng.uniform(0.10, 0.13), -rng.uniform(175.0, 190.0), 1.0)],
                   2.5, rng.uniform(1.1, 1.4))
    _side_branch(b, "conus", rca, 0.06, dt=0.12, dphi=55.0, r_ratio=0.35, wiggle_mm=0.6)
    n_am = int(rng.integers(1, 4))
    for i, f in enumerate(np.sort(rng.uniform(0.35, 0.7, n_am))):
        _side_branch(b, f"AM{i + 1}", rca, f, dt=rng.uniform(0.45, 0.6), dphi=rng.uniform(-5.0, 10.0), r_ratio=0.5)
    _side_branch(b, "PDA", rca, 1.0, dt=rng.uniform(0.5, 0.65), dphi=rng.uniform(0.0, 10.0), r_ratio=0.75)
    if rng.uniform() < 0.6:
        _side_branch(b, "PL", rca, 1.0, dt=rng.uniform(0.2, 0.35), dphi=-rng.uniform(25.0, 40.0), r_ratio=0.6)


def _build(side: str, seed: int, center_mm: Sequence[float]) -> tuple[VesselTree, dict[int, str]]:
    if side not in ("left", "right"):
        raise VesselfieldError(f"coronary side must be 'left' or 'right', got {side!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise VesselfieldError(f"seed must be a non-negative integer, got {seed!r}")
    center = np.asarray(center_mm, float)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise VesselfieldError(f"center_mm must be three finite numbers, got {center_mm!r}")
    # Separate streams per side so a left and a right tree of one seed are independent.
    b = _Builder(np.random.default_rng([int(seed), 0 if side == "left" else 1]))
    (_left if side == "left" else _right)(b)
    tree = b.tree()
    lo, hi = tree.bounds_mm()
    half_room = DEFAULT_SPACING_MM * DEFAULT_SHAPE[0] / 2 - _MARGIN_MM - 0.05
    # The model heart is sized to fit; should a seed still overflow, shrink positions (not
    # radii) about the box centre, which keeps node spacing within ~0.5-0.7 mm.
    pts = tree.points_mm - (lo + hi) / 2
    ext = np.abs(pts).max(0) + tree.radius_mm.max()
    factor = min(1.0, float(np.min((half_room - tree.radius_mm.max()) / (ext - tree.radius_mm.max()))))
    pts = pts * factor
    lo, hi = (pts - tree.radius_mm[:, None]).min(0), (pts + tree.radius_mm[:, None]).max(0)
    pts = pts - (lo + hi) / 2 + center
    return VesselTree(pts, tree.radius_mm, tree.parent, tree.labels), dict(b.names)


def coronary_tree(side: str = "left", seed: int = 0, center_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> VesselTree:
    """A seeded synthetic left or right coronary tree.

    Args:
        side: "left" (LM -> LAD + LCx with diagonals and obtuse marginals) or "right" (RCA along
            the right AV groove with conus, acute marginal(s), PDA and maybe a posterolateral).
        seed: same seed -> identical tree; another seed -> other side-branch counts, positions,
            lengths, radii and tortuosity.
        center_mm: where the tree's bounding box (radii included) is centred, LPS mm.

    Returns:
        A :class:`VesselTree` with one root (the ostium), nodes every <= 0.7 mm, radii from 2.5 mm
        at the ostium to ~0.5 mm distally, ``labels`` = branch id (see
        :func:`coronary_branch_names`). With the default centre it fits the 128^3 x 0.8 mm
        volume (±51.2 mm) with >= 3 mm to spare.
    """
    return _build(side, seed, center_mm)[0]


def coronary_branch_names(side: str = "left", seed: int = 0) -> dict[int, str]:
    """Branch id (the tree's ``labels``) -> name ("LM", "LAD", "D1", "OM2", "RCA", "PDA", ...)."""
    return _build(side, seed, (0.0, 0.0, 0.0))[1]


# ----------------------------------------------------------------------------------- phantom
class TreePhantom:
    """A vessel tree with its exact signed distance (see :mod:`vesselfield.phantoms.sdf`).

    ``sdf`` is exact outside the tubes and on their surface; inside it is the depth of the
    deepest single tube (never more than the true depth).
    """

    def __init__(self, tree: VesselTree):
        if not isinstance(tree, VesselTree):
            raise VesselfieldError(f"TreePhantom needs a VesselTree, got {type(tree).__name__}")
        self.tree = tree
        self._cones = None

    @property
    def cones(self):
        """The tree's round cones (built once)."""
        if self._cones is None:
            from vesselfield.phantoms.sdf import RoundCones

            self._cones = RoundCones.from_tree(self.tree)
        return self._cones

    def sdf(self, points_mm, *, max_distance_mm: float | None = None):
        """(..., 3) points, mm -> (...,) signed distance, mm (NumPy or torch, as given)."""
        from vesselfield.phantoms.sdf import tree_sdf

        return tree_sdf(self.cones, points_mm, max_distance_mm=max_distance_mm)

    def sdf_volume(self, grid: VolumeGrid, *, max_distance_mm: float | None = None, device: str = "cpu") -> np.ndarray:
        """float32 (X, Y, Z) signed distance at the voxel centres, mm."""
        from vesselfield.phantoms.sdf import sdf_volume

        return sdf_volume(self.cones, grid, max_distance_mm=max_distance_mm, device=device)

    def occupancy(self, grid: VolumeGrid, supersample: int = 3, *, device: str = "cpu") -> np.ndarray:
        """float32 (X, Y, Z) partial-volume fraction in [0, 1] (see ``occupancy_volume``)."""
        from vesselfield.phantoms.sdf import occupancy_volume

        return occupancy_volume(self.cones, grid, supersample, device=device)

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) corners of the tree's box, radii included, mm."""
        return self.tree.bounds_mm()

    def default_grid(self, spacing_mm: float = 0.5, margin_mm: float = 3.0) -> VolumeGrid:
        """An isotropic grid covering the tree with ``margin_mm`` to spare on every side."""
        if not (spacing_mm > 0 and margin_mm >= 0):
            raise VesselfieldError("spacing_mm must be > 0 and margin_mm >= 0")
        lo, hi = self.bounds_mm()
        shape = np.ceil((hi - lo + 2 * margin_mm) / spacing_mm).astype(int) + 1
        return VolumeGrid.centered(shape, spacing_mm, (lo + hi) / 2)


def swc_phantom(path, **load_kwargs) -> TreePhantom:
    """A :class:`TreePhantom` of the tree in an SWC file (read by ``vesselfield.io.load_swc``;
    ``load_kwargs`` such as ``scale_to_mm`` go to it)."""
    from vesselfield.io import load_swc

    return TreePhantom(load_swc(path, **load_kwargs))
