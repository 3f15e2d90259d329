"""``report.html`` of a CT method's prediction (VesselSDF ``predict``, NUDF ``predict``).

The page: the run's summary lines, the mesh summary, the interactive 3D view (the CT as
slices and a 3D render, the prediction as a red overlay, the surface and the centreline tree),
a static picture of the surface (for browsers without WebGL2) and, for VesselSDF, the vessel
analysis sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from vesselfield.report.figures import figure_mesh
from vesselfield.report.html import REPORT_NAME, ReportPage, report_folder

__all__ = ["FIGURE_FILES", "write_prediction_report"]

FIGURE_FILES = {"mesh": "figure_mesh.png"}
"""File names of the figures :func:`write_prediction_report` writes next to ``report.html``."""


def write_prediction_report(out_dir, *, title: str, lines: Sequence[str], image, grid, overlay=None,
                            overlay_grid=None, overlay_label: str = "prediction (probability ≥ 0.5)", mesh=None,
                            analysis=None, warnings: Sequence[str] = (), note: str | None = None,
                            viewer: bool = True) -> Path:
    """Write ``out_dir/report.html`` (and ``figure_mesh.png`` when there is a mesh).

    Args:
        out_dir: the run folder.
        title: the page's title.
        lines: the run's summary lines (:attr:`RunSummary.lines`), one table row each.
        image: (X, Y, Z) CT on ``grid`` (:class:`~vesselfield.grid.VolumeGrid`, LPS mm).
        overlay: optional occupancy or probability in [0, 1] on ``overlay_grid`` (default ``grid``).
        mesh: optional predicted surface (``trimesh.Trimesh``, LPS mm).
        analysis: optional :class:`~vesselfield.analysis.AnalyzedTree` (tree in the view, sections).
        warnings: one-line problems of the run, shown first.
        note: one paragraph under the title.
        viewer: add the interactive 3D view (:func:`~vesselfield.report.viewer.build.ct_scene`).

    Returns:
        The page's path.
    """
    out = report_folder(out_dir)
    page = ReportPage(title, note=note, warnings=warnings)
    page.add_summary([(f"{k + 1}", str(line)) for k, line in enumerate(lines)], heading="Summary")
    if viewer:
        from vesselfield.report.viewer.build import add_view, ct_scene

        add_view(page, ct_scene, image, grid, overlay=overlay, overlay_grid=overlay_grid,
                 overlay_label=overlay_label, mesh=mesh, analysis=analysis,
                 caption="The CT as axial, coronal and sagittal slices and a 3D render, the prediction in red, "
                         "the surface and the centreline tree.")
    if mesh is not None and len(mesh.faces):
        page.add_mesh_summary(mesh)
        page.add_figure(figure_mesh(out / FIGURE_FILES["mesh"], mesh), "surface mesh",
                        "The predicted surface (world mm, equal scales, Lambert shading, light at the camera).")
    if analysis is not None:
        from vesselfield.report.analysis import analysis_report_sections

        analysis_report_sections(page, analysis, out, heading_prefix="Vessel analysis: ", list_warnings=False)
    return page.write(out / REPORT_NAME)
