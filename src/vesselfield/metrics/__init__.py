"""Metrics on NumPy arrays: overlap, topology (clDice), surface and mesh distances, reconstruction errors.

A functional core (as MONAI's metrics): every function takes ``(pred, target)`` in that order and
returns a Python float. Binary volumes are bool or 0/1 arrays (threshold probability maps
yourself, or use :func:`evaluate_volumes`, which does); distances are in mm given the voxel
spacing. Definitions, units, empty-input conventions and sources: ``docs/metrics.md``.

Importing this package pulls in NumPy only; SciPy and scikit-image load on first use.
"""

from vesselfield.metrics.evaluate import METRIC_INFO, evaluate_volumes, format_metrics_table
from vesselfield.metrics.overlap import dice, iou, jaccard_distance
from vesselfield.metrics.reconstruction import re_error, re_mse
from vesselfield.metrics.surface import (
    MeshDistance,
    assd_mm,
    chamfer_distance_mm,
    chamfer_voxel_mm,
    hausdorff95_mm,
    hausdorff_mm,
    mesh_accuracy_mm,
    mesh_accuracy_mm_from_meshes,
    mesh_completion,
    mesh_completion_from_meshes,
    sample_surface_points,
    surface_distance_to_zero_level_mm,
    surface_points,
)
from vesselfield.metrics.topology import cldice, cldice_scores, skeleton, topology_precision, topology_sensitivity

__all__ = [
    "METRIC_INFO",
    "MeshDistance",
    "assd_mm",
    "chamfer_distance_mm",
    "chamfer_voxel_mm",
    "cldice",
    "cldice_scores",
    "dice",
    "evaluate_volumes",
    "format_metrics_table",
    "hausdorff95_mm",
    "hausdorff_mm",
    "iou",
    "jaccard_distance",
    "mesh_accuracy_mm",
    "mesh_accuracy_mm_from_meshes",
    "mesh_completion",
    "mesh_completion_from_meshes",
    "re_error",
    "re_mse",
    "sample_surface_points",
    "skeleton",
    "surface_distance_to_zero_level_mm",
    "surface_points",
    "topology_precision",
    "topology_sensitivity",
]
