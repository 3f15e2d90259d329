"""Meshing an unsigned distance function (UDF): a trained network's or a volume's, open surfaces kept open.

The mesher of NUDF (Sørensen, Juhl et al., ISBI 2022, Sec. 3.3), built on the dense point cloud of
NDF (Chibane et al., "Neural Unsigned Distance Fields for Implicit Function Learning", NeurIPS 2020,
Sec. 3.2 and eq. 4):

1. seed points uniformly in the box and move each onto the surface, repeating
   ``p <- p - (f(p) - level) grad f(p) / |grad f(p)|`` (a true UDF has ``|grad f| = 1``; the
   gradient is normalised so that an approximate UDF still takes steps of length ``f``);
2. keep the points that arrived, draw Gaussian offsets around them and project those again, until
   the cloud holds about ``dense_points`` points;
3. Poisson-disk subsample the cloud (maximal dart throwing, as Corsini et al. 2012), estimate normals and orient them by
   propagation over a minimum spanning tree (a UDF has no inside to point away from), and run
   screened Poisson reconstruction (Kazhdan & Hoppe 2013);
4. Poisson closes every surface, so delete each triangle with no dense point within
   ``support_radius_mm`` (0.35 mm, paper) of its centroid, close the small holes that the UDF and
   the cloud support (a real open end is never capped), keep the largest connected component.

The UDF is any callable ``udf_fn(points) -> distances``: ``points`` a torch float tensor (M, 3) in
world LPS mm, the result (M,) in mm, differentiable with respect to ``points`` (autograd gives the
gradient). :meth:`vesselfield.methods.nudf.TrainedNudf.udf_function` provides one for a network,
:func:`volume_udf_function` one for an unsigned distance volume.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np

from vesselfield.config import check_numbers
from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid

__all__ = ["UdfMeshConfig", "UdfMeshResult", "VolumeUdf", "boundary_edge_count", "mesh_udf", "volume_udf_function"]

#: A volume's trilinear gradient is only trusted where every corner of the cell lies on the same
#: side of the surface: farther than the cell's diagonal, sqrt(3) voxels, from it.
_KINK_VOXELS = math.sqrt(3.0)
#: Gradients shorter than this (1/mm per mm) give no direction (a flat region, a ridge, outside a volume).
_MIN_GRADIENT = 1e-6


@dataclass
class UdfMeshConfig:
    """Every setting of the UDF mesher (:func:`mesh_udf`), every default.

    Values the NUDF paper states are marked "(paper)"; the others are ours, with the reason
    (measured on the open aorta of docs/benchmarks.md, "UDF meshing").
    """

    config_name: ClassVar[str] = "udf-mesh"

    seed_points: int = 100_000
    """Points drawn uniformly in the box and projected onto the surface first (NDF: uniform start points)."""
    steps: int = 5
    """Projection steps p <- p - (f - level) grad f / |grad f| per round (NDF iterates; one step is exact for a true
    UDF, more correct an approximate one)."""
    keep_mm: float = 0.1
    """A projected point with |f - level| below this (mm) is a surface point."""
    kink_mm: float | None = None
    """Points with f below this (mm) are not moved further and count as arrived when a step from beyond it brought
    them there: a volume's trilinear gradient is unreliable near the zero level (the kink of |d|). 0: always move
    (a network's smooth UDF). None: the UDF's own value (volume_udf_function: sqrt(3) x the largest voxel spacing,
    the cell diagonal), else 0."""
    start_max_mm: float | None = None
    """Start points whose UDF is above this (mm, one evaluation without gradient) are dropped before projecting.
    A network's UDF is trained only below its clamp (NUDF: 3.5 mm); farther away its value and gradient point
    nowhere in particular, and stepping from there is wasted work. None: every start point is projected."""
    resample_rounds: int = 3
    """Rounds of resampling: Gaussian offsets around the surface points, projected again (NDF), until dense_points."""
    resample_sigma_mm: float = 2.0
    """Standard deviation of the resampling offsets (mm); large enough that most offsets leave the kink zone."""
    dense_points: int = 200_000
    """Target size of the dense surface cloud (the trimming support); about 50 points per mm² on the aorta."""
    poisson_disk_points: int = 50_000
    """About this many points are kept by Poisson-disk subsampling for the reconstruction (paper: Poisson-disk
    subsampling)."""
    normal_neighbours: int = 10
    """Neighbours of the normal estimation (plane fit) and of the orientation's spanning tree."""
    poisson_depth: int = 9
    """Octree depth of the screened Poisson reconstruction (cells of box / 2^depth)."""
    support_radius_mm: float = 0.35
    """A reconstructed triangle with no dense point within this radius (mm) of its centroid is deleted (paper)."""
    close_holes_max_radius_mm: float = 3.5
    """Holes whose perimeter is at most 2 pi times this (mm) are closed (paper: 3.5 mm), and only where the UDF or
    the dense cloud supports every new face of the hole (a real open end is never capped); 0: no hole closing."""
    keep_largest: bool = True
    """Keep only the largest connected component (paper)."""
    batch_points: int = 65_536
    """Points per UDF call (memory, not results)."""
    seed: int = 0
    """Seed of the start points and the resampling offsets: the same seed gives the same mesh."""

    def __post_init__(self):
        check_numbers(self, positive=("keep_mm", "resample_sigma_mm", "support_radius_mm", "start_max_mm"),
                      non_negative=("kink_mm", "close_holes_max_radius_mm", "resample_rounds", "seed"),
                      at_least_one=("seed_points", "steps", "dense_points", "poisson_disk_points",
                                    "normal_neighbours", "poisson_depth", "batch_points"))
        if self.normal_neighbours < 3:
            raise VesselfieldError(f"normal_neighbours must be at least 3 (a plane fit), got {self.normal_neighbours}")
        if not 4 <= self.poisson_depth <= 12:
            raise VesselfieldError(f"poisson_depth must be in 4..12, got {self.poisson_depth}")


@dataclass
class UdfMeshResult:
    """What :func:`mesh_udf` returns.

    mesh: ``trimesh.Trimesh`` in world mm (open where the surface is open).
    points: (N, 3) float64 dense surface cloud, world mm.
    details: plain numbers: point and face counts at each stage, boundary edges, seconds per stage.
    """

    mesh: object
    points: np.ndarray
    details: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- volume UDF
class VolumeUdf:
    """Trilinear interpolation of an unsigned distance volume: ``udf_fn`` for :func:`mesh_udf`.

    Call with a torch tensor (M, 3) of world LPS mm points; returns (M,) mm, differentiable with
    respect to the points (``torch.nn.functional.grid_sample``, ``align_corners=True``: voxel ``i``
    at ``origin + i spacing`` as :class:`VolumeGrid`). Outside the voxel centres' box the border
    value is repeated (zero gradient there).

    Attributes: ``grid``; ``kink_mm`` (sqrt(3) x the largest spacing: within it the trilinear
    gradient is unreliable); ``bounds_mm`` ((3,), (3,) box of the voxel centres).
    """

    def __init__(self, volume, grid: VolumeGrid):
        import torch

        from vesselfield.validate import require_finite

        array = np.asarray(volume)
        grid.check_array(array, "UDF volume")
        if min(grid.shape) < 2:
            raise VesselfieldError(f"UDF volume needs at least 2 voxels along each axis, got shape {grid.shape}")
        require_finite(array, "UDF volume")
        low = float(array.min())
        if low < 0:
            raise VesselfieldError(f"the UDF volume has negative values (min {low:.4g} mm): it is a signed distance "
                                   "(SDF), not an unsigned one; mesh it with `vesselfield mesh --volume` instead")
        self.grid = grid
        self.kink_mm = _KINK_VOXELS * float(np.max(grid.spacing))
        self.bounds_mm = (grid.origin.copy(), grid.origin + (np.asarray(grid.shape) - 1) * grid.spacing)
        # grid_sample reads (N, C, D, H, W) with coordinates ordered (W, H, D): our (X, Y, Z) array
        # is D=X, H=Y, W=Z, so the normalised coordinates are reversed below.
        self._volume = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
        self._origin = torch.tensor(grid.origin, dtype=torch.float32)
        self._scale = torch.tensor(2.0 / ((np.asarray(grid.shape) - 1) * grid.spacing), dtype=torch.float32)

    def __call__(self, points):
        import torch
        import torch.nn.functional as F

        p = points.to(torch.float32)
        normalised = (p - self._origin) * self._scale - 1.0
        coords = normalised.flip(-1).reshape(1, -1, 1, 1, 3)
        value = F.grid_sample(self._volume, coords, mode="bilinear", padding_mode="border", align_corners=True)
        return value.reshape(-1)


def volume_udf_function(volume, grid: VolumeGrid) -> VolumeUdf:
    """``udf_fn`` of an unsigned distance volume (X, Y, Z) in mm on ``grid``: trilinear, differentiable.

    Raises:
        VesselfieldError: negative values (a signed distance: use ``vesselfield mesh --volume``), values
            that are not finite, or a grid with fewer than 2 voxels along an axis.
    """
    return VolumeUdf(volume, grid)


# ----------------------------------------------------------------------------- projection
def _project(udf_fn, points: np.ndarray, config: UdfMeshConfig, level: float, kink: float,
             lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The points of (M, 3) ``points`` that ``config.steps`` projection steps bring onto the surface.

    NDF (Chibane et al. 2020, eq. 4): ``p <- p - (f(p) - level) grad f / |grad f|``. A point has
    arrived when ``|f - level| < keep_mm``. With a kink (``kink > 0``, a volume UDF), a point with
    ``f < kink`` is not moved but polished: it may lie anywhere within the kink (a step that started
    where the gradient was poor, near the centre of a vessel, or a start point there), so it is
    pushed out by ``2 kink`` along the direction it came from (its own gradient if it never moved),
    to where every interpolation cell lies on one side of the surface, and projected once more from
    there; it has arrived if that push left the kink and the landing is back within it.
    Points that leave the box ``[lo, hi]`` are dropped.
    """
    import torch

    def value_and_gradient(p):
        p = p.detach().requires_grad_(True)
        f = udf_fn(p)
        (g,) = torch.autograd.grad(f.sum(), p)
        return f.detach(), g, g.norm(dim=1)

    out = []
    for start in range(0, len(points), config.batch_points):
        p = torch.from_numpy(np.ascontiguousarray(points[start:start + config.batch_points], dtype=np.float32))
        moved = torch.zeros(len(p), dtype=torch.bool)
        direction = torch.zeros_like(p)
        for _ in range(config.steps):
            f, g, norm = value_and_gradient(p)
            # A gradient that is not finite (sqrt at 0 in an analytic UDF) or vanishes gives no direction.
            active = torch.isfinite(norm) & (norm > _MIN_GRADIENT)
            if kink > 0:
                active &= f >= kink
            if not active.any():
                break
            unit = g / norm.clamp_min(_MIN_GRADIENT)[:, None]
            p = torch.where(active[:, None], p - (f - level)[:, None] * unit, p)
            direction = torch.where(active[:, None], unit, direction)
            moved |= active
        with torch.no_grad():
            f = udf_fn(p)
        arrived = (f - level).abs() < config.keep_mm
        if kink > 0:
            # Every point within the kink is polished; one that never moved goes out along its own gradient.
            polish = f < kink
            _, g0, n0 = value_and_gradient(p)
            usable = (torch.isfinite(n0) & (n0 > _MIN_GRADIENT))[:, None]
            own = torch.where(usable, g0 / n0.clamp_min(_MIN_GRADIENT)[:, None], torch.zeros_like(g0))
            q = p + 2.0 * kink * torch.where(moved[:, None], direction, own)
            fq, gq, nq = value_and_gradient(q)
            good = polish & (fq >= kink) & torch.isfinite(nq) & (nq > _MIN_GRADIENT)
            p = torch.where(good[:, None], q - ((fq - level) / nq.clamp_min(_MIN_GRADIENT))[:, None] * gq, p)
            # A landing from a poor gradient (a push that crossed a vessel's centre) is caught here:
            # on the surface the trilinear value is at most the largest corner value, below the kink.
            with torch.no_grad():
                good &= (udf_fn(p) - level).abs() < max(kink, config.keep_mm)
            arrived = (arrived & ~polish) | good
        pts = p.detach().numpy().astype(np.float64)
        inside = np.all((pts >= lo) & (pts <= hi), axis=1)
        out.append(pts[arrived.numpy() & inside])
    return np.concatenate(out) if out else np.zeros((0, 3))


def _dense_cloud(udf_fn, lo, hi, config: UdfMeshConfig, level: float, kink: float, rng) -> tuple[np.ndarray, dict]:
    """(N, 3) dense surface cloud: uniform seeds projected, then ``resample_rounds`` of Gaussian
    offsets around the surface points, projected again, until about ``dense_points``."""
    import torch

    seeds = lo + rng.random((config.seed_points, 3)) * (hi - lo)
    if config.start_max_mm is not None:
        with torch.no_grad():
            f = np.concatenate([udf_fn(torch.from_numpy(c.astype(np.float32))).numpy()
                                for c in np.array_split(seeds, max(1, len(seeds) // config.batch_points))])
        seeds = seeds[np.abs(f - level) <= config.start_max_mm]
    cloud = _project(udf_fn, seeds, config, level, kink, lo, hi) if len(seeds) else np.zeros((0, 3))
    if len(cloud) == 0:
        raise VesselfieldError(f"empty prediction: no point came within {max(config.keep_mm, kink):g} mm of the "
                               f"surface (level {level:g} mm) from {config.seed_points} start points")
    counts = {"seed_points": int(config.seed_points), "seed_projected": int(len(seeds)), "seed_arrived": int(len(cloud))}
    for round_ in range(config.resample_rounds):
        missing = config.dense_points - len(cloud)
        if missing <= 0:
            break
        # Projection keeps a fraction of the offsets (those that land): ask for more, measured per round.
        # (The seeds' rate only bounds it from below: offsets start near the surface, seeds anywhere.)
        rate = counts.get(f"round{round_ - 1}_rate", 0.5) if round_ else max(0.5, len(cloud) / config.seed_points)
        want = int(min(4 * config.dense_points, missing / max(rate, 0.05)))
        base = cloud[rng.integers(0, len(cloud), want)]
        offsets = base + rng.normal(0.0, config.resample_sigma_mm, base.shape)
        new = _project(udf_fn, offsets, config, level, kink, lo, hi)
        counts[f"round{round_}_rate"] = len(new) / max(want, 1)
        cloud = np.concatenate([cloud, new])
    if len(cloud) > config.dense_points:
        cloud = cloud[rng.permutation(len(cloud))[:config.dense_points]]
    counts["dense_points"] = int(len(cloud))
    return cloud, counts


# ----------------------------------------------------------------------------- surface
def boundary_edge_count(faces: np.ndarray) -> int:
    """Edges used by exactly one face."""
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return int(np.sum(counts == 1))


def _unsupported(vertices: np.ndarray, faces: np.ndarray, tree, radius: float) -> np.ndarray:
    """(F,) bool: no dense point within ``radius`` of the face's centroid."""
    centroids = vertices[faces].mean(axis=1)
    distance, _ = tree.query(centroids, distance_upper_bound=radius, workers=-1)
    return ~np.isfinite(distance)


def _reconstruct(sub: np.ndarray, config: UdfMeshConfig) -> tuple[np.ndarray, np.ndarray]:
    """Normals (plane fit, oriented by MST propagation) and screened Poisson of the (K, 3) cloud."""
    import pymeshlab

    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=sub))
    try:
        _normals_and_poisson(ms, config)
    except (pymeshlab.PyMeshLabException, RuntimeError) as exc:
        raise VesselfieldError(f"empty prediction: the {len(sub)} surface points do not make a surface "
                               f"(screened Poisson failed: {str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    m = ms.current_mesh()
    return np.asarray(m.vertex_matrix(), dtype=np.float64), np.asarray(m.face_matrix(), dtype=np.int64)


def _normals_and_poisson(ms, config: UdfMeshConfig) -> None:
    # flipflag False: no viewpoint; MeshLab then orients the normals by propagation over a minimum
    # spanning tree of the k-nearest-neighbour graph (Hoppe et al. 1992), which is what a UDF allows.
    ms.compute_normal_for_point_clouds(k=config.normal_neighbours, smoothiter=0, flipflag=False)
    # One thread: with two, the solver's sums run in another order and the mesh moves between runs
    # (measured: same cloud, vertices up to 10 mm apart in index order), so a seed would not repeat.
    ms.generate_surface_reconstruction_screened_poisson(depth=config.poisson_depth, preclean=True, threads=1)


def _close_supported_holes(vertices, faces, tree, udf_fn, config: UdfMeshConfig, level: float, kink: float):
    """Close the holes up to ``close_holes_max_radius_mm`` that the UDF and the cloud support.

    MeshLab fills every hole whose perimeter is at most 2 pi r (in edges of the boundary's mean
    length). A filled patch (the new faces of one hole, joined by shared edges) is kept only when
    every face of it is supported: a dense point lies within ``support_radius_mm`` of its centroid,
    or the UDF there is within ``max(support_radius_mm, kink)`` of the level. A cap over a real open
    end has neither at its centre (that lies a hole radius from the rim), so the whole cap goes.
    Returns (vertices, faces, faces added).
    """
    import pymeshlab
    import torch
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    rim = unique[counts == 1]
    if len(rim) == 0:
        return vertices, faces, 0
    rim_edge = float(np.linalg.norm(vertices[rim[:, 0]] - vertices[rim[:, 1]], axis=1).mean())
    # At most every rim edge (a degenerate rim of near-zero edges would overflow MeshLab's int).
    max_edges = min(len(rim), int(math.ceil(2 * math.pi * config.close_holes_max_radius_mm / max(rim_edge, 1e-9))))
    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(vertex_matrix=vertices, face_matrix=faces))
    try:
        ms.meshing_close_holes(maxholesize=max(3, max_edges), newfaceselected=True, selfintersection=True)
    except (pymeshlab.PyMeshLabException, RuntimeError):
        return vertices, faces, 0  # a non-manifold edge: MeshLab closes nothing, nor do we
    m = ms.current_mesh()
    v = np.asarray(m.vertex_matrix(), dtype=np.float64)
    f = np.asarray(m.face_matrix(), dtype=np.int64)
    new = np.flatnonzero(np.asarray(m.face_selection_array(), dtype=bool))
    if len(new) == 0:
        return vertices, faces, 0
    centroids = v[f[new]].mean(axis=1)
    with torch.no_grad():
        value = np.concatenate([udf_fn(torch.from_numpy(c.astype(np.float32))).numpy()
                                for c in np.array_split(centroids, max(1, len(centroids) // config.batch_points))])
    supported = ~_unsupported(v, f[new], tree, config.support_radius_mm)
    supported |= np.abs(value - level) < max(config.support_radius_mm, kink)
    # Patches: new faces sharing an edge belong to the same filled hole.
    e = np.sort(f[new][:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    owner = np.repeat(np.arange(len(new)), 3)
    _, edge_id = np.unique(e, axis=0, return_inverse=True)
    order = np.argsort(edge_id.ravel(), kind="stable")
    ids, own = edge_id.ravel()[order], owner[order]
    same = ids[1:] == ids[:-1]
    graph = coo_matrix((np.ones(int(same.sum())), (own[:-1][same], own[1:][same])), shape=(len(new), len(new)))
    _, patch = connected_components(graph, directed=False)
    bad_patches = np.unique(patch[~supported])
    keep_new = ~np.isin(patch, bad_patches)
    keep = np.ones(len(f), dtype=bool)
    keep[new[~keep_new]] = False
    return v, f[keep], int(keep_new.sum())


def _clean(vertices: np.ndarray, faces: np.ndarray, keep_largest: bool):
    """trimesh of the faces, unreferenced vertices removed, the largest component when asked."""
    import trimesh

    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    mesh.remove_unreferenced_vertices()
    if keep_largest and len(mesh.faces):
        labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
        largest = np.argmax(np.bincount(labels))
        mesh.update_faces(labels == largest)
        mesh.remove_unreferenced_vertices()
    return mesh


def mesh_udf(udf_fn: Callable, bounds_mm, config: UdfMeshConfig | None = None, *, level_mm: float = 0.0,
             progress: bool = False) -> UdfMeshResult:
    """A triangle mesh of the level ``f = level_mm`` of the unsigned distance function ``udf_fn``.

    NDF's dense cloud (Chibane et al., NeurIPS 2020, eq. 4) and NUDF's reconstruction (Sørensen,
    Juhl et al., ISBI 2022, Sec. 3.3): see the module docstring.

    Args:
        udf_fn: torch (M, 3) world mm -> (M,) mm, differentiable w.r.t. the points (a network's
            ``udf_function``, or :func:`volume_udf_function`).
        bounds_mm: (lo (3,), hi (3,)) box in world mm where the start points are drawn and the
            projected points must stay.
        config: :class:`UdfMeshConfig` (default: its defaults).
        level_mm: the level to mesh (0: the surface; > 0: the offset surface at that distance).
        progress: print one line per stage.

    Returns:
        :class:`UdfMeshResult` (mesh in world mm, dense cloud (N, 3), details).

    Raises:
        VesselfieldError: no point came near the surface ("empty prediction"), or nothing was left
            after trimming.
    """
    import torch
    from scipy.spatial import cKDTree

    config = UdfMeshConfig() if config is None else config
    if not isinstance(config, UdfMeshConfig):
        raise VesselfieldError("config must be a UdfMeshConfig")
    lo, hi = (np.asarray(b, dtype=np.float64).reshape(3) for b in bounds_mm)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
        raise VesselfieldError(f"bounds_mm must be two finite corners with lo < hi, got {lo} and {hi}")
    level = float(level_mm)
    if not (math.isfinite(level) and level >= 0):
        raise VesselfieldError(f"level_mm must be a non-negative number (a UDF is never negative), got {level_mm}")
    kink = config.kink_mm if config.kink_mm is not None else float(getattr(udf_fn, "kink_mm", 0.0))

    def say(text):
        if progress:
            print(f"udf mesh: {text}", flush=True)

    timings = {}
    rng = np.random.default_rng(config.seed)
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    cloud, details = _dense_cloud(udf_fn, lo, hi, config, level, kink, rng)
    timings["cloud_s"] = time.perf_counter() - t0
    say(f"{len(cloud)} dense points in {timings['cloud_s']:.1f} s")

    extent = float(np.linalg.norm(cloud.max(axis=0) - cloud.min(axis=0))) if len(cloud) else 0.0
    if len(cloud) < 4 * config.normal_neighbours or extent < 2 * config.support_radius_mm:
        raise VesselfieldError(f"empty prediction: only {len(cloud)} points came within {config.keep_mm:g} mm of the "
                               f"level, spread over {extent:.2g} mm: no surface to mesh")
    t1 = time.perf_counter()
    sub = _poisson_disk(cloud, config, rng)
    timings["subsample_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    vertices, faces = _reconstruct(sub, config)
    timings["poisson_s"] = time.perf_counter() - t1
    details.update(poisson_disk_points=int(len(sub)), poisson_faces=int(len(faces)))
    say(f"{len(sub)} Poisson-disk points, {len(faces)} Poisson faces in {timings['poisson_s']:.1f} s")

    t1 = time.perf_counter()
    tree = cKDTree(cloud)
    faces = faces[~_unsupported(vertices, faces, tree, config.support_radius_mm)]
    details["trimmed_faces"] = int(len(faces))
    if len(faces) == 0:
        raise VesselfieldError(f"empty prediction: no reconstructed triangle lies within {config.support_radius_mm:g} "
                               "mm of the dense cloud")
    filled = 0
    if config.close_holes_max_radius_mm > 0:
        mesh = _clean(vertices, faces, False)
        vertices, faces, filled = _close_supported_holes(np.asarray(mesh.vertices), np.asarray(mesh.faces), tree,
                                                         udf_fn, config, level, kink)
    mesh = _clean(vertices, faces, config.keep_largest)
    timings["trim_s"] = time.perf_counter() - t1
    details.update(hole_faces_added=filled, faces=int(len(mesh.faces)), vertices=int(len(mesh.vertices)),
                   boundary_edges=boundary_edge_count(np.asarray(mesh.faces)), kink_mm=float(kink))
    timings["total_s"] = time.perf_counter() - t0
    details.update(timings)
    say(f"{len(mesh.faces)} faces after trimming, {details['boundary_edges']} boundary edges; "
        f"{timings['total_s']:.1f} s in all")
    return UdfMeshResult(mesh=mesh, points=cloud, details=details)


def _poisson_disk(cloud: np.ndarray, config: UdfMeshConfig, rng) -> np.ndarray:
    """About ``poisson_disk_points`` of the cloud's own points, no two closer than a radius r: a maximal
    Poisson-disk set (dart throwing in a seeded random order, as Corsini et al. 2012 subsample a cloud).

    MeshLab's sampler (``generate_sampling_poisson_disk``) cannot be seeded: its random state
    carries over between calls, so the same cloud gave different meshes within one process. Here the
    set is the greedy one in the order of seeded random priorities, found in rounds (a point joins
    when no undecided neighbour within r has a higher priority; Luby's maximal independent set),
    which gives the same set as the sequential dart throwing. r: a maximal Poisson-disk set on a
    surface of area A holds about 0.696 A / r² points (random sequential adsorption saturates at
    0.547 coverage by discs of radius r/2); A is estimated from the cloud's 8th-neighbour distances.
    """
    from scipy.spatial import cKDTree

    if len(cloud) <= config.poisson_disk_points:
        return cloud
    tree = cKDTree(cloud)
    k = 8
    probe = cloud[rng.choice(len(cloud), min(len(cloud), 20_000), replace=False)]
    d_k = tree.query(probe, k=k + 1, workers=-1)[0][:, -1]
    area = len(cloud) * math.pi * float(np.median(d_k)) ** 2 / k
    radius = math.sqrt(0.696 * area / config.poisson_disk_points)
    pairs = tree.query_pairs(radius, output_type="ndarray")
    i = np.concatenate([pairs[:, 0], pairs[:, 1]])
    j = np.concatenate([pairs[:, 1], pairs[:, 0]])
    priority = rng.permutation(len(cloud))
    state = np.zeros(len(cloud), dtype=np.int8)  # 0 undecided, 1 kept, -1 removed
    while True:
        undecided = state == 0
        if not undecided.any():
            break
        live = undecided[i] & undecided[j]
        beaten = np.zeros(len(cloud), dtype=bool)
        beaten[i[live & (priority[j] > priority[i])]] = True
        joins = undecided & ~beaten
        state[joins] = 1
        state[j[joins[i] & (state[j] == 0)]] = -1
    return cloud[state == 1]
