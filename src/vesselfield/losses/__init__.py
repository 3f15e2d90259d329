"""Losses, every one ``(pred, target)`` (imports torch).

- ``vesselfield.losses.projection``: the projection losses of SDF-CAR and NeCA.
- ``vesselfield.losses.igr``: IGR surface, normal, eikonal and nesting terms (implicit vessel models).
"""

from vesselfield.losses.igr import (
    eikonal_loss,
    nesting_loss,
    nesting_violation_fraction,
    normal_loss,
    spatial_gradient,
    surface_loss,
)
from vesselfield.losses.projection import (
    TARGET_KINDS,
    downsample_mask,
    downsample_rendering,
    geometric_projection_loss,
    hard_threshold_geometric_loss,
    occupancy_projection_loss,
    sdf_car_loss,
)

__all__ = [
    "eikonal_loss",
    "nesting_loss",
    "nesting_violation_fraction",
    "normal_loss",
    "spatial_gradient",
    "surface_loss",
    "TARGET_KINDS",
    "downsample_mask",
    "downsample_rendering",
    "geometric_projection_loss",
    "hard_threshold_geometric_loss",
    "occupancy_projection_loss",
    "sdf_car_loss",
]
