"""``vesselfield reconstruct xray``: view files in, a two-view reconstruction, metrics and a report out.

:func:`reconstruct_xray_files` reads and checks every input, then :func:`reconstruct_xray_run`
prepares the run folder (:mod:`vesselfield.io.run_folder`), runs
:func:`~vesselfield.methods.sdf_car.reconstruct_xray` with its checkpoints there and writes
(each file atomically)::

    DIR/occupancy.nii.gz       float32 occupancy in [0, 1] on the geometry's grid (LPS mm, RAS affine)
    DIR/sdf.nii.gz             float32 signed distance (mm) to the 0.5 surface, negative inside
    DIR/mesh.stl               the 0.5 surface, world mm (LPS)
    DIR/config.yaml            the command that reruns it, the inputs, every SdfCarConfig field
    DIR/log.csv                one row per iteration (and checkpoint.pt, for --resume)
    DIR/rendered_view<i>.npy   line integrals (mm) of the reconstruction in each view
    DIR/geometry_refined.json  the geometry after pose refinement (a geometry file; when it ran) and,
                               in pose_refinement.json, the correction found for each view
    DIR/metrics.json           with a ground truth
    DIR/summary.json           files, metrics, warnings, time and iterations
    DIR/figure_*.png, DIR/report.html   the figures and the self-contained report

``vesselfield demo`` calls :func:`reconstruct_xray_run` with the views it has just simulated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.run_folder import (
    CONFIG_NAME,
    LOG_NAME,
    RunSummary,
    array_digest,
    prepare_run_folder,
    reproducing_command,
    write_json,
)

__all__ = ["load_views", "reconstruct_xray_files", "reconstruct_xray_run", "xray_command"]


def load_views(paths, kind: str) -> list[np.ndarray]:
    """The view files: masks (PNG/NPY, non-zero = vessel) or line integrals (``.npy``, mm)."""
    from vesselfield.io.images import load_image, load_mask

    out = []
    for i, p in enumerate(paths, start=1):
        p = Path(p)
        if kind == "mask":
            out.append(load_mask(p, what=f"mask {i}"))
        else:
            if p.suffix.lower() != ".npy":
                raise VesselfieldError(f"projection {i} ({p.name}) must be a .npy file of line integrals in mm")
            out.append(load_image(p, what=f"projection {i}"))
    return out


def _load_gt(gt_path, geometry_path, grid) -> np.ndarray:
    from vesselfield.pipelines.common import read_volume

    gt, gt_grid = read_volume(gt_path, geometry_path=geometry_path, what="ground truth")
    gt_grid.require_same(grid, what="ground truth and the geometry's volume")
    if gt.min() < 0 or gt.max() > 1:
        raise VesselfieldError(
            f"ground truth {Path(gt_path).name} has values outside [0, 1] ({gt.min():g} to {gt.max():g}): "
            "pass a label (0/1) or occupancy volume"
        )
    return gt.astype(np.float32)


def xray_command(geometry_path, view_paths, kind: str, out_dir, config, *, device: str = "auto",
                 gt_path=None) -> str:
    """The ``vesselfield reconstruct xray`` command line that reruns a reconstruction with ``config``."""
    words = ["reconstruct", "xray", "--geometry", geometry_path, "--masks" if kind == "mask" else "--projections",
             *view_paths, "--out", out_dir, "--device", device]
    if gt_path is not None:
        words += ["--gt", gt_path]
    return reproducing_command(words, config)


def reconstruct_xray_files(
    geometry_path,
    out_dir,
    *,
    projections=None,
    masks=None,
    config=None,
    device: str = "auto",
    gt_path=None,
    resume: bool = False,
    progress: bool = True,
    report: bool = True,
    analyze: bool = True,
) -> RunSummary:
    """``vesselfield reconstruct xray``: read the geometry, views and ground truth, reconstruct, write.

    Args:
        geometry_path: geometry JSON (views in order, volume grid).
        out_dir: the run folder (module docstring).
        projections: one ``.npy`` of line integrals (mm, [H, W]) per view; or
        masks: one binary mask (PNG or NPY) per view.
        config: :class:`~vesselfield.methods.sdf_car.SdfCarConfig` (default: SDF-CAR, cpu preset).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        gt_path: optional ground-truth volume on the geometry's grid: metrics.json.
        resume: continue an interrupted run in ``out_dir`` (same config except iterations and time limit).
        progress: show a progress bar. report: write the figures and ``report.html``.

    Returns:
        The :class:`RunSummary`; ``objects["result"]`` is the :class:`~vesselfield.methods.sdf_car.XrayResult`,
        ``objects["analysis"]`` the :class:`~vesselfield.analysis.AnalyzedTree` (when analysed).
    """
    from vesselfield.geometry import load_geometry

    if (projections is None) == (masks is None) or not (projections or masks):
        raise VesselfieldError("give either --projections or --masks (one file per view)")
    kind = "mask" if masks else "line_integral"
    view_paths = [Path(p) for p in (masks or projections)]
    geometry = load_geometry(geometry_path)
    views = load_views(view_paths, kind)  # checked against the geometry by reconstruct_xray_run
    gt = _load_gt(gt_path, geometry_path, geometry.volume) if gt_path is not None else None
    inputs = {
        "geometry": str(Path(geometry_path).resolve()),
        "kind": kind,
        "views": [str(p.resolve()) for p in view_paths],
        "gt": str(Path(gt_path).resolve()) if gt_path is not None else None,
        "device": device,
    }
    command = xray_command(geometry_path, view_paths, kind, out_dir, _config(config), device=device, gt_path=gt_path)
    return reconstruct_xray_run(geometry, views, out_dir, kind=kind, config=config, device=device, gt=gt,
                                inputs=inputs, command=command, resume=resume, progress=progress, report=report,
                                analyze=analyze)


def _config(config):
    from vesselfield.methods.sdf_car import SdfCarConfig

    config = SdfCarConfig() if config is None else config
    if not isinstance(config, SdfCarConfig):
        raise VesselfieldError(f"config must be an SdfCarConfig, got {type(config).__name__}")
    return config


def reconstruct_xray_run(
    geometry,
    views,
    out_dir,
    *,
    kind: str,
    config=None,
    device: str = "auto",
    gt=None,
    inputs: dict | None = None,
    command: str = "",
    resume: bool = False,
    replace: bool = False,
    progress: bool = True,
    report: bool = True,
    analyze: bool = True,
    analysis_config=None,
) -> RunSummary:
    """Reconstruct from views in memory into the run folder ``out_dir`` (module docstring).

    Args:
        geometry: :class:`~vesselfield.geometry.Geometry`.
        views: per view an (H, W) image (line integrals in mm, or a mask), as ``kind`` says.
        out_dir: the run folder.
        kind: ``"line_integral"`` or ``"mask"``.
        config: :class:`~vesselfield.methods.sdf_car.SdfCarConfig`.
        gt: optional (X, Y, Z) ground-truth occupancy/label on the geometry's grid (binarised at 0.5).
        inputs, command: what ``config.yaml`` records (the files the views came from, and the
            command that reruns the run: :func:`xray_command`).
        resume, progress, report: as :func:`reconstruct_xray_files`.
        analyze: run the vessel analysis (:mod:`vesselfield.pipelines.analyze`) on the reconstruction's
            SDF into ``out_dir/analysis/`` and add it to the report. analysis_config: its
            :class:`~vesselfield.analysis.AnalysisConfig` (default: half the reconstruction's voxel).
        replace: start afresh over an earlier run in ``out_dir`` instead of refusing (the demo).

    ``--resume`` refuses other views or another geometry: ``config.yaml`` records digests of both.
    """
    from vesselfield.io import save_mesh, save_volume
    from vesselfield.io.images import save_image_npy
    from vesselfield.meshing import format_mesh_summary, mesh_from_volume, mesh_summary
    from vesselfield.methods.sdf_car import check_views, reconstruct_xray

    config = _config(config)
    views = check_views(geometry, views, kind)
    if gt is not None:
        geometry.volume.check_array(np.asarray(gt), "ground truth")
    inputs = {**(inputs or {}), "kind": kind, "views_sha256": [array_digest(v) for v in views],
              "geometry_views": geometry.to_dict()}
    out = prepare_run_folder(out_dir, verb="reconstruct xray", config=config, inputs=inputs, command=command,
                             resume=resume, replace=replace, identity_inputs=("kind", "views_sha256", "geometry_views"))
    result = reconstruct_xray(geometry, views, kind=kind, config=config, device=device, out_dir=out, resume=resume,
                              progress=progress)

    grid = result.grid
    summary = RunSummary(verb="reconstruct xray", out_dir=out, objects={"result": result})
    files = summary.files
    files["config"] = out / CONFIG_NAME
    if (out / LOG_NAME).exists():  # a run stopped before its first iteration has no log
        files["log"] = out / LOG_NAME
    save_volume(out / "occupancy.nii.gz", result.occupancy, grid)
    files["occupancy"] = out / "occupancy.nii.gz"
    # An empty (or full) reconstruction has an infinite distance everywhere: stored as ±1e4 mm.
    save_volume(out / "sdf.nii.gz", np.nan_to_num(result.sdf, posinf=1e4, neginf=-1e4).astype(np.float32), grid)
    files["sdf"] = out / "sdf.nii.gz"
    mesh, mesh_info = None, None
    if (result.occupancy >= 0.5).any():
        mesh = mesh_from_volume(result.occupancy, grid, 0.5, inside="above")
        save_mesh(out / "mesh.stl", mesh)
        files["mesh"] = out / "mesh.stl"
        mesh_info = mesh_summary(mesh)
    else:
        summary.warnings.append("the reconstruction is empty (no occupancy >= 0.5): no mesh.stl written")
    for i, image in enumerate(result.rendered, start=1):
        save_image_npy(out / f"rendered_view{i}.npy", image)
        files[f"rendered_view{i}"] = out / f"rendered_view{i}.npy"
    pose_lines = []
    if result.pose is not None:
        from vesselfield.geometry import save_geometry

        save_geometry(out / "geometry_refined.json", result.pose.geometry)
        files["geometry_refined"] = out / "geometry_refined.json"
        files["pose_refinement"] = write_json(out / "pose_refinement.json", result.pose.to_dict())
        for c in result.pose.corrections[1:]:
            if c.get("skipped"):
                summary.warnings.append(f"pose refinement of view {c['view']} skipped: {c['skipped']}")
                continue
            pose_lines.append(
                f"view {c['view']} refined: primary {c['primary_offset_deg']:+.2f}°, secondary "
                f"{c['secondary_offset_deg']:+.2f}°, object shift {np.round(c['shift_mm'], 2).tolist()} mm; landmark "
                f"residual {c['residual_px_before']:.2f} -> {c['residual_px_after']:.2f} px")
    connection = result.info.get("connection")
    if connection and connection.get("components_after", 1) > 1:
        summary.warnings.append(f"the reconstruction is {connection['components_after']} separate pieces (the gaps "
                                f"between them were not bridged: connect_max_gap_mm, docs/methods/sdf-car.md)")
    if gt is not None:
        from vesselfield.metrics import evaluate_volumes

        summary.metrics = {**evaluate_volumes(result.occupancy, np.asarray(gt) >= 0.5, grid, threshold=0.5),
                           "seconds": float(result.seconds), "iterations": int(result.iterations)}
        files["metrics"] = write_json(out / "metrics.json", summary.metrics)

    analysis = None
    if analyze and mesh is not None:
        from vesselfield.analysis import AnalysisConfig
        from vesselfield.analysis.fields import occupancy_field
        from vesselfield.pipelines.analyze import analysis_after_run

        # The reconstruction's smooth occupancy (its 0.5 level is the mesh's surface), interpolated; the
        # topology on half its voxel: distal coronaries are about one voxel in radius.
        acfg = analysis_config or AnalysisConfig(spacing_mm=0.5 * float(min(grid.spacing_mm)))
        field = occupancy_field(result.occupancy, grid, kind="sdf-car", interpolate=True)
        analysis, a_files, a_lines, a_warnings = analysis_after_run(field, out, config=acfg)
        files.update(a_files)
        summary.warnings.extend(a_warnings)
    summary.details = {
        "method": config.method, "preset": config.preset, "input": kind, "iterations": int(result.iterations),
        "iterations_planned": int(config.iterations), "stopped": result.stopped,
        "optimisation_seconds": round(float(result.seconds), 3), "setup_seconds": round(float(result.setup_seconds), 3),
        "hull_voxels": int(result.hull_voxels), "device": result.info.get("device", ""), "mesh": mesh_info,
        "noise_sigma_mm": result.info.get("noise_sigma_mm"), "connection": connection,
        "pose_refinement": result.pose.corrections if result.pose is not None else None,
    }
    summary.lines.append(f"{result.iterations} iterations in {result.seconds:.1f} s on {result.info.get('device')} "
                         f"(+ {result.setup_seconds:.1f} s set-up: visual hull of {result.hull_voxels} voxels)")
    if result.stopped == "time_limit":
        summary.lines.append(f"stopped by --time-limit after {result.iterations} iterations; rerun with --resume "
                             "to continue")
    summary.lines.extend(pose_lines)
    if mesh_info is not None:
        summary.lines.append(f"mesh: {format_mesh_summary(mesh_info)}")
    if analysis is not None:
        from vesselfield.pipelines.analyze import analysis_details

        summary.lines.extend(a_lines)
        summary.details["analysis"] = analysis_details(analysis)
        summary.objects["analysis"] = analysis
    if report:
        from vesselfield.report.sdf_car import write_xray_report

        info = {
            "method": config.method,
            "preset": config.preset,
            "input": "binary masks" if kind == "mask" else "line integrals (mm)",
            "iterations": result.iterations,
            "optimisation time (s)": round(result.seconds, 1),
            "set-up time (s)": round(result.setup_seconds, 1),
            "visual hull (voxels)": result.hull_voxels,
            "device": result.info.get("device", ""),
        }
        if connection:
            info["pieces joined / removed / left"] = (f"{connection['bridged']} / {connection['removed']} / "
                                                      f"{connection['components_after']}")
        for line in pose_lines:
            info[line.split(" refined:")[0] + " pose correction"] = line.split("refined: ")[1]
        files["report"] = write_xray_report(
            out, geometry=geometry, targets=views, kind=kind, rendered=result.rendered,
            occupancy=result.occupancy, mesh=mesh, gt_occupancy=gt, metrics=summary.metrics, log_rows=result.log,
            title=f"vesselfield {config.method} reconstruction", info=info,
            k_per_mm=config.silhouette_k_per_mm, warnings=summary.warnings, analysis=analysis)
    summary.write()
    return summary
