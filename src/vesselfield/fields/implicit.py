"""The IGR-style SDF network of implicit vessel models (Alblas et al., STACOM 2022; Gropp et al., ICML 2020).

:class:`ImplicitSDFNetwork` maps normalised points ``x`` in ``[-1, 1]^3`` to ``K`` signed
distances (one per surface; normalised units, negative inside):

- ``n_layers`` hidden layers of width ``hidden_dim`` (paper: 6 x 256) with ReLU (paper) or
  Softplus beta = 100 (IGR); the input is concatenated back in at hidden layer ``skip_layer``
  (0-based; paper: the third hidden layer, 2) and the concatenation divided by sqrt(2) (IGR);
- geometric initialisation (Atzmon & Lipman, SAL, CVPR 2020; used by IGR): hidden weights
  N(0, 2 / width), zero biases, output weights N(sqrt(pi / width), 1e-6) and output bias
  ``-radius``, so that at initialisation every output is close to ``|x| - radius``, the SDF of a
  sphere;
- optional multiresolution hash-grid features (``encoding="hash"``, our fast option), appended to
  ``x``: their input weights start at zero (as IDR/NeuS do for positional encodings), so the
  geometric initialisation is untouched and the grid adds detail only where the loss asks.

Forward: (N, 3) normalised points -> (N, K).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from vesselfield.errors import VesselfieldError


class ImplicitSDFNetwork(nn.Module):
    """MLP SDF with IGR geometric initialisation, an input skip and optional hash-grid features.

    Args:
        out_dim: number of surfaces K (one SDF channel each).
        hidden_dim: hidden width (paper: 256).
        n_layers: number of hidden layers (paper: 6).
        skip_layer: 0-based hidden layer that also receives the input (paper: 2, the third);
            ``-1`` for none.
        activation: ``"relu"`` (paper) or ``"softplus"`` (beta = 100, IGR).
        init_radius: radius of the initial sphere, normalised units.
        encoding: ``"none"`` (paper) or ``"hash"`` (hash-grid features on ``[-1, 1]^3``).
        hash_levels, hash_features_per_level, hash_log2_size, hash_base_resolution,
        hash_finest_resolution: the hash grid's settings (see :class:`HashGridEncoding`).
    """

    def __init__(
        self,
        out_dim: int = 1,
        hidden_dim: int = 256,
        n_layers: int = 6,
        skip_layer: int = 2,
        activation: Literal["relu", "softplus"] = "relu",
        init_radius: float = 0.5,
        encoding: Literal["none", "hash"] = "none",
        hash_levels: int = 8,
        hash_features_per_level: int = 2,
        hash_log2_size: int = 15,
        hash_base_resolution: int = 8,
        hash_finest_resolution: int = 128,
    ):
        super().__init__()
        if out_dim < 1 or hidden_dim < 1 or n_layers < 1:
            raise VesselfieldError("ImplicitSDFNetwork needs positive out_dim, hidden_dim and n_layers")
        if not (skip_layer == -1 or 1 <= skip_layer < n_layers):
            raise VesselfieldError(f"skip_layer must be -1 or in [1, {n_layers}), got {skip_layer}")
        if activation not in ("relu", "softplus"):
            raise VesselfieldError(f"unknown activation {activation!r}: use relu or softplus")
        if encoding not in ("none", "hash"):
            raise VesselfieldError(f"unknown encoding {encoding!r}: use none or hash")
        if not (math.isfinite(init_radius) and init_radius > 0):
            raise VesselfieldError(f"init_radius must be positive, got {init_radius}")
        self.out_dim, self.skip_layer = int(out_dim), int(skip_layer)
        self.encoding = None
        if encoding == "hash":
            from vesselfield.encodings import HashGridEncoding

            self.encoding = HashGridEncoding(
                n_levels=hash_levels, n_features_per_level=hash_features_per_level,
                log2_hashmap_size=hash_log2_size, base_resolution=hash_base_resolution,
                finest_resolution=hash_finest_resolution, backend="torch",
            )
        n_extra = self.encoding.output_dim if self.encoding is not None else 0
        in_dim = 3 + n_extra
        widths_in = [in_dim] + [hidden_dim + (in_dim if l == skip_layer else 0) for l in range(1, n_layers)]
        self.layers = nn.ModuleList([nn.Linear(w, hidden_dim) for w in widths_in])
        self.output_layer = nn.Linear(hidden_dim, out_dim)
        self.act = nn.ReLU() if activation == "relu" else nn.Softplus(beta=100.0)
        self._geometric_init(float(init_radius), hidden_dim, n_extra)

    def _geometric_init(self, radius: float, hidden_dim: int, n_extra: int) -> None:
        with torch.no_grad():
            for l, layer in enumerate(self.layers):
                nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0) / math.sqrt(hidden_dim))
                nn.init.zeros_(layer.bias)
                if n_extra:
                    # Encoded features enter with zero weight: the network starts as the MLP of x alone.
                    if l == 0:
                        layer.weight[:, 3:] = 0.0
                    elif l == self.skip_layer:
                        layer.weight[:, hidden_dim + 3:] = 0.0
            nn.init.normal_(self.output_layer.weight, math.sqrt(math.pi) / math.sqrt(hidden_dim), 1e-6)
            nn.init.constant_(self.output_layer.bias, -radius)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) points in ``[-1, 1]^3`` -> (N, K) signed distances, normalised units."""
        if x.ndim != 2 or x.shape[1] != 3:
            raise VesselfieldError(f"points must have shape (N, 3), got {tuple(x.shape)}")
        inp = x
        if self.encoding is not None:
            inp = torch.cat((x, self.encoding((x + 1.0) * 0.5)), dim=-1)
        h = inp
        for l, layer in enumerate(self.layers):
            if l == self.skip_layer:
                h = torch.cat((h, inp), dim=-1) / math.sqrt(2.0)
            h = self.act(layer(h))
        return self.output_layer(h)
