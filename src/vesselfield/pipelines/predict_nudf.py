"""`vesselfield predict` with a NUDF (or unet-roi) run: the surface in one CT region of interest.

The ROI is the training's cube (``roi_mm``, ``roi_voxels``) centred at ``--center X Y Z`` (world
LPS mm: any detector's output, e.g. a coarse segmentation's centre of mass), or at the image's
centre with a warning. Writes into ``--out``:

- ``nudf``: ``udf.nii.gz`` (the predicted unsigned distance, mm, on the ROI's voxel grid),
  ``points.ply`` (the mesher's dense surface cloud) and ``mesh.stl`` (the UDF mesher's surface,
  :func:`vesselfield.meshing.udf.mesh_udf`: open surfaces stay open);
- ``unet-roi``: ``probability.nii.gz`` on the ROI grid and ``mesh.stl`` (marching cubes at 0.5 of
  the probability trilinearly upsampled to ``mesh_spacing_mm``);
- ``summary.json`` and ``report.html`` (an interactive 3D view of the CT as slices and a 3D render,
  with the predicted surface drawn where it cuts each slice: :mod:`vesselfield.report.prediction`).

Everything is computed before anything is written: an ROI outside the image or an empty
prediction is a one-line error that leaves ``--out`` untouched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.run_folder import RunSummary

__all__ = ["load_nudf_run", "predict_nudf_arrays", "predict_nudf_files", "roi_center"]

PREDICT_VERB = "predict"


def load_nudf_run(run_dir):
    """The :class:`~vesselfield.methods.nudf.TrainedNudf` of a ``train nudf|unet-roi`` run folder."""
    from vesselfield.methods.nudf import MODEL_FILE, load_model_file

    run = Path(run_dir)
    if not run.is_dir():
        raise VesselfieldError(f"--run {run} is not a folder")
    if not (run / MODEL_FILE).exists():
        raise VesselfieldError(f"--run {run} holds no trained model ({MODEL_FILE}): its training has not finished "
                               "(resume it with --resume)")
    return load_model_file(run / MODEL_FILE)


def roi_center(center_mm, grid) -> tuple[np.ndarray, list[str]]:
    """``(centre (3,) mm, warnings)``: ``center_mm`` checked, or the image centre with a warning."""
    if center_mm is None:
        lo, hi = grid.bounds_mm
        c = 0.5 * (np.asarray(lo) + np.asarray(hi))
        return c, [f"no --center: the ROI is placed at the image centre ({', '.join(f'{v:.1f}' for v in c)} mm); "
                   "give the structure's centre (e.g. a coarse segmentation's centre of mass) with --center X Y Z"]
    try:
        c = np.asarray([float(v) for v in center_mm], dtype=np.float64)
    except (TypeError, ValueError):
        raise VesselfieldError(f"--center must be three numbers (world LPS mm), got {center_mm!r}") from None
    if c.shape != (3,) or not np.isfinite(c).all():
        raise VesselfieldError(f"--center must be three finite numbers (world LPS mm), got {list(center_mm)}")
    return c, []


def predict_nudf_arrays(trained, image, grid, center_mm, *, device="cpu") -> dict:
    """The prediction of one ROI, in memory.

    Returns a dict: ``roi`` (:class:`~vesselfield.methods.nudf.Roi`), ``roi_grid``; for nudf
    ``udf_mm`` (N, N, N) float32, ``points`` (M, 3) and ``mesh`` (the UDF mesher's); for unet-roi
    ``probability`` (N, N, N) and ``mesh``; ``timings_s`` (encode, volume, mesh).

    Raises:
        VesselfieldError: the ROI lies outside the image, or the prediction holds no surface.
    """
    import time

    from vesselfield.methods.nudf import image_overlap

    roi = trained.roi_at(center_mm)
    lo, hi = grid.bounds_mm
    overlap = image_overlap(roi, grid)
    if overlap <= 0:
        raise VesselfieldError(f"the {roi.side_mm:g} mm ROI around ({', '.join(f'{v:.1f}' for v in roi.center_mm)}) "
                               f"mm lies outside the image ({' '.join(f'{a:.1f}..{b:.1f}' for a, b in zip(lo, hi))} "
                               "mm): check --center (world LPS mm)")
    roi_input = trained.input_of(image, grid, roi)
    out = {"roi": roi, "roi_grid": roi.grid(), "overlap": overlap, "timings_s": {}}
    t0 = time.perf_counter()
    if trained.config.variant == "nudf":
        from vesselfield.meshing.udf import mesh_udf

        maps = trained.encode(roi_input, device=device)
        out["udf_mm"] = trained.udf_volume(maps, roi, device=device)
        t1 = time.perf_counter()
        result = mesh_udf(trained.udf_function(maps, roi, device=device), roi.bounds_mm, trained.config.mesh)
        out["timings_s"] = {"predict": t1 - t0, "mesh": time.perf_counter() - t1}
        out["points"], out["mesh"], out["mesh_details"] = result.points, result.mesh, result.details
        return out
    from vesselfield.meshing import mesh_from_volume
    from vesselfield.meshing.occupancy import iso_grid_over, resample_linear

    prob = trained.probability(roi_input, device=device)
    t1 = time.perf_counter()
    spacing = trained.config.mesh_spacing_mm or max(0.25, float(min(grid.spacing)))
    iso = iso_grid_over(out["roi_grid"], spacing)
    fine = resample_linear(prob, out["roi_grid"], iso)
    if not (fine >= 0.5).any():
        raise VesselfieldError("empty prediction: no voxel of the ROI has probability >= 0.5 (is --center on the "
                               "structure?)")
    out["probability"] = prob
    out["mesh"] = mesh_from_volume(fine, iso, 0.5, inside="above")
    out["timings_s"] = {"predict": t1 - t0, "mesh": time.perf_counter() - t1}
    out["mesh_spacing_mm"] = spacing
    return out


def predict_nudf_files(run_dir, image_path, out_dir, *, center_mm=None, device="auto", trained=None,
                       assignments=None) -> RunSummary:
    """Apply the NUDF / unet-roi run ``run_dir`` to the CT ``image_path``; write into ``out_dir`` (see the module
    docstring). ``trained``: the run's model when the caller has loaded it already; ``assignments``: ``--set``
    items of the prediction (``mesh.keep_mm=0.3``; :func:`~vesselfield.methods.nudf.with_predict_settings`)."""
    from vesselfield.datasets.surface_ct import check_image_spacing
    from vesselfield.device import resolve_device
    from vesselfield.io.meshes import save_mesh
    from vesselfield.io.points import save_points
    from vesselfield.io.run_folder import check_out_dir
    from vesselfield.io.volumes import load_volume, save_volume
    from vesselfield.meshing import mesh_summary
    from vesselfield.meshing.udf import boundary_edge_count
    from vesselfield.validate import require_finite

    from vesselfield.methods.nudf import TrainedNudf, with_predict_settings

    trained = trained if trained is not None else load_nudf_run(run_dir)
    if assignments:
        trained = TrainedNudf(with_predict_settings(trained.config, assignments), trained.model, trained.details)
    check_image_spacing(Path(image_path), "CT image")
    image, grid = load_volume(image_path, what="CT image")
    if image.dtype.kind not in "iuf":
        raise VesselfieldError(f"CT image {image_path} must hold numbers, got dtype {image.dtype}")
    image = np.asarray(image, dtype=np.float32)
    require_finite(image, f"CT image {image_path}")
    center, warnings = roi_center(center_mm, grid)
    out = check_out_dir(out_dir)
    pred = predict_nudf_arrays(trained, image, grid, center, device=resolve_device(device))
    if pred["overlap"] < 0.5:
        warnings.append(f"only {100 * pred['overlap']:.0f} % of the ROI lies inside the image; the rest reads as air")

    out.mkdir(parents=True, exist_ok=True)
    files = {}
    if "udf_mm" in pred:
        files["udf"] = out / "udf.nii.gz"
        save_volume(files["udf"], pred["udf_mm"], pred["roi_grid"])
        files["points"] = out / "points.ply"
        save_points(files["points"], pred["points"])
    else:
        files["probability"] = out / "probability.nii.gz"
        save_volume(files["probability"], pred["probability"], pred["roi_grid"])
    files["mesh"] = out / "mesh.stl"
    save_mesh(files["mesh"], pred["mesh"])
    info = mesh_summary(pred["mesh"])
    boundary = boundary_edge_count(np.asarray(pred["mesh"].faces))
    roi = pred["roi"]
    lines = [f"{trained.config.variant} model from {run_dir}",
             f"ROI {roi.side_mm:g} mm around ({', '.join(f'{v:.1f}' for v in roi.center_mm)}) mm in {roi.voxels}^3 "
             f"voxels; {'open' if boundary else 'closed'} surface: {len(pred['mesh'].vertices)} vertices, "
             f"{len(pred['mesh'].faces)} faces, {boundary} boundary edges",
             f"predict {pred['timings_s']['predict']:.2f} s, mesh {pred['timings_s']['mesh']:.2f} s"]
    details = {"run": str(run_dir), "image": str(image_path), "variant": trained.config.variant,
               "center_mm": [float(v) for v in roi.center_mm], "roi_mm": roi.side_mm, "roi_voxels": roi.voxels,
               "boundary_edges": boundary, "mesh": info, "timings_s": pred["timings_s"]}
    if "points" in pred:
        details["dense_points"] = int(len(pred["points"]))
    from vesselfield.report.prediction import write_prediction_report

    # The surface always exists here (an empty prediction is an error above): the view cuts it on the slices.
    files["report"] = write_prediction_report(
        out, title=f"NUDF prediction ({trained.config.variant})", lines=lines, image=image, grid=grid,
        mesh=pred["mesh"], warnings=warnings,
        note="Open and thin surfaces predicted from a CT image by a trained NUDF run.")
    summary = RunSummary(PREDICT_VERB, out, files=files, warnings=warnings, lines=lines, details=details,
                         objects={"prediction": pred, "mesh": pred["mesh"]})
    summary.write()
    return summary

