"""The visual report of an implicit neural vessel model (Alblas et al., STACOM 2022): PNG figures and ``report.html``.

What the figures show of a fitted :class:`~vesselfield.methods.implicit_vessel.ImplicitVesselModel`:

- :func:`figure_sdf_slices`: the SDF (mm) on three orthogonal mid-slices through the box of the
  fitting points (sagittal, coronal, axial), a diverging colour map centred on 0, the zero level of
  every surface as a contour (one colour per surface, with a legend) and the input points that lie
  within ± one slice thickness of each slice;
- :func:`figure_points`: the input (and held-out) surface points in 3D, coloured by |SDF| at them
  in mm: how closely the zero level passes through them;
- the mesh and the loss curves, drawn by the generic :func:`~vesselfield.report.figures.figure_mesh`
  and :func:`~vesselfield.report.figures.figure_losses`;
- :func:`figure_robustness_boxplot`: Dice or surface distance against the number of input points,
  one box per count and one panel per shape (the paper's Figure 3).

:func:`write_inr_report` writes them next to one self-contained ``report.html``, a
:class:`~vesselfield.report.html.ReportPage` as every method's report. Every file is written
atomically.

The SDF is evaluated on the three slices only (``resolution`` samples along the longest side of
the box, isotropic in mm), never on a full volume: at the default 200 that is at most 120,000
queries. The slices follow the LPS display conventions of :mod:`vesselfield.report.figures` (the
axial slice seen from the feet; equal scales).

Measured on the shared 2-core CPU (load ~6): the whole report of an untrained ``fast`` model
(200-sample slices, 400 points, a 2k-face mesh, a 300-row log) takes 2.7-4.3 s, of which the
slices' 3 x 200² SDF queries 1.1-2.3 s; the figures without them ~1.5 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.report.figures import (
    MESH_AZIMUTH_DEG,
    MESH_ELEVATION_DEG,
    PLANE_NAMES,
    draw_world_plane,
    figure_losses,
    figure_mesh,
    in_plane_axes,
    label_axes,
    label_world_axes_3d,
    new_figure,
    save_png,
)
from vesselfield.report.html import REPORT_NAME, ReportPage, optional_mapping, report_folder
from vesselfield.validate import require_finite

__all__ = [
    "FIGURE_FILES",
    "MAX_POINTS_SHOWN",
    "SURFACE_COLORS",
    "SdfSlice",
    "figure_points",
    "figure_robustness_boxplot",
    "figure_sdf_slices",
    "point_residuals_mm",
    "sdf_slices",
    "write_inr_report",
    "zero_contours",
]

FIGURE_FILES = {
    "slices": "figure_slices.png",
    "points": "figure_points.png",
    "mesh": "figure_mesh.png",
    "losses": "figure_losses.png",
}
"""File names of the figures :func:`write_inr_report` writes next to ``report.html``."""

MAX_POINTS_SHOWN = 3000
""":func:`figure_points` draws a random subset of at most this many points per set (statistics use all)."""

SURFACE_COLORS = ("black", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
"""Zero-contour colour of surface k (cycled): none of them red or blue, the colours of the SDF map."""

# What write_inr_report and the figures read of a model. Checked by attribute rather than by class
# so that this shared part does not import the method (layers import one way: methods -> report).
_MODEL_ATTRIBUTES = ("sdf", "channel", "surface_names", "n_surfaces", "bounds_mm", "center_mm", "scale_mm",
                     "config")


# ------------------------------------------------------------------------------------ inputs
def _check_model(model):
    if not all(hasattr(model, name) for name in _MODEL_ATTRIBUTES):
        raise VesselfieldError(f"model must be an ImplicitVesselModel (fit_implicit_sdf(...).model), "
                               f"got {type(model).__name__}")
    return model


def _point_array(points, what: str) -> np.ndarray:
    if hasattr(points, "detach"):
        points = points.detach().cpu().numpy()
    try:
        p = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise VesselfieldError(f"{what} must be an (N, 3) array of points in mm") from None
    if p.ndim != 2 or p.shape[1] != 3 or len(p) == 0:
        raise VesselfieldError(f"{what} must be an (N, 3) array of points in mm with N >= 1, got shape {p.shape}")
    require_finite(p, what)
    return p


def _surface_points(model, points, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(positions (N, 3) mm, owner (N,) int)`` of points given as one (N, 3) array or as a list
    with one array per surface of ``model`` (as :func:`~vesselfield.methods.implicit_vessel.fit_implicit_sdf`
    takes them). ``owner`` is the surface index of each point, -1 for "any surface" (one array
    given for a model with several surfaces)."""
    if isinstance(points, (list, tuple)):
        if len(points) != model.n_surfaces:
            raise VesselfieldError(f"{what}: {len(points)} point sets for a model with {model.n_surfaces} "
                                   f"surface(s) ({', '.join(model.surface_names)})")
        sets = [_point_array(p, f"{what} of surface {name!r}") for p, name in zip(points, model.surface_names)]
        owner = np.concatenate([np.full(len(p), k) for k, p in enumerate(sets)])
        return np.concatenate(sets), owner
    p = _point_array(points, what)
    return p, np.full(len(p), 0 if model.n_surfaces == 1 else -1)


