"""``vesselfield benchmark xray``: two-view X-ray reconstruction on many cases, as in the papers' tables.

What is X-ray specific lives here; the harness (:mod:`vesselfield.bench.harness`) runs the jobs,
resumes, writes the CSV and formats the tables. For every ground-truth volume (a *case*) and every
method, the job (:func:`reconstruct_and_evaluate`)

1. puts the case's occupancy on the geometry's volume grid (:meth:`Case.occupancy`); the ground
   truth is that occupancy binarised at 0.5;
2. simulates the views (:func:`simulate_views`): line integrals in mm of the occupancy
   (:func:`vesselfield.render.project_views`, as NeCA and SDF-CAR do), or their binary masks
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
``out_dir`` or delete the jobs' ``metrics.json``. A job that raises is recorded as ``failed`` with
a one-line error and the other jobs finish. Jobs run inline (``workers=1``), in spawned local
processes (``workers > 1``, round-robin over the GPUs when there are several) or as tasks on a Ray
cluster (``ray_address``; optional extra ``ray``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from vesselfield.bench import harness
from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io.atomic import write_text_atomic

__all__ = [
    "CASE_SUFFIXES",
    "CSV_COLUMNS",
    "METRIC_COLUMNS",
    "PAPER_METHODS",
    "TABLE_COLUMNS",
    "Case",
    "XrayBenchmarkResult",
    "XrayTask",
    "reconstruct_and_evaluate",
    "resolve_cases",
    "run_xray_benchmark",
    "simulate_views",
    "summary_markdown",
]

PAPER_METHODS = ("sdf-car", "neca", "occ-combined", "sdf-occ")
"""Row order of the SDF-CAR paper's tables; other methods follow in the order given."""

CASE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
"""Volume files a case folder is searched for (not recursive)."""

SIDES = ("left", "right")

METRIC_COLUMNS = ("cldice", "dice", "iou", "re_error", "chamfer_voxel_mm", "chamfer_mm", "re_mse")
"""Keys of :func:`vesselfield.metrics.evaluate_volumes` kept per job."""

TOPOLOGY_COLUMNS = ("components", "largest_component_fraction", "skeleton_breaks")
"""Keys of :func:`vesselfield.meshing.connect.topology_report` kept per job."""

POSE_COLUMNS = ("rotation_error_before_deg", "rotation_error_deg", "cldice_aligned", "dice_aligned")
"""With pose errors: the relative rotation between the two views, recorded and refined, against the
truth (:func:`vesselfield.methods.xray_pose.relative_rotation_error_deg`; empty without refinement), and
clDice / Dice after the rigid motion that best overlays the reconstruction on the truth
(:func:`vesselfield.metrics.alignment.rigidly_aligned`: the placement two views cannot observe)."""

CSV_COLUMNS = ("case", "side", "method", "status", "error", *METRIC_COLUMNS, *TOPOLOGY_COLUMNS, *POSE_COLUMNS,
               "seconds", "device")
"""Columns of results.csv; ``seconds`` is the method's optimisation time (``XrayResult.seconds``)."""

TABLE_COLUMNS = (
    ("cldice", "clDice ↑"),
    ("dice", "Dice ↑"),
    ("iou", "IoU ↑"),
    ("re_error", "reError ↓"),
    ("chamfer_voxel_mm", "Chamfer (mm) ↓"),
    ("re_mse", "reMSE ↓"),
    ("components", "components"),
    ("skeleton_breaks", "breaks ↓"),
    ("seconds", "time (s)"),
)
"""(column, title) of the summary tables, in the SDF-CAR paper's order."""

GROUND_TRUTH_THRESHOLD = 0.5
"""Occupancy at or above which a voxel is vessel in the ground truth (NeCA binarises at 0.5)."""

GROUND_TRUTH_FILE = "ground_truth.nii.gz"
"""Per case, the binary ground truth (uint8) on the geometry grid that every method is scored against."""

