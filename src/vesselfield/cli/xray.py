"""Two-view X-ray commands: ``demo``, ``reconstruct xray``, ``benchmark xray``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vesselfield.cli.app import (
    DegradeOpt,
    DeviceOpt,
    NoAnalyzeOpt,
    IterationsOpt,
    QuietOpt,
    ResumeOpt,
    TimeLimitOpt,
    app,
    benchmark_app,
    build,
    command_line,
    echo_summary,
    reconstruct_app,
    set_option,
)
from vesselfield.errors import VesselfieldError

MethodOpt = typer.Option(None, "--method", help="sdf-car, neca, occ-combined or sdf-occ (default: the config's, "
                                                "`vesselfield config show sdf-car`).")
PresetOpt = typer.Option(None, "--preset", help="cpu (explicit grid, minutes on a laptop) or gpu (hash grid + MLP, "
                                                "the paper's); default: the config's.")


NoRefinePoseOpt = typer.Option(False, "--no-refine-pose", help="Use the geometry as recorded: no self-calibration of "
                                                               "the views' poses (same as --set refine_pose=false).")


def _xray_config(method, preset, iterations, time_limit, assignments, no_refine_pose: bool = False):
    from vesselfield.methods.sdf_car import SdfCarConfig

    return build(SdfCarConfig, {"method": method, "preset": preset, "iterations": iterations,
                                "time_limit_s": time_limit, "refine_pose": False if no_refine_pose else None},
                 assignments)


# --------------------------------------------------------------------------------------- demo
@app.command("demo")
def demo(
    out: Path = typer.Option(Path("vesselfield-demo"), "--out", help="Output folder."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the phantom."),
    method: Optional[str] = MethodOpt,
    preset: Optional[str] = PresetOpt,
    iterations: Optional[int] = IterationsOpt,
    masks_only: bool = typer.Option(False, "--masks-only", help="Reconstruct from the binary masks only."),
    set_: Optional[List[str]] = set_option("sdf-car"),
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
):
    """The main job on a built-in coronary phantom: two views, a reconstruction, metrics, mesh, report."""
    from vesselfield.pipelines.demo import run_demo

    config = _xray_config(method, preset, iterations, None, set_)
    echo_summary(run_demo(out, seed=seed, config=config, masks_only=masks_only, device=device, progress=not quiet))


# -------------------------------------------------------------------------------- reconstruct
@reconstruct_app.command("xray")
def reconstruct_xray_cmd(
    geometry: Path = typer.Option(..., "--geometry", help="Geometry JSON (views in order, volume grid)."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    projections: Optional[List[Path]] = typer.Option(None, "--projections", help="One .npy per view: float32 line "
                                                                                 "integrals in mm, [H, W]."),
    masks: Optional[List[Path]] = typer.Option(None, "--masks", help="One binary mask per view: PNG (non-zero = "
                                                                     "vessel) or NPY."),
    method: Optional[str] = MethodOpt,
    preset: Optional[str] = PresetOpt,
    iterations: Optional[int] = IterationsOpt,
    time_limit: Optional[float] = TimeLimitOpt,
    set_: Optional[List[str]] = set_option("sdf-car"),
    device: str = DeviceOpt,
    gt: Optional[Path] = typer.Option(None, "--gt", help="Ground-truth volume on the geometry's grid: writes "
                                                         "metrics.json."),
    resume: bool = ResumeOpt,
    no_refine_pose: bool = NoRefinePoseOpt,
    no_analyze: bool = NoAnalyzeOpt,
    quiet: bool = QuietOpt,
):
    """Two-view coronary reconstruction: occupancy, SDF, mesh, config, log, figures, report [, metrics]."""
    from vesselfield.pipelines.reconstruct_xray import reconstruct_xray_files

    config = _xray_config(method, preset, iterations, time_limit, set_, no_refine_pose)
    echo_summary(reconstruct_xray_files(geometry, out, projections=projections or None, masks=masks or None,
                                        config=config, device=device, gt_path=gt, resume=resume,
                                        progress=not quiet, analyze=not no_analyze))


# ---------------------------------------------------------------------------------- benchmark
@benchmark_app.command("xray")
def benchmark_xray_cmd(
    cases: List[str] = typer.Option(..., "--cases", help="Folder of ground-truth volumes, one volume file, 'xcat', "
                                                         "or a phantom spec such as phantom:left:0-4,right:0-4 "
                                                         "(several allowed)."),
    out: Path = typer.Option(..., "--out", help="Output folder (results.csv, summary.md, one folder per case and "
                                                "method)."),
    methods: Optional[List[str]] = typer.Option(None, "--methods", help="Methods to run (default: all four)."),
    preset: Optional[str] = PresetOpt,
    masks_only: bool = typer.Option(False, "--masks-only", help="Reconstruct from binary masks instead of line "
                                                                "integrals."),
    workers: int = typer.Option(1, "--workers", help="Cases run in parallel in this many processes (GPUs shared "
                                                     "round-robin)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Run the cases as tasks on this Ray "
                                                                          "cluster (pip install ray)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Iterations per reconstruction (default: "
                                                                        "the preset's)."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Seconds per reconstruction."),
    set_: Optional[List[str]] = set_option("sdf-car"),
    geometry: Optional[Path] = typer.Option(None, "--geometry", help="Geometry JSON (default: the papers' two "
                                                                     "views)."),
    device: str = DeviceOpt,
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of every reconstruction (default: the config's)."),
    degrade: Optional[str] = DegradeOpt,
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
):
    """Simulate the views of every case, reconstruct with each method, evaluate, tabulate."""
    from vesselfield.bench.xray import run_xray_benchmark
    from vesselfield.config import config_values
    from vesselfield.methods.sdf_car import METHODS, SdfCarConfig

    overrides = config_values(SdfCarConfig, {"iterations": iterations, "time_limit_s": time_limit, "seed": seed}, set_)
    for name in ("method", "preset"):
        if name in overrides:
            raise VesselfieldError(f"--set {name}=... is not for a benchmark: use --{name}s / --preset")
    result = run_xray_benchmark(list(cases) if len(cases) > 1 else cases[0], list(methods or METHODS), out,
                                preset=preset, masks_only=masks_only, workers=workers, ray_address=ray_address,
                                device=device, geometry=geometry, progress=not quiet, command=command_line(),
                                overrides=overrides, degradation=degrade)
    rows = result.rows
    failed = [r for r in rows if r.get("status") != "ok"]
    typer.echo(result.summary)
    for r in failed:
        typer.echo(f"failed: {r.get('case')} / {r.get('method')}: {r.get('error')}", err=True)
    typer.echo(f"wrote {result.results_path}\nwrote {result.summary_path}")
    if failed and len(failed) == len(rows):
        raise VesselfieldError("every case failed")
