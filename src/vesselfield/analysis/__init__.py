"""Vessel analysis: centrelines, radii, branch graph, bifurcations and stenosis grading (3D QCA)
of any field, mask, mesh, network or SWC tree (docs/methods/analysis.md).

    from vesselfield.analysis import analyze
    tree = analyze(sdf_volume, grid)        # or a mask, a trimesh mesh, a VesselTree, a network
    tree.lesions, tree.segments, tree.bifurcations
"""

from __future__ import annotations

from vesselfield.analysis.api import analyze, as_wall_field
from vesselfield.analysis.config import AnalysisConfig
from vesselfield.analysis.core import analyze_field
from vesselfield.analysis.result import (AnalyzedTree, Bifurcation, DiameterProfile, GraphNode, Lesion, Segment,
                                         cad_rads_grade)

__all__ = ["analyze", "analyze_field", "as_wall_field", "AnalysisConfig", "AnalyzedTree", "Segment", "GraphNode",
           "Bifurcation", "Lesion", "DiameterProfile", "cad_rads_grade"]
