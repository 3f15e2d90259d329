"""Coordinate MLPs and the neural field that maps world points to (SDF, occupancy).

- :class:`ResidualMLP`: SDF-CAR's network (Reda et al., MIDL 2026 submission): hidden layers of
  equal width joined by residual connections, on top of a hash-grid encoding.
- :class:`SkipMLP`: NeCA's occupancy network (Wang, Banerjee & Grau 2024): a NeRF-style MLP
  (Mildenhall et al. 2020) with LeakyReLU whose input is concatenated back in at ``skip_layer``.
- :class:`NeuralField`: normalisation (world mm -> ``[0, 1]^3`` of its grid) + encoding +
  network, read out as an SDF and an occupancy ``o = sigmoid(-alpha s)`` (SDF-CAR), or as an
  occupancy ``o = sigmoid(network output)`` (NeCA).

In both MLPs ``n_layers`` counts the hidden layers (``Linear`` + activation, width
``hidden_dim``); a final linear head maps to ``out_dim`` and is kept as ``.output_layer``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import nn

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid

#: Default number of points per chunk in :meth:`NeuralField.evaluate_volume`.
DEFAULT_CHUNK_POINTS = 65536


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01)
    if name == "softplus":
        # beta = 100 is the smooth-ReLU of the SDF literature (IGR, Gropp et al. 2020): close to
        # ReLU but with a continuous gradient, which eikonal losses need.
        return nn.Softplus(beta=100.0)
    raise VesselfieldError(f"unknown activation {name!r}: use relu, leaky_relu or softplus")


class ResidualMLP(nn.Module):
    """MLP with residual connections between its hidden layers (SDF-CAR).

    ``h_0 = act(W_0 x + b_0)``, ``h_l = h_(l-1) + act(W_l h_(l-1) + b_l)`` for ``l = 1..n_layers-1``,
    output ``W_out h + b_out``.

    Args:
        in_dim: input width (the encoding's ``output_dim``).
        hidden_dim: width of the hidden layers.
        n_layers: number of hidden layers (>= 1).
        out_dim: output width (1 for an SDF or an occupancy logit).
        activation: ``"relu" | "leaky_relu" | "softplus"`` (softplus with beta = 100).

    Forward: (N, in_dim) -> (N, out_dim).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 64,
        n_layers: int = 8,
        out_dim: int = 1,
        activation: Literal["relu", "leaky_relu", "softplus"] = "relu",
    ):
        super().__init__()
        if in_dim < 1 or hidden_dim < 1 or n_layers < 1 or out_dim < 1:
            raise VesselfieldError("ResidualMLP needs positive in_dim, hidden_dim, n_layers and out_dim")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.layers = nn.ModuleList(
            [nn.Linear(in_dim, hidden_dim)] + [nn.Linear(hidden_dim, hidden_dim) for _ in range(n_layers - 1)]
        )
        self.act = _activation(activation)
        self.output_layer = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.layers[0](x))
        for layer in self.layers[1:]:
            h = h + self.act(layer(h))
        return self.output_layer(h)


