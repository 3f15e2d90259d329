"""Fields on a band of voxels: the values SDF-CAR optimises, read out as every field is.

SDF-CAR (:mod:`vesselfield.methods.sdf_car`) optimises its field only on the band around the
visual hull (a flat list of B voxels). Both band fields return what every field of this package
returns, through the same read-out (:func:`vesselfield.fields.mlp.field_outputs`):
``{"occupancy": (B,), "sdf": (B,) or None}``, with ``o = sigmoid(-alpha s)`` for an SDF field
(``s`` in the field's normalised units, half the volume's largest extent = 1) and ``o = sigmoid(v)``
for an occupancy field.

- :class:`BandGridField`: one learnable value per band voxel (the ``cpu`` preset: on 2 CPU cores
  a hash grid reaches ~0.1 M points/s, far too slow for every band voxel every step).
- :class:`BandNeuralField`: a :class:`~vesselfield.fields.mlp.NeuralField` (hash grid + MLP, the
  paper's) evaluated at the band voxel centres (the ``gpu`` preset).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vesselfield.fields.mlp import NeuralField, check_field_options, field_outputs, raw_for_occupancy

__all__ = ["BandGridField", "BandNeuralField"]


class BandGridField(nn.Module):
    """One learnable raw value per band voxel, starting at ``init_occupancy`` everywhere.

    Args:
        n_values: B, the number of band voxels.
        output: ``"sdf"`` (values are ``s``) or ``"occupancy"`` (values are logits).
        sdf_sharpness_alpha: alpha of ``o = sigmoid(-alpha s)``.
        init_occupancy: the occupancy every voxel starts at, in (0, 1).
    """

    def __init__(self, n_values: int, output: Literal["sdf", "occupancy"], sdf_sharpness_alpha: float,
                 init_occupancy: float):
        super().__init__()
        check_field_options(output, sdf_sharpness_alpha)
        self.output = output
        self.sdf_sharpness_alpha = float(sdf_sharpness_alpha)
        raw = float(raw_for_occupancy(init_occupancy, output, self.sdf_sharpness_alpha))
        self.values = nn.Parameter(torch.full((int(n_values),), raw))

    def forward(self) -> dict:
        """``{"occupancy": (B,), "sdf": (B,) or None}``."""
        return field_outputs(self.values, self.output, self.sdf_sharpness_alpha)


class BandNeuralField(nn.Module):
    """A :class:`~vesselfield.fields.mlp.NeuralField` read out at fixed points (the band voxel centres).

    Args:
        field: the neural field (its ``output`` and ``sdf_sharpness_alpha`` decide the read-out).
        points_mm: (B, 3) world points, LPS mm.
    """

    def __init__(self, field: NeuralField, points_mm: torch.Tensor):
        super().__init__()
        self.field = field
        self.output = field.output
        self.register_buffer("points_mm", torch.as_tensor(points_mm, dtype=torch.float32), persistent=False)

    def forward(self) -> dict:
        """``{"occupancy": (B,), "sdf": (B,) or None}``."""
        return self.field(self.points_mm)
