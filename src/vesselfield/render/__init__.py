"""Differentiable rendering of volumes and fields into cone-beam projections (imports torch).

See ``vesselfield.render.projector`` and ``docs/geometry.md``.
"""

from vesselfield.render.footprint import voxel_footprint
from vesselfield.render.projector import (
    DEFAULT_CHUNK_RAYS,
    DEFAULT_MASK_THRESHOLD_MM,
    DEFAULT_STEP_VOXELS,
    default_step_mm,
    project_field,
    project_views,
    project_volume,
    projection_mask,
    ray_box_intersection,
)
from vesselfield.render.soft_distance import (
    DEFAULT_K_PER_MM,
    signed_distance_2d,
    soft_signed_distance_2d,
    soft_silhouette,
)
from vesselfield.render.system_matrix import RayVoxelMatrix, all_pixels, ray_voxel_matrix, visual_hull

__all__ = [
    "DEFAULT_CHUNK_RAYS",
    "DEFAULT_MASK_THRESHOLD_MM",
    "DEFAULT_STEP_VOXELS",
    "default_step_mm",
    "project_field",
    "project_views",
    "project_volume",
    "projection_mask",
    "ray_box_intersection",
    "RayVoxelMatrix",
    "all_pixels",
    "ray_voxel_matrix",
    "visual_hull",
    "voxel_footprint",
    "DEFAULT_K_PER_MM",
    "signed_distance_2d",
    "soft_signed_distance_2d",
    "soft_silhouette",
]
