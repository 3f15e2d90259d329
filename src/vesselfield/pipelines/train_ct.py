"""`vesselfield train VARIANT`: train VesselSDF (or a baseline) on an MSD-layout CT dataset.

Reads and checks every case first (:func:`vesselfield.datasets.msd.load_case`), splits the cases
into training and validation (by case, never by patch, so validation never sees a training
volume), fits the intensity normalisation on the training cases, then runs the dataset trainer
(:func:`vesselfield.training.train`) on fixed seeded patches, and when it stops (epochs, time
limit or early stop) writes ``model.pt`` from ``best.pt``'s weights: the file ``predict`` loads.

Run folder: ``config.yaml``, ``log.csv`` (one row per epoch), ``tensorboard/`` (when TensorBoard
is installed), ``last.pt`` / ``best.pt`` (resume, best validation Dice), ``model.pt`` and
``summary.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.run_folder import RunSummary

__all__ = ["TRAIN_VERB", "load_training_cases", "split_cases", "train_ct_run", "training_split"]

TRAIN_VERB = "train"


def load_training_cases(dataset, names: Sequence[str] | None = None, *, band_mm: float | None = None):
    """``[(LoadedCase, target SDF mm)]`` of the dataset's cases (or those named), checked.

    The target SDF is the dataset's dense-derived ``sdfTr`` when it has one (a sparsified
    dataset), else the exact signed distance of the label with the true anisotropic spacing
    (:func:`~vesselfield.meshing.signed_distance.signed_distance_from_mask`, ``exact=True``);
    clipped to ``±band_mm`` when given. An empty label gives ``+band_mm`` everywhere (or an
    error without a band, since its distance is infinite).
    """
    from vesselfield.datasets.msd import load_case
    from vesselfield.meshing.signed_distance import signed_distance_from_mask

    by_name = {c.name: c for c in dataset.cases}
    if names is not None:
        missing = [n for n in names if n not in by_name]
        if missing:
            raise VesselfieldError(f"the dataset {dataset.root} has no case {missing[0]!r}")
        chosen = [by_name[n] for n in names]
    else:
        chosen = list(dataset.cases)
    out = []
    for case in chosen:
        loaded = load_case(dataset, case)
        if loaded.mask is None:
            raise VesselfieldError(f"case {case.name} has no label volume: training needs labels")
        sdf = loaded.sdf_mm
        if sdf is None:
            sdf = signed_distance_from_mask(loaded.mask, loaded.grid.spacing, exact=True)
        sdf = np.asarray(sdf, dtype=np.float32)
        if band_mm is None and not np.isfinite(sdf).all():
            raise VesselfieldError(f"case {case.name} has no vessel voxel, so its SDF is infinite; set "
                                       "sdf_band_mm or leave the case out")
        if band_mm is not None:
            sdf = np.clip(sdf, -band_mm, band_mm)
        out.append((loaded, sdf))
    return out


def split_cases(names: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str], list[str]]:
    """``(train, validation, warnings)``: a seeded split by case; one case trains and validates on itself."""
    from vesselfield.training.trainer import split_indices

    if len(names) == 1:
        return names, (names if val_fraction > 0 else []), [
            f"the dataset has one case ({names[0]}): training on it and validating on it too, so the validation "
            "numbers measure fitting, not generalisation"]
    if val_fraction == 0:
        return names, [], []
    train_idx, val_idx = split_indices(len(names), val_fraction, seed)
    return [names[i] for i in train_idx], [names[i] for i in val_idx], []


def training_split(names: list[str], val_cases, trainer) -> tuple[list[str], list[str], list[str]]:
    """``(train, validation, warnings)`` of a dataset training: ``val_cases`` when given (the training then
    uses every name), else :func:`split_cases` with the trainer config's ``val_fraction`` and ``seed``."""
    if val_cases is None:
        return split_cases(list(names), trainer.val_fraction, trainer.seed)
    return list(names), list(val_cases), []