def point_residuals_mm(model, points) -> tuple[np.ndarray, np.ndarray]:
    """|SDF| of a fitted model at its surface points: how far the zero level passes from them.

    Args:
        model: an :class:`~vesselfield.methods.implicit_vessel.ImplicitVesselModel`.
        points: (N, 3) world mm, or a list of one (N_k, 3) array per surface. A point of a listed
            surface is measured against that surface's SDF; a point of a single array against
            the nearest surface (min over surfaces of |SDF|).

    Returns:
        ``(positions (N, 3) mm, residuals (N,) mm)``, the sets concatenated in surface order.
    """
    model = _check_model(model)
    positions, owner = _surface_points(model, points, "points")
    sdf = np.abs(model.sdf(positions, "all"))  # (N, K)
    own = sdf[np.arange(len(owner)), np.maximum(owner, 0)]
    return positions, np.where(owner >= 0, own, sdf.min(axis=1)).astype(np.float64)


# ------------------------------------------------------------------------------------ slices
@dataclass(frozen=True)
class SdfSlice:
    """The SDFs of all surfaces on one axis-aligned plane.

    Attributes:
        axis: world axis normal to the plane (0: x, sagittal; 1: y, coronal; 2: z, axial).
        position_mm: the plane's coordinate along ``axis``.
        u_mm: (U,) coordinates along the first in-plane world axis (the lower-numbered one).
        v_mm: (V,) coordinates along the second in-plane world axis.
        sdf_mm: (V, U, K) SDF in mm of the K surfaces at ``(u_mm[j], v_mm[i])``.
    """

    axis: int
    position_mm: float
    u_mm: np.ndarray
    v_mm: np.ndarray
    sdf_mm: np.ndarray

    @property
    def name(self) -> str:
        return PLANE_NAMES[self.axis]

    @property
    def in_plane_axes(self) -> tuple[int, int]:
        return in_plane_axes(self.axis)

    def points_mm(self) -> np.ndarray:
        """(V, U, 3) world positions of the samples."""
        return _plane_points(self.axis, self.position_mm, self.u_mm, self.v_mm)

    def near(self, points_mm, half_width_mm: float) -> np.ndarray:
        """(N,) bool: which of the (N, 3) points lie within ``half_width_mm`` of the plane."""
        return np.abs(np.asarray(points_mm)[:, self.axis] - self.position_mm) <= half_width_mm


def _plane_points(axis: int, position_mm: float, u_mm: np.ndarray, v_mm: np.ndarray) -> np.ndarray:
    """(V, U, 3) world mm of the samples ``(u_mm[j], v_mm[i])`` on the plane ``x[axis] = position_mm``."""
    a, b = in_plane_axes(axis)
    out = np.empty((len(v_mm), len(u_mm), 3))
    out[..., axis] = position_mm
    out[..., a] = u_mm[None, :]
    out[..., b] = v_mm[:, None]
    return out