_XCAT_MESH = ("xcat_coronary", "xcat_phantom_coronary.stl")


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
          centred on the grid's centre, voxelised by :func:`vesselfield.meshing.voxelize_mesh`
          (partial volume);
        - file: an occupancy in [0, 1] is used as is; a label volume (values above 1, e.g. 0/255
          or multi-label) becomes ``label >= 0.5``; negative values (an SDF?) are refused. A volume
          on another grid is put onto ``grid`` by :func:`vesselfield.meshing.resample_occupancy`
          (exact box overlap in world mm: volume conserved, zero outside the file's box).
        """
        if self.kind == "phantom":
            from vesselfield.phantoms import TreePhantom, coronary_tree

            phantom = TreePhantom(coronary_tree(self.side, seed=self.seed))
            return np.asarray(phantom.occupancy(grid, device=device), np.float32)
        if self.kind == "xcat":
            from vesselfield.meshing.occupancy import voxelize_mesh

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
        from vesselfield.meshing.occupancy import resample_occupancy

        occupancy = resample_occupancy(occupancy, file_grid, grid)
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


# ==================================================================================== simulation
def simulate_views(occupancy: np.ndarray, geometry, *, masks_only: bool = False, device="cpu") -> list[np.ndarray]:
    """The views a method sees: per ``geometry.views[i]`` an (H, W) float32 image.

    Line integrals in mm of ``occupancy`` (X, Y, Z) on ``geometry.volume``
    (:func:`vesselfield.render.project_views`, the NeCA / SDF-CAR input), or with ``masks_only``
    their binary masks (:func:`vesselfield.render.projection_mask`, default threshold) as 0/1.
    Degraded views (a real acquisition) come from :func:`vesselfield.render.degrade.simulate_views`.
    """
    import torch

    from vesselfield.render import project_views, projection_mask

    volume = torch.tensor(np.asarray(occupancy), dtype=torch.float32, device=device)
    with torch.no_grad():
        views = project_views(volume, geometry)
        if masks_only:
            views = [projection_mask(v) for v in views]
    return [v.detach().cpu().numpy().astype(np.float32) for v in views]


_last_inputs: dict = {}


def _case_inputs(case: Case, geometry, device, masks_only: bool, degradation=None):
    """(binary ground truth (X, Y, Z) float32, simulated views, true geometry) of a case; the last
    case's are kept, because jobs run case by case and a process usually meets the same case once
    per method. With pose errors the ground truth is moved into the reference view's recorded frame
    (:func:`vesselfield.render.degrade.truth_in_reference_frame`: the rigid motion of the whole scene
    that two views cannot see)."""
    key = (case, json.dumps(geometry.to_dict()), str(device), bool(masks_only),
           degradation.to_text() if degradation is not None else "")
    if key not in _last_inputs:
        _last_inputs.clear()
        occupancy = case.occupancy(geometry.volume, device=str(device))
        true_geometry = geometry
        if degradation is not None:
            from vesselfield.render.degrade import simulate_views as simulate_degraded
            from vesselfield.render.degrade import truth_in_reference_frame

            sim = simulate_degraded(occupancy, geometry, degradation, masks_only=masks_only, device=device)
            views, true_geometry = sim.images, sim.true_geometry
            occupancy = truth_in_reference_frame(occupancy, geometry.volume, geometry.views[0], true_geometry.views[0])
        else:
            views = simulate_views(occupancy, geometry, masks_only=masks_only, device=device)
        target = (occupancy >= GROUND_TRUTH_THRESHOLD).astype(np.float32)
        if not target.any():
            raise VesselfieldError(
                f"case {case.name}: the ground truth is empty on the geometry grid "
                f"(no voxel >= {GROUND_TRUTH_THRESHOLD})"
            )
        _last_inputs[key] = (target, views, true_geometry)
    target, views, true_geometry = _last_inputs[key]
    return target.copy(), [v.copy() for v in views], true_geometry


# =========================================================================================== job
@dataclass
class XrayTask:
    """What one job needs (picklable: it travels to spawned processes and Ray tasks).

    Attributes:
        case: the ground truth. geometry: the :class:`~vesselfield.geometry.Geometry`.
        config: the method's config (``config.method`` names the method).
        masks_only: simulate binary masks instead of line integrals.
        degradation: a :class:`~vesselfield.render.degrade.Degradation` of the simulated views, or None.
        reconstruct: the reconstruction callable; None for
            :func:`vesselfield.methods.sdf_car.reconstruct_xray`.
    """

    case: Case
    geometry: Any
    config: Any
    masks_only: bool = False
    reconstruct: Callable | None = None
    degradation: Any = None


def reconstruct_and_evaluate(task: XrayTask, *, device: str, out_dir: Path) -> dict:
    """The job function of the X-ray benchmark: simulate the case's views, reconstruct, evaluate.

    Writes ``out_dir.parent / ground_truth.nii.gz`` (the case's binary ground truth, before the
    method runs) and whatever the method writes into ``out_dir``. Returns the values of
    :data:`METRIC_COLUMNS`, ``seconds`` (the method's optimisation time) and ``device`` (the
    resolved torch device); raises on any failure (the harness records it).
    """
    from vesselfield.device import resolve_device
    from vesselfield.io import save_volume
    from vesselfield.metrics import evaluate_volumes

    resolved = resolve_device(device)
    reconstruct = task.reconstruct
    if reconstruct is None:
        from vesselfield.methods.sdf_car import reconstruct_xray as reconstruct
    grid = task.geometry.volume
    from vesselfield.meshing.connect import topology_report

    target, views, true_geometry = _case_inputs(task.case, task.geometry, resolved, task.masks_only, task.degradation)
    # Every method of the case writes the same file (atomically), so it always matches this run's grid.
    save_volume(Path(out_dir).parent / GROUND_TRUTH_FILE, target.astype(np.uint8), grid)
    result = reconstruct(task.geometry, views, kind="mask" if task.masks_only else "line_integral",
                         config=task.config, device=device, out_dir=Path(out_dir), progress=False)
    metrics = evaluate_volumes(np.asarray(result.occupancy), target, grid)
    topology = topology_report(np.asarray(result.occupancy) >= 0.5, target >= 0.5)
    row = {**{key: float(metrics[key]) for key in METRIC_COLUMNS}, **{key: topology[key] for key in TOPOLOGY_COLUMNS},
           "seconds": float(result.seconds), "device": str(resolved)}
    if task.degradation is not None and task.degradation.poses:
        from vesselfield.metrics import cldice, dice
        from vesselfield.metrics.alignment import rigidly_aligned

        moved, _ = rigidly_aligned(np.asarray(result.occupancy), target >= 0.5, grid)
        row["cldice_aligned"] = float(cldice(moved >= 0.5, target >= 0.5))
        row["dice_aligned"] = float(dice(moved >= 0.5, target >= 0.5))
    refined = getattr(result, "geometry", None)
    if refined is not None and len(refined.views) > 1 and getattr(result, "pose", None) is not None:
        from vesselfield.methods.xray_pose import relative_rotation_error_deg

        recorded, true = task.geometry.views, true_geometry.views
        row["rotation_error_before_deg"] = relative_rotation_error_deg(recorded[0], recorded[1], true[0], true[1])
        row["rotation_error_deg"] = relative_rotation_error_deg(refined.views[0], refined.views[1], true[0], true[1])
    return row


# ======================================================================================== tables
def _ordered_methods(methods: Iterable[str]) -> list[str]:
    methods = list(dict.fromkeys(methods))
    return [m for m in PAPER_METHODS if m in methods] + [m for m in methods if m not in PAPER_METHODS]


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def summary_markdown(rows: Sequence[dict], *, header: str, methods: Sequence[str] | None = None) -> str:
    """The mean ± std tables of the SDF-CAR paper's layout (rows: methods; columns: clDice, Dice,
    IoU, reError, Chamfer, reMSE, time), one per group: left tree, right tree (for the sides
    present) and all; only "all" when no case's side is known."""
    methods = _ordered_methods(methods if methods is not None else [r["method"] for r in rows])
    lines = ["# Two-view X-ray reconstruction benchmark", "", header, ""]
    for title, members in harness.groups_then_all(rows, "side", SIDES, "{} tree"):
        n_cases = len({r["case"] for r in members})
        lines += [f"## {title} ({_plural(n_cases, 'case')})", "",
                  *harness.mean_std_table(members, columns=TABLE_COLUMNS, by="method", order=methods), ""]
    lines += [
        "mean ± std (np.std, ddof 0) over the cases that finished; n: cases that finished, failed: cases "
        "excluded because the job failed (see results.csv). Chamfer: the voxel-set variant of the SDF-CAR "
        "evaluation code (results.csv also has the surface Chamfer, chamfer_mm). time: the method's "
        "optimisation wall time. A distance that is not finite (an empty prediction) is recorded as NaN.",
        "",
    ]
    return "\n".join(lines)


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


