"""``vesselfield benchmark xray``: two-view X-ray reconstruction on many cases, as in the papers' tables.

For every ground-truth volume (a *case*) and every method the harness

1. puts the case's occupancy on the geometry's volume grid (:meth:`Case.occupancy`); the ground
   truth is that occupancy binarised at 0.5;
2. simulates the two views with the projector: line integrals in mm of the occupancy
   (:func:`vesselfield.render.project_volume`, as NeCA and SDF-CAR do), or binary masks of them
   (:func:`vesselfield.render.projection_mask`) with ``masks_only``;
3. reconstructs with :func:`vesselfield.methods.sdf_car.reconstruct_xray` (or an injected callable
   with the same signature);
4. evaluates with :func:`vesselfield.metrics.evaluate_volumes` and keeps clDice, Dice, IoU,
   reError, Chamfer (the voxel-set variant of the SDF-CAR evaluation code, ``chamfer_voxel_mm``,
   and the surface variant ``chamfer_mm``), reMSE and the method's optimisation time.

Layout of ``out_dir``::

    results.csv                    one row per case x method (CSV_COLUMNS)
    summary.md                     mean ± std per method: left tree, right tree, all, in the layout
                                   of the SDF-CAR paper's Tables 1-4 (under review; code
                                   github.com/reda1609/SDF-CAR; NeCA: Wang, Banerjee & Grau,
                                   Bioengineering 2024); see docs/metrics.md
    <case>/ground_truth.nii.gz     the binary ground truth on the geometry grid (uint8)
    <case>/<method>/metrics.json   the job's row, its settings fingerprint, traceback if it failed
    <case>/<method>/...            whatever the method writes into its out_dir

A job whose ``metrics.json`` says ``ok`` with the same settings (case, method, preset, input kind,
config, geometry) is not run again, so an interrupted benchmark resumes where it stopped; failed
jobs are retried. The method's code is not part of those settings: after changing it, use a new
``out_dir`` or delete the jobs' ``metrics.json``. A job that raises is recorded as ``failed`` with a one-line error and the other
jobs finish. Jobs run inline (``workers=1``), in spawned local processes (``workers > 1``, round-robin
over the GPUs when there are several) or as tasks on a Ray cluster (``ray_address``; optional extra
``ray``).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import math
import os
import platform
import re
import shlex
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.atomic import write_text_atomic

__all__ = [
    "CASE_SUFFIXES",
    "CSV_COLUMNS",
    "METRIC_COLUMNS",
    "PAPER_METHODS",
    "Case",
    "format_mean_std",
    "resample_to_grid",
    "resolve_cases",
    "results_csv",
    "run_xray_benchmark",
    "simulate_views",
    "summary_markdown",
    "voxelize_mesh",
]

PAPER_METHODS = ("sdf-car", "neca", "occ-combined", "sdf-occ")
"""Row order of the SDF-CAR paper's tables; other methods follow in the order given."""

CASE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
"""Volume files a case folder is searched for (not recursive)."""

SIDES = ("left", "right")

METRIC_COLUMNS = ("cldice", "dice", "iou", "re_error", "chamfer_voxel_mm", "chamfer_mm", "re_mse")
"""Keys of :func:`vesselfield.metrics.evaluate_volumes` kept per job."""

CSV_COLUMNS = ("case", "side", "method", "status", "error", *METRIC_COLUMNS, "seconds", "device")
"""Columns of results.csv; ``seconds`` is the method's optimisation time (``XrayResult.seconds``)."""

TABLE_COLUMNS = (
    ("cldice", "clDice ↑"),
    ("dice", "Dice ↑"),
    ("iou", "IoU ↑"),
    ("re_error", "reError ↓"),
    ("chamfer_voxel_mm", "Chamfer (mm) ↓"),
    ("re_mse", "reMSE ↓"),
    ("seconds", "time (s)"),
)

GROUND_TRUTH_THRESHOLD = 0.5
"""Occupancy at or above which a voxel is vessel in the ground truth (NeCA binarises at 0.5)."""

GROUND_TRUTH_FILE = "ground_truth.nii.gz"
"""Per case, the binary ground truth (uint8) on the geometry grid that every method is scored against."""

_XCAT_MESH = ("xcat_coronary", "xcat_phantom_coronary.stl")
# Sub-column offset (in pitches) that keeps voxelisation rays off mesh edges and vertices, which
# sit on round numbers in real files; any small irrational-looking value will do.
_RAY_JITTER = (3.1830988e-5, 2.7182818e-5)