def train_ct_run(data_dir, out_dir, config, *, label=None, cases: Sequence[str] | None = None,
                 val_cases: Sequence[str] | None = None, device="auto", resume: bool = False, progress: bool = True,
                 command: str | None = None) -> RunSummary:
    """Train ``config.variant`` on the MSD-layout dataset ``data_dir`` into the run folder ``out_dir``.

    Args:
        data_dir: MSD / nnU-Net raw dataset folder (``dataset.json``, ``imagesTr``, ``labelsTr``).
        out_dir: the run folder.
        config: :class:`~vesselfield.methods.vessel_sdf.VesselSdfConfig`.
        label: vessel label name or number (default: the label named like "vessel", else all
            non-zero labels; the summary says which).
        cases: train on these cases only (default: all); ``val_cases``: validate on these
            (default: a seeded ``config.trainer.val_fraction`` of ``cases``).
        device: ``auto | cpu | cuda``.
        resume: continue the interrupted run in ``out_dir`` exactly.
        command: the reproducing command line stored in ``config.yaml``.

    Returns:
        :class:`RunSummary` (``objects["result"]`` the :class:`~vesselfield.training.TrainResult`).
    """
    from vesselfield.datasets.ct_patches import CaseArrays, CtPatchDataset
    from vesselfield.datasets.msd import read_msd_dataset
    from vesselfield.io.run_folder import prepare_run_folder, to_plain
    from vesselfield.io.torch_files import save_tensors
    from vesselfield.methods.vessel_sdf import (
        MODEL_FILE,
        IntensityNormalisation,
        VesselSdfConfig,
        build_model,
        choose_patch,
        make_metrics,
        make_objective,
        model_payload,
    )
    from vesselfield.pipelines.common import training_report
    from vesselfield.training.checkpoint import read_checkpoint, seed_everything
    from vesselfield.training.distributed import torchrun_environment
    from vesselfield.training.trainer import BEST_NAME, LAST_NAME, train

    if not isinstance(config, VesselSdfConfig):
        raise VesselfieldError("config must be a VesselSdfConfig")
    dataset = read_msd_dataset(data_dir, label=label)
    names = list(cases) if cases is not None else [c.name for c in dataset.cases]
    if not names:
        raise VesselfieldError(f"the dataset {data_dir} has no training case")
    train_names, val_names, warnings = training_split(names, val_cases, config.trainer)
    loaded = load_training_cases(dataset, sorted(set(train_names) | set(val_names)), band_mm=config.sdf_band_mm)
    by_name = {c.name: (c, sdf) for c, sdf in loaded}
    for name in train_names:
        if not by_name[name][0].mask.any():
            warnings.append(f"case {name} has no vessel voxel of the chosen label")

    train_loaded = [by_name[n] for n in train_names]
    spacing = tuple(float(v) for v in np.median([c.grid.spacing for c, _ in train_loaded], axis=0))
    patch, strides, refiner_strides = choose_patch(config, [c.grid.shape for c, _ in train_loaded], spacing)
    if config.has_sdf and config.lambda_gauss:
        from vesselfield.losses.vessel_sdf import gaussian_support_voxels

        finest = np.min([c.grid.spacing for c, _ in train_loaded], axis=0)
        support = gaussian_support_voxels(config.gauss_sigma_mm, finest)
        if any(p <= k for p, k in zip(patch, support)):
            raise VesselfieldError(f"the patch {'x'.join(map(str, patch))} is too small for the {config.gauss_sigma_mm:g} mm "
                                   f"Gaussian of L_gauss ({'x'.join(map(str, support))} voxels): use a larger --patch "
                                   "or a smaller gauss_sigma_mm")
    lo, hi = config.intensity_percentiles
    norm = IntensityNormalisation.fit([c.image for c, _ in train_loaded], (lo, hi), seed=config.trainer.seed)

    def arrays(name):
        case, sdf = by_name[name]
        return CaseArrays(name, norm.apply(case.image), case.mask.astype(np.float32), sdf,
                          tuple(float(v) for v in case.grid.spacing))

    world = torchrun_environment()[0]
    train_ds = CtPatchDataset([arrays(n) for n in train_names], patch, config.patches_per_case,
                              config.foreground_fraction, seed=config.trainer.seed, min_items=world)
    val_ds = (CtPatchDataset([arrays(n) for n in val_names], patch, max(1, config.patches_per_case // 4),
                             config.foreground_fraction, seed=config.trainer.seed + 1, min_items=world)
              if val_names else None)
    trainer = config.trainer
    if val_ds is None and trainer.monitor.startswith("val_"):
        trainer = dataclasses.replace(trainer, monitor="train_loss", monitor_mode="min")
        warnings.append("no validation cases: best.pt follows the training loss")

    inputs = {"data": str(Path(data_dir)), "label_values": list(dataset.label_values), "label": dataset.label_note,
              "train_cases": train_names, "val_cases": val_names, "patch_voxels": list(patch),
              "spacing_mm": list(spacing)}
    verb = f"{TRAIN_VERB} {config.variant}"
    # Under torchrun every process reads the data and trains its share; rank 0 alone prepares the
    # folder and writes config.yaml, model.pt and summary.json (the trainer writes its checkpoints
    # and log from rank 0 too).
    main_process = torchrun_environment()[1] == 0
    if main_process:
        out = prepare_run_folder(out_dir, verb=verb, config=config, inputs=inputs, command=command or verb,
                                 resume=resume, identity_inputs=("label_values", "train_cases", "val_cases",
                                                                 "patch_voxels"), checkpoint_name=LAST_NAME)
    else:
        out = Path(out_dir)

    seed_everything(config.trainer.seed)
    model = build_model(config, strides, refiner_strides)
    result = train(model, make_objective(config), train_ds, out, trainer, val_data=val_ds,
                   metrics=make_metrics() if val_ds is not None else None, device=device, resume=resume,
                   progress=progress, description=verb, extra={"variant": config.variant})

    if not main_process:
        return RunSummary(verb, out, lines=[f"rank {torchrun_environment()[1]}: trained its share"],
                          objects={"result": result, "model": model})
    best = out / BEST_NAME
    weights = read_checkpoint(best if best.exists() else out / LAST_NAME)["states"]["model"]
    details = {"variant": config.variant, "label": dataset.label_note, "train_cases": train_names,
               "val_cases": val_names, "epochs_done": result.epochs_done, "best_epoch": result.best_epoch,
               "monitor": result.monitor, "best_value": result.best_value, "stopped_by": result.stopped_by}
    model_path = save_tensors(out / MODEL_FILE, model_payload(config, weights, strides, refiner_strides, norm, patch,
                                                              spacing, details), what="VesselSDF model file")
    files, report, metrics = training_report(out, result, model_path)
    lines = [dataset.label_note,
             f"cases: {len(train_names)} training, {len(val_names)} validation; patch {'x'.join(map(str, patch))} "
             f"voxels, {len(train_ds)} patches per epoch; training spacing "
             f"{'x'.join(f'{s:.3g}' for s in spacing)} mm", *report]
    summary = RunSummary(verb, out, files=files, metrics=metrics, warnings=warnings, lines=lines,
                         details=to_plain({**details, "patch_voxels": list(patch), "spacing_mm": list(spacing),
                                           "elapsed_s": result.elapsed_s}),
                         objects={"result": result, "model": model, "normalisation": norm})
    summary.write()
    return summary