def _build_config(make_config: Callable, method: str, preset: str | None, overrides: dict):
    # The config checks the values; here only that a field exists, for make_config callables
    # that would not say so themselves.
    base = make_config(method, preset)
    if dataclasses.is_dataclass(base):
        names = {f.name for f in dataclasses.fields(base)}
        unknown = [k for k in overrides if k not in names]
        if unknown:
            raise VesselfieldError(f"the {method} config has no field {unknown[0]!r} to set")
    return make_config(method, preset, **overrides) if overrides else base


def _merged_overrides(overrides: dict | None, iterations, time_limit_s, seed) -> dict:
    """``overrides`` with the dedicated options; the same field given twice differently is an error.

    The values are not checked here: the method's config checks them (one place), when
    :func:`_build_config` makes it.
    """
    merged = dict(overrides or {})
    for name, value, flag in (("iterations", iterations, "--iterations"),
                              ("time_limit_s", time_limit_s, "--time-limit"), ("seed", seed, "--seed")):
        if value is None:
            continue
        if name in merged and not _same_value(merged[name], value):
            raise VesselfieldError(f"{name} is given twice: {flag} {value} and --set {name}={merged[name]}")
        merged[name] = value
    return merged


def _same_value(given, value) -> bool:
    try:
        return float(given) == float(value)  # "--set iterations=100" is --iterations 100
    except (TypeError, ValueError):
        return str(given) == str(value)