# ========================================================================================= cases
@dataclass(frozen=True)
class Case:
    """One ground-truth volume of the benchmark, loaded lazily (in the worker that needs it).

    Attributes:
        name: unique, file-system safe; names the case's output folder and its CSV rows.
        kind: ``"phantom"`` (coronary phantom), ``"file"`` (volume file) or ``"xcat"``.
        side: ``"left"`` / ``"right"`` coronary tree when known, else None.
        seed: phantom seed (phantoms only).
        path: absolute path of the volume file (files only).
    """

    name: str
    kind: str
    side: str | None = None
    seed: int | None = None
    path: str | None = None

    def occupancy(self, grid: VolumeGrid, device: str = "cpu") -> np.ndarray:
        """(X, Y, Z) float32 occupancy in [0, 1] on ``grid`` (the geometry's volume grid).

        ``device`` is the torch device the phantoms' exact SDFs are evaluated on.

        - phantom: ``TreePhantom(coronary_tree(side, seed)).occupancy(grid)`` (partial volume);
        - xcat: the XCAT coronary surface (data/samples/xcat_coronary, LPS mm as stored), its box
          centred on the grid's centre, voxelised by :func:`voxelize_mesh` (partial volume);
        - file: an occupancy in [0, 1] is used as is; a label volume (values above 1, e.g. 0/255
          or multi-label) becomes ``label >= 0.5``; negative values (an SDF?) are refused. A volume
          on another grid is resampled onto ``grid`` by :func:`resample_to_grid` (trilinear in
          world mm, averaged over each target voxel when the target is coarser, zero outside).
        """
        if self.kind == "phantom":
            from vesselfield.phantoms import TreePhantom, coronary_tree

            phantom = TreePhantom(coronary_tree(self.side, seed=self.seed))
            return np.asarray(phantom.occupancy(grid, device=device), np.float32)
        if self.kind == "xcat":
            return voxelize_mesh(_xcat_mesh_on(grid), grid)
        if self.kind == "file":
            return _file_occupancy(Path(self.path), grid)
        raise VesselfieldError(f"case {self.name}: unknown kind {self.kind!r}")


def _file_occupancy(path: Path, grid: VolumeGrid) -> np.ndarray:
    from vesselfield.io import load_volume
    from vesselfield.validate import require_finite

    array, file_grid = load_volume(path, what="ground-truth volume")
    require_finite(array, f"ground-truth volume {path}")
    values = np.asarray(array)
    if values.dtype == bool:
        occupancy = values.astype(np.float32)
    else:
        lo, hi = float(values.min()), float(values.max())
        if lo < 0:
            raise VesselfieldError(
                f"ground-truth volume {path} holds negative values (min {lo:g}): "
                "give an occupancy or label volume, not an SDF"
            )
        occupancy = (values >= GROUND_TRUTH_THRESHOLD) if hi > 1 else values
        occupancy = np.asarray(occupancy, dtype=np.float32)
    if not file_grid.is_close(grid):
        occupancy = resample_to_grid(occupancy, file_grid, grid)
    return occupancy


def _side_from_name(name: str) -> str | None:
    found = {m.group(1) for m in re.finditer(r"(?<![a-z])(left|right)(?![a-z])", name.lower())}
    return found.pop() if len(found) == 1 else None


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in CASE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_case_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(CASE_SUFFIXES) and not path.name.startswith(".")


def _file_case(path: Path) -> Case:
    name = _case_name(path)
    return Case(name=name, kind="file", side=_side_from_name(name), path=str(path.resolve()))


def _parse_seeds(text: str) -> list[int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m:
        raise ValueError(f"seeds {text.strip()!r} are not N or A-B")
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) is not None else first
    if last < first:
        raise ValueError(f"seed range {first}-{last} runs backwards")
    return list(range(first, last + 1))


def _phantom_cases(spec: str) -> list[Case]:
    """``phantom:left:0-4,right:0-4``: comma-separated groups ``side:seeds``; ``seeds`` is ``N`` or
    ``A-B`` (inclusive); a group without ``side:`` continues the previous side (``left:0,3,7-9``)."""
    body = spec.split(":", 1)[1]
    cases: list[Case] = []
    side = None
    try:
        if not body.strip():
            raise ValueError("no trees given")
        for token in body.split(","):
            if ":" in token:
                side, _, seeds = token.partition(":")
                side = side.strip().lower()
                if side not in SIDES:
                    raise ValueError(f"unknown side {side!r} (use left or right)")
            elif side is None:
                raise ValueError(f"seeds {token.strip()!r} come before any side")
            else:
                seeds = token
            for seed in _parse_seeds(seeds):
                cases.append(Case(name=f"phantom_{side}_{seed}", kind="phantom", side=side, seed=seed))
    except ValueError as err:
        raise VesselfieldError(
            f"bad phantom spec {spec!r}: {err}; expected e.g. 'phantom:left:0-4,right:0-4'"
        ) from None
    return cases


def resolve_cases(spec, geometry=None) -> list[Case]:
    """The cases named by a ``--cases`` spec (nothing is loaded yet: see :meth:`Case.occupancy`).

    Args:
        spec: one of, or a list of (concatenated)

            - a folder: every ``*.nii.gz``, ``*.nii``, ``*.mha``, ``*.nrrd`` directly inside, sorted
              by name (e.g. the output of ``vesselfield data imagecas``: ``0001_left.nii.gz``); the
              case is the file name without suffix, its side ``left``/``right`` when the name holds
              exactly one of those words;
            - one such volume file;
            - ``"phantom:left:0-4,right:0-4"``: coronary phantoms
              ``TreePhantom(coronary_tree(side, seed=k))`` named ``phantom_<side>_<k>``;
            - ``"xcat"``: the XCAT coronary tree of data/samples (see SOURCES.md), side unknown.
        geometry: optional :class:`~vesselfield.geometry.Geometry` or geometry JSON path; when
            given, phantom and XCAT trees are checked to fit in its volume box now, rather than
            failing every job later.

    Raises:
        VesselfieldError: unknown spec, bad phantom spec, empty folder, duplicate case names, or
            a tree that does not fit the geometry's volume.
    """
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise VesselfieldError("no cases given")
        cases = [case for one in spec for case in resolve_cases(one)]
    else:
        cases = _resolve_one(spec)
    names = [c.name for c in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise VesselfieldError(f"duplicate case name(s): {', '.join(duplicates)}")
    if geometry is not None:
        grid = _resolve_geometry(geometry).volume
        for case in cases:
            _check_fits(case, grid)
    return cases


def _resolve_one(spec) -> list[Case]:
    if isinstance(spec, Case):
        return [spec]
    text = str(spec)
    if text.lower().startswith("phantom:"):
        return _phantom_cases(text)
    if text.lower() == "xcat":
        return [Case(name="xcat", kind="xcat")]
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if _is_case_file(p))
        if not files:
            raise VesselfieldError(f"case folder {path} holds no {' / '.join(CASE_SUFFIXES)} volume")
        return [_file_case(p) for p in files]
    if path.is_file():
        if not _is_case_file(path):
            raise VesselfieldError(f"case file {path} is not a {' / '.join(CASE_SUFFIXES)} volume")
        return [_file_case(path)]
    raise VesselfieldError(
        f"cases {text!r} is neither a folder, a volume file, 'xcat' nor a phantom spec "
        "like 'phantom:left:0-4,right:0-4'"
    )


