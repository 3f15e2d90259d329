"""Commands on data: phantoms, geometry files, projection, evaluation, meshing, dataset preparation."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from vesselfield.cli.app import (
    DegradeOpt,
    DeviceOpt,
    given,
    GeometryOpt,
    OriginOpt,
    SpacingOpt,
    Triple,
    app,
    build,
    data_app,
    echo_summary,
    geometry_app,
    phantom_app,
    set_option,
)

CtOpt = typer.Option(False, "--ct", help="Also write a CT-like image ct.nii.gz.")
SparseOpt = typer.Option(0, "--sparse", help="Also write ct_sparse.nii.gz keeping every K-th axial slice.")


# ------------------------------------------------------------------------------------ phantom
@phantom_app.command("coronary")
def phantom_coronary(
    out: Path = typer.Option(..., "--out", help="Output folder."),
    side: str = typer.Option("left", "--side", help="left (LM, LAD, LCx) or right (RCA) tree."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the tree's shape."),
    geometry: Optional[Path] = typer.Option(None, "--geometry", help="Geometry JSON whose volume grid to use "
                                                                     "(default: the papers' 128^3 at 0.8 mm)."),
    voxel_mm: Optional[float] = typer.Option(None, "--voxel-mm", help="Isotropic voxel size in mm instead of the "
                                                                      "geometry's."),
    ct: bool = CtOpt,
    sparse: int = SparseOpt,
):
    """Coronary-like tree: volume.nii.gz, sdf.nii.gz, mesh.stl, geometry.json."""
    from vesselfield.pipelines.phantom import write_phantom

    echo_summary(write_phantom("coronary", out, side=side, seed=seed, geometry_path=geometry, spacing_mm=voxel_mm,
                               ct=ct, sparse_every=sparse))


@phantom_app.command("swc")
def phantom_swc(
    swc: Path = typer.Argument(..., help="SWC centreline tree (id type x y z radius parent), mm."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    voxel_mm: Optional[float] = typer.Option(None, "--voxel-mm", help="Isotropic voxel size in mm (default: the phantom's, pipelines/phantom.py)."),
    ct: bool = CtOpt,
    sparse: int = SparseOpt,
):
    """Tree from an SWC file on a grid covering it: volume, exact SDF, mesh, geometry."""
    from vesselfield.pipelines.phantom import write_phantom

    echo_summary(write_phantom("swc", out, swc_path=swc, spacing_mm=voxel_mm, ct=ct, sparse_every=sparse))


@phantom_app.command("aaa")
def phantom_aaa(
    out: Path = typer.Option(..., "--out", help="Output folder."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the aneurysm's shape."),
    voxel_mm: Optional[float] = typer.Option(None, "--voxel-mm", help="Isotropic voxel size in mm (default: the phantom's, pipelines/phantom.py)."),
    ct: bool = CtOpt,
    sparse: int = SparseOpt,
):
    """Nested AAA (lumen in thrombus in wall): labels, one exact SDF and mesh per surface."""
    from vesselfield.pipelines.phantom import write_phantom

    echo_summary(write_phantom("aaa", out, seed=seed, spacing_mm=voxel_mm, ct=ct, sparse_every=sparse))


# ------------------------------------------------------------------------------------ project
@app.command("project")
def project(
    volume: Path = typer.Option(..., "--volume", help="Volume (NIfTI, MHA/NRRD, or NPY with --geometry/--spacing)."),
    geometry: Path = typer.Option(..., "--geometry", help="Geometry JSON with the views to simulate."),
    out: Path = typer.Option(..., "--out", help="Output folder for view<i>.npy and view<i>.png."),
    spacing: Triple = SpacingOpt,
    origin: Triple = OriginOpt,
    step_mm: Optional[float] = typer.Option(None, "--step-mm", help="Ray sampling step in mm (default: the "
                                                                    "projector's)."),
    threshold_mm: Optional[float] = typer.Option(None, "--threshold-mm", help="Line integral (mm) above which a "
                                                                              "pixel is vessel in the PNG masks."),
    degrade: Optional[str] = DegradeOpt,
    device: str = DeviceOpt,
):
    """Line integrals (mm) of a volume in every view: view<i>.npy (float32 [H, W]) and masks view<i>.png."""
    from vesselfield.pipelines.project import project_to_files

    echo_summary(project_to_files(volume, geometry, out, spacing_mm=spacing, origin_mm=origin, step_mm=step_mm,
                                  threshold_mm=threshold_mm, device=device, degradation=degrade))


# ----------------------------------------------------------------------------------- evaluate
@app.command("evaluate")
def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Predicted occupancy/probability in [0, 1] or binary mask."),
    gt: Path = typer.Option(..., "--gt", help="Ground-truth binary mask on the same grid."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Prediction values >= this are vessel "
                                                                        "(default: evaluate_files's, 0.5)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics as JSON here."),
    geometry: Optional[Path] = GeometryOpt,
    spacing: Triple = SpacingOpt,
    origin: Triple = OriginOpt,
):
    """Every metric (Dice, IoU, clDice, Chamfer, Hausdorff, ...) of a prediction against the truth."""
    from vesselfield.pipelines.evaluate import evaluate_files

    echo_summary(evaluate_files(pred, gt, json_path=json_out, geometry_path=geometry, spacing_mm=spacing,
                                origin_mm=origin, **given(threshold=threshold)))


# --------------------------------------------------------------------------------------- mesh
@app.command("mesh")
def mesh(
    kind: Optional[str] = typer.Argument(None, metavar="[KIND]", help="Omit for marching cubes of an SDF or "
                                         "occupancy; udf: the UDF mesher of an unsigned distance volume (open "
                                         "surfaces stay open)."),
    volume: Path = typer.Option(..., "--volume", help="SDF (mm, negative inside) or occupancy volume; with udf, an "
                                                      "unsigned distance volume (mm)."),
    out: Path = typer.Option(..., "--out", help="Mesh file: .stl, .ply, .obj or .vtp (world LPS mm)."),
    level: Optional[float] = typer.Option(None, "--level", help="Iso-level (default 0 for an SDF, 0.5 for occupancy)."),
    inside: str = typer.Option("auto", "--inside", help="Which side of the level is vessel: auto, below (SDF) or "
                                                        "above (occupancy)."),
    largest_component: bool = typer.Option(False, "--largest-component", help="Keep only the largest connected "
                                                                              "piece."),
    level_mm: Optional[float] = typer.Option(None, "--level-mm", help="udf: the distance level to mesh, mm "
                                                                      "(default 0, the surface)."),
    points: Optional[Path] = typer.Option(None, "--points", help="udf: also write the dense surface cloud "
                                                                 "(.ply, .npy, .xyz, .csv)."),
    set_: Optional[List[str]] = set_option("udf-mesh"),
    geometry: Optional[Path] = GeometryOpt,
    spacing: Triple = SpacingOpt,
    origin: Triple = OriginOpt,
):
    """Marching cubes of a volume into a surface mesh in world millimetres (`mesh udf`: the UDF mesher)."""
    from vesselfield.errors import VesselfieldError

    if kind is None:
        extra = [flag for flag, value in (("--level-mm", level_mm), ("--points", points), ("--set", set_ or None))
                 if value is not None]
        if extra:
            raise VesselfieldError(f"{', '.join(extra)} {'is' if len(extra) == 1 else 'are'} for `vesselfield mesh "
                                   "udf`; marching cubes takes --level, --inside and --largest-component")
        from vesselfield.pipelines.mesh import mesh_to_file

        echo_summary(mesh_to_file(volume, out, level=level, inside=inside, largest_component=largest_component,
                                  geometry_path=geometry, spacing_mm=spacing, origin_mm=origin))
        return
    if kind != "udf":
        raise VesselfieldError(f"unknown mesh kind {kind!r}: use `vesselfield mesh udf` or omit it for marching cubes")
    extra = [flag for flag, value in (("--level", level), ("--inside", None if inside == "auto" else inside),
                                      ("--largest-component", largest_component or None)) if value is not None]
    if extra:
        raise VesselfieldError(f"{', '.join(extra)} {'is' if len(extra) == 1 else 'are'} for marching cubes; "
                               "`mesh udf` takes --level-mm and --set keep_largest=...")
    from vesselfield.meshing.udf import UdfMeshConfig
    from vesselfield.pipelines.mesh import mesh_udf_to_file

    config = build(UdfMeshConfig, {}, set_)
    echo_summary(mesh_udf_to_file(volume, out, config=config, **given(level_mm=level_mm), points_path=points,
                                  geometry_path=geometry, spacing_mm=spacing, origin_mm=origin))


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


# --------------------------------------------------------------------------------------- data
@data_app.command("imagecas")
def data_imagecas_cmd(
    src: Path = typer.Argument(..., help="ImageCAS folder (N.label.nii.gz files, flat or in 1-200/ ... sub-folders)."),
    dst: Path = typer.Argument(..., help="Output folder: <case>_left.nii.gz, <case>_right.nii.gz, cases.csv."),
    shape: Optional[Tuple[int, int, int]] = typer.Option(None, "--shape", help="Output volume shape X Y Z (voxels; "
                                                                               "default 128^3, the papers')."),
    voxel_mm: Optional[float] = typer.Option(None, "--voxel-mm", help="Output isotropic voxel size in mm (default "
                                                                      "0.8, the papers')."),
    center: Optional[str] = typer.Option(None, "--center", help="Centre each grid on its tree (tree, the default), "
                                                                "on both trees (label) or on the file's field of "
                                                                "view (volume)."),
    min_component_voxels: Optional[int] = typer.Option(None, "--min-component-voxels", help="Components smaller "
                                                       "than this are dropped as specks (default 100)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo cases whose outputs exist."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """ImageCAS labels -> 128^3 0.8 mm left and right coronary trees (the NeCA / SDF-CAR protocol)."""
    from vesselfield.datasets.imagecas import prepare_imagecas, summarize_cases

    rows = prepare_imagecas(src, dst, overwrite=overwrite, progress=not quiet,
                            **given(shape=tuple(shape) if shape else None, spacing_mm=voxel_mm, center=center,
                                     min_component_voxels=min_component_voxels))
    typer.echo(summarize_cases(rows))
    typer.echo(f"wrote {dst / 'cases.csv'}")


LabelOpt = typer.Option(None, "--label", help="Vessel class by name or number (default: the label named like "
                                             "'vessel', else every non-zero label).")


@data_app.command("sparsify")
def data_sparsify_cmd(
    src: Path = typer.Argument(..., help="Dense MSD / nnU-Net dataset folder (dataset.json, imagesTr/, labelsTr/)."),
    out: Path = typer.Argument(..., help="New dataset folder (must not exist or be empty)."),
    every: int = typer.Option(..., "--every", help="Keep every K-th axial (z) slice."),
    offset: int = typer.Option(0, "--offset", help="First kept slice (0 <= O < K)."),
    label: Optional[str] = LabelOpt,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """Sparse axial slices of a dense dataset; the truth stays dense (sdfTr/ exact SDF, labelsDense/)."""
    from vesselfield.datasets.msd import sparsify_dataset

    echo_summary(sparsify_dataset(src, out, every, offset=offset, label=label, progress=not quiet))


@data_app.command("export-nnunet")
def data_export_nnunet_cmd(
    src: Path = typer.Argument(..., help="MSD / nnU-Net dataset folder."),
    out: Path = typer.Argument(..., help="nnUNet_raw folder: Dataset<ID>_<NAME>/ is created in it."),
    label: Optional[str] = LabelOpt,
    dataset_id: Optional[int] = typer.Option(None, "--dataset-id", help="nnU-Net dataset id, 1-999 (default 500)."),
    name: Optional[str] = typer.Option(None, "--name", help="Dataset name (default: the source's)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """Write a dataset in nnU-Net v2 raw format with a binary vessel label (a baseline for nnU-Net)."""
    from vesselfield.datasets.msd import export_nnunet

    echo_summary(export_nnunet(src, out, label=label, progress=not quiet,
                               **given(dataset_id=dataset_id, name=name)))


@data_app.command("synth-ct")
def data_synth_ct_cmd(
    kind: str = typer.Argument(..., help="phantoms (random tubes), hepatic (shared hepatic labels + synthetic CT) "
                                         "or vmtk-aorta (real CT and level-set label)."),
    out: Path = typer.Option(..., "--out", help="New dataset folder (MSD layout)."),
    cases: Optional[int] = typer.Option(None, "--cases", help="Number of cases (phantoms; default 4)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (phantoms, hepatic; default 0)."),
    inplane_factor: Optional[int] = typer.Option(None, "--inplane-factor", help="hepatic: merge F x F in-plane "
                                                                                "voxels into one (default 1)."),
    regions: Optional[int] = typer.Option(None, "--regions", help="vmtk-aorta: split along z into R cases "
                                                                  "(default 1)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """CT datasets without downloads (MSD layout), for tests, demos and benchmarks."""
    from vesselfield.errors import VesselfieldError

    allowed = {"phantoms": {"cases", "seed"}, "hepatic": {"seed", "inplane_factor"}, "vmtk-aorta": {"regions"}}
    if kind not in allowed:
        raise VesselfieldError(f"unknown synthetic dataset {kind!r}: use phantoms, hepatic or vmtk-aorta")
    options = given(cases=cases, seed=seed, inplane_factor=inplane_factor, regions=regions)
    extra = sorted(set(options) - allowed[kind])
    if extra:
        shown = ", ".join("--" + e.replace("_", "-") for e in extra)
        raise VesselfieldError(f"{shown} does not apply to synth-ct {kind}")
    from vesselfield.datasets import synthetic_ct

    if kind == "phantoms":
        if "cases" in options:
            options["n_cases"] = options.pop("cases")
        summary = synthetic_ct.make_phantom_ct_dataset(out, progress=not quiet, **options)
    elif kind == "hepatic":
        summary = synthetic_ct.make_hepatic_ct_dataset(out, progress=not quiet, **options)
    else:
        summary = synthetic_ct.make_vmtk_aorta_dataset(out, progress=not quiet, **options)
    echo_summary(summary)


@data_app.command("synth-surfaces")
def data_synth_surfaces_cmd(
    kind: str = typer.Argument(..., help="open-phantoms (open pouches and tubes with CT-like images) or vmtk-aorta "
                                         "(real CT and its surface with open ends)."),
    out: Path = typer.Option(..., "--out", help="New dataset folder (imagesTr/, meshesTr/, dataset.json)."),
    cases: Optional[int] = typer.Option(None, "--cases", help="open-phantoms: number of cases (default 4)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="open-phantoms: random seed (default 0)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
):
    """(CT image, open surface mesh) datasets without downloads, for NUDF (docs/data.md, surface datasets)."""
    from vesselfield.errors import VesselfieldError

    allowed = {"open-phantoms": {"cases", "seed"}, "vmtk-aorta": set()}
    if kind not in allowed:
        raise VesselfieldError(f"unknown surface dataset {kind!r}: use open-phantoms or vmtk-aorta")
    options = given(cases=cases, seed=seed)
    extra = sorted(set(options) - allowed[kind])
    if extra:
        shown = ", ".join("--" + e.replace("_", "-") for e in extra)
        raise VesselfieldError(f"{shown} does not apply to synth-surfaces {kind}")
    from vesselfield.datasets import synthetic_surfaces

    if kind == "open-phantoms":
        if "cases" in options:
            options["n_cases"] = options.pop("cases")
        summary = synthetic_surfaces.make_open_surface_dataset(out, progress=not quiet, **options)
    else:
        summary = synthetic_surfaces.make_vmtk_open_aorta_dataset(out, progress=not quiet)
    echo_summary(summary)