def _command(cases, methods, out_dir, options: dict, overrides: dict) -> str:
    """The ``vesselfield benchmark xray`` command with these settings (flags as the CLI spells them)."""
    from vesselfield.config import format_value
    from vesselfield.io.run_folder import reproducing_command

    specs = cases if isinstance(cases, (list, tuple)) else [cases]
    words = ["benchmark", "xray", "--cases", *[c.name if isinstance(c, Case) else str(c) for c in specs],
             "--methods", *methods, "--out", str(out_dir)]
    for flag, value in options.items():
        if value is True:
            words.append(flag)
        elif value not in (None, False):
            words += [flag, str(value)]
    for name, value in overrides.items():
        words += ["--set", f"{name}={format_value(value)}"]
    return reproducing_command(words)


@dataclass
class XrayBenchmarkResult:
    """What :func:`run_xray_benchmark` returns.

    Attributes:
        rows: one dict per case x method (cases in order, then methods in the order given) with
            the keys of :data:`CSV_COLUMNS`: status ``"ok"`` or ``"failed"`` (``error`` one line,
            metrics None); what ``results.csv`` holds.
        summary: the markdown text of ``summary.md`` (:func:`summary_markdown` with the run's
            header), as written.
        results_path: ``out_dir/results.csv``.
        summary_path: ``out_dir/summary.md``.
    """

    rows: list
    summary: str
    results_path: Path
    summary_path: Path


