"""``vesselfield analyze``: centrelines, radii, branch graph and stenosis grading (docs/methods/analysis.md)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vesselfield.cli.app import GeometryOpt, OriginOpt, Triple, app, build, echo_summary, given, set_option


@app.command("analyze")
def analyze_cmd(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="An SDF volume (NIfTI / MHA / NRRD / NPY; mm, "
                                      "negative inside), a mask (two values; any grid), a mesh (STL / PLY / OBJ / "
                                      "VTP), a run folder of any method, or an SWC tree."),
    out: Path = typer.Option(..., "--out", help="Output folder: tree.swc, centerlines.vtp, graph.json, "
                                                "graph.graphml, segments.csv, bifurcations.csv, stenoses.csv, "
                                                "report.html, summary.json."),
    root: Triple = typer.Option(None, "--root", help="Root the tree containing this point (X Y Z, LPS mm) there; "
                                                     "default: each tree's widest endpoint."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Isotropic spacing of the analysis grid, mm "
                                            "(default: the input's finest voxel; box / 192 for meshes and "
                                            "networks)."),
    min_branch_mm: Optional[float] = typer.Option(None, "--min-branch-mm", help="Prune terminal branches shorter "
                                                  "than this, mm (besides 1.5 x the junction radius)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="sdf or mask: override the detection of a volume's "
                                                            "kind (float -> sdf, two values -> mask)."),
    set_: Optional[List[str]] = set_option("analysis"),
    geometry: Optional[Path] = GeometryOpt,
    voxel_spacing: Triple = typer.Option(None, "--voxel-spacing", help="Voxel spacing X Y Z in mm of a .npy "
                                                                       "volume."),
    origin: Triple = OriginOpt,
):
    """Centrelines, radii (area-equivalent, inscribed, min / max chord), branch graph, bifurcation angles,
    Murray exponents and stenosis grading (QCA: MLD, reference, %DS, CAD-RADS) of any vessel input."""
    from vesselfield.analysis.config import AnalysisConfig
    from vesselfield.pipelines.analyze import analyze_files

    config = build(AnalysisConfig, given(spacing_mm=spacing, min_branch_mm=min_branch_mm), set_)
    echo_summary(analyze_files(input_path, out, config=config, root_mm=root, kind=kind, spacing_mm=voxel_spacing,
                               origin_mm=origin, geometry_path=geometry))
