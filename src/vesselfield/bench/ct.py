"""``vesselfield benchmark ct``: VesselSDF and its baselines on held-out CT cases, as the paper's Tables 1-2.

What is CT specific lives here; :mod:`vesselfield.pipelines.benchmark_ct` splits the dataset,
trains each method and runs the jobs on :mod:`vesselfield.bench.harness`. This module holds

- the **metrics of one case** (:func:`case_metrics`, a pure function of two masks and a grid):
  Dice, IoU, Jaccard distance, clDice, surface Chamfer (mm and ×100 normalised), Hausdorff and
  HD95 (mm), connected components and floating fragments;
- **where a prediction is evaluated** (:func:`evaluation_mask`): on a sparsified dataset
  (``labelsDense/``), the predicted field trilinearly upsampled onto the dense label's grid;
  otherwise the image grid;
- the seeded **split by case** (:func:`split_cases`);
- the **job function** (:func:`predict_and_evaluate`: one trained method x one test case);
- the **columns and tables** (:data:`CSV_COLUMNS`, :func:`tables_markdown`: the paper's Table 1
  and Table 2 layouts) and the **figure** of a test case (:func:`figure_ct_case`).

Metric definitions (docs/metrics.md; the paper, Esposito et al. MICCAI 2025, Sec. 4, names the
metrics but not their normalisation):

- ``dice`` = 2|P∩T| / (|P|+|T|), ``iou`` = |P∩T| / |P∪T|, ``jaccard_distance`` = 1 − IoU (the
  paper's "JD"; its Table 1 prints JD↑ with values below IoU, which no definition of a Jaccard
  distance gives, so we keep the standard one);
- ``chamfer_mm``: the symmetric surface Chamfer distance of
  :func:`vesselfield.metrics.evaluate_volumes` (mean of the two directed area-weighted mean
  distances between the marching-cubes surfaces of the masks, mm);
- ``cd_x100`` = 100 · chamfer_mm / L, with L (``fov_mm``) the longest side of the image's field of
  view in mm (``max(shape · spacing)`` of the CT image's grid): distances in units where the
  volume fits the unit cube, ×100 as the paper prints "CD ×100";
- ``hausdorff_mm`` / ``hausdorff95_mm``: maximum / 95th percentile of the voxel-boundary distances
  (larger of the two directions), mm; ``cldice``: Shit et al., CVPR 2021, eq. 3;
- ``components``: connected components of the predicted mask (26-connectivity,
  ``scipy.ndimage.label``); ``floating_fragments``: those of them that share no voxel with the
  target mask (the paper's "floating artefacts", Sec. 3.4); ``target_components``: the same count
  for the target, for reference (a cropped vessel tree is often several pieces already).

An empty prediction (or target) has no surface: its distances are infinite in
:func:`case_metrics` and recorded as NaN in the CSV (the harness's strict JSON); the tables
average the finite values and say how many were left out.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid

__all__ = [
    "ABLATION_ROWS",
    "CSV_COLUMNS",
    "METRIC_COLUMNS",
    "MODEL_NAMES",
    "PAPER_ORDER",
    "TABLE_COLUMNS",
    "CtTask",
    "case_metrics",
    "evaluation_mask",
    "field_of_view_mm",
    "figure_ct_case",
    "file_digest",
    "fragment_counts",
    "method_means",
    "ordered_methods",
    "predict_and_evaluate",
    "split_cases",
    "tables_markdown",
]

PAPER_ORDER = ("vessel-sdf", "attention-unet", "unet3d", "direct-sdf", "vessel-sdf-no-gauss")
"""Row order of Table 1: the method, then the baselines as the paper lists them, then the ablations."""

MODEL_NAMES = {
    "vessel-sdf": "VesselSDF",
    "attention-unet": "Attention U-Net (stage 1 alone)",
    "unet3d": "3D-UNet",
    "direct-sdf": "direct SDF (one network)",
    "vessel-sdf-no-gauss": "VesselSDF w/o L_gauss",
}
"""The ``Model`` cell of Table 1 per variant (``vessel-sdf`` is the paper's "VesselSDF (Ours)"; the
attention U-Net stands where the paper's 3D SA-UNet does; nnU-Net is exported, not trained here)."""

ABLATION_ROWS = (
    ("vessel-sdf", "VesselSDF"),
    ("attention-unet", "VesselSDF w/o SDF refinement"),
    ("direct-sdf", "VesselSDF w/o binary occupancy"),
    ("vessel-sdf-no-gauss", "VesselSDF w/o Gaussian loss"),
)
"""Table 2 of the paper: (variant, row name), in its order."""

METRIC_COLUMNS = ("dice", "iou", "jaccard_distance", "cldice", "chamfer_mm", "cd_x100", "hausdorff_mm",
                  "hausdorff95_mm", "components", "floating_fragments", "target_components", "pred_voxels",
                  "target_voxels", "fov_mm")
"""Per-case values of :func:`case_metrics`, in CSV order."""

CSV_COLUMNS = ("method", "case", "status", "error", "eval_grid", *METRIC_COLUMNS, "predict_seconds", "device")
"""Columns of ``cases.csv``: one row per method x test case. ``eval_grid``: ``dense`` (the prediction
upsampled onto the dense label's grid of a sparsified dataset) or ``image`` (the CT's grid)."""

NUMERIC_COLUMNS = (*METRIC_COLUMNS, "predict_seconds")

TABLE_COLUMNS = (
    ("dice", "Dice ↑"),
    ("iou", "IoU ↑"),
    ("jaccard_distance", "JD ↓"),
    ("cd_x100", "CD×100 ↓"),
    ("hausdorff_mm", "HD (mm) ↓"),
    ("hausdorff95_mm", "HD95 (mm) ↓"),
    ("cldice", "clDice ↑"),
    ("chamfer_mm", "CD (mm) ↓"),
    ("components", "fragments"),
    ("floating_fragments", "floating ↓"),
)
"""(column, title) of Tables 1 and 2: the paper's five (Dice, IoU, JD, CD×100, HD), then HD95,
clDice, the Chamfer distance in mm and the fragment counts."""

_COUNT_COLUMNS = ("components", "floating_fragments")
_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


# ======================================================================================= metrics
def field_of_view_mm(grid: VolumeGrid) -> float:
    """L: the longest side of ``grid``'s field of view, ``max(shape · spacing)`` in mm (voxel edges,
    not centres), the length :func:`case_metrics` divides distances by."""
    if not isinstance(grid, VolumeGrid):
        raise VesselfieldError(f"grid must be a VolumeGrid, got {type(grid).__name__}")
    return float(np.max(np.asarray(grid.shape) * grid.spacing))


def fragment_counts(pred, target) -> tuple[int, int]:
    """``(components, floating)`` of a predicted mask against a target mask (same shape).

    ``components``: connected components of ``pred`` with 26-connectivity (voxels touching by a
    face, an edge or a corner are one piece; ``scipy.ndimage.label``); ``floating``: the
    components that share no voxel with ``target`` (VesselSDF's floating artefacts).
    """
    from scipy import ndimage

    p, t = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if p.shape != t.shape:
        raise VesselfieldError(f"pred {p.shape} and target {t.shape} must have the same shape")
    labels, count = ndimage.label(p, structure=_STRUCTURE_26)
    if count == 0:
        return 0, 0
    touching = np.unique(labels[p & t])
    return int(count), int(count - np.count_nonzero(touching))


def case_metrics(pred, target, grid: VolumeGrid, *, fov_mm: float | None = None) -> dict[str, float]:
    """Every value of :data:`METRIC_COLUMNS` for one predicted and one target mask on ``grid``.

    Args:
        pred, target: (X, Y, Z) masks on ``grid`` (bool, or occupancies thresholded at 0.5).
        grid: their :class:`VolumeGrid` (its spacing turns voxels into mm).
        fov_mm: L of the normalised Chamfer distance; default :func:`field_of_view_mm` of
            ``grid`` (the benchmark passes the CT image's, which differs from the dense label
            grid's by less than one sparse slice along z).

    Returns:
        ``{column: float}``: overlap and clDice in [0, 1]; distances in mm (``inf`` when exactly
        one mask is empty, 0 when both are); ``cd_x100 = 100 · chamfer_mm / L``; counts as floats.
    """
    from vesselfield.metrics import evaluate_volumes

    p = np.asarray(pred)
    t = np.asarray(target)
    p = p if p.dtype == bool else p >= 0.5
    t = t if t.dtype == bool else t >= 0.5
    L = field_of_view_mm(grid) if fov_mm is None else float(fov_mm)
    if not (np.isfinite(L) and L > 0):
        raise VesselfieldError(f"fov_mm must be a positive number of mm, got {fov_mm!r}")
    metrics = evaluate_volumes(p, t, grid)
    components, floating = fragment_counts(p, t)
    target_components, _ = fragment_counts(t, t)
    out = {key: float(metrics[key]) for key in ("dice", "iou", "jaccard_distance", "cldice", "chamfer_mm",
                                                "hausdorff_mm", "hausdorff95_mm")}
    out["cd_x100"] = 100.0 * out["chamfer_mm"] / L
    out.update(components=float(components), floating_fragments=float(floating),
               target_components=float(target_components), pred_voxels=float(np.count_nonzero(p)),
               target_voxels=float(np.count_nonzero(t)), fov_mm=L)
    return {key: out[key] for key in METRIC_COLUMNS}


def evaluation_mask(prediction: Mapping, grid: VolumeGrid, eval_grid: VolumeGrid | None = None) -> np.ndarray:
    """The method's binary vessel mask (X', Y', Z') on ``eval_grid`` (default: ``grid`` itself).

    Args:
        prediction: :func:`vesselfield.pipelines.predict_ct.predict_arrays`'s dict on ``grid``:
            ``sdf_mm``, ``occupancy`` (X, Y, Z) and ``has_sdf``.
        grid: the CT image's grid.
        eval_grid: where to evaluate (a sparsified dataset's dense label grid).

    A variant with an SDF (``has_sdf``: vessel-sdf, its ablation, direct-sdf) is its SDF < 0; one
    without (unet3d, attention-unet) its probability >= 0.5. Off ``grid`` the field (SDF or
    probability) is first resampled trilinearly (:func:`vesselfield.meshing.occupancy.resample_linear`):
    the continuous field between the sparse slices, not the nearest slice's staircase. Dense
    slices beyond the outermost kept slices take the edge slice's values.
    """
    has_sdf = bool(prediction["has_sdf"])
    field = np.asarray(prediction["sdf_mm" if has_sdf else "occupancy"], dtype=np.float32)
    grid.check_array(field, "prediction")
    if eval_grid is not None and not eval_grid.is_close(grid, atol_mm=1e-6):
        from vesselfield.meshing.occupancy import resample_linear

        field = resample_linear(field, grid, eval_grid)
    return field < 0 if has_sdf else field >= 0.5


# ========================================================================================= split
def split_cases(names: Sequence[str], test_fraction: float = 1 / 3, seed: int = 0,
                test_cases: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """``(training cases, test cases)``, each in the order of ``names``: a split by case.

    With ``test_cases`` those are the test cases (each must be in ``names``, and at least one case
    must be left for training). Otherwise ``max(1, round(n · test_fraction))`` cases drawn by a
    permutation of NumPy's ``default_rng(seed)``: the same names, fraction and seed give the same
    split on every machine.

    Raises:
        VesselfieldError: fewer than two cases (a benchmark trains on some and tests on others),
            a fraction outside (0, 1) or one that leaves no training case, unknown or repeated
            test cases, or every case named as a test case.
    """
    names = list(names)
    if len(set(names)) != len(names):
        raise VesselfieldError("case names repeat")
    if len(names) < 2:
        shown = f" ({names[0]})" if names else ""
        raise VesselfieldError(f"a benchmark needs at least two cases, one to train on and one to test on; the "
                               f"dataset has {len(names)}{shown}: use `vesselfield train` on a single case")
    if test_cases is not None:
        wanted = [str(c) for c in test_cases]
        if not wanted:
            raise VesselfieldError("--test-cases names no case")
        unknown = [c for c in wanted if c not in names]
        if unknown:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise VesselfieldError(f"test case {unknown[0]!r} is not in the dataset (cases: {shown})")
        if len(set(wanted)) != len(wanted):
            raise VesselfieldError("--test-cases names a case twice")
        if len(wanted) == len(names):
            raise VesselfieldError("--test-cases names every case: leave at least one for training")
        chosen = set(wanted)
    else:
        f = float(test_fraction)
        if not 0.0 < f < 1.0:
            raise VesselfieldError(f"the test fraction must be in (0, 1), got {test_fraction}")
        if max(1, round(len(names) * f)) >= len(names):
            raise VesselfieldError(f"a test fraction of {f:g} of {len(names)} cases leaves no training case")
        from vesselfield.training.trainer import split_indices  # the trainer's seeded split, same rule

        chosen = {names[i] for i in split_indices(len(names), f, int(seed))[1]}
    return [n for n in names if n not in chosen], [n for n in names if n in chosen]


# =========================================================================================== job
def file_digest(path) -> str:
    """SHA-256 of a file's bytes (hex): a trained model's identity in the job fingerprints."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class CtTask:
    """What one job needs (picklable).

    Attributes:
        data_dir: the MSD-layout dataset folder. label: its vessel label (name, number or None).
        case: the test case's name. method: the variant. run_dir: its training run (``model.pt``).
    """

    data_dir: str
    label: str | int | None
    case: str
    method: str
    run_dir: str


_cache: dict = {}


def _cached(key, make):
    """One dataset and one trained model are kept per process: jobs run method by method."""
    if _cache.get(key[0], (None,))[0] != key:
        _cache[key[0]] = (key, make())
    return _cache[key[0]][1]


def predict_case(task: CtTask, device) -> dict:
    """Predict ``task.case`` with ``task.run_dir``'s model; everything :func:`predict_and_evaluate` and
    the figure need: ``loaded`` (the case), ``prediction`` (on the image grid), ``eval_grid``,
    ``target`` (on it), ``mask`` (the method's mask on it), ``eval`` (``dense``/``image``),
    ``seconds`` (the prediction's wall time)."""
    import time

    from vesselfield.datasets.msd import load_case, load_dense_mask, read_msd_dataset
    from vesselfield.methods.vessel_sdf import MODEL_FILE
    from vesselfield.pipelines.predict_ct import load_trained_run, predict_arrays

    ds = _cached(("dataset", task.data_dir, task.label), lambda: read_msd_dataset(task.data_dir, label=task.label))
    model_path = Path(task.run_dir) / MODEL_FILE
    stat = model_path.stat() if model_path.exists() else None
    trained = _cached(("model", task.run_dir, stat and (stat.st_mtime_ns, stat.st_size)),
                      lambda: load_trained_run(task.run_dir))
    if trained.config.variant != task.method:
        raise VesselfieldError(f"{task.run_dir} holds a {trained.config.variant} model, not {task.method}")
    loaded = load_case(ds, task.case)
    if loaded.mask is None:
        raise VesselfieldError(f"test case {task.case} has no label volume")
    started = time.perf_counter()
    prediction = predict_arrays(trained, loaded.image, loaded.grid, device=device)
    seconds = time.perf_counter() - started
    dense = load_dense_mask(ds, task.case)
    if dense is not None:
        target, eval_grid, where = dense[0], dense[1], "dense"
    else:
        target, eval_grid, where = loaded.mask, loaded.grid, "image"
    mask = evaluation_mask(prediction, loaded.grid, eval_grid)
    return {"loaded": loaded, "prediction": prediction, "eval_grid": eval_grid, "target": target, "mask": mask,
            "eval": where, "seconds": seconds, "trained": trained}


def predict_and_evaluate(task: CtTask, *, device: str, out_dir: Path) -> dict:
    """The job function of the CT benchmark: predict one test case with one trained method, evaluate.

    Returns the values of :data:`METRIC_COLUMNS` (:func:`case_metrics` with L the CT image's field
    of view), ``eval_grid``, ``predict_seconds`` (sliding-window inference) and ``device``;
    raises on any failure (the harness records it).
    """
    from vesselfield.device import resolve_device

    resolved = resolve_device(device)
    case = predict_case(task, resolved)
    metrics = case_metrics(case["mask"], case["target"], case["eval_grid"],
                           fov_mm=field_of_view_mm(case["loaded"].grid))
    return {**metrics, "eval_grid": case["eval"], "predict_seconds": float(case["seconds"]), "device": str(resolved)}


# ======================================================================================== tables
def ordered_methods(methods: Sequence[str]) -> list[str]:
    """``methods`` without repeats, in :data:`PAPER_ORDER` (others after, as given)."""
    methods = list(dict.fromkeys(methods))
    return [m for m in PAPER_ORDER if m in methods] + [m for m in methods if m not in PAPER_ORDER]


def _values(rows: Sequence[Mapping], key: str) -> np.ndarray:
    return np.asarray([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=np.float64)


def _cell(rows: Sequence[Mapping], key: str) -> str:
    """Mean ± std (:func:`~vesselfield.bench.harness.format_mean_std`) of the finite values; counts as
    ``mean (min–max)``; how many values were not finite (empty predictions) in brackets."""
    from vesselfield.bench.harness import format_mean_std

    values = _values(rows, key)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        text = "–"
    elif key in _COUNT_COLUMNS:
        lo, hi = int(finite.min()), int(finite.max())
        spread = f" ({lo}–{hi})" if lo != hi else ""
        text = f"{float(finite.mean()):.3g}{spread}"
    else:
        text = format_mean_std(finite)
    missing = values.size - finite.size
    return text + (f" [{missing} n/a]" if missing else "")


def _table(rows: Sequence[Mapping], names: Sequence[tuple[str, str]]) -> list[str]:
    header = ["Model", "n", *(title for _, title in TABLE_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for method, name in names:
        mine = [r for r in rows if r["method"] == method]
        ok = [r for r in mine if r["status"] == "ok"]
        failed = len(mine) - len(ok)
        count = f"{len(ok)}" + (f" ({failed} failed)" if failed else "")
        lines.append("| " + " | ".join([name, count, *(_cell(ok, key) for key, _ in TABLE_COLUMNS)]) + " |")
    return lines


def method_means(rows: Sequence[Mapping], methods: Sequence[str]) -> dict:
    """``{method: {column: {"mean", "std", "min", "max", "n"}}}`` over the ok rows' finite values
    (``n``: how many; NaN statistics when none); for summary.json."""
    out = {}
    for method in methods:
        ok = [r for r in rows if r["method"] == method and r["status"] == "ok"]
        stats = {}
        for key in NUMERIC_COLUMNS:
            v = _values(ok, key)
            v = v[np.isfinite(v)]
            stats[key] = ({"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
                           "max": float(v.max()), "n": int(v.size)} if v.size else
                          {"mean": np.nan, "std": np.nan, "min": np.nan, "max": np.nan, "n": 0})
        out[method] = stats
    return out


def tables_markdown(rows: Sequence[Mapping], *, title: str, header: str, methods: Sequence[str],
                    training: Mapping[str, Mapping] | None = None) -> str:
    """``tables.md``: Table 1 (every method, :data:`MODEL_NAMES`), Table 2 (the ablation rows of
    :data:`ABLATION_ROWS` present), a training table when ``training`` (method -> record with
    ``epochs_done``, ``stopped_by``, ``train_seconds``) is given, and the definitions.

    Cells: mean ± std (``np.std``, ddof 0) over the test cases that finished; fragment counts as
    mean (min–max); ``[k n/a]``: k cases whose value is not finite (an empty prediction has no
    distance) were left out of that cell.
    """
    methods = ordered_methods(methods)
    n_cases = len({r["case"] for r in rows})
    lines = [f"# {title}", "", header, "",
             f"## Table 1: models ({n_cases} test case{'' if n_cases == 1 else 's'})", "",
             *_table(rows, [(m, MODEL_NAMES.get(m, m)) for m in methods]), ""]
    ablations = [(m, name) for m, name in ABLATION_ROWS if m in methods]
    lines += ["## Table 2: ablations", ""]
    lines += _table(rows, ablations) if ablations else ["(none of the ablation variants was run)"]
    lines.append("")
    if training:
        lines += ["## Training", "", "| Model | epochs | stopped by | train time (s) | run folder |",
                  "|---|---:|---|---:|---|"]
        for m in methods:
            rec = training.get(m) or {}
            seconds = rec.get("train_seconds")
            lines.append(f"| {MODEL_NAMES.get(m, m)} | {rec.get('epochs_done', '–')} | {rec.get('stopped_by', '–')} | "
                         f"{'–' if seconds is None else f'{float(seconds):.1f}'} | {rec.get('run_dir', '')} |")
        lines.append("")
    lines += [
        ("Mean ± std (np.std, ddof 0) over the test cases; n: cases evaluated. Dice, IoU, JD = 1 − IoU and clDice "
        "on the binary masks; CD (mm): symmetric surface Chamfer distance; CD×100 = 100 · CD / L with L the "
        "longest side of the CT image's field of view in mm (the volume scaled into the unit cube); HD, HD95: "
        "Hausdorff and 95th-percentile Hausdorff distances (mm). fragments: connected components of the "
        "prediction (26-connectivity), mean (min–max); floating: those sharing no voxel with the ground truth. "
        "On a sparsified dataset the prediction is evaluated on the dense label's grid, its SDF (or, without one, "
        "its probability) upsampled trilinearly; cases.csv says where (eval_grid)."),
        "",
    ]
    return "\n".join(lines)


# ======================================================================================== figure
def _slice_index(target: np.ndarray, eval_grid: VolumeGrid, image_grid: VolumeGrid) -> int:
    """The axial slice of ``eval_grid`` to show: the one with the most target voxels, preferring (on a
    dense grid) slices that are not image slices, where the upsampling has to fill in."""
    counts = target.reshape(-1, target.shape[2]).sum(axis=0).astype(np.float64)
    z_eval = eval_grid.axes_mm()[2]
    z_image = image_grid.axes_mm()[2]
    on_image = np.min(np.abs(z_eval[:, None] - z_image[None, :]), axis=1) < 1e-3
    between = counts * (~on_image)
    if between.max() > 0:
        return int(np.argmax(between))
    return int(np.argmax(counts))


def figure_ct_case(path, image: np.ndarray, image_grid: VolumeGrid, target: np.ndarray, eval_grid: VolumeGrid,
                   predictions: Mapping[str, Mapping], *, mesh_png=None, mesh_title: str = "mesh",
                   title: str = "") -> Path:
    """One axial slice of a test case with each method's predicted contour over the CT, and a mesh view.

    Args:
        path: the PNG to write.
        image: (X, Y, Z) CT on ``image_grid``.
        target: (X', Y', Z') ground-truth mask on ``eval_grid`` (the dense grid of a sparsified case).
        predictions: method -> :func:`~vesselfield.pipelines.predict_ct.predict_arrays` dict on
            ``image_grid``.
        mesh_png: a PNG (:class:`~vesselfield.report.figures.PngFile` or path) shown as the last panel
            (the mesh view), or None; ``mesh_title`` its title.

    Each panel: the CT on the chosen slice of ``eval_grid`` (between the image's slices on a
    sparsified case, the CT linearly interpolated), the true contour (mask at 0.5, yellow) and the
    predicted one (red): the zero level of the trilinearly resampled SDF, or the 0.5 level of the
    probability for variants without an SDF.
    """
    import io

    from vesselfield.meshing.occupancy import resample_linear
    from vesselfield.report.figures import (
        draw_world_plane,
        label_axes,
        new_figure,
        save_png,
    )

    k = _slice_index(np.asarray(target, dtype=bool), eval_grid, image_grid)
    z_mm = float(eval_grid.axes_mm()[2][k])
    origin = np.asarray(eval_grid.origin_mm, dtype=np.float64).copy()
    origin[2] = z_mm
    plane = VolumeGrid((eval_grid.shape[0], eval_grid.shape[1], 1), eval_grid.spacing_mm, tuple(origin))
    ct = resample_linear(image, image_grid, plane)[:, :, 0]
    x_mm, y_mm = eval_grid.axes_mm()[:2]
    lo, hi = plane.bounds_mm
    on_image = bool(np.min(np.abs(image_grid.axes_mm()[2] - z_mm)) < 1e-3)
    methods = list(predictions)
    n = len(methods) + (1 if mesh_png is not None else 0)
    fig = new_figure(3.4 * max(n, 1), 4.2)
    axes = fig.subplots(1, max(n, 1), squeeze=False)[0]
    vmin, vmax = np.percentile(ct, [1, 99]) if ct.size else (0.0, 1.0)
    for ax, method in zip(axes, methods):
        prediction = predictions[method]
        has_sdf = bool(prediction["has_sdf"])
        field = resample_linear(prediction["sdf_mm" if has_sdf else "occupancy"], image_grid, plane)[:, :, 0]
        draw_world_plane(ax, ct.T, 2, (lo[0], hi[0]), (lo[1], hi[1]), cmap="gray", vmin=vmin, vmax=vmax)
        if np.asarray(target)[:, :, k].any() and not np.asarray(target)[:, :, k].all():
            ax.contour(x_mm, y_mm, np.asarray(target, dtype=np.float32)[:, :, k].T, levels=[0.5],
                       colors="yellow", linewidths=1.0)
        level = 0.0 if has_sdf else 0.5
        if field.min() < level < field.max():
            ax.contour(x_mm, y_mm, field.T, levels=[level], colors="red", linewidths=1.0)
        label_axes(ax, f"{MODEL_NAMES.get(method, method)}\n{'SDF = 0' if has_sdf else 'p = 0.5'} (red), truth "
                       "(yellow)")
    if mesh_png is not None:
        from matplotlib.image import imread

        ax = axes[len(methods)]
        data = getattr(mesh_png, "data", None)
        ax.imshow(imread(io.BytesIO(data) if data is not None else str(mesh_png), format="png"))
        ax.set_axis_off()
        label_axes(ax, mesh_title)
    where = "an image slice" if on_image else "between image slices: CT interpolated"
    fig.suptitle(f"{title} axial slice z = {z_mm:.1f} mm ({where})".strip(), fontsize=10)
    return save_png(fig, path)


def config_fingerprint(config) -> dict:
    """The config as plain JSON (nested trainer included), for fingerprints and summary.json."""
    from vesselfield.config import config_to_dict

    return config_to_dict(config) if dataclasses.is_dataclass(config) else dict(config)