def run_xray_benchmark(
    cases,
    methods,
    out_dir,
    *,
    preset: str | None = None,
    masks_only: bool = False,
    workers: int = 1,
    ray_address: str | None = None,
    iterations: int | None = None,
    time_limit_s: float | None = None,
    device: str = "auto",
    geometry=None,
    seed: int | None = None,
    reconstruct: Callable | None = None,
    progress: bool = True,
    make_config: Callable | None = None,
    command: str | None = None,
    overrides: dict | None = None,
    degradation=None,
) -> XrayBenchmarkResult:
    """Run every case x method, write ``out_dir/results.csv`` and ``out_dir/summary.md``.

    Args:
        cases: a spec for :func:`resolve_cases` (folder, volume file, ``"phantom:left:0-4,right:0-4"``,
            ``"xcat"``, or a list of those), or a list of :class:`Case`.
        methods: method names (a list, or one string separated by commas/spaces; ``"all"`` is the
            four of :data:`PAPER_METHODS`).
        out_dir: output folder (layout in the module docstring); reruns resume in it.
        preset: ``"cpu"`` or ``"gpu"`` preset of each method's config; None: the config's own
            default (``make_config(method, None)``).
        masks_only: simulate binary masks instead of line integrals (``kind="mask"``).
        workers: 1 runs the jobs one after another in this process; N > 1 in N spawned processes,
            each with ``torch.set_num_threads(max(1, cpus // N))``, the jobs round-robin over
            ``cuda:0..k-1`` when ``device`` is auto/cuda and there are k > 1 GPUs.
        ray_address: run each job as a task on this existing Ray cluster
            (:func:`vesselfield.bench.harness.run_jobs`). Needs the optional extra ``ray`` here and
            vesselfield on every node; ``out_dir`` (and the case files) should be on a file system
            every node sees. results.csv and summary.md are written here.
        iterations, time_limit_s, seed: config fields set on every method's config when given
            (the CLI's ``--iterations``, ``--time-limit``, ``--seed``), checked by the config; a
            config without such a field is an error.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for the projector and the method.
        geometry: a :class:`~vesselfield.geometry.Geometry` or a geometry JSON path; default
            :func:`~vesselfield.geometry.default_geometry` (the papers' two views, 128³ x 0.8 mm).
        reconstruct: the reconstruction callable, with the signature of
            :func:`vesselfield.methods.sdf_car.reconstruct_xray` (the default, imported inside the
            worker); with workers > 1 or Ray it must be picklable (a module-level function).
        progress: a progress bar on stderr.
        make_config: ``make_config(method, preset, **overrides)`` -> config (``preset`` None: the
            config's default); default :func:`vesselfield.methods.sdf_car.xray_config`. Called
            here, before any job runs, so an unknown method, preset, field or a bad value fails
            at once.
        command: the command line for the summary header; default, the equivalent CLI call
            (:func:`vesselfield.io.run_folder.reproducing_command`).
        overrides: config fields set on every method's config (the CLI's ``--set field=value``;
            values may be the command line's strings); a field also given by ``iterations``,
            ``time_limit_s`` or ``seed`` with another value is an error.
        degradation: a :class:`~vesselfield.render.degrade.Degradation` or its ``--degrade`` text:
            every case's views are those of a real acquisition (noise, blur, background, pose errors,
            broken masks); with pose errors the ground truth is moved into the reference view's frame.

    Returns:
        :class:`XrayBenchmarkResult`: the rows and the summary's text (nothing is read back).
    """
    from vesselfield.render.degrade import Degradation, parse_degradation

    if degradation is not None and not isinstance(degradation, Degradation):
        degradation = parse_degradation(str(degradation))
    if degradation is not None and degradation == Degradation(seed=degradation.seed):
        degradation = None
    methods = _methods_list(methods)
    geometry_obj = _resolve_geometry(geometry)
    case_list = resolve_cases(cases, geometry_obj)
    if make_config is None:
        from vesselfield.methods.sdf_car import xray_config as make_config
    fields = _merged_overrides(overrides, iterations, time_limit_s, seed)
    configs = {m: _build_config(make_config, m, preset, fields) for m in methods}
    # The preset each config ended with (None asks for the config's default).
    presets = {m: getattr(c, "preset", preset) for m, c in configs.items()}
    machine = harness.machine_description(device, ray_address)  # also rejects a CUDA device that is not there
    out_dir = Path(out_dir)

    jobs = []
    for case in case_list:
        for method in methods:
            fingerprint = harness.settings_fingerprint({
                "case": case, "method": method, "preset": presets[method], "masks_only": bool(masks_only),
                "config": configs[method], "geometry": geometry_obj.to_dict(),
                **({"degradation": degradation.to_text()} if degradation is not None else {})})
            task = XrayTask(case=case, geometry=geometry_obj, config=configs[method], masks_only=bool(masks_only),
                            reconstruct=reconstruct, degradation=degradation)
            jobs.append(harness.Job(out_dir=str(out_dir / case.name / method), fingerprint=fingerprint, task=task,
                                    row={"case": case.name, "side": case.side or "", "method": method},
                                    device=device))
    for job, job_device in zip(jobs, harness.assign_devices(device, workers, len(jobs))):
        job.device = job_device
    rows = harness.run_jobs(jobs, reconstruct_and_evaluate, columns=CSV_COLUMNS,
                            numeric=(*METRIC_COLUMNS, *TOPOLOGY_COLUMNS, *POSE_COLUMNS, "seconds"),
                            workers=workers, ray_address=ray_address, progress=progress,
                            description="xray benchmark", describe=lambda row: f"dice {row['dice']:.3f}")

    kind = "binary masks" if masks_only else "line integrals (mm)"
    if command is None:
        command = _command(cases, methods, out_dir, {
            "--preset": preset, "--masks-only": bool(masks_only), "--workers": workers if workers > 1 else None,
            "--ray-address": ray_address, "--iterations": iterations, "--time-limit": time_limit_s,
            "--device": device if device != "auto" else None,
            "--geometry": geometry if isinstance(geometry, (str, os.PathLike)) else None,
            "--seed": seed, "--degrade": degradation.to_text() if degradation is not None else None},
            dict(overrides or {}))
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    preset_text = ", ".join(str(p) for p in dict.fromkeys(presets.values()))
    if degradation is not None:
        kind += f", degraded ({degradation.to_text()})"
    header = (f"date {date}; machine {machine}; preset {preset_text}; input {kind}; "
              f"{_plural(len(case_list), 'case')} x {_plural(len(methods), 'method')}; command: `{command}`")
    summary = summary_markdown(rows, header=header, methods=methods)
    result = XrayBenchmarkResult(rows=rows, summary=summary, results_path=out_dir / "results.csv",
                                 summary_path=out_dir / "summary.md")
    harness.write_csv(result.results_path, rows, CSV_COLUMNS)
    write_text_atomic(result.summary_path, summary)
    return result
