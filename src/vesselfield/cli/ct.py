"""CT commands (VesselSDF and its baselines): ``train``, ``predict``, ``benchmark ct``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from vesselfield.cli.app import (DeviceOpt, QuietOpt, ResumeOpt, TimeLimitOpt, app, benchmark_app, build, echo_summary,
                                 set_option)

LabelOpt = typer.Option(None, "--label", help="Vessel label, by name or number (default: the label named like "
                                              "'vessel', else every non-zero label).")
SetOpt = set_option("vessel-sdf")
VARIANT_HELP = "vessel-sdf, vessel-sdf-no-gauss, attention-unet, direct-sdf or unet3d"


def _train_words(variant, data, out, label, device) -> list:
    words = ["train", variant, "--data", str(data), "--out", str(out)]
    if label is not None:
        words += ["--label", str(label)]
    if device != "auto":
        words += ["--device", device]
    return words


def _label(label: Optional[str]):
    """``--label`` as a number when it is one, else a name."""
    if label is None:
        return None
    text = str(label).strip()
    return int(text) if text.lstrip("-").isdigit() else text


@app.command("train")
def train_cmd(
    variant: str = typer.Argument(..., help=VARIANT_HELP + "."),
    data: Path = typer.Option(..., "--data", help="MSD / nnU-Net raw dataset folder (dataset.json, imagesTr, "
                                                  "labelsTr)."),
    out: Path = typer.Option(..., "--out", help="Run folder: config.yaml, log.csv, tensorboard/, last.pt, best.pt, "
                                                "model.pt, summary.json."),
    label: Optional[str] = LabelOpt,
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs in total (default: the config's, "
                                                                "100 as the paper)."),
    time_limit: Optional[float] = TimeLimitOpt,
    patch: Optional[Tuple[int, int, int]] = typer.Option(None, "--patch", help="Training patch X Y Z in voxels "
                                                                               "(default: 128 128 32 cut to the "
                                                                               "volumes)."),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help="Fraction of the cases held out for "
                                                                              "validation (default 0.2)."),
    device: str = DeviceOpt,
    resume: bool = ResumeOpt,
    set_: Optional[List[str]] = SetOpt,
    quiet: bool = QuietOpt,
):
    """Train VesselSDF or a baseline on a CT dataset; validation every epoch, best/last checkpoints, model.pt."""
    from vesselfield.io.run_folder import reproducing_command
    from vesselfield.methods.vessel_sdf import VesselSdfConfig
    from vesselfield.pipelines.train_ct import train_ct_run

    config = build(VesselSdfConfig, {"variant": variant, "patch_voxels": patch, "trainer.epochs": epochs,
                                     "trainer.time_limit_s": time_limit, "trainer.val_fraction": val_fraction}, set_)
    label_value = _label(label)
    command = reproducing_command(_train_words(variant, data, out, label, device), config)
    echo_summary(train_ct_run(data, out, config, label=label_value, device=device, resume=resume, progress=not quiet,
                              command=command))


@app.command("predict")
def predict_cmd(
    run: Path = typer.Option(..., "--run", help="A training run folder (vesselfield train ... --out RUN)."),
    image: Path = typer.Option(..., "--image", help="CT volume (.nii.gz, .mha, .nrrd)."),
    out: Path = typer.Option(..., "--out", help="Output folder: sdf.nii.gz, occupancy.nii.gz, mesh.stl, "
                                                "summary.json."),
    mesh_spacing: Optional[float] = typer.Option(None, "--mesh-spacing", help="Isotropic voxel size (mm) the SDF is "
                                                                              "upsampled to for the mesh (default: "
                                                                              "the in-plane spacing)."),
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
):
    """Sliding-window prediction of a CT image: SDF and occupancy on its grid, an upsampled mesh."""
    from vesselfield.pipelines.predict_ct import predict_ct_files

    echo_summary(predict_ct_files(run, image, out, mesh_spacing_mm=mesh_spacing, device=device, progress=not quiet))


# ---------------------------------------------------------------------------------- benchmark


@benchmark_app.command("ct")
def benchmark_ct_cmd(
    data: Path = typer.Option(..., "--data", help="MSD / nnU-Net raw dataset folder; a sparsified one (vesselfield "
                                                  "data sparsify) is evaluated on its dense labels."),
    methods: List[str] = typer.Option(..., "--methods", help=VARIANT_HELP + ", or all (several allowed)."),
    out: Path = typer.Option(..., "--out", help="Benchmark folder: cases.csv, tables.md, summary.json, figures/, "
                                                "runs/<method>/ (the trainings), eval/ (per-case records)."),
    label: Optional[str] = LabelOpt,
    test_fraction: Optional[float] = typer.Option(None, "--test-fraction", help="Fraction of the cases held out for "
                                                                                "testing (default 1/3, at least "
                                                                                "one case)."),
    test_cases: Optional[List[str]] = typer.Option(None, "--test-cases", help="The test cases by name (comma-"
                                                                              "separated or repeated) instead of a "
                                                                              "seeded split."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the train/test split by case."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs of every method (default: the "
                                                                "config's, 100 as the paper)."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Seconds of training per method "
                                                                          "(checkpointed; --resume continues)."),
    set_: Optional[List[str]] = SetOpt,
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Draw figures/ (a test case's slice with "
                                                                      "every method's contour, a mesh view)."),
    device: str = DeviceOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue interrupted or time-limited trainings in --out."),
    quiet: bool = QuietOpt,
):
    """Train each method on a split of the dataset's cases, evaluate on the others, print Tables 1-2."""
    from vesselfield.cli.app import command_line
    from vesselfield.errors import VesselfieldError
    from vesselfield.pipelines.benchmark_ct import run_ct_benchmark

    names = [n for item in (test_cases or []) for n in item.replace(",", " ").split()] or None
    result = run_ct_benchmark(data, list(methods), out, label=_label(label), test_fraction=test_fraction,
                              test_cases=names, split_seed=split_seed, epochs=epochs, time_limit_s=time_limit,
                              assignments=set_, device=device, resume=resume, progress=not quiet, figures=figures,
                              command=command_line(), log=None if quiet else (lambda line: typer.echo(line, err=True)))
    typer.echo(result.tables)
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    failed = [r for r in result.rows if r.get("status") != "ok"]
    for r in failed:
        typer.echo(f"failed: {r.get('method')} / {r.get('case')}: {r.get('error')}", err=True)
    for path in result.files.values():
        typer.echo(f"wrote {path}")
    if failed and len(failed) == len(result.rows):
        raise VesselfieldError(f"every method failed; first: {failed[0].get('method')}: {failed[0].get('error')}")