def _check_fits(case: Case, grid: VolumeGrid) -> None:
    if case.kind == "phantom":
        from vesselfield.phantoms import coronary_tree

        lo, hi = coronary_tree(case.side, seed=case.seed).bounds_mm()
    elif case.kind == "xcat":
        mesh = _xcat_mesh_on(grid)
        lo, hi = mesh.bounds
    else:
        return
    box_lo, box_hi = grid.bounds_mm
    if np.any(lo < box_lo) or np.any(hi > box_hi):
        raise VesselfieldError(
            f"case {case.name}: the tree spans {np.round(lo, 1).tolist()} to {np.round(hi, 1).tolist()} mm, "
            f"outside the geometry's volume box {np.round(box_lo, 1).tolist()} to {np.round(box_hi, 1).tolist()} mm"
        )


def _xcat_mesh_on(grid: VolumeGrid):
    """The XCAT coronary surface (LPS mm as stored) moved so that its box centre is the grid's centre."""
    from vesselfield.io import load_mesh, sample_path

    mesh = load_mesh(sample_path(*_XCAT_MESH))
    mesh.apply_translation(grid.center_mm - mesh.bounds.mean(axis=0))
    return mesh


# ==================================================================================== resampling
def resample_to_grid(volume: np.ndarray, source: VolumeGrid, target: VolumeGrid) -> np.ndarray:
    """An occupancy on ``source`` put onto ``target``, both in LPS mm; (X, Y, Z) float32.

    Each target voxel takes the mean of the source's trilinear interpolant
    (``scipy.ndimage.map_coordinates``, order 1, zero outside the source's voxel centres) at
    ``s_a = ceil(target spacing / source spacing)`` points per axis spread evenly over the voxel,
    so that downsampling averages instead of aliasing and thin vessels keep their volume
    (sum x voxel volume, measured within 1 % in the tests); upsampling (``s = 1``) is plain
    trilinear interpolation at the voxel centres.
    """
    from scipy import ndimage

    source.check_array(volume, "volume to resample")
    data = np.asarray(volume, dtype=np.float32)
    steps = np.maximum(1, np.ceil(target.spacing / source.spacing - 1e-6)).astype(int)
    # Offsets (mm) of the sample points inside one target voxel, per axis.
    offsets = [((np.arange(s) + 0.5) / s - 0.5) * target.spacing[a] for a, s in enumerate(steps)]
    axes = target.axes_mm()
    out = np.zeros(target.shape, dtype=np.float64)
    x, y = np.meshgrid(axes[0], axes[1], indexing="ij")
    for k, zk in enumerate(axes[2]):  # slab by slab keeps the coordinate arrays small
        acc = np.zeros(x.shape)
        for ox in offsets[0]:
            for oy in offsets[1]:
                for oz in offsets[2]:
                    world = np.stack([x + ox, y + oy, np.full_like(x, zk + oz)], axis=0).reshape(3, -1)
                    index = (world - source.origin[:, None]) / source.spacing[:, None]
                    acc += ndimage.map_coordinates(data, index, order=1, mode="constant", cval=0.0).reshape(x.shape)
        out[:, :, k] = acc / steps.prod()
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ================================================================================= voxelisation
def voxelize_mesh(mesh, grid: VolumeGrid, supersample: int = 3) -> np.ndarray:
    """Partial-volume occupancy (X, Y, Z) float32 in [0, 1] of a closed triangle surface on ``grid``.

    Rays parallel to +z through ``supersample``² sub-columns of every (i, j) column cross each
    connected closed piece of the surface; the crossings, sorted along the ray, alternate
    entering and leaving (even-odd rule), the pieces' inside intervals are merged (union), and
    each voxel takes the length of its z-extent covered by them, averaged over its sub-columns.
    So the occupancy is exact along z and sampled ``supersample``² times across. Parts outside
    the grid are cut off. Sub-columns whose ray crosses a piece an odd number of times (it grazes
    an edge, or the piece is open) are skipped; more than 1 % of them raise.

    Args:
        mesh: ``trimesh.Trimesh`` with vertices in LPS mm.
        grid: the target grid.
        supersample: sub-columns per voxel along x and along y.
    """
    import trimesh

    s = int(supersample)
    if s < 1:
        raise VesselfieldError(f"supersample must be a positive integer, got {supersample!r}")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if len(faces) == 0:
        raise VesselfieldError("mesh to voxelise has no faces")
    piece = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(faces))
    pitch = grid.spacing[:2] / s
    start = grid.origin[:2] - 0.5 * grid.spacing[:2] + (0.5 + np.asarray(_RAY_JITTER)) * pitch
    n_cols = np.asarray(grid.shape[:2]) * s

    cols, depths, hit_faces = _ray_crossings(vertices[faces], start, pitch, n_cols)
    intervals, n_odd, n_groups = _inside_intervals(cols, depths, piece[hit_faces])
    if n_groups and n_odd > 0.01 * n_groups:
        raise VesselfieldError(
            f"mesh to voxelise is not closed: {n_odd} of {n_groups} rays cross a piece an odd number of times"
        )
    col, z_in, z_out = _merge_intervals(*intervals)

    # Coverage of voxel k by [z_in, z_out] in units of the z voxel size: voxel k spans [k, k + 1).
    nz = grid.shape[2]
    u_in = np.clip((z_in - grid.origin[2]) / grid.spacing[2] + 0.5, 0, nz)
    u_out = np.clip((z_out - grid.origin[2]) / grid.spacing[2] + 0.5, 0, nz)
    k0 = np.floor(u_in).astype(np.int64)
    count = np.maximum(np.ceil(u_out).astype(np.int64) - k0, 0)
    seg = np.repeat(np.arange(len(col)), count)
    k = k0[seg] + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    cover = np.minimum(u_out[seg], k + 1) - np.maximum(u_in[seg], k)
    ix, iy = col[seg] // n_cols[1] // s, col[seg] % n_cols[1] // s
    flat = (ix * grid.shape[1] + iy) * nz + k
    occupancy = np.bincount(flat, weights=cover, minlength=grid.num_voxels) / (s * s)
    return np.clip(occupancy, 0.0, 1.0).reshape(grid.shape).astype(np.float32)


