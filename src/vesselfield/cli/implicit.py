"""Implicit neural vessel model commands: ``fit points|mesh|nested``, ``blend``, ``study robustness``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vesselfield.cli.app import (
    DeviceOpt,
    NoAnalyzeOpt,
    given,
    IterationsOpt,
    QuietOpt,
    ResumeOpt,
    TimeLimitOpt,
    app,
    build,
    command_line,
    echo_summary,
    fit_app,
    set_option,
    study_app,
)

FitOutOpt = typer.Option(..., "--out", help="Output folder: model.pt, sdf.nii.gz, mesh.stl, config.yaml, log.csv, "
                                            "summary.json, report.html.")
FrameOpt = typer.Option(None, "--frame", help="Frame of the input coordinates: LPS (the world frame) or RAS "
                                             "(vmtk/Slicer surfaces are often RAS).")
ScaleOpt = typer.Option(None, "--scale-to-mm", help="Millimetres per file unit (10 for cm, e.g. SimVascular models; "
                                                    "default: the file is in mm).")
PresetOpt = typer.Option(None, "--preset", help="fast (small Softplus MLP) or paper (6 x 256 ReLU MLP, 25,000 "
                                                "iterations); default: the config's.")
FitSpacingOpt = typer.Option(None, "--spacing", help="Voxel size in mm of the SDF volume and mesh (default: the "
                                                     "shape's largest extent / 128).")
SeedOpt = typer.Option(None, "--seed", help="Seed of the surface sampling (default: the pipeline's).")
MeshNormalsOpt = typer.Option(True, "--normals/--no-normals", help="Use the surfaces' outward normals in the fit "
                                                                   "(IGR normal term).")
SetOpt = set_option("implicit-vessel")


def _fit_config(preset, iterations, time_limit, assignments, **more):
    from vesselfield.methods.implicit_vessel import ImplicitVesselConfig

    return build(ImplicitVesselConfig, {"preset": preset, "iterations": iterations, "time_limit_s": time_limit,
                                        **more}, assignments)


@fit_app.command("points")
def fit_points_cmd(
    points: Path = typer.Option(..., "--points", help="Surface points: .npy, .ply, .xyz, .txt or .csv (x y z "
                                                      "[nx ny nz])."),
    out: Path = FitOutOpt,
    normals: bool = typer.Option(False, "--normals", help="Use the outward normals stored in the file (6 columns)."),
    frame: str = FrameOpt,
    scale_to_mm: float = ScaleOpt,
    preset: Optional[str] = PresetOpt,
    iterations: Optional[int] = IterationsOpt,
    spacing: Optional[float] = FitSpacingOpt,
    time_limit: Optional[float] = TimeLimitOpt,
    set_: Optional[List[str]] = SetOpt,
    device: str = DeviceOpt,
    resume: bool = ResumeOpt,
    no_analyze: bool = NoAnalyzeOpt,
    quiet: bool = QuietOpt,
):
    """Implicit SDF of a point cloud (IGR loss): model, SDF volume, mesh, config, log, summary, report."""
    from vesselfield.pipelines.fit import fit_points_files

    echo_summary(fit_points_files(points, out, config=_fit_config(preset, iterations, time_limit, set_),
                                  use_normals=normals, spacing_mm=spacing, device=device, resume=resume,
                                  progress=not quiet, analyze=not no_analyze, **given(frame=frame, scale_to_mm=scale_to_mm)))


@fit_app.command("mesh")
def fit_mesh_cmd(
    mesh: Path = typer.Option(..., "--mesh", help="Triangle surface: .stl, .ply, .obj or .vtp."),
    n_points: int = typer.Option(..., "--n-points", help="Surface points to sample (uniform by area)."),
    out: Path = FitOutOpt,
    seed: int = SeedOpt,
    normals: bool = MeshNormalsOpt,
    frame: str = FrameOpt,
    scale_to_mm: float = ScaleOpt,
    preset: Optional[str] = PresetOpt,
    iterations: Optional[int] = IterationsOpt,
    spacing: Optional[float] = FitSpacingOpt,
    time_limit: Optional[float] = TimeLimitOpt,
    set_: Optional[List[str]] = SetOpt,
    device: str = DeviceOpt,
    resume: bool = ResumeOpt,
    no_analyze: bool = NoAnalyzeOpt,
    quiet: bool = QuietOpt,
):
    """Implicit SDF of N points sampled on a surface mesh (also written to points.ply)."""
    from vesselfield.pipelines.fit import fit_mesh_files

    echo_summary(fit_mesh_files(mesh, out, n_points=n_points, config=_fit_config(preset, iterations, time_limit, set_),
                                use_normals=normals, spacing_mm=spacing, device=device, resume=resume,
                                progress=not quiet, analyze=not no_analyze, **given(seed=seed, frame=frame, scale_to_mm=scale_to_mm)))


@fit_app.command("nested")
def fit_nested_cmd(
    surfaces: List[Path] = typer.Option(..., "--surfaces", help="Nested surfaces, innermost first (meshes or point "
                                                                "files)."),
    out: Path = typer.Option(..., "--out", help="Output folder: model.pt, sdf_<name>.nii.gz, mesh_<name>.stl, "
                                                "nesting.json, ..."),
    names: Optional[List[str]] = typer.Option(None, "--names", help="One name per surface (default: the file names)."),
    separate: bool = typer.Option(False, "--separate", help="One network per surface (DIR/<name>/) instead of one "
                                                            "joint network, to compare."),
    n_points: Optional[int] = typer.Option(None, "--n-points", help="Points sampled on each mesh surface (default: "
                                                                    "pipelines.fit.DEFAULT_NESTED_POINTS)."),
    nesting_weight: Optional[float] = typer.Option(None, "--nesting-weight", help="Weight of the nesting penalty "
                                                                                  "(default: the config's, 0)."),
    seed: int = SeedOpt,
    normals: bool = MeshNormalsOpt,
    frame: str = FrameOpt,
    scale_to_mm: float = ScaleOpt,
    preset: Optional[str] = PresetOpt,
    iterations: Optional[int] = IterationsOpt,
    spacing: Optional[float] = FitSpacingOpt,
    time_limit: Optional[float] = TimeLimitOpt,
    set_: Optional[List[str]] = SetOpt,
    device: str = DeviceOpt,
    resume: bool = ResumeOpt,
    no_analyze: bool = NoAnalyzeOpt,
    quiet: bool = QuietOpt,
):
    """Nested surfaces (lumen, wall, ...) in one network with one SDF per surface; nesting.json."""
    from vesselfield.pipelines.fit import fit_nested_files

    config = _fit_config(preset, iterations, time_limit, set_, nesting_weight=nesting_weight)
    echo_summary(fit_nested_files(surfaces, out, names=names or None, separate=separate, config=config,
                                  use_normals=normals, spacing_mm=spacing, device=device, resume=resume,
                                  progress=not quiet, analyze=not no_analyze, **given(n_points=n_points, seed=seed, frame=frame,
                                                               scale_to_mm=scale_to_mm)))


# -------------------------------------------------------------------------------------- blend
@app.command("blend")
def blend_cmd(
    models: List[Path] = typer.Option(..., "--models", help="Fitted model folders (fit points/mesh/nested outputs)."),
    out: Path = typer.Option(..., "--out", help="Output folder: sdf.nii.gz, mesh.stl, summary.json, config.yaml."),
    k: Optional[float] = typer.Option(None, "--k", help="Smoothing width of the smooth union in mm (0: plain union; "
                                                        "default: the blend config's)."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Voxel size in mm of the blended SDF and mesh "
                                                                    "(default: the blend config's)."),
    surface: Optional[str] = typer.Option(None, "--surface", help="Surface to use of multi-surface (nested) models."),
    set_: Optional[List[str]] = set_option("blend"),
    device: str = DeviceOpt,
):
    """Join vessel models with a smooth union (Alblas et al. 2022) into one SDF and one mesh for CFD."""
    from vesselfield.methods.implicit_vessel import BlendConfig
    from vesselfield.pipelines.blend import blend_files

    config = build(BlendConfig, {"k_mm": k, "spacing_mm": spacing, "surface": surface}, set_)
    echo_summary(blend_files(models, out, config=config, device=device))


# -------------------------------------------------------------------------------------- study
@study_app.command("robustness")
def study_robustness_cmd(
    shapes: List[str] = typer.Option(..., "--shapes", help="vmtk-aorta, simvascular, aaa:SEED[:SURFACE], "
                                                           "tree:SEED (a 31-branch tree phantom) and/or closed "
                                                           "mesh files."),
    out: Path = typer.Option(..., "--out", help="Output folder: results.csv (resumable), summary.md, "
                                                "boxplot_dice.png, boxplot_asd.png."),
    counts: Optional[List[int]] = typer.Option(None, "--counts", help="Surface points per fit, each >= 10 (default: "
                                                                      "the paper's 100-1000)."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Fits per shape and count, each with fresh points "
                                                                  "(default: the paper's 20)."),
    preset: Optional[str] = PresetOpt,
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Optimisation steps per fit (default: the "
                                                                        "preset's)."),
    set_: Optional[List[str]] = SetOpt,
    workers: int = typer.Option(1, "--workers", help="Fits in parallel, one process and one torch thread each."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda (default: the study's, the CPU: "
                                                                "fits are small)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Base seed of the point sampling and initialisation "
                                                            "(default: the study's)."),
    n_held_out: Optional[int] = typer.Option(None, "--n-held-out", help="Held-out surface points per fit for the "
                                                                        "ASD (default: the study's)."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Voxel size in mm of the reference volumes of "
                                                                    "simvascular, aaa:* and mesh files (default: the "
                                                                    "study's)."),
    frame: Optional[str] = typer.Option(None, "--frame", help="Frame of the mesh files: LPS (the world frame) or RAS."),
    scale_to_mm: Optional[float] = typer.Option(None, "--scale-to-mm", help="Millimetres per unit of the mesh files "
                                                                            "(10 for cm; default: mm)."),
    normals: bool = typer.Option(False, "--normals", help="Also fit the mesh's outward normals at the points (IGR "
                                                          "normal term; the paper fits bare points)."),
    quiet: bool = typer.Option(False, "--quiet", help="No line per fit."),
):
    """Robustness to sparsity (the paper's Fig. 3): DSC and ASD against the number of surface points."""
    from vesselfield.bench.robustness import check_shape_specs, check_study_args, resolve_shapes, run_robustness_study
    from vesselfield.config import config_values
    from vesselfield.methods.implicit_vessel import ImplicitVesselConfig

    # Check everything cheap before loading shapes or fitting.
    overrides = config_values(ImplicitVesselConfig, {"iterations": iterations}, set_)
    build(ImplicitVesselConfig, {"preset": preset, **overrides}, None)
    check_study_args(counts, repeats, n_held_out, workers)
    check_shape_specs(shapes)
    resolved = resolve_shapes(shapes, **given(spacing_mm=spacing, frame=frame, scale_to_mm=scale_to_mm))
    run_robustness_study(resolved, out_dir=out, workers=workers, normals=normals, progress=not quiet,
                         command=command_line(), config_overrides=overrides,
                         **given(preset=preset, counts=counts, repeats=repeats, n_held_out=n_held_out, seed=seed,
                                  device=device))
    for name in ("results.csv", "summary.md", "boxplot_dice.png", "boxplot_asd.png"):
        typer.echo(f"wrote {out / name}")
