"""The visual report of an X-ray reconstruction (SDF-CAR, NeCA and the ablations): figures and ``report.html``.

The figures follow what the SDF-CAR and NeCA papers show for a two-view coronary reconstruction:

- :func:`figure_views`: per view, the input (mask or line integrals, mm), the reconstruction's
  rendered projection (soft silhouette ``1 - exp(-k I)`` for masks) and their difference;
- :func:`figure_error_overlay`: the papers' error overlay (SDF-CAR Figures 2-3; NeCA Figure 4):
  green where prediction and truth overlap, red where only the prediction is, blue where the truth
  was missed;
- the generic :func:`~vesselfield.report.figures.figure_mips` (occupancy and ground truth),
  :func:`~vesselfield.report.figures.figure_mesh` and :func:`~vesselfield.report.figures.figure_losses`
  (re-exported here under the names they always had).

:func:`write_xray_report` writes them all next to ``report.html``, a
:class:`~vesselfield.report.html.ReportPage` (one file, figures embedded, no external links).
Every file is written atomically. Volume panels follow the LPS display conventions of
:mod:`vesselfield.report.figures`. Detector images are shown as stored, row 0 at the top, with
axes in detector mm (u along columns, v along rows, ``docs/geometry.md``).

Measured on the 2-core CPU (shared, load ~4): the full report of the default geometry (two
512 x 512 views, a 128³ volume, ground truth, a 2000-row log and a 100k-face mesh drawn simplified)
takes 2.6-3.7 s, of which views ~0.9 s, MIPs ~0.5 s, overlay ~0.25 s, mesh ~0.8 s (up to ~2 s at
the 60k-face budget), losses ~0.15 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.report.figures import (
    MAX_MESH_FACES,
    draw_world_plane,
    figure_losses,
    figure_mesh,
    figure_mips,
    label_axes,
    mip_panels,
    new_figure,
    save_png,
    simplify_for_display,
    volume_on_grid,
)
from vesselfield.report.html import REPORT_NAME, ReportPage, format_setting, optional_mapping, report_folder
from vesselfield.validate import require_finite

__all__ = [
    "FIGURE_FILES",
    "MAX_MESH_FACES",
    "OVERLAY_COLORS",
    "figure_error_overlay",
    "figure_losses",
    "figure_mesh",
    "figure_mips",
    "figure_views",
    "simplify_for_display",
    "write_xray_report",
]

KINDS = ("line_integral", "mask")

OVERLAY_COLORS: dict[str, tuple[float, float, float]] = {
    "overlap": (0.0, 1.0, 0.0),
    "predicted_only": (1.0, 0.0, 0.0),
    "missed": (0.0, 0.0, 1.0),
}
"""RGB of each class of :func:`figure_error_overlay`: green overlap (TP), red predicted only (FP),
blue missed (FN), as in the SDF-CAR and NeCA figures."""

_OVERLAY_LABELS = {
    "overlap": "overlap (true positive)",
    "predicted_only": "predicted only (false positive)",
    "missed": "missed (false negative)",
}

FIGURE_FILES = {
    "views": "figure_views.png",
    "mips": "figure_mips.png",
    "mesh": "figure_mesh.png",
    "error_overlay": "figure_error_overlay.png",
    "losses": "figure_losses.png",
}
"""File names of the figures :func:`write_xray_report` writes next to ``report.html`` (prefixed so
that they never overwrite input images such as ``view1.png``)."""


# ------------------------------------------------------------------------------------ inputs
def _image_list(images, what: str) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) and images.ndim == 2:
        raise VesselfieldError(f"{what} must be a list of (H, W) images, one per view, got one array")
    try:
        out = [np.asarray(im.detach().cpu() if hasattr(im, "detach") else im) for im in images]
    except TypeError:
        raise VesselfieldError(f"{what} must be a list of (H, W) images, one per view") from None
    for i, im in enumerate(out, start=1):
        if im.ndim != 2:
            raise VesselfieldError(f"{what} {i} must be a 2D (H, W) image, got shape {im.shape}")
        if im.dtype.kind not in "biuf":
            raise VesselfieldError(f"{what} {i} must hold numbers, got dtype {im.dtype}")
        require_finite(im, f"{what} {i}")
    return out


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise VesselfieldError(f"unknown input kind {kind!r}: use line_integral or mask")


def _check_threshold(threshold) -> float:
    try:
        thr = float(threshold)
    except (TypeError, ValueError):
        raise VesselfieldError(f"threshold must be a number in (0, 1], got {threshold!r}") from None
    if not 0.0 < thr <= 1.0:
        raise VesselfieldError(f"threshold must be in (0, 1], got {threshold!r}")
    return thr


def _angle_text(view) -> str:
    a, b = view.primary_angle_deg, view.secondary_angle_deg
    return f"{'LAO' if a >= 0 else 'RAO'} {abs(a):g}°, {'CRA' if b >= 0 else 'CAU'} {abs(b):g}°"


# ------------------------------------------------------------------------------------ figures
def figure_views(path, targets, rendered, kind: str, *, views=None, k_per_mm: float | None = None) -> Path:
    """Inputs, rendered projections and their differences, one row per view.

    Args:
        path: PNG file to write (atomically).
        targets: per view an (H, W) image: a binary mask (``kind="mask"``, non-zero = vessel) or
            line integrals in mm (``kind="line_integral"``).
        rendered: per view the (H, W) line integrals (mm) of the reconstruction (what
            :func:`vesselfield.render.project_volume` gives), same shapes as ``targets``.
        kind: ``"mask"`` or ``"line_integral"``.
        views: optional :class:`~vesselfield.geometry.ConeBeamView` per view: axes in detector mm
            and the gantry angles in the row titles; shapes must match their ``detector_shape``.
        k_per_mm: attenuation of the soft silhouette for masks (default
            :data:`vesselfield.render.soft_distance.DEFAULT_K_PER_MM`, the reconstruction's default).

    For masks the rendered column is the soft silhouette ``1 - exp(-k I)`` (Beer-Lambert,
    :func:`~vesselfield.render.soft_distance.soft_silhouette`) and the difference is
    ``silhouette - mask`` with limits ±1; for line integrals target and rendered share one colour
    scale (mm) and the difference ``rendered - target`` (mm) has limits ±max|difference|. Red means
    the reconstruction projects more than the input, blue less.

    Returns:
        ``Path(path)``.
    """
    _check_kind(kind)
    targets = _image_list(targets, "target")
    rendered = _image_list(rendered, "rendered view")
    if len(targets) != len(rendered):
        raise VesselfieldError(f"{len(targets)} target views but {len(rendered)} rendered views")
    if not targets:
        raise VesselfieldError("no views to show")
    for i, (t, r) in enumerate(zip(targets, rendered), start=1):
        if t.shape != r.shape:
            raise VesselfieldError(f"view {i}: target has shape {t.shape} but the rendered view has {r.shape}")
    if views is not None:
        views = list(views)
        if len(views) != len(targets):
            raise VesselfieldError(f"{len(targets)} images but {len(views)} views in the geometry")
        for i, (t, view) in enumerate(zip(targets, views), start=1):
            if t.shape != tuple(view.detector_shape):
                raise VesselfieldError(f"view {i}: image has shape {t.shape} but the detector is "
                                       f"{tuple(view.detector_shape)}")

    if kind == "mask":
        import torch

        from vesselfield.render.soft_distance import DEFAULT_K_PER_MM, soft_silhouette

        k = DEFAULT_K_PER_MM if k_per_mm is None else k_per_mm
        shown = [soft_silhouette(torch.from_numpy(r.astype(np.float64)), k).numpy() for r in rendered]
        truth = [(t != 0).astype(np.float64) for t in targets]
    else:
        shown = [r.astype(np.float64) for r in rendered]
        truth = [t.astype(np.float64) for t in targets]

    from matplotlib.colors import PowerNorm

    n = len(targets)
    fig = new_figure(12.0, 3.8 * n + 0.2)
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        h, w = truth[i].shape
        if views is not None:
            dr, dc = views[i].pixel_spacing_mm
            extent = (-0.5 * w * dc, 0.5 * w * dc, 0.5 * h * dr, -0.5 * h * dr)
            labels = ("detector u (mm)", "detector v (mm)")
            name = f"view {i + 1} ({_angle_text(views[i])})"
        else:
            extent, labels, name = None, ("column (pixel)", "row (pixel)"), f"view {i + 1}"
        name += "\n"
        diff = shown[i] - truth[i]
        if kind == "mask":
            scale = dict(cmap="gray", vmin=0.0, vmax=1.0)
            lim = 1.0
            titles = (f"{name}input mask", f"{name}rendered silhouette 1−exp(−kI)", f"{name}silhouette − mask")
            units = ("mask (0/1)", "silhouette", "difference")
        else:
            vmax = float(max(truth[i].max(), shown[i].max()))
            # A square-root scale keeps thin vessels (~1 mm chords) visible next to the ~10-20 mm
            # of a vessel seen end-on.
            scale = dict(cmap="magma", norm=PowerNorm(0.5, vmin=0.0, vmax=vmax if vmax > 0 else 1.0))
            lim = float(np.abs(diff).max())
            titles = (f"{name}input line integrals", f"{name}rendered line integrals", f"{name}rendered − input")
            units = ("mm", "mm", "mm")
        lim = lim if lim > 0 else 1e-6
        images = (truth[i], shown[i], diff)
        styles = (scale, scale, dict(cmap="RdBu_r", vmin=-lim, vmax=lim))
        for j in range(3):
            ax = axes[i, j]
            im = ax.imshow(images[j], extent=extent, origin="upper", **styles[j])
            label_axes(ax, titles[j], *labels)
            bar = fig.colorbar(im, ax=ax, shrink=0.85)
            bar.set_label(units[j], fontsize=8)
            bar.ax.tick_params(labelsize=7)
    return save_png(fig, path)


def _class_volume(pred: np.ndarray, gt: np.ndarray, threshold: float):
    p = pred >= threshold
    t = gt >= threshold
    classes = {"overlap": p & t, "predicted_only": p & ~t, "missed": ~p & t}
    counts = {name: int(np.count_nonzero(mask)) for name, mask in classes.items()}
    return classes, counts


def figure_error_overlay(path, pred, gt, grid: VolumeGrid, threshold: float = 0.5) -> tuple[Path, dict[str, int]]:
    """The error overlay of SDF-CAR (Figures 2-3) and NeCA: MIPs coloured by agreement with the truth.

    Both volumes are thresholded (``>= threshold``) into three voxel classes: overlap (green,
    true positive), predicted only (red, false positive) and missed (blue, false negative). Each
    MIP pixel takes the colour of the first class met along its projection line in the order
    green, red, blue (so a red rim around green is a too-thick prediction; an error hidden behind
    correctly reconstructed vessel along the line shows in the other two panels); white where
    neither volume has foreground. Panels as in :func:`~vesselfield.report.figures.figure_mips`.

    Args:
        path: PNG file to write (atomically).
        pred: (X, Y, Z) predicted occupancy on ``grid``.
        gt: (X, Y, Z) ground-truth occupancy or mask on ``grid``.
        grid: the volumes' :class:`VolumeGrid`.
        threshold: foreground is ``value >= threshold``, in (0, 1] (as in
            :func:`~vesselfield.metrics.evaluate_volumes`).

    Returns:
        ``(Path(path), counts)`` with voxel counts ``{"overlap", "predicted_only", "missed"}``.
    """
    thr = _check_threshold(threshold)
    pred = volume_on_grid(pred, grid, "pred")
    gt = volume_on_grid(gt, grid, "ground truth")
    classes, counts = _class_volume(pred, gt, thr)
    stacked = np.stack([classes[name] for name in ("overlap", "predicted_only", "missed")], axis=-1)

    from matplotlib.patches import Patch

    fig = new_figure(12.0, 4.4)
    axes = fig.subplots(1, 3, squeeze=False)[0]
    colors = np.array([OVERLAY_COLORS[n] for n in ("overlap", "predicted_only", "missed")])
    for ax, panel in zip(axes, mip_panels(stacked, grid)):
        rgb = np.ones(panel.image.shape[:2] + (3,))
        # Paint in reverse priority so that green ends on top, then red, then blue.
        for c in (2, 1, 0):
            rgb[panel.image[..., c]] = colors[c]
        draw_world_plane(ax, rgb, panel.axis, panel.u_range_mm, panel.v_range_mm, interpolation="nearest")
        label_axes(ax, panel.mip_name)
    handles = [Patch(facecolor=OVERLAY_COLORS[n], edgecolor="black", linewidth=0.5,
                     label=f"{_OVERLAY_LABELS[n]}: {counts[n]} voxels") for n in OVERLAY_COLORS]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=9, frameon=False)
    return save_png(fig, path), counts


# ------------------------------------------------------------------------------------ report
def _summary_rows(geometry, kind: str, occupancy: np.ndarray, threshold: float, metrics, info) -> list:
    grid = geometry.volume
    lo, hi = grid.bounds_mm
    rows = [
        ("grid", " × ".join(str(s) for s in grid.shape) + " voxels"),
        ("voxel spacing", " × ".join(f"{s:g}" for s in grid.spacing_mm) + " mm"),
        ("field of view", " × ".join(f"{e:g}" for e in np.round(hi - lo, 3)) + " mm, centred at ("
         + ", ".join(f"{c:g}" for c in np.round(grid.center_mm, 3)) + ") mm LPS"),
        ("views", str(len(geometry.views))),
    ]
    for i, view in enumerate(geometry.views, start=1):
        h, w = view.detector_shape
        dr, dc = view.pixel_spacing_mm
        rows.append((f"view {i}", f"{_angle_text(view)}; DSD {view.source_to_detector_mm:g} mm, "
                                  f"DSO {view.source_to_isocenter_mm:g} mm; {h} × {w} pixels at "
                                  f"{dr:g} × {dc:g} mm"))
    rows.append(("input", "binary masks" if kind == "mask" else "line integrals (mm)"))
    n_fg = int(np.count_nonzero(occupancy >= threshold))
    rows.append((f"reconstructed voxels (occupancy ≥ {threshold:g})",
                 f"{n_fg} ({n_fg * grid.voxel_volume_mm3:.1f} mm³)"))
    info = dict(info or {})
    for key in ("method", "iterations"):
        if key not in info and metrics and key in metrics:
            info[key] = metrics[key]
    rows += [(str(k), format_setting(v)) for k, v in info.items()]
    return rows


def write_xray_report(
    out_dir,
    *,
    geometry,
    targets,
    kind: str,
    rendered,
    occupancy,
    mesh=None,
    gt_occupancy=None,
    metrics: Mapping[str, Any] | None = None,
    log_rows: Sequence[Mapping[str, Any]] | None = None,
    title: str = "vesselfield reconstruction",
    threshold: float = 0.5,
    info: Mapping[str, Any] | None = None,
    k_per_mm: float | None = None,
    warnings: Sequence[str] = (),
    analysis=None,
    viewer: bool = True,
) -> Path:
    """Write the figures (``figure_*.png``, see :data:`FIGURE_FILES`) and ``report.html`` into ``out_dir``.

    Every input is checked before anything is written.

    Args:
        out_dir: output folder (created if needed).
        geometry: the :class:`~vesselfield.geometry.Geometry` of the reconstruction.
        targets: per view the (H, W) input image (mask or line integrals, mm), ``detector_shape``.
        kind: ``"mask"`` or ``"line_integral"``.
        rendered: per view the (H, W) line integrals (mm) of the reconstruction.
        occupancy: (X, Y, Z) reconstructed occupancy in [0, 1] on ``geometry.volume``.
        mesh: optional surface mesh (``trimesh.Trimesh``, world mm) for the 3D view.
        gt_occupancy: optional (X, Y, Z) ground truth on ``geometry.volume``; adds its MIPs and the
            error overlay.
        metrics: optional ``{name: value}`` (e.g. from :func:`~vesselfield.metrics.evaluate_volumes`
            plus ``seconds`` / ``iterations``); None or NaN values show as "n/a".
        log_rows: optional rows of ``log.csv``; adds the loss curves when non-empty.
        title: the report's title.
        threshold: foreground level of the occupancies (overlay, voxel count), in (0, 1].
        info: optional ``{label: value}`` shown in the summary table (method, preset, times, ...).
        k_per_mm: soft-silhouette attenuation for masks (see :func:`figure_views`).
        warnings: one-line problems of the run (e.g. an empty reconstruction), shown first.
        analysis: optional :class:`~vesselfield.analysis.AnalyzedTree` of the reconstruction; adds its
            summary, diameter profiles, tree picture and tables.
        viewer: add the interactive 3D view (:func:`~vesselfield.report.viewer.build.xray_scene`):
            the surface, the true surface and the signed error layer (with ``gt_occupancy``), the
            centreline tree and the C-arm views.

    Returns:
        The path of ``out_dir/report.html``.
    """
    from vesselfield.geometry import Geometry

    if not isinstance(geometry, Geometry):
        raise VesselfieldError(f"geometry must be a vesselfield.geometry.Geometry, got {type(geometry).__name__}")
    _check_kind(kind)
    thr = _check_threshold(threshold)
    grid = geometry.volume
    targets = _image_list(targets, "target")
    rendered = _image_list(rendered, "rendered view")
    n_views = len(geometry.views)
    for what, images in (("target", targets), ("rendered", rendered)):
        if len(images) != n_views:
            raise VesselfieldError(f"{len(images)} {what} views given but the geometry has {n_views} views")
    for i, (t, r, view) in enumerate(zip(targets, rendered, geometry.views), start=1):
        for what, image in (("image", t), ("rendered view", r)):
            if image.shape != tuple(view.detector_shape):
                raise VesselfieldError(f"view {i}: {what} has shape {image.shape} but the detector is "
                                       f"{tuple(view.detector_shape)}")
    occupancy = volume_on_grid(occupancy, grid, "occupancy")
    if gt_occupancy is not None:
        gt_occupancy = volume_on_grid(gt_occupancy, grid, "ground truth")
    metrics = optional_mapping(metrics, "metrics", "name -> value")
    info = optional_mapping(info, "info", "label -> value")
    page = ReportPage(title, warnings=warnings)
    out = report_folder(out_dir)

    page.add_summary(_summary_rows(geometry, kind, occupancy, thr, metrics, info))
    page.add_metrics(metrics, empty="No metrics (no ground truth was given).")
    if viewer:
        from vesselfield.report.viewer.build import add_view, xray_scene

        add_view(page, xray_scene, geometry, mesh=mesh, gt_occupancy=gt_occupancy, analysis=analysis, threshold=thr)
    k_text = ""
    if kind == "mask":
        from vesselfield.render.soft_distance import DEFAULT_K_PER_MM

        k_text = f" (k = {DEFAULT_K_PER_MM if k_per_mm is None else k_per_mm:.3g} /mm)"
    page.add_figure(
        figure_views(out / FIGURE_FILES["views"], targets, rendered, kind, views=geometry.views, k_per_mm=k_per_mm),
        "input and rendered views",
        "Per view: the input, the reconstruction's rendered projection and their difference. "
        + ("Masks are compared with the soft silhouette 1 − exp(−k·I) of the rendered line integrals I"
           + k_text + "; the difference is silhouette − mask." if kind == "mask" else
           "Input and rendered line integrals share one colour scale in mm; the difference is rendered − input (mm).")
        + " Red: the reconstruction projects more than the input; blue: less. Axes in detector mm, row 0 at the top.",
    )
    page.add_figure(
        figure_mips(out / FIGURE_FILES["mips"], occupancy, grid, gt_occupancy),
        "maximum-intensity projections",
        "Maximum-intensity projections of the reconstructed occupancy"
        + (" (top) and of the ground truth (bottom)" if gt_occupancy is not None else "")
        + " along x (sagittal), y (coronal) and z (axial, seen from the feet), in LPS world mm with equal scales.",
    )
    if gt_occupancy is not None:
        path, counts = figure_error_overlay(out / FIGURE_FILES["error_overlay"], occupancy, gt_occupancy, grid, thr)
        page.add_figure(
            path, "error overlay",
            f"Error overlay (as SDF-CAR Figures 2–3) at occupancy ≥ {thr:g}: green where reconstruction and truth "
            f"overlap ({counts['overlap']} voxels), red where only the reconstruction has vessel "
            f"({counts['predicted_only']}), blue where the truth was missed ({counts['missed']}). "
            "A pixel shows the first class along its projection line in the order green, red, blue.",
        )
    if mesh is not None:
        page.add_figure(figure_mesh(out / FIGURE_FILES["mesh"], mesh), "surface mesh",
                        "The reconstructed surface (world mm, equal scales, Lambert shading, light at the camera).")
    if log_rows:
        page.add_figure(figure_losses(out / FIGURE_FILES["losses"], log_rows), "loss curves",
                        "Loss terms of log.csv against the iteration (log scale; non-positive values left out).")
    if analysis is not None:
        from vesselfield.report.analysis import analysis_report_sections

        analysis_report_sections(page, analysis, out, heading_prefix="Vessel analysis: ", list_warnings=False)
    return page.write(out / REPORT_NAME)
