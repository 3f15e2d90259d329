"""The visual report of a vessel analysis: diameter profiles, the tree coloured by radius, tables.

What the figures show of an :class:`~vesselfield.analysis.result.AnalyzedTree` (LPS mm):

- :func:`figure_diameter_profiles`: D(s), the lumen diameter (2 x area-equivalent radius, mm)
  against the arc length from the root (mm), one small panel per root-to-leaf path (the longest
  ``max_paths`` when there are more), with the interpolated reference diameter dashed, the
  excluded samples (bifurcation zones, open cross-sections) shaded grey, and each lesion of the
  path marked at its minimal lumen diameter with its percent diameter stenosis;
- :func:`figure_tree_radius`: the centrelines in 3D coloured by the area-equivalent radius (mm),
  bifurcations as black dots and lesions as red crosses, equal mm on the three axes.

:func:`analysis_report_sections` adds the summary, the two figures and the segment, bifurcation and
stenosis tables to any :class:`~vesselfield.report.html.ReportPage` (so that a pipeline's own
report can hold them); :func:`write_analysis_report` writes them as a page of their own,
``report.html`` with the PNGs in ``figures/``. Every file is written atomically. Matplotlib is
imported only when a figure is drawn (by :func:`~vesselfield.report.figures.new_figure`, Agg,
no pyplot).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.report.figures import (
    MESH_AZIMUTH_DEG,
    MESH_ELEVATION_DEG,
    PngFile,
    label_axes,
    label_world_axes_3d,
    new_figure,
    save_png,
)
from vesselfield.report.html import REPORT_NAME, ReportPage, format_setting, report_folder

__all__ = [
    "FIGURES_DIR",
    "FIGURE_FILES",
    "MAX_SEGMENT_ROWS",
    "analysis_report_sections",
    "figure_diameter_profiles",
    "figure_tree_radius",
    "write_analysis_report",
]

FIGURE_FILES = {
    "profiles": "analysis_diameter_profiles.png",
    "tree": "analysis_tree_radius.png",
}
"""File names of the figures :func:`analysis_report_sections` writes into its figures folder."""

MAX_SEGMENT_ROWS = 200
"""The segments table of the report shows at most this many rows (``segments.csv`` has them all)."""

FIGURES_DIR = "figures"
"""Sub-folder of :func:`write_analysis_report`'s output that holds the PNGs."""


