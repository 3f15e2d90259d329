"""CT commands: ``train``, ``predict``, ``benchmark ct`` (VesselSDF and its baselines) and ``benchmark nudf``
(NUDF and unet-roi: ``train`` and ``predict`` dispatch on the variant and on the run's model file)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from vesselfield.cli.app import (
    DeviceOpt,
    NoAnalyzeOpt,
    QuietOpt,
    ResumeOpt,
    TimeLimitOpt,
    app,
    benchmark_app,
    build,
    echo_summary,
    set_option,
)

LabelOpt = typer.Option(None, "--label", help="Vessel label, by name or number (default: the label named like "
                                              "'vessel', else every non-zero label).")
SetOpt = set_option("vessel-sdf")
VARIANT_HELP = "vessel-sdf, vessel-sdf-no-gauss, attention-unet, direct-sdf or unet3d"
#: Variants trained on (CT image, surface mesh) pairs: NUDF and its U-Net baseline (vesselfield.methods.nudf).
SURFACE_VARIANTS = ("nudf", "unet-roi")


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
    variant: str = typer.Argument(..., help=VARIANT_HELP + " (CT labels); nudf or unet-roi (CT + surface meshes)."),
    data: Path = typer.Option(..., "--data", help="MSD / nnU-Net raw dataset folder (dataset.json, imagesTr, "
                                                  "labelsTr); for nudf / unet-roi: dataset.json, imagesTr, "
                                                  "meshesTr (docs/data.md, surface datasets)."),
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
    """Train VesselSDF, NUDF or a baseline on a CT dataset; validation every epoch, best/last checkpoints, model.pt."""
    from vesselfield.io.run_folder import reproducing_command

    if variant in SURFACE_VARIANTS:
        from vesselfield.errors import VesselfieldError
        from vesselfield.methods.nudf import NudfConfig
        from vesselfield.pipelines.train_nudf import train_nudf_run

        for flag, value in (("--label", label), ("--patch", patch)):
            if value is not None:
                raise VesselfieldError(f"{flag} does not apply to train {variant} (surface meshes, not labels)")
        config = build(NudfConfig, {"variant": variant, "trainer.epochs": epochs, "trainer.time_limit_s": time_limit,
                                    "trainer.val_fraction": val_fraction}, set_)
        command = reproducing_command(_train_words(variant, data, out, None, device), config)
        echo_summary(train_nudf_run(data, out, config, device=device, resume=resume, progress=not quiet,
                                    command=command))
        return
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
                                                "summary.json (NUDF: udf.nii.gz, points.ply, mesh.stl)."),
    center: Optional[Tuple[float, float, float]] = typer.Option(None, "--center", help="NUDF / unet-roi runs: the "
                                                                "ROI centre X Y Z in world LPS mm (default: the "
                                                                "image centre, with a warning)."),
    mesh_spacing: Optional[float] = typer.Option(None, "--mesh-spacing", help="Isotropic voxel size (mm) the SDF is "
                                                                              "upsampled to for the mesh (default: "
                                                                              "the in-plane spacing)."),
    device: str = DeviceOpt,
    set_: Optional[List[str]] = typer.Option(None, "--set", help="NUDF runs: settings of the prediction, e.g. "
                                             "--set mesh.keep_mm=0.3 (mesh.FIELD of `vesselfield config show "
                                             "udf-mesh`, predict_batch_points, mesh_spacing_mm)."),
    no_analyze: bool = NoAnalyzeOpt,
    quiet: bool = QuietOpt,
):
    """Predict a CT image with a trained run: VesselSDF's SDF and occupancy on its grid and a mesh, or NUDF's
    unsigned distance, dense surface cloud and (open) mesh in a region of interest."""
    from vesselfield.methods.nudf import MODEL_FILE, is_nudf_run
    from vesselfield.pipelines.predict_ct import predict_ct_files

    if is_nudf_run(run):
        from vesselfield.errors import VesselfieldError
        from vesselfield.pipelines.predict_nudf import predict_nudf_files

        if mesh_spacing is not None:
            raise VesselfieldError("--mesh-spacing does not apply to a NUDF run (set mesh_spacing_mm at training for "
                                   "unet-roi)")
        echo_summary(predict_nudf_files(run, image, out, center_mm=center, device=device, assignments=set_))
        return
    if center is not None or set_:
        from vesselfield.errors import VesselfieldError
        from vesselfield.pipelines.predict_nudf import load_nudf_run

        if not (run / MODEL_FILE).is_file():
            load_nudf_run(run)  # says what is missing (no folder, a training not finished)
        flag = "--center" if center is not None else "--set"
        raise VesselfieldError(f"{flag} applies to NUDF / unet-roi runs only; this run predicts the whole image")
    echo_summary(predict_ct_files(run, image, out, mesh_spacing_mm=mesh_spacing, device=device, progress=not quiet,
                                  analyze=not no_analyze))


# ---------------------------------------------------------------------------------- benchmark
def _echo_benchmark(result) -> None:
    """Print a CT benchmark's tables, warnings, failed rows and files; every row failed -> one-line error."""
    from vesselfield.errors import VesselfieldError

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
    from vesselfield.pipelines.benchmark_ct import run_ct_benchmark

    names = [n for item in (test_cases or []) for n in item.replace(",", " ").split()] or None
    result = run_ct_benchmark(data, list(methods), out, label=_label(label), test_fraction=test_fraction,
                              test_cases=names, split_seed=split_seed, epochs=epochs, time_limit_s=time_limit,
                              assignments=set_, device=device, resume=resume, progress=not quiet, figures=figures,
                              command=command_line(), log=None if quiet else (lambda line: typer.echo(line, err=True)))
    _echo_benchmark(result)


@benchmark_app.command("nudf")
def benchmark_nudf_cmd(
    data: Path = typer.Option(..., "--data", help="Surface dataset folder (dataset.json, imagesTr, meshesTr)."),
    methods: List[str] = typer.Option(..., "--methods", help="nudf, unet-roi or all (several allowed)."),
    out: Path = typer.Option(..., "--out", help="Benchmark folder: cases.csv, tables.md, summary.json, "
                                                "runs/<method>/ (the trainings)."),
    test_fraction: Optional[float] = typer.Option(None, "--test-fraction", help="Fraction of the cases held out for "
                                                                                "testing (default 1/3, at least "
                                                                                "one case)."),
    test_cases: Optional[List[str]] = typer.Option(None, "--test-cases", help="The test cases by name instead of a "
                                                                              "seeded split."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the train/test split by case."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs of every method."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Seconds of training per method."),
    set_: Optional[List[str]] = set_option("nudf"),
    device: str = DeviceOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue interrupted or time-limited trainings in --out."),
    quiet: bool = QuietOpt,
):
    """Train NUDF and its U-Net baseline on a split of a surface dataset, evaluate the meshes, print Table 1."""
    from vesselfield.cli.app import command_line
    from vesselfield.pipelines.benchmark_nudf import run_nudf_benchmark

    names = [n for item in (test_cases or []) for n in item.replace(",", " ").split()] or None
    result = run_nudf_benchmark(data, list(methods), out, test_fraction=test_fraction, test_cases=names,
                                split_seed=split_seed, epochs=epochs, time_limit_s=time_limit, assignments=set_,
                                device=device, resume=resume, progress=not quiet, command=command_line())
    _echo_benchmark(result)