class SkipMLP(nn.Module):
    """NeCA's occupancy MLP: LeakyReLU layers with the input re-injected at ``skip_layer``.

    Hidden layer ``l`` maps ``h_(l-1)`` (``x`` for ``l = 0``) to ``act(W_l . + b_l)``; layer
    ``skip_layer`` takes ``cat(h_(skip_layer-1), x)`` instead, as NeRF's layer 5 does.

    Args:
        in_dim: input width (the encoding's ``output_dim``).
        hidden_dim: width of the hidden layers (NeCA: 256).
        n_layers: number of hidden layers (NeCA: 8).
        skip_layer: index (0-based) of the hidden layer that also receives the input, in
            ``[1, n_layers)``.
        out_dim: output width (1: an occupancy logit).
        negative_slope: LeakyReLU slope.

    Forward: (N, in_dim) -> (N, out_dim).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 256,
        n_layers: int = 8,
        skip_layer: int = 4,
        out_dim: int = 1,
        negative_slope: float = 0.01,
    ):
        super().__init__()
        if in_dim < 1 or hidden_dim < 1 or n_layers < 1 or out_dim < 1:
            raise VesselfieldError("SkipMLP needs positive in_dim, hidden_dim, n_layers and out_dim")
        if not 1 <= skip_layer < n_layers:
            raise VesselfieldError(f"skip_layer must be in [1, {n_layers}), got {skip_layer}")
        self.in_dim, self.out_dim, self.skip_layer = int(in_dim), int(out_dim), int(skip_layer)
        widths_in = [in_dim] + [hidden_dim + (in_dim if l == skip_layer else 0) for l in range(1, n_layers)]
        self.layers = nn.ModuleList([nn.Linear(w, hidden_dim) for w in widths_in])
        self.act = nn.LeakyReLU(negative_slope)
        self.output_layer = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for l, layer in enumerate(self.layers):
            if l == self.skip_layer:
                h = torch.cat((h, x), dim=-1)
            h = self.act(layer(h))
        return self.output_layer(h)


# ----------------------------------------------------------------------------- field read-out
def check_field_options(output: str, sdf_sharpness_alpha: float) -> None:
    if output not in ("sdf", "occupancy"):
        raise VesselfieldError(f"unknown field output {output!r}: use sdf or occupancy")
    if not (math.isfinite(sdf_sharpness_alpha) and sdf_sharpness_alpha > 0):
        raise VesselfieldError(f"sdf_sharpness_alpha must be positive and finite, got {sdf_sharpness_alpha}")


def field_outputs(raw: torch.Tensor, output: str, sdf_sharpness_alpha: float) -> dict:
    """Raw field values (...,) -> ``{"occupancy": (...,), "sdf": (...,) or None}``.

    ``"sdf"``: ``raw`` is a signed-distance-like value ``s`` (negative inside) and
    ``o = sigmoid(-alpha s)`` (SDF-CAR). ``"occupancy"``: ``o = sigmoid(raw)`` (NeCA).
    """
    if output == "sdf":
        return {"occupancy": torch.sigmoid(-sdf_sharpness_alpha * raw), "sdf": raw}
    return {"occupancy": torch.sigmoid(raw), "sdf": None}


def raw_for_occupancy(occupancy, output: str, sdf_sharpness_alpha: float):
    """The raw value whose read-out is ``occupancy`` in (0, 1): the inverse of :func:`field_outputs`."""
    o = np.asarray(occupancy, dtype=np.float64)
    if not np.all(np.isfinite(o)) or np.any((o <= 0) | (o >= 1)):
        raise VesselfieldError("initial occupancy must lie strictly between 0 and 1")
    logit = np.log(o) - np.log1p(-o)
    return -logit / sdf_sharpness_alpha if output == "sdf" else logit


def as_points_tensor(points_mm, device, dtype=torch.float32) -> torch.Tensor:
    """(..., 3) points (tensor or array-like) -> a float tensor on ``device``, checked."""
    if isinstance(points_mm, torch.Tensor):
        p = points_mm.to(device=device, dtype=dtype)
    else:
        p = torch.as_tensor(np.asarray(points_mm, dtype=np.float64), dtype=dtype, device=device)
    if p.ndim < 1 or p.shape[-1] != 3:
        raise VesselfieldError(f"points_mm must have shape (..., 3), got {tuple(p.shape)}")
    return p


class VolumeEvaluation:
    """Mixin: ``occupancy`` and chunked ``evaluate_volume`` on top of ``forward(points_mm)``."""

    output: str

    def occupancy(self, points_mm) -> torch.Tensor:
        """(..., 3) world mm -> (...,) occupancy in (0, 1)."""
        return self(points_mm)["occupancy"]

    @torch.no_grad()
    def evaluate_volume(self, grid: VolumeGrid, chunk: int = DEFAULT_CHUNK_POINTS) -> dict:
        """Evaluate the field at every voxel centre of ``grid``, ``chunk`` points at a time.

        Returns ``{"occupancy": (X, Y, Z) float32}`` plus ``"sdf": (X, Y, Z) float32`` for an
        SDF field, as NumPy arrays.
        """
        if chunk < 1:
            raise VesselfieldError(f"chunk must be positive, got {chunk}")
        device = next(self.parameters()).device
        shape = grid.shape
        n = grid.num_voxels
        keys = ["occupancy"] + (["sdf"] if self.output == "sdf" else [])
        out = {k: np.empty(n, dtype=np.float32) for k in keys}
        origin, spacing = grid.origin, grid.spacing
        for start in range(0, n, chunk):
            flat = np.arange(start, min(start + chunk, n))
            ijk = np.stack(np.unravel_index(flat, shape), axis=-1)
            # float64 positions cast once, exactly as grid.voxel_centers_mm() computes them.
            pts = (origin + ijk * spacing).astype(np.float32)
            res = self(torch.from_numpy(pts).to(device))
            for k in keys:
                out[k][start : start + len(flat)] = res[k].float().cpu().numpy()
        return {k: v.reshape(shape) for k, v in out.items()}


class NeuralField(VolumeEvaluation, nn.Module):
    """World points (LPS mm) -> SDF and occupancy through an encoding and a network.

    ``points_mm -> normalize_points(., grid) in [0, 1]^3 -> encoding -> network -> s``, then
    ``o = sigmoid(-alpha s)`` for ``output="sdf"`` (SDF-CAR; ``s`` is unbounded and negative
    inside, ``alpha`` sets how sharp the wall is, in 1/mm when ``s`` is trained in mm) or
    ``o = sigmoid(s)`` for ``output="occupancy"`` (NeCA; no SDF).

    Args:
        encoding: a module with ``output_dim`` mapping (N, 3) in ``[0, 1]^3`` to (N, output_dim)
            (:class:`~vesselfield.encodings.HashGridEncoding`, :class:`~vesselfield.encodings.FourierFeatures`).
        network: a module mapping (N, encoding.output_dim) to (N, 1).
        output: ``"sdf" | "occupancy"``.
        sdf_sharpness_alpha: alpha of the SDF -> occupancy sigmoid.
        grid: the volume the field is built for; its box is the normalisation (kept as ``.grid``).
        init_occupancy: if given, the network's ``output_layer`` gets zero weights and the bias
            whose read-out is this occupancy, so the field starts at exactly this occupancy
            everywhere (with alpha = 50 a default-initialised head gives occupancies anywhere in
            (0, 1); starting nearly empty, ~0.08, helped the two-view fits). The head's weights
            get gradients at once; the layers below follow from the second step.
    """

    def __init__(
        self,
        encoding: nn.Module,
        network: nn.Module,
        output: Literal["sdf", "occupancy"] = "sdf",
        sdf_sharpness_alpha: float = 50.0,
        *,
        grid: VolumeGrid,
        init_occupancy: float | None = None,
    ):
        super().__init__()
        check_field_options(output, sdf_sharpness_alpha)
        if not isinstance(grid, VolumeGrid):
            raise VesselfieldError("NeuralField needs grid=VolumeGrid(...) for its normalisation")
        enc_dim = getattr(encoding, "output_dim", None)
        net_in = getattr(network, "in_dim", None)
        if enc_dim is not None and net_in is not None and enc_dim != net_in:
            raise VesselfieldError(f"encoding gives {enc_dim} features but the network takes {net_in}")
        if getattr(network, "out_dim", 1) != 1:
            raise VesselfieldError(f"a field's network must have out_dim 1, got {network.out_dim}")
        self.encoding = encoding
        self.network = network
        self.output = output
        self.sdf_sharpness_alpha = float(sdf_sharpness_alpha)
        self.grid = grid
        if init_occupancy is not None:
            head = getattr(network, "output_layer", None)
            if not isinstance(head, nn.Linear):
                raise VesselfieldError("init_occupancy needs a network with a Linear output_layer")
            with torch.no_grad():
                head.weight.zero_()
                head.bias.fill_(float(raw_for_occupancy(init_occupancy, output, self.sdf_sharpness_alpha)))

    def forward(self, points_mm) -> dict:
        """(..., 3) world mm -> ``{"occupancy": (...,), "sdf": (...,) or None}`` (float32)."""
        from vesselfield.encodings.hash_grid import normalize_points

        device = next(self.parameters()).device
        p = as_points_tensor(points_mm, device)
        lead = p.shape[:-1]
        x = normalize_points(p.reshape(-1, 3), self.grid)
        raw = self.network(self.encoding(x)).reshape(lead)
        return field_outputs(raw, self.output, self.sdf_sharpness_alpha)