def _ray_crossings(triangles: np.ndarray, start, pitch, n_cols, max_pairs: int = 1 << 22):
    """Every (triangle, sub-column) crossing: column id, depth z (mm), triangle index."""
    xy = triangles[:, :, :2]
    lo = np.maximum(np.ceil((xy.min(1) - start) / pitch), 0).astype(np.int64)
    hi = np.minimum(np.floor((xy.max(1) - start) / pitch), n_cols - 1).astype(np.int64)
    span = np.maximum(hi - lo + 1, 0)
    pairs = span[:, 0] * span[:, 1]
    out_cols, out_z, out_tri = [], [], []
    cumulative = np.cumsum(pairs)
    first = 0
    # Chunks of triangles bound the memory of the (triangle, column) pairs.
    while first < len(triangles):
        done = cumulative[first - 1] if first else 0
        last = max(int(np.searchsorted(cumulative, done + max_pairs, "right")), first + 1)
        idx = np.arange(first, last)
        first = last
        n = pairs[idx]
        tri = np.repeat(idx, n)
        local = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        cx = lo[tri, 0] + local // span[tri, 1]
        cy = lo[tri, 1] + local % span[tri, 1]
        px, py = start[0] + cx * pitch[0], start[1] + cy * pitch[1]
        a, b, c = triangles[tri, 0], triangles[tri, 1], triangles[tri, 2]
        w_a, w_b, w_c = _edge(b, c, px, py), _edge(c, a, px, py), _edge(a, b, px, py)
        area = w_a + w_b + w_c
        hit = (area != 0) & (((w_a >= 0) & (w_b >= 0) & (w_c >= 0)) | ((w_a <= 0) & (w_b <= 0) & (w_c <= 0)))
        z = (w_a * a[:, 2] + w_b * b[:, 2] + w_c * c[:, 2])[hit] / area[hit]
        out_cols.append(cx[hit] * n_cols[1] + cy[hit])
        out_z.append(z)
        out_tri.append(tri[hit])
    return np.concatenate(out_cols), np.concatenate(out_z), np.concatenate(out_tri)


def _edge(p, q, px, py):
    """Twice the signed area of the triangle (p, q, pixel) in the xy plane."""
    return (q[:, 0] - p[:, 0]) * (py - p[:, 1]) - (q[:, 1] - p[:, 1]) * (px - p[:, 0])


def _inside_intervals(cols, depths, pieces):
    """Even-odd rule per (piece, column): ((col, z_in, z_out), rays with an odd count, rays)."""
    empty = (cols[:0], depths[:0], depths[:0])
    if len(cols) == 0:
        return empty, 0, 0
    order = np.lexsort((depths, cols, pieces))
    cols, depths, pieces = cols[order], depths[order], pieces[order]
    new = np.ones(len(cols), bool)
    new[1:] = (cols[1:] != cols[:-1]) | (pieces[1:] != pieces[:-1])
    starts = np.nonzero(new)[0]
    counts = np.diff(np.r_[starts, len(cols)])
    even = np.repeat(counts % 2 == 0, counts)
    rank = np.arange(len(cols)) - np.repeat(starts, counts)
    enter = np.nonzero(even & (rank % 2 == 0))[0]
    return (cols[enter], depths[enter], depths[enter + 1]), int(np.sum(counts % 2)), len(counts)


