"""`vesselfield benchmark nudf`: NUDF against its U-Net baseline on a surface dataset, the paper's Table 1.

Splits the cases by case (:func:`vesselfield.bench.ct.split_cases`), trains every method on the
training cases (``runs/<method>/``, :func:`vesselfield.pipelines.train_nudf.train_nudf_run`), predicts
every test case in the ROI centred on its surface's bounding box (the "detector" is the ground truth's
box, so the table measures the surface, not the placement) and compares each predicted mesh with the
target surface cropped to the same ROI (the parts outside are not asked for):

- ``chamfer_mm``: symmetric Chamfer distance, ``(mean_p d(p, T) + mean_t d(t, P)) / 2``;
- ``chamfer_pred_to_target_mm``: the one-sided ``mean_p d(p, T)`` that the NUDF authors' code reports;
- ``accuracy_mm``: the 90th percentile of ``d(p, T)``; ``completion``: the fraction of the target within
  2 mm of the prediction (:func:`vesselfield.metrics.surface.surface_metrics_from_meshes`).

Writes ``cases.csv`` (one row per method x test case, with timings), ``tables.md`` (Table 1: input
size, Chamfer, accuracy, completion) and ``summary.json``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vesselfield.errors import VesselfieldError

__all__ = ["CSV_COLUMNS", "NudfBenchmarkResult", "crop_mesh_to_box", "evaluate_prediction", "run_nudf_benchmark"]

METHODS = ("nudf", "unet-roi")
MODEL_NAMES = {"nudf": "NUDF", "unet-roi": "3D U-Net (ROI)"}
METRIC_COLUMNS = ("chamfer_mm", "chamfer_pred_to_target_mm", "accuracy_mm", "completion")
CSV_COLUMNS = ("method", "case", "status", "error", "input_voxels", *METRIC_COLUMNS, "boundary_edges",
               "pred_faces", "predict_s", "mesh_s")


@dataclass
class NudfBenchmarkResult:
    """What :func:`run_nudf_benchmark` returns: ``rows`` (one dict per method x test case, :data:`CSV_COLUMNS`),
    ``tables`` (the text of tables.md), ``summary`` (summary.json's dict), ``files``, ``warnings``."""

    rows: list
    tables: str
    summary: dict
    files: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


def crop_mesh_to_box(mesh, lo, hi):
    """The part of ``mesh`` inside the axis-aligned box ``[lo, hi]`` (mm), triangles cut at its faces (no caps)."""
    import trimesh

    vertices, faces = np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)
    for axis in range(3):
        for sign, bound in ((1.0, lo[axis]), (-1.0, hi[axis])):
            if not len(faces):
                break
            normal = np.zeros(3)
            normal[axis] = sign
            origin = np.zeros(3)
            origin[axis] = bound
            # slice_faces_plane keeps the side the normal points to and needs no polygon library.
            vertices, faces = trimesh.intersections.slice_faces_plane(vertices, faces, normal, origin)[:2]
    return trimesh.Trimesh(vertices, faces, process=True)


def evaluate_prediction(trained, image, grid, target_mesh, center_mm, *, device="cpu", n_points: int = 50_000) -> dict:
    """Predict the ROI at ``center_mm`` of ``image`` (HU, on ``grid``) and score its mesh against ``target_mesh``
    cropped to the ROI: the metrics of :func:`~vesselfield.metrics.surface.surface_metrics_from_meshes` plus
    ``boundary_edges``, ``pred_faces``, ``predict_s`` and ``mesh_s``. A failed prediction raises (VesselfieldError)."""
    from vesselfield.meshing.udf import boundary_edge_count
    from vesselfield.metrics.surface import surface_metrics_from_meshes
    from vesselfield.pipelines.predict_nudf import predict_nudf_arrays

    pred = predict_nudf_arrays(trained, np.asarray(image, np.float32), grid, center_mm, device=device)
    roi_lo, roi_hi = pred["roi"].bounds_mm
    target = crop_mesh_to_box(target_mesh, roi_lo, roi_hi)
    if not len(target.faces):
        raise VesselfieldError("the target surface has no part inside the ROI")
    row = surface_metrics_from_meshes(pred["mesh"], target, n_points=n_points, seed=0)
    row.update({"boundary_edges": boundary_edge_count(np.asarray(pred["mesh"].faces)),
                "pred_faces": int(len(pred["mesh"].faces)), "predict_s": pred["timings_s"]["predict"],
                "mesh_s": pred["timings_s"]["mesh"]})
    return row


def _method_list(methods) -> list[str]:
    chosen = []
    for item in methods:
        for m in str(item).replace(",", " ").split():
            if m == "all":
                chosen += list(METHODS)
            elif m in METHODS:
                chosen.append(m)
            else:
                raise VesselfieldError(f"unknown method {m!r} for benchmark nudf: use nudf, unet-roi or all")
    if not chosen:
        raise VesselfieldError("--methods names no method")
    return list(dict.fromkeys(chosen))


