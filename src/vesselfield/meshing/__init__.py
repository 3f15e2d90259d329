"""Meshing: marching cubes of SDF/occupancy volumes into world mm, clean-up, checks."""

from vesselfield.meshing.marching_cubes import (
    default_level,
    infer_inside,
    keep_largest_component,
    mesh_from_volume,
    mesh_summary,
)

__all__ = ["default_level", "infer_inside", "keep_largest_component", "mesh_from_volume", "mesh_summary"]