def _merge_intervals(col, z_in, z_out):
    """Union of the intervals on each column: (col, z_in, z_out), sorted by column then depth."""
    if len(col) == 0:
        return col, z_in, z_out
    order = np.lexsort((z_in, col))
    col, z_in, z_out = col[order], z_in[order], z_out[order]
    # A per-column offset larger than any depth lets one running maximum serve every column.
    lift = (col - col.min()) * (2.0 * (np.abs(z_in).max() + np.abs(z_out).max()) + 1.0)
    reach = np.maximum.accumulate(z_out + lift)
    new = np.ones(len(col), bool)
    new[1:] = (col[1:] != col[:-1]) | (z_in[1:] + lift[1:] > reach[:-1])
    starts = np.nonzero(new)[0]
    return col[starts], z_in[starts], np.maximum.reduceat(z_out, starts)


# ==================================================================================== simulation
_last_inputs: dict = {}


def _case_inputs(case: Case, geometry, device, masks_only: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """(binary ground truth (X, Y, Z) float32, simulated views) of a case; the last case's are kept,
    because jobs run case by case and a process usually meets the same case once per method."""
    key = (case, json.dumps(geometry.to_dict()), str(device), bool(masks_only))
    if key not in _last_inputs:
        _last_inputs.clear()
        occupancy = case.occupancy(geometry.volume, device=str(device))
        target = (occupancy >= GROUND_TRUTH_THRESHOLD).astype(np.float32)
        if not target.any():
            raise VesselfieldError(
                f"case {case.name}: the ground truth is empty on the geometry grid "
                f"(no voxel >= {GROUND_TRUTH_THRESHOLD})"
            )
        _last_inputs[key] = (target, simulate_views(occupancy, geometry, masks_only=masks_only, device=device))
    target, views = _last_inputs[key]
    return target.copy(), [v.copy() for v in views]


def simulate_views(occupancy: np.ndarray, geometry, *, masks_only: bool = False, device="cpu") -> list[np.ndarray]:
    """The views a method sees: per ``geometry.views[i]`` an (H, W) float32 image.

    Line integrals in mm of ``occupancy`` (X, Y, Z) on ``geometry.volume``
    (:func:`vesselfield.render.project_volume`, the NeCA / SDF-CAR input), or with ``masks_only``
    their binary masks (:func:`vesselfield.render.projection_mask`, default threshold) as 0/1.
    """
    import torch

    from vesselfield.render import project_volume, projection_mask

    volume = torch.tensor(np.asarray(occupancy), dtype=torch.float32, device=device)
    with torch.no_grad():
        views = [project_volume(volume, geometry.volume, view) for view in geometry.views]
        if masks_only:
            views = [projection_mask(v) for v in views]
    return [v.detach().cpu().numpy().astype(np.float32) for v in views]


# ========================================================================================== jobs
@dataclass
class _Job:
    """One (case, method) run; picklable, so that it can travel to a spawned process or Ray."""

    case: Case
    method: str
    geometry: Any
    out_dir: str
    config: Any
    masks_only: bool
    device: str
    fingerprint: dict
    reconstruct: Callable | None = None
    num_threads: int | None = None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if isinstance(exc, VesselfieldError) else f"{type(exc).__name__}: {text}".rstrip(": ")
    return text if len(text) <= 300 else text[:297] + "..."


def _base_row(job: _Job) -> dict:
    row = {key: None for key in CSV_COLUMNS}
    row.update(case=job.case.name, side=job.case.side or "", method=job.method, status="failed", error="",
               device=job.device)
    return row


def _json_value(value):
    # Strict JSON: an infinite distance (an empty prediction) is written as the string "inf".
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _write_record(job: _Job, row: dict, **extra) -> None:
    record = {"row": {k: _json_value(v) for k, v in row.items()}, "fingerprint": job.fingerprint, **extra}
    write_text_atomic(Path(job.out_dir) / "metrics.json", json.dumps(record, indent=2, allow_nan=False) + "\n")


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        row = {key: record["row"].get(key) for key in CSV_COLUMNS}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # unreadable or foreign: run the job again
    for key in (*METRIC_COLUMNS, "seconds"):
        if isinstance(row[key], str):
            row[key] = float(row[key])
    return {"row": row, "fingerprint": record.get("fingerprint")}


def _run_job(job: _Job) -> dict:
    """Simulate, reconstruct, evaluate and record one job; never raises for the job's own errors."""
    started = time.perf_counter()
    row = _base_row(job)
    extra: dict = {}
    try:
        import torch

        from vesselfield.device import resolve_device
        from vesselfield.metrics import evaluate_volumes

        if job.num_threads:
            torch.set_num_threads(job.num_threads)
        device = resolve_device(job.device)
        row["device"] = str(device)
        reconstruct = job.reconstruct
        if reconstruct is None:
            from vesselfield.methods.sdf_car import reconstruct_xray as reconstruct
        from vesselfield.io import save_volume

        grid = job.geometry.volume
        target, views = _case_inputs(job.case, job.geometry, device, job.masks_only)
        # Every method of the case writes the same file (atomically), so it always matches this run's grid.
        save_volume(Path(job.out_dir).parent / GROUND_TRUTH_FILE, target.astype(np.uint8), grid)
        result = reconstruct(job.geometry, views, kind="mask" if job.masks_only else "line_integral",
                             config=job.config, device=job.device, out_dir=Path(job.out_dir), progress=False)
        metrics = evaluate_volumes(np.asarray(result.occupancy), target, grid)
        row.update({key: float(metrics[key]) for key in METRIC_COLUMNS})
        row["seconds"] = float(result.seconds)
        row["status"] = "ok"
    except Exception as exc:  # a failing job is a result of the benchmark, not the end of it
        row["error"] = _one_line(exc)
        extra["traceback"] = traceback.format_exc()
    extra["job_seconds"] = time.perf_counter() - started
    _write_record(job, row, **extra)
    return row


def _failed(job: _Job, message: str) -> dict:
    row = _base_row(job)
    row["error"] = message
    try:
        _write_record(job, row)
    except OSError:
        pass  # the row still reaches results.csv
    return row


# ===================================================================================== execution
def _run_inline(jobs: list[_Job], done: Callable[[int, dict], None]) -> None:
    for i, job in enumerate(jobs):
        done(i, _run_job(job))


def _run_isolated(job: _Job, context) -> dict:
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(_run_job, job).result()
    except BrokenProcessPool:
        return _failed(job, "the worker process died (crash or out of memory)")
    except Exception as exc:
        return _failed(job, _one_line(exc))


def _run_processes(jobs: list[_Job], workers: int, done: Callable[[int, dict], None]) -> None:
    """Spawned processes (torch and fork do not mix). A worker that dies takes the whole
    ProcessPoolExecutor down, so the jobs left unfinished are then rerun each in a process of its
    own: only the job that kills its process fails."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    left = dict(enumerate(jobs))
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
            futures = {pool.submit(_run_job, job): i for i, job in left.items()}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    row = future.result()
                except BrokenProcessPool:
                    continue
                except Exception as exc:  # e.g. the job could not be pickled
                    row = _failed(jobs[i], _one_line(exc))
                del left[i]
                done(i, row)
    except BrokenProcessPool:
        pass
    if left:
        with ThreadPoolExecutor(max_workers=min(workers, len(left))) as threads:
            futures = {threads.submit(_run_isolated, job, context): i for i, job in left.items()}
            for future in as_completed(futures):
                done(futures[future], future.result())


def _import_ray():
    try:
        import ray
    except ImportError:
        raise VesselfieldError(
            "--ray-address needs Ray, which is not installed: pip install 'vesselfield[ray]' (or pip install ray)"
        ) from None
    return ray


def _run_ray(jobs: list[_Job], address: str, done: Callable[[int, dict], None]) -> None:
    ray = _import_ray()
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    use_gpu = any(job.device != "cpu" for job in jobs) and ray.cluster_resources().get("GPU", 0) >= 1
    # Ray gives a GPU task its own CUDA_VISIBLE_DEVICES, so the task sees its GPU as cuda:0.
    task = ray.remote(num_cpus=1, num_gpus=1 if use_gpu else 0, max_retries=0)(_run_job)
    if use_gpu:
        for job in jobs:
            job.device = "cuda" if job.device.startswith("cuda") else job.device
    pending = {task.remote(job): i for i, job in enumerate(jobs)}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(ready[0])
        try:
            row = ray.get(ready[0])
        except Exception as exc:  # the task's process died, or the node went away
            row = _failed(jobs[i], _one_line(exc))
        done(i, row)


# ======================================================================================= outputs
def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def results_csv(rows: Sequence[dict]) -> str:
    """The rows as CSV text with :data:`CSV_COLUMNS` (floats in full precision, ``inf`` as is)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_csv_value(row.get(key)) for key in CSV_COLUMNS])
    return buffer.getvalue()


