"""NeRF positional encoding (Mildenhall et al., ECCV 2020, eq. 4).

``gamma(p) = (p, sin(2^0 pi p), cos(2^0 pi p), ..., sin(2^(K-1) pi p), cos(2^(K-1) pi p))``
applied to every coordinate. Inputs follow the package's ``[0, 1]^3`` convention (see
:func:`vesselfield.encodings.normalize_points`); the paper's ``pi`` is kept, so frequency ``k``
makes ``2^(k-1)`` full periods across the unit cube.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vesselfield.errors import VesselfieldError


class FourierFeatures(nn.Module):
    """Sinusoidal features of ``K = n_frequencies`` octaves.

    Args:
        n_frequencies: number of octaves K (NeRF: 10 for positions); 0 leaves only the input.
        include_input: whether ``p`` itself leads the output.
        in_dim: width D of the input's last axis (3 for points).

    Forward: (..., D) -> (..., output_dim) with ``output_dim = D (include_input + 2 K)``, laid
    out as ``[p, sin(2^0 pi p), cos(2^0 pi p), sin(2^1 pi p), ...]``, each block D wide.
    """

    def __init__(self, n_frequencies: int, include_input: bool = True, in_dim: int = 3):
        super().__init__()
        if n_frequencies < 0 or in_dim < 1:
            raise VesselfieldError(
                f"Fourier features need n_frequencies >= 0 and in_dim >= 1, got {n_frequencies}, {in_dim}"
            )
        if n_frequencies == 0 and not include_input:
            raise VesselfieldError("Fourier features with no frequency and no input would be empty")
        self.n_frequencies = int(n_frequencies)
        self.include_input = bool(include_input)
        self.in_dim = int(in_dim)
        self.register_buffer(
            "frequencies", math.pi * 2.0 ** torch.arange(self.n_frequencies, dtype=torch.float32), persistent=False
        )

    @property
    def output_dim(self) -> int:
        return self.in_dim * (int(self.include_input) + 2 * self.n_frequencies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise VesselfieldError(f"Fourier features expect (..., {self.in_dim}) input, got {tuple(x.shape)}")
        angles = x[..., None, :] * self.frequencies.to(x.dtype)[:, None]  # (..., K, D)
        # Interleave per octave: [sin, cos] of octave 0, then of octave 1, ...
        waves = torch.stack((torch.sin(angles), torch.cos(angles)), dim=-2).flatten(-3)  # (..., 2 K D)
        return torch.cat((x, waves), dim=-1) if self.include_input else waves