def _slice_box(model, margin_mm: float | None) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = model.bounds_mm
    margin = 0.1 * float((hi - lo).max()) if margin_mm is None else float(margin_mm)
    if not (math.isfinite(margin) and margin >= 0):
        raise VesselfieldError(f"margin_mm must be a non-negative number of mm, got {margin_mm}")
    return lo - margin, hi + margin


def sdf_slices(model, *, resolution: int = 200, margin_mm: float | None = None) -> list[SdfSlice]:
    """The model's SDFs on the sagittal, coronal and axial mid-slices of the fitting points' box.

    The planes pass through the centre of ``model.bounds_mm``; each spans the box plus
    ``margin_mm`` on every side (default: 10 % of the box's longest side). Samples are isotropic:
    ``resolution`` of them along the longest side, as many as fit at that spacing along the
    others, centred on the box, so a 200-sample evaluation costs at most 3 x 200² queries.

    Returns:
        Three :class:`SdfSlice` (axis 0, 1, 2), SDFs of every surface in mm.
    """
    model = _check_model(model)
    if int(resolution) < 2:
        raise VesselfieldError(f"resolution must be at least 2 samples, got {resolution}")
    lo, hi = _slice_box(model, margin_mm)
    extent = hi - lo
    spacing = float(extent.max()) / (int(resolution) - 1)
    if spacing <= 0:
        raise VesselfieldError("the model's box has no extent: nothing to slice")
    centre = 0.5 * (model.bounds_mm[0] + model.bounds_mm[1])
    counts = np.minimum(np.floor(extent / spacing + 1e-9).astype(int) + 1, int(resolution))
    coords = [centre[d] + (np.arange(counts[d]) - 0.5 * (counts[d] - 1)) * spacing for d in range(3)]
    slices = []
    for axis in range(3):
        a, b = in_plane_axes(axis)
        position = float(centre[axis])
        sdf = model.sdf(_plane_points(axis, position, coords[a], coords[b]), "all").astype(np.float64)
        slices.append(SdfSlice(axis, position, coords[a], coords[b], sdf))
    return slices


def zero_contours(sdf_slice: SdfSlice, surface_names: Sequence[str]) -> dict[str, list[np.ndarray]]:
    """The zero level of each surface on a slice as polylines in plane mm.

    Marching squares with linear interpolation (contourpy, matplotlib's contouring).

    Args:
        sdf_slice: an :class:`SdfSlice` with K surfaces.
        surface_names: the K names (``model.surface_names``).

    Returns:
        ``{name: [(M, 2) arrays of (u, v) mm]}`` in surface order; an empty list where the
        surface does not cross the slice.
    """
    from contourpy import contour_generator

    if len(surface_names) != sdf_slice.sdf_mm.shape[-1]:
        raise VesselfieldError(f"{len(surface_names)} names for {sdf_slice.sdf_mm.shape[-1]} surfaces")
    out = {}
    for k, name in enumerate(surface_names):
        gen = contour_generator(x=sdf_slice.u_mm, y=sdf_slice.v_mm, z=sdf_slice.sdf_mm[..., k],
                                line_type="Separate")
        out[str(name)] = [np.asarray(line) for line in gen.lines(0.0) if len(line) >= 2]
    return out


def _surface_color(k: int) -> str:
    return SURFACE_COLORS[k % len(SURFACE_COLORS)]


