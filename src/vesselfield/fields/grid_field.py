"""An explicit voxel-grid field: one learnable value per voxel, sampled trilinearly.

The CPU-friendly alternative to a neural field (on 2 CPU cores an explicit grid beat a
pure-PyTorch hash grid at equal wall time; ``/work/shared/NOTES-two-view.md``). It has the same
interface as :class:`~vesselfield.fields.NeuralField`: ``forward(points_mm)`` returns
``{"occupancy", "sdf"}``, with the same read-outs (``o = sigmoid(-alpha s)`` for ``"sdf"``,
``o = sigmoid(v)`` of a stored logit ``v`` for ``"occupancy"``).

Sampling follows :class:`~vesselfield.grid.VolumeGrid`: the value of voxel ``(i, j, k)`` sits at
its centre ``origin + (i, j, k) * spacing`` (``F.grid_sample`` with ``align_corners=True`` on the
centres), values in between are trilinear, and outside the outermost centres the edge values are
held (``padding_mode="border"``), as the projector does up to the box's faces.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vesselfield.errors import VesselfieldError
from vesselfield.fields.mlp import (
    VolumeEvaluation,
    as_points_tensor,
    check_field_options,
    field_outputs,
    raw_for_occupancy,
)
from vesselfield.grid import VolumeGrid
from vesselfield.validate import require_finite


class GridField(VolumeEvaluation, nn.Module):
    """A learnable (X, Y, Z) volume on ``grid`` read out as SDF + occupancy or as occupancy.

    Args:
        grid: the voxel grid (LPS mm) the values live on; kept as ``.grid``.
        init_occupancy: starting occupancy, scalar or (X, Y, Z), strictly in (0, 1); used when
            ``init_sdf`` is not given (default 0.08: starting nearly empty helped the two-view fits).
        init_sdf: starting SDF in mm, scalar or (X, Y, Z); only for ``output="sdf"``.
        output: ``"sdf"`` (the parameter is the SDF ``s``, mm) or ``"occupancy"`` (the parameter
            is the occupancy logit).
        sdf_sharpness_alpha: alpha of ``o = sigmoid(-alpha s)`` (SDF-CAR).

    ``.values`` is the (X, Y, Z) float32 parameter; :meth:`volume` returns it.
    """

    def __init__(
        self,
        grid: VolumeGrid,
        init_occupancy=0.08,
        init_sdf=None,
        output: Literal["sdf", "occupancy"] = "sdf",
        sdf_sharpness_alpha: float = 50.0,
    ):
        super().__init__()
        check_field_options(output, sdf_sharpness_alpha)
        if not isinstance(grid, VolumeGrid):
            raise VesselfieldError("GridField needs a VolumeGrid")
        self.grid = grid
        self.output = output
        self.sdf_sharpness_alpha = float(sdf_sharpness_alpha)
        if init_sdf is not None:
            if output != "sdf":
                raise VesselfieldError("init_sdf is only meaningful for output='sdf'")
            init = np.asarray(init_sdf, dtype=np.float64)
            require_finite(init, "init_sdf")
        else:
            init = raw_for_occupancy(init_occupancy, output, self.sdf_sharpness_alpha)
        if init.ndim != 0 and init.shape != grid.shape:
            raise VesselfieldError(f"initial volume has shape {init.shape}, grid has {grid.shape}")
        self.values = nn.Parameter(torch.as_tensor(np.broadcast_to(init, grid.shape).copy(), dtype=torch.float32))
        # Index -> grid_sample coordinate: u = idx * 2 / (n - 1) - 1, and a 1-voxel axis pins u = 0.
        n = np.asarray(grid.shape, dtype=np.float64)
        scale = np.where(n > 1, 2.0 / np.maximum(n - 1, 1), 0.0)
        self.register_buffer("_scale", torch.tensor(scale / grid.spacing, dtype=torch.float32), persistent=False)
        self.register_buffer("_shift", torch.tensor(np.where(n > 1, -1.0, 0.0), dtype=torch.float32), persistent=False)
        self.register_buffer("_origin", torch.tensor(grid.origin, dtype=torch.float32), persistent=False)

    def volume(self) -> torch.Tensor:
        """(X, Y, Z) the parameter volume: SDF (mm) for ``"sdf"``, occupancy logits otherwise."""
        return self.values

    def occupancy_volume(self) -> torch.Tensor:
        """(X, Y, Z) occupancy of every voxel (the read-out applied voxel-wise)."""
        return field_outputs(self.values, self.output, self.sdf_sharpness_alpha)["occupancy"]

    def sample(self, points_mm) -> torch.Tensor:
        """(..., 3) world mm -> (...,) trilinear interpolation of the parameter volume."""
        p = as_points_tensor(points_mm, self.values.device)
        lead = p.shape[:-1]
        u = (p.reshape(-1, 3) - self._origin) * self._scale + self._shift
        # grid_sample's last coordinate indexes the first volume axis: (x, y, z) -> (k, j, i).
        coords = u.flip(-1).view(1, 1, 1, -1, 3)
        out = F.grid_sample(
            self.values[None, None], coords, mode="bilinear", padding_mode="border", align_corners=True
        )
        return out.reshape(lead)

    def forward(self, points_mm) -> dict:
        """(..., 3) world mm -> ``{"occupancy": (...,), "sdf": (...,) or None}`` (float32)."""
        return field_outputs(self.sample(points_mm), self.output, self.sdf_sharpness_alpha)
