"""The ``vesselfield`` command line: verbs over the package's jobs.

Only typer is imported at start-up; every command imports what it needs when it runs, so
``vesselfield --help`` never loads torch. A user error prints ``error: <one line>`` to stderr
and exits with status 2; no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from vesselfield.errors import VesselfieldError

app = typer.Typer(
    help="vesselfield: blood vessels as neural distance fields.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
phantom_app = typer.Typer(help="Synthetic vessels with exact ground truth.", no_args_is_help=True)
geometry_app = typer.Typer(help="C-arm cone-beam geometry files.", no_args_is_help=True)
reconstruct_app = typer.Typer(help="Reconstruct vessels (two-view X-ray: SDF-CAR, NeCA).", no_args_is_help=True)
benchmark_app = typer.Typer(help="Batch benchmarks that reproduce the papers' tables.", no_args_is_help=True)
data_app = typer.Typer(help="Prepare public datasets (ImageCAS, ...).", no_args_is_help=True)
app.add_typer(phantom_app, name="phantom")
app.add_typer(geometry_app, name="geometry")
app.add_typer(reconstruct_app, name="reconstruct")
app.add_typer(benchmark_app, name="benchmark")
app.add_typer(data_app, name="data")
fit_app = typer.Typer(help="Fit implicit neural vessel models (Alblas et al. 2022) to surface points or meshes.",
                      no_args_is_help=True)
app.add_typer(fit_app, name="fit")

# Options that take several values after one flag (``--masks A.png B.png``); click options take
# one value per flag, so main() rewrites ``--masks A B`` into ``--masks A --masks B``.
MULTI_VALUE_OPTIONS = ("--projections", "--masks", "--methods", "--cases", "--surfaces", "--models", "--names", "--shapes", "--counts")

# Options shared by every command that reads a .npy volume.
GeometryOpt = typer.Option(None, "--geometry", help="Geometry JSON; its volume grid places .npy volumes.")
SpacingOpt = typer.Option(None, "--spacing", help="Voxel spacing X Y Z in mm for a .npy volume.")
OriginOpt = typer.Option(None, "--origin", help="World position X Y Z (LPS mm) of voxel (0,0,0) of a .npy volume; default centres it.")
Triple = Optional[Tuple[float, float, float]]


def _done(paths) -> None:
    for p in paths:
        typer.echo(f"wrote {p}")


# ------------------------------------------------------------------------------------ phantom
@phantom_app.command("coronary")
def phantom_coronary(
    out: Path = typer.Option(..., "--out", help="Output folder."),
    side: str = typer.Option("left", "--side", help="left (LM, LAD, LCx) or right (RCA) tree."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the tree's shape."),
    geometry: Optional[Path] = typer.Option(None, "--geometry", help="Geometry JSON whose volume grid to use (default: the papers' 128^3 at 0.8 mm)."),
    voxel_mm: Optional[float] = typer.Option(None, "--voxel-mm", help="Isotropic voxel size in mm instead of the geometry's."),
    ct: bool = typer.Option(False, "--ct", help="Also write a CT-like image ct.nii.gz."),
    sparse: int = typer.Option(0, "--sparse", help="Also write ct_sparse.nii.gz keeping every K-th axial slice."),
):
    """Coronary-like tree: volume.nii.gz, sdf.nii.gz, mesh.stl, geometry.json."""
    from vesselfield.workflows import write_phantom

    _done(write_phantom("coronary", out, side=side, seed=seed, geometry_path=geometry,
                        spacing_mm=voxel_mm, ct=ct, sparse_every=sparse).values())


@phantom_app.command("swc")
def phantom_swc(
    swc: Path = typer.Argument(..., help="SWC centreline tree (id type x y z radius parent), mm."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    voxel_mm: float = typer.Option(0.5, "--voxel-mm", help="Isotropic voxel size in mm."),
    ct: bool = typer.Option(False, "--ct", help="Also write a CT-like image ct.nii.gz."),
    sparse: int = typer.Option(0, "--sparse", help="Also write ct_sparse.nii.gz keeping every K-th axial slice."),
):
    """Tree from an SWC file on a grid covering it: volume, exact SDF, mesh, geometry."""
    from vesselfield.workflows import write_phantom

    _done(write_phantom("swc", out, swc_path=swc, spacing_mm=voxel_mm, ct=ct, sparse_every=sparse).values())


@phantom_app.command("aaa")
def phantom_aaa(
    out: Path = typer.Option(..., "--out", help="Output folder."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the aneurysm's shape."),
    voxel_mm: float = typer.Option(1.0, "--voxel-mm", help="Isotropic voxel size in mm."),
    ct: bool = typer.Option(False, "--ct", help="Also write a CT-like image ct.nii.gz."),
    sparse: int = typer.Option(0, "--sparse", help="Also write ct_sparse.nii.gz keeping every K-th axial slice."),
):
    """Nested AAA (lumen in thrombus in wall): labels, one exact SDF and mesh per surface."""
    from vesselfield.workflows import write_phantom

    _done(write_phantom("aaa", out, seed=seed, spacing_mm=voxel_mm, ct=ct, sparse_every=sparse).values())


# ------------------------------------------------------------------------------------ project
@app.command("project")
def project(
    volume: Path = typer.Option(..., "--volume", help="Volume (NIfTI, MHA/NRRD, or NPY with --geometry/--spacing)."),
    geometry: Path = typer.Option(..., "--geometry", help="Geometry JSON with the views to simulate."),
    out: Path = typer.Option(..., "--out", help="Output folder for view<i>.npy and view<i>.png."),
    spacing: Triple = SpacingOpt,
    origin: Triple = OriginOpt,
    step_mm: Optional[float] = typer.Option(None, "--step-mm", help="Ray sampling step in mm (default: the projector's)."),
    threshold_mm: Optional[float] = typer.Option(None, "--threshold-mm", help="Line integral (mm) above which a pixel is vessel in the PNG masks."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
):
    """Line integrals (mm) of a volume in every view: view<i>.npy (float32 [H, W]) and masks view<i>.png."""
    from vesselfield.workflows import project_to_files

    _done(project_to_files(volume, geometry, out, spacing_mm=spacing, origin_mm=origin, step_mm=step_mm,
                           threshold_mm=threshold_mm, device=device))


# ----------------------------------------------------------------------------------- evaluate
@app.command("evaluate")
def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Predicted occupancy/probability in [0, 1] or binary mask."),
    gt: Path = typer.Option(..., "--gt", help="Ground-truth binary mask on the same grid."),
    threshold: float = typer.Option(0.5, "--threshold", help="Prediction values >= this are vessel."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics as JSON here."),
    geometry: Optional[Path] = GeometryOpt,
    spacing: Triple = SpacingOpt,
    origin: Triple = OriginOpt,
):
    """Every metric (Dice, IoU, clDice, Chamfer, Hausdorff, ...) of a prediction against the truth."""
    from vesselfield.metrics import format_metrics_table
    from vesselfield.workflows import evaluate_files

    metrics = evaluate_files(pred, gt, threshold=threshold, json_path=json_out, geometry_path=geometry,
                             spacing_mm=spacing, origin_mm=origin)
    typer.echo(format_metrics_table(metrics))
    if json_out is not None:
        typer.echo(f"wrote {json_out}")


# --------------------------------------------------------------------------------------- mesh
@app.command("mesh")
def mesh(
    volume: Path = typer.Option(..., "--volume", help="SDF (mm, negative inside) or occupancy volume."),
    out: Path = typer.Option(..., "--out", help="Mesh file: .stl, .ply, .obj or .vtp (world LPS mm)."),
    level: Optional[float] = typer.Option(None, "--level", help="Iso-level (default 0 for an SDF, 0.5 for occupancy)."),
    inside: str = typer.Option("auto", "--inside", help="Which side of the level is vessel: auto, below (SDF) or above (occupancy)."),
    largest_component: bool = typer.Option(False, "--largest-component", help="Keep only the largest connected piece."),
    geometry: Optional[Path] = GeometryOpt,
    spacing: Triple = SpacingOpt,
    origin: Triple = OriginOpt,
):
    """Marching cubes of a volume into a surface mesh in world millimetres."""
    from vesselfield.workflows import mesh_to_file

    if inside not in ("auto", "below", "above"):
        raise VesselfieldError(f"--inside must be auto, below or above, got {inside!r}")
    summary = mesh_to_file(volume, out, level=level, inside=inside, largest_component=largest_component,
                           geometry_path=geometry, spacing_mm=spacing, origin_mm=origin)
    typer.echo(f"wrote {out}: {summary['vertices']} vertices, {summary['faces']} faces, "
               f"watertight={summary['watertight']}, components={summary['components']}")


# ----------------------------------------------------------------------------------- geometry
@geometry_app.command("from-dicom")
def geometry_from_dicom_cmd(
    dicom: List[Path] = typer.Argument(..., help="X-ray angiography DICOM files, one per view, in view order."),
    out: Path = typer.Option(..., "--out", help="Geometry JSON to write."),
):
    """Build a geometry file from XA DICOM positioner angles, distances and detector size."""
    from vesselfield.geometry import geometry_from_dicom, save_geometry

    save_geometry(out, geometry_from_dicom(dicom))
    typer.echo(f"wrote {out}")


@geometry_app.command("default")
def geometry_default(out: Path = typer.Option(..., "--out", help="Geometry JSON to write.")):
    """Write the default two-view geometry of the NeCA and SDF-CAR papers."""
    from vesselfield.geometry import default_geometry, save_geometry

    save_geometry(out, default_geometry())
    typer.echo(f"wrote {out}")


@geometry_app.command("show")
def geometry_show(path: Path = typer.Argument(..., help="Geometry JSON.")):
    """Check a geometry file and print its views (source, detector centre, axes)."""
    from vesselfield.geometry import check_views_see_volume, load_geometry

    g = load_geometry(path)
    check_views_see_volume(g)
    v = g.volume
    typer.echo(f"volume: shape {v.shape}, spacing {v.spacing_mm} mm, origin {tuple(round(o, 3) for o in v.origin_mm)} mm")
    for i, view in enumerate(g.views, start=1):
        typer.echo(
            f"view {i}: primary {view.primary_angle_deg:g} deg, secondary {view.secondary_angle_deg:g} deg, "
            f"DSD {view.source_to_detector_mm:g} mm, DSO {view.source_to_isocenter_mm:g} mm, "
            f"detector {tuple(view.detector_shape)} at {tuple(view.pixel_spacing_mm)} mm; "
            f"source {tuple(round(float(s), 1) for s in view.source_mm)} mm"
        )


# --------------------------------------------------------------------------------------- demo
@app.command("demo")
def demo(
    out: Path = typer.Option(Path("vesselfield-demo"), "--out", help="Output folder."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the phantom."),
    method: str = typer.Option("sdf-car", "--method", help="sdf-car, neca, occ-combined or sdf-occ."),
    preset: str = typer.Option("cpu", "--preset", help="cpu or gpu."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Iterations (default: the preset's)."),
    masks_only: bool = typer.Option(False, "--masks-only", help="Reconstruct from the binary masks only."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """The main job on a built-in coronary phantom: two views, a reconstruction, metrics, mesh, report."""
    from vesselfield.metrics import format_metrics_table
    from vesselfield.workflows import run_demo

    metrics = run_demo(out, seed=seed, device=device, method=method, preset=preset, iterations=iterations,
                       masks_only=masks_only, progress=not quiet)
    typer.echo(format_metrics_table({k: v for k, v in metrics.items() if k not in ("seconds", "iterations")}))
    typer.echo(f"demo outputs are in {out.resolve()} (open reconstruction/report.html)")


# -------------------------------------------------------------------------------- reconstruct
@reconstruct_app.command("xray")
def reconstruct_xray_cmd(
    geometry: Path = typer.Option(..., "--geometry", help="Geometry JSON (views in order, volume grid)."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    projections: Optional[List[Path]] = typer.Option(None, "--projections", help="One .npy per view: float32 line integrals in mm, [H, W]."),
    masks: Optional[List[Path]] = typer.Option(None, "--masks", help="One binary mask per view: PNG (non-zero = vessel) or NPY."),
    method: str = typer.Option("sdf-car", "--method", help="sdf-car, neca, occ-combined or sdf-occ."),
    preset: str = typer.Option("cpu", "--preset", help="cpu (explicit grid, minutes on a laptop) or gpu (hash grid + MLP, the paper's)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Iterations (default: the preset's)."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Stop after S seconds (checkpointed; --resume continues)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    gt: Optional[Path] = typer.Option(None, "--gt", help="Ground-truth volume on the geometry's grid: writes metrics.json."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """Two-view coronary reconstruction: occupancy, SDF, mesh, config, log, figures, report [, metrics]."""
    from vesselfield.methods.xray_files import reconstruct_xray_files
    from vesselfield.metrics import format_metrics_table

    run = reconstruct_xray_files(geometry, out, projections=projections or None, masks=masks or None,
                                 method=method, preset=preset, iterations=iterations, time_limit_s=time_limit,
                                 device=device, gt_path=gt, resume=resume, progress=not quiet)
    result = run["result"]
    if result.stopped == "time_limit":
        typer.echo(f"stopped by --time-limit after {result.iterations} iterations; rerun with --resume to continue")
    if run["metrics"]:
        typer.echo(format_metrics_table({k: v for k, v in run["metrics"].items() if k not in ("seconds", "iterations")}))
    _done(run["paths"].values())


# ---------------------------------------------------------------------------------- benchmark
@benchmark_app.command("xray")
def benchmark_xray_cmd(
    cases: List[str] = typer.Option(..., "--cases", help="Folder of ground-truth volumes, one volume file, 'xcat', or a phantom spec such as phantom:left:0-4,right:0-4 (several allowed)."),
    out: Path = typer.Option(..., "--out", help="Output folder (results.csv, summary.md, one folder per case and method)."),
    methods: Optional[List[str]] = typer.Option(None, "--methods", help="Methods to run (default: all four)."),
    preset: str = typer.Option("cpu", "--preset", help="cpu or gpu."),
    masks_only: bool = typer.Option(False, "--masks-only", help="Reconstruct from binary masks instead of line integrals."),
    workers: int = typer.Option(1, "--workers", help="Cases run in parallel in this many processes (GPUs shared round-robin)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Run the cases as tasks on this Ray cluster (pip install ray)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Iterations per reconstruction (default: the preset's)."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Seconds per reconstruction."),
    geometry: Optional[Path] = typer.Option(None, "--geometry", help="Geometry JSON (default: the papers' two views)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Seed of every reconstruction."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
):
    """Simulate the views of every case, reconstruct with each method, evaluate, tabulate."""
    from vesselfield.bench.xray import run_xray_benchmark
    from vesselfield.methods.sdf_car import METHODS

    rows = run_xray_benchmark(list(cases) if len(cases) > 1 else cases[0], list(methods or METHODS), out, preset=preset, masks_only=masks_only,
                              workers=workers, ray_address=ray_address, iterations=iterations,
                              time_limit_s=time_limit, device=device, geometry=geometry, seed=seed,
                              progress=not quiet, command=" ".join(["vesselfield", *sys.argv[1:]]))
    failed = [r for r in rows if r.get("status") != "ok"]
    typer.echo((out / "summary.md").read_text())
    for r in failed:
        typer.echo(f"failed: {r.get('case')} / {r.get('method')}: {r.get('error')}", err=True)
    typer.echo(f"wrote {out / 'results.csv'}\nwrote {out / 'summary.md'}")
    if failed and len(failed) == len(rows):
        raise VesselfieldError("every case failed")


# --------------------------------------------------------------------------------------- data
@data_app.command("imagecas")
def data_imagecas_cmd(
    src: Path = typer.Argument(..., help="ImageCAS folder (N.label.nii.gz files, flat or in 1-200/ ... sub-folders)."),
    dst: Path = typer.Argument(..., help="Output folder: <case>_left.nii.gz, <case>_right.nii.gz, cases.csv."),
    shape: Tuple[int, int, int] = typer.Option((128, 128, 128), "--shape", help="Output volume shape X Y Z (voxels)."),
    voxel_mm: float = typer.Option(0.8, "--voxel-mm", help="Output isotropic voxel size in mm."),
    center: str = typer.Option("tree", "--center", help="Centre each grid on its tree (tree), on both trees (label) or on the file's field of view (volume)."),
    min_component_voxels: int = typer.Option(100, "--min-component-voxels", help="Components smaller than this are dropped as specks."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo cases whose outputs exist."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """ImageCAS labels -> 128^3 0.8 mm left and right coronary trees (the NeCA / SDF-CAR protocol)."""
    from vesselfield.datasets.imagecas import prepare_imagecas, summarize_cases

    rows = prepare_imagecas(src, dst, shape=tuple(shape), spacing_mm=voxel_mm, center=center,
                            min_component_voxels=min_component_voxels, overwrite=overwrite, progress=not quiet)
    typer.echo(summarize_cases(rows))
    typer.echo(f"wrote {dst / 'cases.csv'}")


# ---------------------------------------------------------------------------------------- fit
# Options shared by the fit commands.
FitOutOpt = typer.Option(..., "--out", help="Output folder: model.pt, sdf.nii.gz, mesh.stl, config.yaml, log.csv, summary.json, report.html.")
FrameOpt = typer.Option("LPS", "--frame", help="Frame of the input coordinates: LPS or RAS (vmtk/Slicer surfaces are often RAS).")
ScaleOpt = typer.Option(1.0, "--scale-to-mm", help="Millimetres per file unit (10 for cm, e.g. SimVascular models).")
PresetOpt = typer.Option("fast", "--preset", help="fast (hash grid + small MLP) or paper (6 x 256 ReLU MLP, 25,000 iterations).")
FitIterationsOpt = typer.Option(None, "--iterations", help="Optimisation steps (default: the preset's).")
FitSpacingOpt = typer.Option(None, "--spacing", help="Voxel size in mm of the SDF volume and mesh (default: the shape's largest extent / 128).")
FitTimeLimitOpt = typer.Option(None, "--time-limit", help="Stop after S seconds (checkpointed; --resume continues).")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu or cuda.")
FitResumeOpt = typer.Option(False, "--resume", help="Continue an interrupted fit in --out (same settings and inputs).")
QuietOpt = typer.Option(False, "--quiet", help="No progress bar.")
SeedOpt = typer.Option(0, "--seed", help="Seed of the surface sampling.")
MeshNormalsOpt = typer.Option(True, "--normals/--no-normals", help="Use the surfaces' outward normals in the fit (IGR normal term).")


def _echo_fit(run) -> None:
    summary = run["summary"]
    fits = summary.get("fits") or {"": summary}
    for name, fit in fits.items():
        label = f"{name}: " if name else ""
        typer.echo(f"{label}{fit['iterations']} iterations in {fit['fit_seconds']:.1f} s on {fit['device']} "
                   f"(final loss {fit['final_losses'].get('loss', float('nan')):.4g})")
        if fit["stopped"] == "time_limit":
            typer.echo(f"{label}stopped by --time-limit after {fit['iterations']} iterations; rerun with --resume to continue")
    meshes = {n: s["mesh"] for n, s in summary["surfaces"].items()} if isinstance(summary["surfaces"], dict) \
        else {"mesh": summary["mesh"]}
    for name, m in meshes.items():
        if m is not None:
            typer.echo(f"{name}: {m['vertices']} vertices, {m['faces']} faces, watertight={m['watertight']}, "
                       f"components={m['components']}")
    if "nesting_violation_fraction" in summary:
        typer.echo(f"nesting ({summary['mode']}): broken at {100 * summary['nesting_violation_fraction']:.3g} % "
                   "of uniform samples (nesting.json)")
    for w in summary["warnings"]:
        typer.echo(f"warning: {w}")
    _done(run["paths"].values())


@fit_app.command("points")
def fit_points_cmd(
    points: Path = typer.Option(..., "--points", help="Surface points: .npy, .ply, .xyz, .txt or .csv (x y z [nx ny nz])."),
    out: Path = FitOutOpt,
    normals: bool = typer.Option(False, "--normals", help="Use the outward normals stored in the file (6 columns)."),
    frame: str = FrameOpt,
    scale_to_mm: float = ScaleOpt,
    preset: str = PresetOpt,
    iterations: Optional[int] = FitIterationsOpt,
    spacing: Optional[float] = FitSpacingOpt,
    time_limit: Optional[float] = FitTimeLimitOpt,
    device: str = DeviceOpt,
    resume: bool = FitResumeOpt,
    quiet: bool = QuietOpt,
):
    """Implicit SDF of a point cloud (IGR loss): model, SDF volume, mesh, config, log, summary, report."""
    from vesselfield.methods.inr_files import fit_points_files

    _echo_fit(fit_points_files(points, out, use_normals=normals, frame=frame, scale_to_mm=scale_to_mm, preset=preset,
                               iterations=iterations, spacing_mm=spacing, time_limit_s=time_limit, device=device,
                               resume=resume, progress=not quiet))


@fit_app.command("mesh")
def fit_mesh_cmd(
    mesh: Path = typer.Option(..., "--mesh", help="Triangle surface: .stl, .ply, .obj or .vtp."),
    n_points: int = typer.Option(..., "--n-points", help="Surface points to sample (uniform by area)."),
    out: Path = FitOutOpt,
    seed: int = SeedOpt,
    normals: bool = MeshNormalsOpt,
    frame: str = FrameOpt,
    scale_to_mm: float = ScaleOpt,
    preset: str = PresetOpt,
    iterations: Optional[int] = FitIterationsOpt,
    spacing: Optional[float] = FitSpacingOpt,
    time_limit: Optional[float] = FitTimeLimitOpt,
    device: str = DeviceOpt,
    resume: bool = FitResumeOpt,
    quiet: bool = QuietOpt,
):
    """Implicit SDF of N points sampled on a surface mesh (also written to points.ply)."""
    from vesselfield.methods.inr_files import fit_mesh_files

    _echo_fit(fit_mesh_files(mesh, out, n_points=n_points, seed=seed, use_normals=normals, frame=frame,
                             scale_to_mm=scale_to_mm, preset=preset, iterations=iterations, spacing_mm=spacing,
                             time_limit_s=time_limit, device=device, resume=resume, progress=not quiet))


@fit_app.command("nested")
def fit_nested_cmd(
    surfaces: List[Path] = typer.Option(..., "--surfaces", help="Nested surfaces, innermost first (meshes or point files)."),
    out: Path = typer.Option(..., "--out", help="Output folder: model.pt, sdf_<name>.nii.gz, mesh_<name>.stl, nesting.json, ..."),
    names: Optional[List[str]] = typer.Option(None, "--names", help="One name per surface (default: the file names)."),
    separate: bool = typer.Option(False, "--separate", help="One network per surface (DIR/<name>/) instead of one joint network, to compare."),
    n_points: int = typer.Option(5000, "--n-points", help="Points sampled on each mesh surface."),
    nesting_weight: Optional[float] = typer.Option(None, "--nesting-weight", help="Weight of the nesting penalty (default: the preset's, 0)."),
    seed: int = SeedOpt,
    normals: bool = MeshNormalsOpt,
    frame: str = FrameOpt,
    scale_to_mm: float = ScaleOpt,
    preset: str = PresetOpt,
    iterations: Optional[int] = FitIterationsOpt,
    spacing: Optional[float] = FitSpacingOpt,
    time_limit: Optional[float] = FitTimeLimitOpt,
    device: str = DeviceOpt,
    resume: bool = FitResumeOpt,
    quiet: bool = QuietOpt,
):
    """Nested surfaces (lumen, wall, ...) in one network with one SDF per surface; nesting.json."""
    from vesselfield.methods.inr_files import fit_nested_files

    _echo_fit(fit_nested_files(surfaces, out, names=names or None, separate=separate, n_points=n_points,
                               nesting_weight=nesting_weight, seed=seed, use_normals=normals, frame=frame,
                               scale_to_mm=scale_to_mm, preset=preset, iterations=iterations, spacing_mm=spacing,
                               time_limit_s=time_limit, device=device, resume=resume, progress=not quiet))


# -------------------------------------------------------------------------------------- blend
@app.command("blend")
def blend_cmd(
    models: List[Path] = typer.Option(..., "--models", help="Fitted model folders (fit points/mesh/nested outputs)."),
    k: float = typer.Option(..., "--k", help="Smoothing width of the smooth union in mm (0: plain union)."),
    spacing: float = typer.Option(..., "--spacing", help="Voxel size in mm of the blended SDF and mesh."),
    out: Path = typer.Option(..., "--out", help="Output folder: sdf.nii.gz, mesh.stl, summary.json, config.yaml."),
    surface: Optional[str] = typer.Option(None, "--surface", help="Surface to use of multi-surface (nested) models."),
):
    """Join vessel models with a smooth union (Alblas et al. 2022) into one SDF and one mesh for CFD."""
    from vesselfield.methods.inr_files import blend_files

    run = blend_files(models, out, k_mm=k, spacing_mm=spacing, surface=surface)
    m = run["summary"]["mesh"]
    typer.echo(f"blended {len(models)} model(s): {m['vertices']} vertices, {m['faces']} faces, "
               f"watertight={m['watertight']}, components={m['components']}")
    if run["warning"]:
        typer.echo(f"warning: {run['warning']}")
    else:
        typer.echo("the mesh is watertight and in one piece: ready for CFD meshing")
    _done(run["paths"].values())


# -------------------------------------------------------------------------------------- study
study_app = typer.Typer(help="Studies of the implicit vessel models (Alblas et al. 2022).", no_args_is_help=True)
app.add_typer(study_app, name="study")


@study_app.command("robustness")
def study_robustness_cmd(
    shapes: List[str] = typer.Option(..., "--shapes", help="vmtk-aorta, simvascular, aaa:SEED[:SURFACE] and/or closed mesh files."),
    counts: List[int] = typer.Option([100, 200, 400, 600, 800, 1000], "--counts", help="Surface points per fit (each >= 10)."),
    repeats: int = typer.Option(20, "--repeats", help="Fits per shape and count, each with fresh points (paper: 20)."),
    out: Path = typer.Option(..., "--out", help="Output folder: results.csv (resumable), summary.md, boxplot_dice.png, boxplot_asd.png."),
    preset: str = typer.Option("fast", "--preset", help="fast or paper."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Optimisation steps per fit (default: the preset's)."),
    workers: int = typer.Option(1, "--workers", help="Fits in parallel, one process and one torch thread each."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Base seed of the point sampling and initialisation."),
    n_held_out: int = typer.Option(2000, "--n-held-out", help="Held-out surface points per fit for the ASD."),
    spacing: float = typer.Option(1.0, "--spacing", help="Voxel size in mm of the reference volumes of simvascular, aaa:* and mesh files."),
    frame: str = typer.Option("LPS", "--frame", help="Frame of the mesh files: LPS or RAS."),
    scale_to_mm: float = typer.Option(1.0, "--scale-to-mm", help="Millimetres per unit of the mesh files (10 for cm)."),
    normals: bool = typer.Option(False, "--normals", help="Also fit the mesh's outward normals at the points (IGR normal term; the paper fits bare points)."),
    quiet: bool = typer.Option(False, "--quiet", help="No line per fit."),
):
    """Robustness to sparsity (the paper's Fig. 3): DSC and ASD against the number of surface points."""
    import shlex

    from vesselfield.bench.robustness import check_study_args, check_shape_specs, resolve_shapes, run_robustness_study
    from vesselfield.methods.implicit_vessel import inr_config

    # Check everything cheap before loading shapes or fitting.
    check_study_args(counts, repeats, n_held_out, workers)
    check_shape_specs(shapes)
    inr_config(preset, **({} if iterations is None else {"iterations": iterations}))
    resolved = resolve_shapes(shapes, spacing_mm=spacing, frame=frame, scale_to_mm=scale_to_mm)
    run_robustness_study(resolved, counts=counts, repeats=repeats, preset=preset, iterations=iterations,
                         n_held_out=n_held_out, out_dir=out, workers=workers, seed=seed, device=device,
                         normals=normals, progress=not quiet, command=shlex.join(["vesselfield", *sys.argv[1:]]))
    _done([out / "results.csv", out / "summary.md", out / "boxplot_dice.png", out / "boxplot_asd.png"])


# --------------------------------------------------------------------------------------- main
def expand_multi_value_options(args: List[str]) -> List[str]:
    """``--masks A B --out D`` -> ``--masks A --masks B --out D`` for :data:`MULTI_VALUE_OPTIONS`."""
    out: List[str] = []
    current = None
    for word in args:
        if word == "--":
            current = None
            out.append(word)
        elif word.startswith("-") and len(word) > 1 and not _is_number(word):
            current = word if word in MULTI_VALUE_OPTIONS else None
            out.append(word)
        elif current is not None and out and out[-1] != current:
            out += [current, word]
        else:
            out.append(word)
    return out


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the console script; returns the exit status when called from Python."""
    args = expand_multi_value_options(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, prog_name="vesselfield", standalone_mode=False)
    except VesselfieldError as exc:
        typer.echo(f"error: {exc}", err=True)
        return _exit(2, argv)
    except FileNotFoundError as exc:
        typer.echo(f"error: file not found: {exc.filename or exc}", err=True)
        return _exit(2, argv)
    except OSError as exc:
        typer.echo(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
        return _exit(2, argv)
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        return _exit(130, argv)
    except typer.Exit as exc:  # --help and friends
        return _exit(exc.exit_code, argv)
    except Exception as exc:
        # Usage errors from typer's bundled click: report them in one line like ours.
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            message = exc.format_message()
            if message:  # an empty message follows a help page already printed (no arguments)
                typer.echo(f"error: {message} (see --help)", err=True)
            return _exit(2, argv)
        if type(exc).__name__ == "Abort":
            typer.echo("error: aborted", err=True)
            return _exit(1, argv)
        raise
    return _exit(0, argv)


def _exit(code: int, argv) -> int:
    # As a console script, exit with the status; from Python (argv given), return it.
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    main()
