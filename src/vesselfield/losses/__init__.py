"""Losses, every one ``(pred, target)``: projection losses of SDF-CAR (imports torch).

See ``vesselfield.losses.projection``.
"""

from vesselfield.losses.projection import (
    TARGET_KINDS,
    downsample_mask,
    downsample_view,
    geometric_projection_loss,
    hard_threshold_geometric_loss,
    occupancy_projection_loss,
    sdf_car_loss,
)

__all__ = [
    "TARGET_KINDS",
    "downsample_mask",
    "downsample_view",
    "geometric_projection_loss",
    "hard_threshold_geometric_loss",
    "occupancy_projection_loss",
    "sdf_car_loss",
]