def format_mean_std(values: Sequence[float]) -> str:
    """``"mean ± std"`` (NumPy's ``np.mean`` and ``np.std``, ddof 0) rounded so that the std keeps two
    significant digits (``0.912 ± 0.013``, ``345 ± 12``); ``"–"`` for no values, the mean alone
    (``inf``, ``nan``) when a value is not finite."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return "–"
    mean = float(np.mean(values))
    if not np.all(np.isfinite(values)):
        return f"{mean:g}"  # e.g. an infinite Chamfer distance from an empty prediction
    std = float(np.std(values))
    if std == 0:
        return f"{mean:.4g} ± 0"
    decimals = min(max(1 - math.floor(math.log10(std)), 0), 12)
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _ordered_methods(methods: Iterable[str]) -> list[str]:
    methods = list(dict.fromkeys(methods))
    return [m for m in PAPER_METHODS if m in methods] + [m for m in methods if m not in PAPER_METHODS]


def _table(rows: Sequence[dict], methods: Sequence[str]) -> list[str]:
    header = ["method", "n", "failed", *(title for _, title in TABLE_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        ok = [r for r in mine if r["status"] == "ok"]
        cells = [method, str(len(ok)), str(len(mine) - len(ok))]
        cells += [format_mean_std([float(r[key]) for r in ok]) for key, _ in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def summary_markdown(rows: Sequence[dict], *, header: str, methods: Sequence[str] | None = None) -> str:
    """The mean ± std tables of the SDF-CAR paper's layout (rows: methods; columns: clDice, Dice,
    IoU, reError, Chamfer, reMSE, time), one per group: left tree, right tree (for the sides
    present) and all; only "all" when no case's side is known."""
    methods = _ordered_methods(methods if methods is not None else [r["method"] for r in rows])
    sides = [s for s in SIDES if any(r["side"] == s for r in rows)]
    groups = [(f"{side} tree", [r for r in rows if r["side"] == side]) for side in sides]
    groups.append(("all", list(rows)))
    lines = ["# Two-view X-ray reconstruction benchmark", "", header, ""]
    for title, members in groups:
        n_cases = len({r["case"] for r in members})
        lines += [f"## {title} ({_plural(n_cases, 'case')})", "", *_table(members, methods), ""]
    lines += [
        "mean ± std (np.std, ddof 0) over the cases that finished; n: cases that finished, failed: cases "
        "excluded because the job failed (see results.csv). Chamfer: the voxel-set variant of the SDF-CAR "
        "evaluation code (results.csv also has the surface Chamfer, chamfer_mm). time: the method's "
        "optimisation wall time.",
        "",
    ]
    return "\n".join(lines)