def _check_tree(tree):
    from vesselfield.analysis.result import AnalyzedTree

    if not isinstance(tree, AnalyzedTree):
        raise VesselfieldError(f"expected an AnalyzedTree (vesselfield.analysis.analyze), got {type(tree).__name__}")
    return tree


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(first, last)`` index of every run of True in a 1D bool array."""
    padded = np.r_[False, np.asarray(mask, bool), False].astype(np.int8)
    change = np.diff(padded)
    return list(zip(np.nonzero(change == 1)[0].tolist(), (np.nonzero(change == -1)[0] - 1).tolist()))


def _fmt(value, digits: int = 3) -> str:
    """A table number: ``digits`` significant digits; NaN/None -> "n/a"."""
    if value is None:
        return "n/a"
    v = float(value)
    return "n/a" if math.isnan(v) else f"{v:.{digits}g}"


def _path_length_mm(profile) -> float:
    s = np.asarray(profile.s_mm, dtype=np.float64)
    return float(s[-1] - s[0]) if len(s) else 0.0


# ------------------------------------------------------------------------------------ figures
def figure_diameter_profiles(path, tree, max_paths: int = 12) -> PngFile:
    """D(s) along the root-to-leaf paths, one panel per path (see the module docstring).

    Args:
        path: PNG file to write (atomically).
        tree: an :class:`~vesselfield.analysis.result.AnalyzedTree`; its ``paths``
            (:class:`~vesselfield.analysis.result.DiameterProfile`) and ``lesions`` are drawn.
        max_paths: at most this many panels (>= 1): the longest paths, drawn in path order; the
            title says so when some are left out.

    Panels: x = arc length from the root ``s_mm`` (mm), y = diameter (mm); measured D solid blue,
    reference dashed black, excluded stretches shaded grey (their samples as grey dots), lesions a
    red triangle at (position, MLD) labelled with their %DS (interpolated reference).

    Returns:
        The :class:`~vesselfield.report.figures.PngFile` written.
    """
    tree = _check_tree(tree)
    if int(max_paths) < 1:
        raise VesselfieldError(f"max_paths must be at least 1, got {max_paths}")
    profiles = list(tree.paths)
    shown = list(range(len(profiles)))
    if len(shown) > int(max_paths):
        longest = sorted(shown, key=lambda k: -_path_length_mm(profiles[k]))[: int(max_paths)]
        shown = sorted(longest)
    ncols = min(3, max(len(shown), 1))
    nrows = max(1, math.ceil(len(shown) / ncols))
    fig = new_figure(max(4.2 * ncols + 0.4, 7.0), 2.9 * nrows + 0.7)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(shown):]:
        ax.set_axis_off()
    if not shown:
        axes[0].set_axis_on()
        axes[0].text(0.5, 0.5, "no root-to-leaf path", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_xticks([])
        axes[0].set_yticks([])
    for ax, k in zip(axes, shown):
        profile = profiles[k]
        s = np.asarray(profile.s_mm, dtype=np.float64)
        d = np.asarray(profile.diameter_mm, dtype=np.float64)
        ref = np.asarray(profile.reference_mm, dtype=np.float64)
        excluded = np.asarray(profile.excluded, dtype=bool)
        for first, last in _runs(excluded):
            lo = s[first] - (0.5 * (s[first] - s[first - 1]) if first > 0 else 0.0)
            hi = s[last] + (0.5 * (s[last + 1] - s[last]) if last + 1 < len(s) else 0.0)
            ax.axvspan(lo, hi if hi > lo else lo + 1e-3, color="0.85", linewidth=0, zorder=0)
        ax.plot(s, d, color="#1f77b4", linewidth=1.5, zorder=2, label="D (measured)")
        if excluded.any():
            ax.plot(s[excluded], d[excluded], linestyle="none", marker=".", color="0.5", markersize=3, zorder=3)
        ax.plot(s, ref, color="black", linestyle="--", linewidth=1.0, zorder=2, label="reference")
        for lesion in tree.lesions:
            if int(lesion.path) != k:
                continue
            ax.plot([lesion.position_mm], [lesion.mld_mm], marker="v", color="#d62728", markersize=7, zorder=4)
            ax.annotate(f"{_fmt(lesion.percent_diameter_stenosis, 2)} %", (lesion.position_mm, lesion.mld_mm),
                        textcoords="offset points", xytext=(0, -12), ha="center", va="top", fontsize=7,
                        color="#d62728")
        finite = np.r_[d[np.isfinite(d)], ref[np.isfinite(ref)]]
        if finite.size:
            ax.set_ylim(0.0, 1.15 * float(finite.max()) or 1.0)
        segments = " → ".join(str(int(i)) for i in profile.segment_ids)
        label_axes(ax, f"path {k}: segments {segments}", "s from the root (mm)", "diameter (mm)")
        ax.title.set_fontsize(8)
        ax.grid(True, alpha=0.3)
    title = "Lumen diameter D(s) along the root-to-leaf paths"
    if len(shown) < len(profiles):
        title += f" (the {len(shown)} longest of {len(profiles)} paths)"
    fig.suptitle(title + "\ngrey: excluded (bifurcation zones, vessel ends, open sections); dashed: reference", fontsize=9)
    return save_png(fig, path)


def figure_tree_radius(path, tree) -> PngFile:
    """The centrelines in 3D coloured by ``radius_area_mm`` (``viridis``, colour bar in mm).

    Args:
        path: PNG file to write (atomically).
        tree: an :class:`~vesselfield.analysis.result.AnalyzedTree`. Each segment's polyline is
            drawn piece by piece, a piece coloured by the mean radius of its two samples; NaN
            radii are not coloured (transparent). Bifurcation nodes: black dots; lesions: red x.

    Axes are LPS world mm (:func:`~vesselfield.report.figures.label_world_axes_3d`), equal
    scales, orthographic camera from the anterior-left.

    Returns:
        The :class:`~vesselfield.report.figures.PngFile` written.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    tree = _check_tree(tree)
    pieces, values = [], []
    for seg in tree.segments:
        p = np.asarray(seg.points_mm, dtype=np.float64)
        r = np.asarray(seg.radius_area_mm, dtype=np.float64)
        pieces.append(np.stack([p[:-1], p[1:]], axis=1))
        values.append(0.5 * (r[:-1] + r[1:]))
    if pieces:
        pieces_arr, values_arr = np.concatenate(pieces), np.concatenate(values)
        everything = np.concatenate([np.asarray(s.points_mm, dtype=np.float64) for s in tree.segments])
    else:  # no segment: draw the SWC nodes
        pieces_arr, values_arr = np.zeros((0, 2, 3)), np.zeros(0)
        everything = tree.points_mm
    finite = values_arr[np.isfinite(values_arr)]
    radii = np.r_[finite, tree.radius_mm]
    vmin, vmax = float(radii.min()), float(radii.max())
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5 * max(vmin, 1e-3), vmax + 0.5 * max(vmax, 1e-3)
    norm = Normalize(vmin=vmin, vmax=vmax)

    fig = new_figure(7.2, 6.4)
    ax = fig.add_subplot(projection="3d", proj_type="ortho")
    if pieces:
        lines = Line3DCollection(pieces_arr, cmap="viridis", norm=norm, linewidths=2.5)
        lines.set_array(values_arr)
        ax.add_collection3d(lines)
    else:
        ax.scatter(*tree.points_mm.T, c=tree.radius_mm, cmap="viridis", norm=norm, s=8, depthshade=False)
    if tree.bifurcations:
        b = np.array([np.asarray(x.position_mm, dtype=np.float64).reshape(3) for x in tree.bifurcations])
        ax.scatter(b[:, 0], b[:, 1], b[:, 2], color="black", s=12, depthshade=False, label="bifurcation")
    if tree.lesions:
        le = np.array([np.asarray(x.point_mm, dtype=np.float64).reshape(3) for x in tree.lesions])
        ax.scatter(le[:, 0], le[:, 1], le[:, 2], color="#d62728", marker="x", s=40, depthshade=False, label="lesion")
    if tree.bifurcations or tree.lesions:
        ax.legend(fontsize=8, loc="upper left")
    lo, hi = everything.min(axis=0), everything.max(axis=0)
    centre, half = 0.5 * (lo + hi), 0.5 * float(max((hi - lo).max(), 1e-3)) * 1.05
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_zlim(centre[2] - half, centre[2] + half)
    ax.set_box_aspect((1.0, 1.0, 1.0))
    ax.view_init(elev=MESH_ELEVATION_DEG, azim=MESH_AZIMUTH_DEG)
    label_world_axes_3d(ax)
    ax.set_title(f"centrelines: {len(tree.segments)} segments, coloured by area-equivalent radius", fontsize=10)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=ax, shrink=0.7)
    bar.set_label("area-equivalent radius (mm)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return save_png(fig, path)


# ------------------------------------------------------------------------------------ tables
def _components(tree) -> int:
    if tree.nodes:
        return len({int(n.component) for n in tree.nodes})
    if tree.segments:
        return len({int(s.component) for s in tree.segments})
    return int(np.count_nonzero(tree.parent < 0))


def _summary_rows(tree) -> list[tuple[str, str]]:
    total = float(sum(float(s.length_mm) for s in tree.segments))
    return [
        ("input kind", str(tree.input_kind)),
        ("topology grid spacing", f"{format_setting(float(tree.spacing_mm))} mm"),
        ("connected components", str(_components(tree))),
        ("segments", str(len(tree.segments))),
        ("bifurcations", str(len(tree.bifurcations))),
        ("root-to-leaf paths", str(len(tree.paths))),
        ("total centreline length", f"{format_setting(total)} mm"),
        ("lesions", str(len(tree.lesions))),
        ("closed loops (cut in the SWC)", str(len(tree.loops))),
        ("warnings", str(len(tree.warnings))),
    ]


def _segment_rows(tree) -> list[tuple]:
    return [(int(s.segment_id), int(s.parent_id), int(s.component), _fmt(s.length_mm, 4), _fmt(s.mean_radius_mm),
             _fmt(s.min_radius_mm), _fmt(s.tortuosity, 4), _fmt(s.tortuosity_vmtk), _fmt(s.mean_curvature_per_mm))
            for s in tree.segments[:MAX_SEGMENT_ROWS]]


def _bifurcation_rows(tree) -> list[tuple]:
    rows = []
    for b in tree.bifurcations:
        p = np.asarray(b.position_mm, dtype=np.float64).reshape(3)
        rows.append((int(b.node_id), int(b.parent_segment), ", ".join(str(int(c)) for c in b.child_segments),
                     "(" + ", ".join(f"{v:.2f}" for v in p) + ")", _fmt(b.parent_radius_mm),
                     ", ".join(_fmt(r) for r in b.child_radii_mm), _fmt(b.angle_between_children_deg),
                     ", ".join(_fmt(a) for a in b.angles_to_parent_deg), _fmt(b.murray_exponent)))
    return rows


def _stenosis_rows(tree) -> list[tuple]:
    rows = []
    for le in tree.lesions:
        p = np.asarray(le.point_mm, dtype=np.float64).reshape(3)
        rows.append((int(le.path), int(le.segment_id), _fmt(le.position_mm, 4),
                     "(" + ", ".join(f"{v:.2f}" for v in p) + ")", _fmt(le.mld_mm), _fmt(le.reference_diameter_mm),
                     _fmt(le.percent_diameter_stenosis), _fmt(le.percent_diameter_stenosis_mean_local),
                     _fmt(le.percent_area_stenosis), _fmt(le.lesion_length_mm), str(le.grade)))
    return rows


def analysis_report_sections(page: ReportPage, tree, figures_dir, *, heading_prefix: str = "",
                             list_warnings: bool = True, max_paths: int = 12) -> ReportPage:
    """Add a vessel analysis to ``page``: summary, profile and tree figures, three tables.

    Args:
        page: the :class:`~vesselfield.report.html.ReportPage` to extend (returned).
        tree: an :class:`~vesselfield.analysis.result.AnalyzedTree`.
        figures_dir: folder the PNGs are written into (created; names in :data:`FIGURE_FILES`);
            the page embeds their bytes.
        heading_prefix: put in front of every heading (e.g. ``"Vessel analysis: "``).
        list_warnings: add a table of ``tree.warnings`` (when there are any); off when the page
            already shows them at its top.
        max_paths: panels of :func:`figure_diameter_profiles`.

    Sections: "Summary", "Warnings", "Diameter profiles", "Centrelines by radius", "Segments" (at
    most :data:`MAX_SEGMENT_ROWS` rows, a note says when more), "Bifurcations", "Stenoses".
    """
    tree = _check_tree(tree)
    if not isinstance(page, ReportPage):
        raise VesselfieldError(f"page must be a ReportPage, got {type(page).__name__}")
    prefix = str(heading_prefix)
    folder = report_folder(figures_dir)
    page.add_summary(_summary_rows(tree), heading=f"{prefix}Summary")
    if list_warnings and tree.warnings:
        page.add_table(f"{prefix}Warnings", ("warning",), [(str(w),) for w in tree.warnings])

    profiles = figure_diameter_profiles(folder / FIGURE_FILES["profiles"], tree, max_paths=max_paths)
    page.add_figure(profiles, "diameter profiles",
                    "Lumen diameter D(s) = 2 × area-equivalent radius (mm) against the arc length from the root "
                    "(mm), one panel per root-to-leaf path; dashed: the interpolated reference diameter; grey: "
                    "samples left out of the statistics (bifurcation zones, vessel ends, open cross-sections); red triangles: "
                    "lesions at their minimal lumen diameter, with the percent diameter stenosis.",
                    heading=f"{prefix}Diameter profiles")
    tree_png = figure_tree_radius(folder / FIGURE_FILES["tree"], tree)
    page.add_figure(tree_png, "centrelines coloured by radius",
                    "The centrelines in LPS world mm (equal scales), coloured by the area-equivalent cross-section "
                    "radius (mm); black dots: bifurcations; red crosses: lesions.",
                    heading=f"{prefix}Centrelines by radius")

    page.add_table(f"{prefix}Segments",
                   ("segment", "parent", "component", "length (mm)", "mean radius (mm)", "min radius (mm)",
                    "tortuosity (L/C)", "tortuosity (VMTK, L/C − 1)", "mean curvature (1/mm)"),
                   _segment_rows(tree), numeric=tuple(range(9)))
    if len(tree.segments) > MAX_SEGMENT_ROWS:
        page.add_paragraph(f"Showing the first {MAX_SEGMENT_ROWS} of {len(tree.segments)} segments; segments.csv "
                           f"lists them all.", note=True)
    elif not tree.segments:
        page.add_paragraph("No segment.", note=True)
    page.add_table(f"{prefix}Bifurcations",
                   ("node", "parent segment", "child segments", "position (mm, LPS)", "parent radius (mm)",
                    "child radii (mm)", "angle between children (°)", "angles to parent (°)", "Murray exponent"),
                   _bifurcation_rows(tree), numeric=(0, 1, 4, 6, 8))
    if not tree.bifurcations:
        page.add_paragraph("No bifurcation.", note=True)
    page.add_table(f"{prefix}Stenoses",
                   ("path", "segment", "position from root (mm)", "MLD position (mm, LPS)", "MLD (mm)",
                    "reference diameter (mm)", "%DS", "%DS (mean-local reference)", "%AS", "lesion length (mm)",
                    "CAD-RADS"),
                   _stenosis_rows(tree), numeric=(0, 1, 2, 4, 5, 6, 7, 8, 9))
    if not tree.lesions:
        page.add_paragraph("No lesion found.", note=True)
    return page


def write_analysis_report(out_dir, tree, *, title: str = "Vessel analysis", surface=None,
                          viewer: bool = True) -> Path:
    """Write ``out_dir/report.html`` with the analysis sections, the PNGs in ``out_dir/figures/``.

    The tree's warnings are shown at the top of the page. ``viewer``: an interactive 3D view of
    the centreline tree coloured by radius, over the analysed ``surface`` (a mesh) when given.
    Returns the page's path.
    """
    tree = _check_tree(tree)
    out = report_folder(out_dir)
    page = ReportPage(title, note="Centrelines, radii, branch graph and stenoses of a vessel tree (LPS world, mm).",
                      warnings=[str(w) for w in tree.warnings])
    if viewer and len(tree) > 1:
        from vesselfield.report.viewer.build import add_view, tree_scene

        add_view(page, tree_scene, tree, surface=surface,
                 caption="The centreline tree coloured by its area-equivalent radius (mm).")
    analysis_report_sections(page, tree, out / FIGURES_DIR, list_warnings=False)
    return page.write(out / REPORT_NAME)