def figure_sdf_slices(path, model, points=None, *, resolution: int = 200, margin_mm: float | None = None,
                      slice_thickness_mm: float | None = None, surface=None) -> tuple[Path, list[str]]:
    """The SDF on three orthogonal mid-slices with the zero contours and the nearby input points.

    Args:
        path: PNG file to write (atomically).
        model: an :class:`~vesselfield.methods.implicit_vessel.ImplicitVesselModel`.
        points: optional input points (as :func:`point_residuals_mm` takes them); those within
            ± ``slice_thickness_mm`` of a plane are drawn on it, in their surface's colour (grey
            when one array was given for several surfaces).
        resolution, margin_mm: the slices' sampling (see :func:`sdf_slices`).
        slice_thickness_mm: half-width of the slab whose points are shown (default: 1/64 of the
            box's longest side).
        surface: the surface whose SDF fills the background (name or index; default the first).
            Every surface's zero level is drawn.

    The colour map ``RdBu_r`` has symmetric limits ±max|SDF| over the three panels, white at 0,
    red outside (positive), blue inside.

    Returns:
        ``(Path(path), legend labels)``: one label per surface's zero contour, then the points'.
    """
    from matplotlib.lines import Line2D

    model = _check_model(model)
    shown = model.channel(0 if surface is None else surface)
    positions, owner = (None, None) if points is None else _surface_points(model, points, "points")
    slices = sdf_slices(model, resolution=resolution, margin_mm=margin_mm)
    lo, hi = model.bounds_mm
    half = float((hi - lo).max()) / 64.0 if slice_thickness_mm is None else float(slice_thickness_mm)
    if not (math.isfinite(half) and half >= 0):
        raise VesselfieldError(f"slice_thickness_mm must be a non-negative number of mm, got {slice_thickness_mm}")
    limit = max(max(float(np.abs(s.sdf_mm[..., shown]).max()) for s in slices), 1e-6)

    fig = new_figure(13.0, 5.0)
    axes = fig.subplots(1, 3)
    image = None
    for ax, sl in zip(axes, slices):
        a, b = sl.in_plane_axes
        du = sl.u_mm[1] - sl.u_mm[0] if len(sl.u_mm) > 1 else 1.0
        image = draw_world_plane(ax, sl.sdf_mm[..., shown], sl.axis, (sl.u_mm[0] - du / 2, sl.u_mm[-1] + du / 2),
                                 (sl.v_mm[0] - du / 2, sl.v_mm[-1] + du / 2), cmap="RdBu_r", vmin=-limit,
                                 vmax=limit, interpolation="bilinear")
        for k, lines in enumerate(zero_contours(sl, model.surface_names).values()):
            for line in lines:
                ax.plot(line[:, 0], line[:, 1], color=_surface_color(k), linewidth=1.6)
        if positions is not None:
            near = sl.near(positions, half)
            colors = [_surface_color(k) if k >= 0 else "0.45" for k in owner[near]]
            ax.scatter(positions[near, a], positions[near, b], s=14, c=colors, edgecolors="white", linewidths=0.6,
                       zorder=3)
        label_axes(ax, f"{sl.name} ({'xyz'[sl.axis]} = {sl.position_mm:.1f} mm)")
    bar = fig.colorbar(image, ax=axes, shrink=0.8)
    bar.set_label(f"SDF of {model.surface_names[shown]!r} (mm)", fontsize=8)

    handles = [Line2D([], [], color=_surface_color(k), linewidth=1.6, label=f"{name}: SDF = 0")
               for k, name in enumerate(model.surface_names)]
    if positions is not None:
        marker_color = _surface_color(0) if model.n_surfaces == 1 else "0.45"
        handles.append(Line2D([], [], linestyle="none", marker="o", markersize=5, markerfacecolor=marker_color,
                              markeredgecolor="white", label=f"input points within ±{half:.2g} mm"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=9, frameon=False)
    return save_png(fig, path), [h.get_label() for h in handles]


# ------------------------------------------------------------------------------------ points
def _residual_stats(residuals: np.ndarray) -> dict[str, float]:
    return {"n": int(len(residuals)), "mean": float(residuals.mean()), "median": float(np.median(residuals)),
            "p95": float(np.percentile(residuals, 95)), "max": float(residuals.max())}


def figure_points(path, model, points, *, held_out=None, max_points: int = MAX_POINTS_SHOWN, seed: int = 0) -> Path:
    """The surface points in 3D coloured by |SDF| at them (mm): where the fit misses its input.

    Args:
        path: PNG file to write (atomically).
        model: an :class:`~vesselfield.methods.implicit_vessel.ImplicitVesselModel`.
        points: the fitting points (as :func:`point_residuals_mm` takes them).
        held_out: optional held-out surface points (same forms), drawn in a second panel.
        max_points: at most this many points are drawn per set (a seeded random subset);
            the statistics in the titles use all of them.
        seed: seed of the subset.

    Both panels share one colour scale (``viridis``), 0 to the 99th percentile of all residuals.

    Returns:
        ``Path(path)``.
    """
    model = _check_model(model)
    if int(max_points) < 1:
        raise VesselfieldError(f"max_points must be at least 1, got {max_points}")
    sets = [("input points", *point_residuals_mm(model, points))]
    if held_out is not None:
        sets.append(("held-out points", *point_residuals_mm(model, held_out)))
    everything = np.concatenate([r for _, _, r in sets])
    vmax = max(float(np.percentile(everything, 99)), 1e-6)
    rng = np.random.default_rng(seed)

    fig = new_figure(6.2 * len(sets) + 0.8, 6.0)
    scatter = None
    for i, (label, positions, residuals) in enumerate(sets, start=1):
        stats = _residual_stats(residuals)
        keep = np.arange(len(positions))
        if len(keep) > max_points:
            keep = np.sort(rng.choice(len(positions), int(max_points), replace=False))
        p = positions[keep]
        ax = fig.add_subplot(1, len(sets), i, projection="3d", proj_type="ortho")
        scatter = ax.scatter(p[:, 0], p[:, 1], p[:, 2], c=residuals[keep], cmap="viridis", vmin=0.0, vmax=vmax,
                             s=6, depthshade=False)
        # Equal mm on the three axes: the box's proportions are the points' extents.
        ax.set_box_aspect(tuple(np.maximum(np.ptp(p, axis=0), 1e-6 * float(np.ptp(p, axis=0).max() or 1.0))))
        ax.view_init(elev=MESH_ELEVATION_DEG, azim=MESH_AZIMUTH_DEG)
        label_world_axes_3d(ax)
        subset = "" if len(keep) == stats["n"] else f" ({len(keep)} shown)"
        ax.set_title(f"{label}: {stats['n']}{subset}\n|SDF| median {stats['median']:.3g} mm, "
                     f"95th percentile {stats['p95']:.3g} mm, max {stats['max']:.3g} mm", fontsize=9)
    bar = fig.colorbar(scatter, ax=fig.axes, shrink=0.7, extend="max" if everything.max() > vmax else "neither")
    bar.set_label("|SDF| at the point (mm)", fontsize=8)
    return save_png(fig, path)


# ------------------------------------------------------------------------------------ robustness
_METRIC_AXIS_LABELS = {"dice": "Dice", "asd_mm": "ASD (mm)"}


def _metric_label(metric: str) -> str:
    """y-axis label: the paper's names for Dice and ASD; otherwise the column, its unit in brackets."""
    from vesselfield.metrics.evaluate import METRIC_INFO

    if metric in _METRIC_AXIS_LABELS:
        return _METRIC_AXIS_LABELS[metric]
    unit = METRIC_INFO[metric][1] if metric in METRIC_INFO else ("mm" if metric.endswith("_mm") else "1")
    name = metric[:-3] if metric.endswith("_mm") else metric
    return name if unit == "1" else f"{name} ({unit})"


def figure_robustness_boxplot(rows: Sequence[Mapping[str, Any]], out_path, metric: str = "dice") -> Path:
    """Robustness to sparsity (Alblas et al. 2022, Figure 3): a metric against the number of points.

    Args:
        rows: one dict per fit with ``shape`` (panel), ``n_points`` (box) and the ``metric``
            column (e.g. ``dice``, ``asd_mm``); values may be numeric strings (CSV rows). Missing
            or non-finite metric values are left out.
        out_path: PNG file to write (atomically).
        metric: the column on the y axis.

    One panel per shape (in order of first appearance), one box per point count (ascending;
    median line, quartile box, whiskers at 1.5 IQR, outliers as circles), panels share the y axis.

    Returns:
        ``Path(out_path)``.
    """
    rows = list(rows or [])
    if not rows:
        raise VesselfieldError("no robustness rows to plot")
    values: dict[str, dict[int, list[float]]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "shape" not in row or "n_points" not in row:
            raise VesselfieldError(f"robustness row {i} must be a dict with shape, n_points and {metric}")
        if metric not in row:
            raise VesselfieldError(f"robustness row {i} has no {metric!r} column (it has {', '.join(map(str, row))})")
        try:
            n = float(row["n_points"])
            value = float(row[metric]) if row[metric] not in (None, "") else math.nan
        except (TypeError, ValueError):
            raise VesselfieldError(f"robustness row {i}: n_points and {metric} must be numbers") from None
        if not (n.is_integer() and n >= 1):
            raise VesselfieldError(f"robustness row {i}: n_points must be a positive whole number, got {row['n_points']}")
        per_count = values.setdefault(str(row["shape"]), {}).setdefault(int(n), [])
        if math.isfinite(value):
            per_count.append(value)

    fig = new_figure(0.8 + 3.4 * len(values), 4.2)
    axes = fig.subplots(1, len(values), sharey=True, squeeze=False)[0]
    for ax, (shape, per_count) in zip(axes, values.items()):
        counts = sorted(per_count)
        data = [per_count[n] for n in counts]
        positions = [i for i, d in enumerate(data) if d]
        if positions:
            ax.boxplot([data[i] for i in positions], positions=positions, widths=0.6,
                       medianprops=dict(color="#d62728", linewidth=1.5), flierprops=dict(markersize=3))
        else:
            ax.text(0.5, 0.5, f"no finite {metric} values", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks(range(len(counts)), [str(n) for n in counts])
        ax.set_xlim(-0.6, len(counts) - 0.4)
        ax.set_title(shape, fontsize=10)
        ax.set_xlabel("number of points", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[0].set_ylabel(_metric_label(metric), fontsize=9)
    return save_png(fig, out_path)


# ------------------------------------------------------------------------------------ HTML
def _vector_text(v) -> str:
    return "(" + ", ".join(f"{float(c):.3f}" for c in v) + ")"


def _summary_rows(model, fits: Sequence[tuple[str, np.ndarray]]) -> list:
    lo, hi = model.bounds_mm
    rows = [
        ("surfaces", ", ".join(model.surface_names)),
        ("normalisation centre", _vector_text(model.center_mm) + " mm LPS"),
        ("normalisation scale", f"{model.scale_mm:.4f} mm per unit (x = (p − centre) / scale, [−1, 1]³)"),
        ("box of the fitting points", f"{_vector_text(lo)} to {_vector_text(hi)} mm"),
    ]
    rows += [(label, f"{len(r)}") for label, r in fits]
    return rows


def _residual_rows(fits: Sequence[tuple[str, np.ndarray]]) -> list:
    rows = []
    for label, residuals in fits:
        s = _residual_stats(residuals)
        rows.append((label, str(s["n"])) + tuple(f"{s[k]:.4f}" for k in ("mean", "median", "p95", "max")))
    return rows


def write_inr_report(
    out_dir,
    *,
    model,
    points=None,
    log: Sequence[Mapping[str, Any]] | None = None,
    mesh=None,
    metrics: Mapping[str, Any] | None = None,
    title: str | None = None,
    held_out=None,
    resolution: int = 200,
    warnings: Sequence[str] = (),
    analysis=None,
    viewer: bool = True,
) -> dict[str, Path]:
    """Write the figures (``figure_*.png``, see :data:`FIGURE_FILES`) and ``report.html`` into ``out_dir``.

    Inputs are checked before anything is written.

    Args:
        out_dir: output folder (created if needed).
        model: the fitted :class:`~vesselfield.methods.implicit_vessel.ImplicitVesselModel`.
        points: optional fitting points, (N, 3) mm or one array per surface: drawn on the slices,
            in 3D by |SDF| (``figure_points.png``) and summarised in the table of residuals.
        log: optional per-iteration rows (``FitResult.log``): loss curves (``loss*`` columns).
        mesh: optional ``trimesh.Trimesh`` (world mm): 3D view and mesh summary
            (:func:`~vesselfield.meshing.marching_cubes.mesh_summary`).
        metrics: optional ``{name: value}`` (e.g. dice, asd_mm); None/NaN show as "n/a".
        title: the report's title (default names the surfaces).
        held_out: optional held-out surface points (same forms as ``points``, which it needs), not
            used in the fit: a second panel of ``figure_points.png`` and a row of residuals.
        resolution: samples along the longest side of each slice (see :func:`sdf_slices`).
        warnings: one-line problems of the fit (e.g. "the mesh is not CFD-ready: ..."), shown
            first in the report.
        analysis: optional :class:`~vesselfield.analysis.AnalyzedTree` of the fitted surface; adds its
            summary, diameter profiles, tree picture and tables.
        viewer: add the interactive 3D view of ``mesh`` and the analysis tree
            (:func:`~vesselfield.report.viewer.build.surface_scene`).

    Returns:
        ``{"slices", "points", "mesh", "losses", "report": Path}``, the keys of what was written.
    """
    model = _check_model(model)
    if points is not None:
        _surface_points(model, points, "points")
    if held_out is not None:
        if points is None:
            raise VesselfieldError("held-out points are shown next to the fitting points: pass points too")
        _surface_points(model, held_out, "held-out points")
    metrics = optional_mapping(metrics, "metrics", "name -> value")
    if mesh is not None and not (hasattr(mesh, "vertices") and hasattr(mesh, "faces")):
        raise VesselfieldError(f"mesh must be a trimesh.Trimesh, got {type(mesh).__name__}")
    log = list(log or [])
    if any(not isinstance(row, Mapping) for row in log):
        raise VesselfieldError("log must be a list of dicts (FitResult.log)")
    page = ReportPage(title or f"Implicit vessel model: {', '.join(model.surface_names)}",
                      note="Implicit neural SDF fitted to surface points (Alblas et al., STACOM 2022; IGR, "
                           "Gropp et al., ICML 2020).", warnings=warnings)
    out = report_folder(out_dir)

    fits = []
    if points is not None:
        fits.append(("input points", point_residuals_mm(model, points)[1]))
        if held_out is not None:
            fits.append(("held-out points", point_residuals_mm(model, held_out)[1]))
    page.add_summary(_summary_rows(model, fits))
    if fits:
        page.add_table("Distance of the zero level from the points",
                       ("points", "n", "mean |SDF| (mm)", "median (mm)", "95th percentile (mm)", "max (mm)"),
                       _residual_rows(fits), numeric=(1, 2, 3, 4, 5))
    page.add_metrics(metrics)
    if viewer and mesh is not None:
        from vesselfield.report.viewer.build import add_view, surface_scene

        add_view(page, surface_scene, mesh, names=[", ".join(model.surface_names)], analysis=analysis)
    if mesh is not None:
        page.add_mesh_summary(mesh)
    page.add_config(model.config)

    written: dict[str, Path] = {}
    written["slices"], _ = figure_sdf_slices(out / FIGURE_FILES["slices"], model, points, resolution=resolution)
    page.add_figure(written["slices"], "SDF slices",
                    "The SDF (mm) of the first surface on the sagittal, coronal and axial mid-slices of the fitting "
                    "points' box (red outside, blue inside, white at 0), the zero level of every surface as a "
                    "contour, and the input points near each slice. LPS world mm, equal scales; the axial slice "
                    "is seen from the feet.")
    if points is not None:
        written["points"] = figure_points(out / FIGURE_FILES["points"], model, points, held_out=held_out)
        page.add_figure(written["points"], "surface points",
                        "The surface points coloured by |SDF| at them (mm): 0 where the zero level passes "
                        "through a point. At most a few thousand points are drawn per set; the statistics use all.")
    if mesh is not None:
        written["mesh"] = figure_mesh(out / FIGURE_FILES["mesh"], mesh)
        page.add_figure(written["mesh"], "surface mesh",
                        "The zero level as a triangle mesh (world mm, equal scales, Lambert shading).")
    if log:
        written["losses"] = figure_losses(out / FIGURE_FILES["losses"], log)
        page.add_figure(written["losses"], "loss curves",
                        "Loss terms against the iteration (log scale; IGR: surface |f|, eikonal (‖∇f‖ − 1)², "
                        "normal, nesting; non-positive values left out).")
    if analysis is not None:
        from vesselfield.report.analysis import analysis_report_sections

        analysis_report_sections(page, analysis, out, heading_prefix="Vessel analysis: ", list_warnings=False)
    written["report"] = page.write(out / REPORT_NAME)
    return written
