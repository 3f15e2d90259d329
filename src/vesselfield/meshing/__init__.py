"""Meshing and volumes of distances: marching cubes into world mm, clean-up, checks; label -> SDF;
mesh -> occupancy and occupancy resampling between grids."""

from vesselfield.meshing.marching_cubes import (
    cfd_check,
    default_level,
    format_mesh_summary,
    infer_inside,
    inside_at_border_fraction,
    keep_largest_component,
    mesh_from_volume,
    mesh_summary,
)
from vesselfield.meshing.occupancy import iso_grid_over, resample_linear, resample_occupancy, voxelize_mesh
from vesselfield.meshing.signed_distance import signed_distance_from_mask, signed_distance_volume

__all__ = ["cfd_check", "default_level", "inside_at_border_fraction", "format_mesh_summary", "infer_inside", "keep_largest_component", "mesh_from_volume", "mesh_summary",
           "iso_grid_over", "resample_linear", "resample_occupancy", "signed_distance_from_mask", "signed_distance_volume", "voxelize_mesh"]
