"""`vesselfield predict`: a trained VesselSDF (or baseline) run applied to one CT image.

Writes into ``--out``:

- ``sdf.nii.gz``: the predicted signed distance (mm, negative inside) on the input image's grid
  (same shape, same affine as a NIfTI input);
- ``occupancy.nii.gz``: the vessel probability on that grid;
- ``mesh.stl``: the vessel surface in world mm (LPS), marching cubes of the prediction
  **trilinearly upsampled** to an isotropic grid (``--mesh-spacing``, default the in-plane
  voxel size), so the surface follows the continuous field between the sparse slices rather than
  their staircase;
- ``summary.json``.

Variants without an SDF (``unet3d``, ``attention-unet``) write the signed distance of their
thresholded occupancy (``p >= 0.5``, exact anisotropic distance) as ``sdf.nii.gz`` and mesh the
upsampled probability at 0.5; ``direct-sdf`` writes ``sdf < 0`` as its occupancy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.run_folder import RunSummary

__all__ = ["PREDICT_VERB", "load_trained_run", "mask_sdf", "predict_arrays", "predict_ct_files"]

PREDICT_VERB = "predict"


def load_trained_run(run_dir):
    """The :class:`~vesselfield.methods.vessel_sdf.TrainedVesselSdf` of a training run folder.

    Raises:
        VesselfieldError: no such folder, a run folder of another command (its ``config.yaml``
            names it), or a training that has not written ``model.pt`` yet.
    """
    from vesselfield.io.run_folder import CONFIG_NAME, read_config_yaml
    from vesselfield.methods.vessel_sdf import MODEL_FILE, load_model_file

    run = Path(run_dir)
    if not run.is_dir():
        raise VesselfieldError(f"--run {run} is not a folder")
    model = run / MODEL_FILE
    if not model.exists():
        config = run / CONFIG_NAME
        if config.exists():
            words = str(read_config_yaml(config).get("command") or "").split()
            verb = " ".join(words[1:3]) if len(words) > 2 else "another command"
            if words[1:2] != ["train"]:
                raise VesselfieldError(f"--run {run} is a `{verb}` run folder, not a VesselSDF training (vesselfield "
                                       "train ...)")
            raise VesselfieldError(f"--run {run} has no {MODEL_FILE}: its training has not finished or stopped yet "
                                   "(resume it with --resume)")
        raise VesselfieldError(f"--run {run} holds no trained model ({MODEL_FILE})")
    return load_model_file(model)


def predict_arrays(trained, image, grid, *, device="cpu", progress: bool = False) -> dict:
    """``{"sdf_mm", "occupancy", "has_sdf"}`` on ``grid`` for a raw CT ``image``: (X, Y, Z) float32.

    ``sdf_mm`` is the network's SDF, or None for the variants without one (``has_sdf`` False; the
    file writer makes their SDF from the mask, :func:`mask_sdf`, which evaluation does not need);
    ``occupancy`` is the probability, or ``sdf < 0`` for direct-sdf.
    """
    out = trained.predict(image, device=device, progress=progress)
    sdf, occ = out["sdf_mm"], out["occupancy"]
    grid.check_array(sdf if sdf is not None else occ, "prediction")
    if occ is None:
        occ = (sdf < 0).astype(np.float32)
    return {"sdf_mm": sdf, "occupancy": occ, "has_sdf": sdf is not None}


def mask_sdf(occupancy, grid) -> np.ndarray:
    """(X, Y, Z) float32 exact signed distance (mm) of ``occupancy >= 0.5``, clipped to the grid's diagonal
    (an empty or full mask has an infinite distance, and NIfTI readers expect numbers)."""
    from vesselfield.meshing.signed_distance import signed_distance_from_mask

    sdf = signed_distance_from_mask(np.asarray(occupancy) >= 0.5, grid.spacing, exact=True)
    bound = float(np.linalg.norm(np.asarray(grid.shape) * grid.spacing))
    return np.clip(sdf, -bound, bound).astype(np.float32)


def upsampled_surface(prediction: dict, grid, spacing_mm: float):
    """``(mesh or None, iso grid)``: marching cubes of the prediction trilinearly upsampled to ``spacing_mm``."""
    from vesselfield.meshing import mesh_from_volume
    from vesselfield.meshing.occupancy import iso_grid_over, resample_linear

    iso = iso_grid_over(grid, spacing_mm)
    if prediction["has_sdf"]:
        field, level, inside = resample_linear(prediction["sdf_mm"], grid, iso), 0.0, "below"
        empty = not (field.min() < 0 < field.max())
    else:
        field, level, inside = resample_linear(prediction["occupancy"], grid, iso), 0.5, "above"
        empty = not (field.min() < 0.5 < field.max())
    if empty:
        return None, iso
    return mesh_from_volume(field, iso, level, inside=inside), iso


def predict_ct_files(run_dir, image_path, out_dir, *, mesh_spacing_mm: float | None = None, device="auto",
                     progress: bool = True, analyze: bool = True) -> RunSummary:
    """Apply the trained run ``run_dir`` to ``image_path`` and write the outputs into ``out_dir``
    (volumes, mesh, summary.json and report.html with its interactive 3D view).

    ``analyze``: run the vessel analysis on the predicted SDF into ``out_dir/analysis/``
    (:mod:`vesselfield.pipelines.analyze`; its own report.html there).
    """
    from vesselfield.device import resolve_device
    from vesselfield.io.meshes import save_mesh
    from vesselfield.io.run_folder import check_out_dir
    from vesselfield.io.volumes import load_volume, save_volume_like
    from vesselfield.methods.vessel_sdf import default_mesh_spacing, spacing_mismatch
    from vesselfield.validate import require_finite

    trained = load_trained_run(run_dir)
    image, grid = load_volume(image_path, what="CT image")
    if image.dtype.kind not in "iuf":
        raise VesselfieldError(f"CT image {image_path} must hold numbers, got dtype {image.dtype}")
    require_finite(np.asarray(image, dtype=np.float32), f"CT image {image_path}")
    if mesh_spacing_mm is not None and not (np.isfinite(mesh_spacing_mm) and mesh_spacing_mm > 0):
        raise VesselfieldError(f"--mesh-spacing must be a positive number of mm, got {mesh_spacing_mm}")
    warnings = []
    note = spacing_mismatch(trained.spacing_mm, grid.spacing)
    if note:
        warnings.append(note)
    out = check_out_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    dev = resolve_device(device)
    prediction = predict_arrays(trained, image, grid, device=dev, progress=progress)
    files = {}
    sdf = prediction["sdf_mm"] if prediction["has_sdf"] else mask_sdf(prediction["occupancy"], grid)
    for name, volume in (("sdf", sdf), ("occupancy", prediction["occupancy"])):
        files[name] = out / f"{name}.nii.gz"
        save_volume_like(files[name], volume.astype(np.float32), grid, image_path)
    spacing = float(mesh_spacing_mm) if mesh_spacing_mm is not None else default_mesh_spacing(grid.spacing)
    mesh, iso = upsampled_surface(prediction, grid, spacing)
    if mesh is None:
        warnings.append("the prediction holds no vessel surface: no mesh written")
    else:
        files["mesh"] = out / "mesh.stl"
        save_mesh(files["mesh"], mesh)
    vessel_ml = float(np.count_nonzero(sdf < 0) * grid.voxel_volume_mm3 / 1000.0)
    lines = [f"{trained.config.variant} model from {run_dir}: {trained.details.get('label', '')}".rstrip(": "),
             f"image {'x'.join(map(str, grid.shape))} voxels of {'x'.join(f'{s:.3g}' for s in grid.spacing)} mm; "
             f"vessel volume {vessel_ml:.3g} ml",
             f"mesh on an isotropic {spacing:.3g} mm grid ({'x'.join(map(str, iso.shape))})"
             + (f": {len(mesh.vertices)} vertices, {len(mesh.faces)} faces" if mesh is not None else ": empty")]
    details = {"run": str(run_dir), "image": str(image_path), "variant": trained.config.variant,
               "mesh_spacing_mm": spacing, "vessel_volume_ml": vessel_ml}
    if analyze and mesh is not None:
        from vesselfield.analysis.api import as_wall_field
        from vesselfield.pipelines.analyze import analysis_after_run, analysis_details

        field, topology = as_wall_field(sdf.astype(np.float32), grid, kind="sdf")
        analysis, a_files, a_lines, a_warnings = analysis_after_run(field, out, topology=topology)
        files.update(a_files)
        warnings.extend(a_warnings)
        lines.extend(a_lines)
        if analysis is not None:
            details["analysis"] = analysis_details(analysis)
    analysis = analysis if analyze and mesh is not None else None
    from vesselfield.report.prediction import write_prediction_report

    files["report"] = write_prediction_report(
        out, title=f"VesselSDF prediction ({trained.config.variant})", lines=lines, image=image, grid=grid,
        overlay=prediction["occupancy"], mesh=mesh, analysis=analysis, warnings=warnings,
        note="Vessels predicted from a CT image by a trained VesselSDF run (occupancy, then SDF).")
    summary = RunSummary(PREDICT_VERB, out, files=files, warnings=warnings, lines=lines,
                         details=details,
                         objects={"prediction": prediction, "grid": grid, "mesh": mesh, "analysis": analysis})
    summary.write()
    return summary