def _machine(device: str, ray_address: str | None) -> str:
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs"
    if ray_address:
        return f"{machine}, Ray cluster at {ray_address}"
    import torch

    from vesselfield.device import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda":
        count = torch.cuda.device_count()
        return f"{machine}, torch {torch.__version__} on {count} x {torch.cuda.get_device_name(0)}"
    return f"{machine}, torch {torch.__version__} on cpu"


def _command(cases, methods, out_dir, options: dict) -> str:
    if isinstance(cases, (list, tuple)):
        shown = [c.name if isinstance(c, Case) else str(c) for c in cases]
    else:
        shown = [cases.name if isinstance(cases, Case) else str(cases)]
    words = ["vesselfield", "benchmark", "xray", "--cases", *shown, "--methods", *methods, "--out", str(out_dir)]
    for flag, value in options.items():
        if value is True:
            words.append(flag)
        elif value not in (None, False):
            words += [flag, str(value)]
    return shlex.join(words)


# ========================================================================================== main
def _resolve_geometry(geometry):
    from vesselfield.geometry import Geometry, default_geometry, load_geometry

    if geometry is None:
        return default_geometry()
    if isinstance(geometry, Geometry):
        return geometry
    if isinstance(geometry, (str, os.PathLike)):
        return load_geometry(geometry)
    raise VesselfieldError(f"geometry must be a Geometry or a geometry JSON path, got {type(geometry).__name__}")


def _methods_list(methods) -> list[str]:
    if isinstance(methods, str):
        methods = re.split(r"[,\s]+", methods.strip())
    methods = [str(m).strip().lower() for m in methods if str(m).strip()]
    if "all" in methods:
        methods = [m for m in methods if m != "all"] + list(PAPER_METHODS)
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise VesselfieldError("no methods given: name one or more of " + ", ".join(PAPER_METHODS))
    for method in methods:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", method):
            raise VesselfieldError(f"method name {method!r} is not a plain name like sdf-car")
    return methods


def _build_config(make_config: Callable, method: str, preset: str, overrides: dict):
    base = make_config(method, preset)
    if dataclasses.is_dataclass(base):
        names = {f.name for f in dataclasses.fields(base)}
        unknown = [k for k in overrides if k not in names]
        if unknown:
            raise VesselfieldError(f"the {method} config has no field {unknown[0]!r} to set")
    return make_config(method, preset, **overrides) if overrides else base


def _plain(value):
    """JSON-comparable form of nested dicts, dataclasses (configs, cases), tuples and paths."""

    def convert(obj):
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        return str(obj)

    return json.loads(json.dumps(value, default=convert))


def _job_devices(device: str, workers: int, n_jobs: int) -> list[str]:
    if workers <= 1 or device not in ("auto", "cuda"):
        return [device] * n_jobs
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return [device] * n_jobs
    return [f"cuda:{i % count}" for i in range(n_jobs)]


