"""`vesselfield train nudf|unet-roi`: train NUDF (or its U-Net baseline) on (CT image, surface mesh) pairs.

Reads and checks every case of a surface dataset (:mod:`vesselfield.datasets.surface_ct`: MSD-like
``imagesTr/`` + ``meshesTr/`` + ``dataset.json``), splits the cases into training and validation
by case (:func:`vesselfield.pipelines.train_ct.split_cases`), and prepares each case once:

- the ROI centre: the centre of the surface's bounding box (what a detector would give; training
  augments it by ``translate_mm``);
- ``nudf``: the shape-diameter samples near the surface plus uniform samples in the box every
  augmented ROI can reach, with their exact unsigned distances
  (:func:`vesselfield.datasets.udf_samples.udf_training_samples`);
- ``unet-roi``: the occupancy of the surface closed over its holes
  (:func:`vesselfield.meshing.occupancy.voxelize_mesh`), the baseline's target.

Then it runs the dataset trainer (:func:`vesselfield.training.train`) on augmented ROIs
(:class:`vesselfield.methods.nudf.NudfRoiDataset`) and, when it stops (epochs, time limit or early
stop on the validation loss), writes ``model.pt`` from ``best.pt``'s weights: the file ``predict``
loads. Run folder: ``config.yaml``, ``log.csv``, ``last.pt`` / ``best.pt``, ``model.pt``,
``summary.json``; ``--resume`` continues exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.run_folder import RunSummary

__all__ = ["closed_surface", "prepare_nudf_case", "sample_box_mm", "train_nudf_run"]


def sample_box_mm(center_mm, config) -> tuple[np.ndarray, np.ndarray]:
    """The world box every training ROI of a case can reach, ``(lo, hi)`` (3,) mm each.

    A cube of half-side ``h`` turned by ``R`` reaches ``h sum_j |R_ij|`` along axis ``i``. For a turn by
    at most ``r`` about any axis, ``R_ii >= cos r`` and the two other entries of row ``i`` have squares
    summing to ``1 - R_ii^2 <= sin^2 r``, so the row sum is at most ``1 + sqrt(2) sin r`` (and never
    above ``sqrt(3)``); the translation adds ``translate_mm``.
    """
    r = np.deg2rad(float(config.rotate_deg))
    half = config.half_mm * min(np.sqrt(3.0), 1.0 + np.sqrt(2.0) * abs(np.sin(r))) + config.translate_mm
    c = np.asarray(center_mm, dtype=np.float64)
    return c - half, c + half


def closed_surface(mesh, name: str):
    """The surface with its holes closed (pymeshlab's hole filling): what ``unet-roi``'s occupancy needs."""
    import pymeshlab
    import trimesh

    if mesh.is_watertight:
        return mesh
    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int32)))
    ms.meshing_close_holes(maxholesize=max(30, 4 * len(mesh.faces)), newfaceselected=False)
    m = ms.current_mesh()
    closed = trimesh.Trimesh(m.vertex_matrix(), m.face_matrix(), process=True)
    if not closed.is_watertight:
        trimesh.repair.fill_holes(closed)
    if not closed.is_watertight:
        raise VesselfieldError(f"case {name}: its surface could not be closed for the unet-roi occupancy target "
                               "(holes that are not simple loops)")
    return closed


def prepare_nudf_case(loaded, config, *, seed: int = 0):
    """A :class:`~vesselfield.methods.nudf.NudfCase` of one loaded surface case (see the module docstring)."""
    from vesselfield.methods.nudf import NudfCase, Roi, image_overlap, scale_intensities

    mesh = loaded.mesh
    lo, hi = np.asarray(mesh.bounds[0]), np.asarray(mesh.bounds[1])
    center = 0.5 * (lo + hi)
    roi = Roi(tuple(center), config.roi_mm, config.roi_voxels)
    if image_overlap(roi, loaded.grid) <= 0:
        raise VesselfieldError(f"case {loaded.name}: its ROI around the surface lies outside the image")
    extent = hi - lo
    if np.any(extent > config.roi_mm):
        # Not an error: the ROI crops the surface, as it would a detector's; say so once.
        note = (f"case {loaded.name}: the surface ({'x'.join(f'{e:.0f}' for e in extent)} mm) is larger than the "
                f"{config.roi_mm:g} mm ROI; the parts outside are not learnt")
    else:
        note = None
    image = scale_intensities(loaded.image, config.hu_window)
    if config.variant == "nudf":
        from vesselfield.datasets.udf_samples import udf_training_samples

        samples = udf_training_samples(mesh, sample_box_mm(center, config), n_surface=config.surface_samples,
                                       n_uniform=config.uniform_samples, cone_deg=config.cone_deg,
                                       thin_mm=config.thin_mm, thin_factor=config.thin_factor,
                                       exact_below_mm=config.clamp * config.half_mm, seed=seed)
        case = NudfCase(loaded.name, image, loaded.grid, center, points_mm=np.asarray(samples.points, np.float32),
                        distances_mm=np.asarray(samples.distances_mm, np.float32))
    else:
        from vesselfield.meshing.occupancy import voxelize_mesh

        occupancy = voxelize_mesh(closed_surface(mesh, loaded.name), loaded.grid)
        case = NudfCase(loaded.name, image, loaded.grid, center, occupancy=occupancy)
    return case, note


def train_nudf_run(data_dir, out_dir, config, *, cases: Sequence[str] | None = None,
                   val_cases: Sequence[str] | None = None, device="auto", resume: bool = False, progress: bool = True,
                   command: str | None = None) -> RunSummary:
    """Train ``config.variant`` (``nudf`` or ``unet-roi``) on the surface dataset ``data_dir`` into ``out_dir``.

    Args:
        data_dir: a surface dataset folder (``dataset.json``, ``imagesTr/``, ``meshesTr/``).
        out_dir: the run folder.
        config: :class:`~vesselfield.methods.nudf.NudfConfig`.
        cases: train on these cases only (default: all); ``val_cases``: validate on these (default:
            a seeded ``config.trainer.val_fraction`` of ``cases``).
        device: ``auto | cpu | cuda``.
        resume: continue the interrupted run in ``out_dir`` exactly.
        command: the reproducing command line stored in ``config.yaml``.

    Returns:
        :class:`RunSummary` (``objects["result"]`` the :class:`~vesselfield.training.TrainResult`,
        ``objects["trained"]`` the :class:`~vesselfield.methods.nudf.TrainedNudf` that ``model.pt`` holds).
    """
    from vesselfield.datasets.surface_ct import load_surface_case, read_surface_dataset
    from vesselfield.io.run_folder import prepare_run_folder, to_plain
    from vesselfield.io.torch_files import load_state, save_tensors
    from vesselfield.methods.nudf import (
        MODEL_FILE,
        NudfConfig,
        NudfRoiDataset,
        TrainedNudf,
        build_model,
        make_metrics,
        make_objective,
        model_payload,
    )
    from vesselfield.pipelines.common import training_report
    from vesselfield.pipelines.train_ct import training_split
    from vesselfield.training.checkpoint import read_checkpoint, seed_everything
    from vesselfield.training.trainer import BEST_NAME, LAST_NAME, train

    if not isinstance(config, NudfConfig):
        raise VesselfieldError("config must be a NudfConfig")
    dataset = read_surface_dataset(data_dir)
    by_name = {c.name: c for c in dataset.cases}
    names = list(cases) if cases is not None else list(by_name)
    if not names:
        raise VesselfieldError(f"the dataset {data_dir} has no training case")
    train_names, val_names, warnings = training_split(names, val_cases, config.trainer)
    missing = [n for n in list(train_names) + list(val_names) if n not in by_name]
    if missing:
        raise VesselfieldError(f"the dataset {data_dir} has no case {missing[0]!r}")

    # Every input is read and checked before the run folder is touched.
    prepared, spacings = {}, []
    for i, name in enumerate(sorted(set(train_names) | set(val_names))):
        loaded = load_surface_case(by_name[name])
        prepared[name], note = prepare_nudf_case(loaded, config, seed=config.trainer.seed * 1000 + i)
        spacings.append(loaded.grid.spacing)
        if note:
            warnings.append(note)

    train_ds = NudfRoiDataset([prepared[n] for n in train_names], config, augment=True, seed=config.trainer.seed)
    val_ds = (NudfRoiDataset([prepared[n] for n in val_names], config, augment=False, seed=config.trainer.seed + 1,
                             rois_per_case=1) if val_names else None)
    trainer = config.trainer
    if val_ds is None:
        # val_fraction 0: the trainer must not split the (augmented) training ROIs into a validation set.
        trainer = dataclasses.replace(trainer, val_fraction=0.0)
        if trainer.monitor.startswith("val_"):
            trainer = dataclasses.replace(trainer, monitor="train_loss", monitor_mode="min")
            warnings.append("no validation cases: best.pt follows the training loss")

    spacing = [float(v) for v in np.median(spacings, axis=0)]
    inputs = {"data": str(Path(data_dir)), "train_cases": list(train_names), "val_cases": list(val_names),
              "spacing_mm": spacing}
    verb = f"train {config.variant}"
    out = prepare_run_folder(out_dir, verb=verb, config=config, inputs=inputs, command=command or verb, resume=resume,
                             identity_inputs=("train_cases", "val_cases"), checkpoint_name=LAST_NAME)

    seed_everything(config.trainer.seed)
    model = build_model(config)
    result = train(model, make_objective(config), train_ds, out, trainer, val_data=val_ds,
                   metrics=make_metrics(config) if val_ds is not None else None, device=device, resume=resume,
                   progress=progress, description=verb, extra={"variant": config.variant})

    best = out / BEST_NAME
    weights = read_checkpoint(best if best.exists() else out / LAST_NAME)["states"]["model"]
    details = {"variant": config.variant, "train_cases": list(train_names), "val_cases": list(val_names),
               "epochs_done": result.epochs_done, "best_epoch": result.best_epoch, "monitor": result.monitor,
               "best_value": result.best_value, "stopped_by": result.stopped_by, "spacing_mm": spacing}
    model_path = save_tensors(out / MODEL_FILE, model_payload(config, weights, details), what="NUDF model file")
    best_model = build_model(config)
    trained = TrainedNudf(config, load_state(best_model, weights, model_path), to_plain(details))
    files, report, metrics = training_report(out, result, model_path)
    lines = [f"cases: {len(train_names)} training, {len(val_names)} validation; ROI {config.roi_mm:g} mm in "
             f"{config.roi_voxels}^3 voxels ({config.voxel_mm:.3g} mm), {len(train_ds)} ROIs per epoch", *report]
    summary = RunSummary(verb, out, files=files, metrics=metrics, warnings=warnings, lines=lines,
                         details=to_plain({**details, "elapsed_s": result.elapsed_s}),
                         objects={"result": result, "model": model, "trained": trained})
    summary.write()
    return summary