def _table(rows, methods) -> list[str]:
    from vesselfield.bench.harness import format_mean_std

    header = ["Model", "input size", "n", "Chamfer (mm)", "Chamfer pred→target (mm)", "accuracy p90 (mm)",
              "completion 2 mm", "predict (s)", "mesh (s)"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|" + "---:|" * (len(header) - 3)]
    for m in methods:
        ok = [r for r in rows if r["method"] == m and r["status"] == "ok"]
        failed = len([r for r in rows if r["method"] == m]) - len(ok)
        size = f"{ok[0]['input_voxels']}³" if ok else "–"
        cells = []
        for key in (*METRIC_COLUMNS, "predict_s", "mesh_s"):
            v = np.asarray([r[key] for r in ok if r.get(key) is not None], dtype=np.float64)
            v = v[np.isfinite(v)]
            cells.append(format_mean_std(v) if v.size else "–")
        lines.append("| " + " | ".join([MODEL_NAMES[m], size, f"{len(ok)}" + (f" ({failed} failed)" if failed else ""),
                                        *cells]) + " |")
    return lines


def run_nudf_benchmark(data_dir, methods: Sequence[str], out_dir, *, test_fraction: float | None = None,
                       test_cases: Sequence[str] | None = None, split_seed: int = 0, epochs: int | None = None,
                       time_limit_s: float | None = None, assignments: Sequence[str] | None = None, device="auto",
                       resume: bool = False, progress: bool = True, n_points: int = 50_000,
                       command: str | None = None) -> NudfBenchmarkResult:
    """Train, predict and evaluate ``methods`` on the surface dataset ``data_dir``; write into ``out_dir``.

    ``assignments``: ``--set`` items applied to every method's :class:`~vesselfield.methods.nudf.NudfConfig`;
    ``n_points``: surface samples per mesh for the metrics.
    """
    from vesselfield.bench.ct import split_cases
    from vesselfield.bench.harness import write_csv
    from vesselfield.config import build_config
    from vesselfield.datasets.surface_ct import load_surface_case, read_surface_dataset
    from vesselfield.device import resolve_device
    from vesselfield.io.atomic import write_text_atomic
    from vesselfield.io.run_folder import check_out_dir, write_json
    from vesselfield.methods.nudf import NudfConfig
    from vesselfield.pipelines.train_nudf import train_nudf_run

    chosen = _method_list(methods)
    dataset = read_surface_dataset(data_dir)
    names = [c.name for c in dataset.cases]
    train_names, test_names = split_cases(names, 1 / 3 if test_fraction is None else test_fraction, split_seed,
                                          test_cases)
    configs = {m: build_config(NudfConfig, {"variant": m, "trainer.epochs": epochs,
                                            "trainer.time_limit_s": time_limit_s}, assignments) for m in chosen}
    out = check_out_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_name = {c.name: c for c in dataset.cases}
    warnings: list[str] = []
    training, models = {}, {}
    for m in chosen:
        t0 = time.perf_counter()
        summary = train_nudf_run(data_dir, out / "runs" / m, configs[m], cases=train_names, device=device,
                                 resume=resume and (out / "runs" / m).exists(), progress=progress,
                                 command=command)
        result = summary.objects["result"]
        models[m] = summary.objects["trained"]
        training[m] = {"epochs_done": result.epochs_done, "stopped_by": result.stopped_by,
                       "train_seconds": time.perf_counter() - t0, "run_dir": str(out / "runs" / m)}
        warnings += [f"{m}: {w}" for w in summary.warnings]

    dev = resolve_device(device)
    rows = []
    for name in test_names:
        loaded = load_surface_case(by_name[name])
        lo, hi = np.asarray(loaded.mesh.bounds[0]), np.asarray(loaded.mesh.bounds[1])
        center = 0.5 * (lo + hi)
        for m in chosen:
            trained = models[m]
            row = {"method": m, "case": name, "status": "ok", "error": None, "input_voxels": trained.config.roi_voxels}
            try:
                row.update(evaluate_prediction(trained, loaded.image, loaded.grid, loaded.mesh, center, device=dev,
                                               n_points=n_points))
            except VesselfieldError as exc:
                row.update(status="failed", error=str(exc))
            rows.append(row)

    files = {"cases": write_csv(out / "cases.csv", rows, CSV_COLUMNS)}
    lines = ["# NUDF benchmark", "", f"data: {data_dir}; training cases: {', '.join(train_names)}; test cases: "
             f"{', '.join(test_names)}", "", f"## Table 1 ({len(test_names)} test case"
             f"{'' if len(test_names) == 1 else 's'})", "", *_table(rows, chosen), "", "## Training", "",
             "| Model | epochs | stopped by | train time (s) |", "|---|---:|---|---:|"]
    for m in chosen:
        rec = training[m]
        lines.append(f"| {MODEL_NAMES[m]} | {rec['epochs_done']} | {rec['stopped_by']} | {rec['train_seconds']:.1f} |")
    lines += ["", "Mean ± std over the test cases. The ROI is centred on the target surface's bounding box; the "
              "target is cropped to the ROI. Chamfer (mm): (mean pred→target + mean target→pred) / 2, distances to "
              "the exact other mesh; Chamfer pred→target: the one-sided mean the NUDF authors' code reports; "
              "accuracy: 90th percentile of pred→target; completion: fraction of the target within 2 mm of the "
              "prediction.", ""]
    tables = "\n".join(lines)
    write_text_atomic(out / "tables.md", tables)
    files["tables"] = out / "tables.md"
    summary = {"data": str(data_dir), "methods": chosen, "train_cases": train_names, "test_cases": test_names,
               "training": training, "rows": rows, "warnings": warnings, "command": command}
    write_json(out / "summary.json", summary)
    files["summary"] = out / "summary.json"
    return NudfBenchmarkResult(rows, tables, summary, files, warnings)