def run_xray_benchmark(
    cases,
    methods,
    out_dir,
    *,
    preset: str = "cpu",
    masks_only: bool = False,
    workers: int = 1,
    ray_address: str | None = None,
    iterations: int | None = None,
    time_limit_s: float | None = None,
    device: str = "auto",
    geometry=None,
    seed: int = 0,
    reconstruct: Callable | None = None,
    progress: bool = True,
    make_config: Callable | None = None,
    command: str | None = None,
) -> list[dict]:
    """Run every case x method, write ``out_dir/results.csv`` and ``out_dir/summary.md``, return the rows.

    Args:
        cases: a spec for :func:`resolve_cases` (folder, volume file, ``"phantom:left:0-4,right:0-4"``,
            ``"xcat"``, or a list of those), or a list of :class:`Case`.
        methods: method names (a list, or one string separated by commas/spaces; ``"all"`` is the
            four of :data:`PAPER_METHODS`).
        out_dir: output folder (layout in the module docstring); reruns resume in it.
        preset: ``"cpu"`` or ``"gpu"`` preset of each method's config (``xray_config``).
        masks_only: simulate binary masks instead of line integrals (``kind="mask"``).
        workers: 1 runs the jobs one after another in this process; N > 1 in N spawned processes,
            each with ``torch.set_num_threads(max(1, cpus // N))``, the jobs round-robin over
            ``cuda:0..k-1`` when ``device`` is auto/cuda and there are k > 1 GPUs.
        ray_address: run each job as a task on this existing Ray cluster (``ray.init(address=...)``;
            one CPU and, when the cluster has GPUs and ``device`` is not cpu, one GPU per task).
            Needs the optional extra ``ray`` here and vesselfield on every node; ``out_dir`` (and
            the case files) should be on a file system every node sees, as the tasks write their
            ``metrics.json`` (what resuming reads) and read the volumes there. results.csv and
            summary.md are written here from the tasks' return values.
        iterations, time_limit_s, seed: config overrides (``iterations`` and ``time_limit_s`` only
            when given); a config without such a field is an error.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for the projector and the method.
        geometry: a :class:`~vesselfield.geometry.Geometry` or a geometry JSON path; default
            :func:`~vesselfield.geometry.default_geometry` (the papers' two views, 128³ x 0.8 mm).
        seed: config seed of every job.
        reconstruct: the reconstruction callable, with the signature of
            :func:`vesselfield.methods.sdf_car.reconstruct_xray` (the default, imported inside the
            worker); with workers > 1 or Ray it must be picklable (a module-level function).
        progress: a progress bar on stderr.
        make_config: ``make_config(method, preset, **overrides)`` -> config; default
            :func:`vesselfield.methods.sdf_car.xray_config`. Called here, before any job runs, so an
            unknown method or preset fails at once.
        command: the command line for the summary header; default, the equivalent CLI call.

    Returns:
        One dict per case x method (cases in order, then methods in the order given) with the keys
        of :data:`CSV_COLUMNS`: status ``"ok"`` or ``"failed"`` (``error`` one line, metrics None).
    """
    methods = _methods_list(methods)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise VesselfieldError(f"workers must be a positive integer, got {workers!r}")
    if time_limit_s is not None and not (float(time_limit_s) > 0):
        raise VesselfieldError(f"time_limit_s must be positive, got {time_limit_s!r}")
    if iterations is not None and (not isinstance(iterations, int) or iterations < 1):
        raise VesselfieldError(f"iterations must be a positive integer, got {iterations!r}")
    if ray_address:
        _import_ray()  # fail before any work when Ray is missing
    geometry_obj = _resolve_geometry(geometry)
    case_list = resolve_cases(cases, geometry_obj)
    if make_config is None:
        from vesselfield.methods.sdf_car import xray_config as make_config
    overrides = {"seed": int(seed)}
    if iterations is not None:
        overrides["iterations"] = iterations
    if time_limit_s is not None:
        overrides["time_limit_s"] = float(time_limit_s)
    configs = {m: _build_config(make_config, m, preset, overrides) for m in methods}
    machine = _machine(device, ray_address)  # also rejects a CUDA device that is not there
    out_dir = Path(out_dir)

    jobs: list[_Job] = []
    for case in case_list:
        for method in methods:
            fingerprint = _plain({"case": case, "method": method, "preset": preset, "masks_only": bool(masks_only),
                                  "config": configs[method], "geometry": geometry_obj.to_dict()})
            jobs.append(_Job(case=case, method=method, geometry=geometry_obj, out_dir=str(out_dir / case.name / method),
                             config=configs[method], masks_only=bool(masks_only), device=device,
                             fingerprint=fingerprint, reconstruct=reconstruct))

    rows: list[dict | None] = [None] * len(jobs)
    todo: list[int] = []
    for i, job in enumerate(jobs):
        record = _read_record(Path(job.out_dir) / "metrics.json")
        if record and record["row"]["status"] == "ok" and record["fingerprint"] == job.fingerprint:
            rows[i] = record["row"]
        else:
            todo.append(i)

    pending = [jobs[i] for i in todo]
    in_processes = workers > 1 and len(pending) > 1 and not ray_address
    if in_processes:
        threads = max(1, (os.cpu_count() or 1) // workers)
        for job, dev in zip(pending, _job_devices(device, workers, len(pending))):
            job.num_threads, job.device = threads, dev
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc="xray benchmark", unit="job",
               disable=not progress)

    def done(k: int, row: dict) -> None:
        rows[todo[k]] = row
        bar.update(1)
        if progress:
            state = f"dice {row['dice']:.3f}" if row["status"] == "ok" else f"FAILED: {row['error']}"
            bar.write(f"{row['case']} / {row['method']}: {state}")

    try:
        if ray_address and pending:
            _run_ray(pending, ray_address, done)
        elif in_processes:
            _run_processes(pending, workers, done)
        else:
            _run_inline(pending, done)
    finally:
        bar.close()

    final = [row for row in rows if row is not None]
    kind = "binary masks" if masks_only else "line integrals (mm)"
    if command is None:
        command = _command(cases, methods, out_dir, {
            "--preset": preset, "--masks-only": bool(masks_only), "--workers": workers if workers > 1 else None,
            "--ray-address": ray_address, "--iterations": iterations, "--time-limit-s": time_limit_s,
            "--device": device if device != "auto" else None,
            "--geometry": geometry if isinstance(geometry, (str, os.PathLike)) else None,
            "--seed": seed if seed else None})
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    header = (f"date {date}; machine {machine}; preset {preset}; input {kind}; "
              f"{_plural(len(case_list), 'case')} x {_plural(len(methods), 'method')}; command: `{command}`")
    write_text_atomic(out_dir / "results.csv", results_csv(final))
    write_text_atomic(out_dir / "summary.md", summary_markdown(final, header=header, methods=methods))
    return final
