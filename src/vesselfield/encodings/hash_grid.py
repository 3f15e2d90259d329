"""Multiresolution hash encoding (Instant-NGP: Müller, Evans, Schied, Keller, SIGGRAPH 2022).

Input convention (the whole package): a field's coordinates are normalised to the unit cube
``[0, 1]^3`` spanned by its :class:`~vesselfield.grid.VolumeGrid`'s box (the voxel centres
± half a voxel, ``grid.bounds_mm``); :func:`normalize_points` does the mapping. ``[0, 1]`` is
what tiny-cuda-nn expects too, so both backends take the same input. Points outside the cube
are clamped onto it by the encoding.

Level ``l`` (paper, Sec. 3, eqs. 2-4) has resolution ``N_l = floor(N_min * b**l)`` with
``b = exp((ln N_max - ln N_min) / (L - 1))``; a point ``x`` is scaled to ``x * N_l``, the 8
surrounding vertices (integer coordinates in ``[0, N_l]``) are looked up in the level's table
and blended trilinearly. A level whose ``(N_l + 1)^3`` vertices fit in ``T`` entries is indexed
densely (``i + j (N_l+1) + k (N_l+1)^2``, a one-to-one map); the others use the spatial hash
``(i * 1  XOR  j * 2654435761  XOR  k * 805459861) mod T`` (eq. 4). Entries start as
``U(-1e-4, 1e-4)``.

Backends. ``"torch"`` is the pure-PyTorch implementation here: all levels are gathered with one
index into one flat table, so it runs on any device and differentiates with respect to the table
(and, piecewise, the input points). ``"tcnn"`` wraps tiny-cuda-nn's ``tcnn.Encoding`` (HashGrid,
same L, F, T, N_min and ``per_level_scale = b``). tiny-cuda-nn places vertices differently
(scale ``N_min b^l - 1``, a half-vertex offset, ``ceil`` resolutions, its own table layout), so
the two backends give different numbers for the same parameters: they are the same *kind* of
encoding, not the same function, and a table trained with one cannot be loaded into the other.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import nn

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid

#: Instant-NGP's spatial-hash primes (eq. 4); the first is 1 for cache coherence along x.
HASH_PRIMES = (1, 2654435761, 805459861)

#: Half-width of the uniform initialisation of the tables (Instant-NGP, Sec. 4).
INIT_SCALE = 1e-4


def normalize_points(points_mm, grid: VolumeGrid):
    """World points (LPS mm) -> the unit cube of ``grid``'s box: ``(p - lo) / (hi - lo)``.

    Args:
        points_mm: (..., 3) world positions in mm (torch tensor or array-like).
        grid: the volume whose box ``grid.bounds_mm`` (voxel centres ± half a voxel) maps to
            ``[0, 1]^3``.

    Returns:
        (..., 3) normalised coordinates: a float32 tensor on the input's device for a tensor
        input (float64 input stays float64), a float64 NumPy array otherwise. Points outside the
        box map outside ``[0, 1]``; encodings clamp them.
    """
    lo, hi = grid.bounds_mm
    if isinstance(points_mm, torch.Tensor):
        if points_mm.shape[-1:] != (3,):
            raise VesselfieldError(f"points must have shape (..., 3), got {tuple(points_mm.shape)}")
        dtype = points_mm.dtype if points_mm.is_floating_point() else torch.float32
        lo_t = torch.as_tensor(lo, dtype=dtype, device=points_mm.device)
        extent = torch.as_tensor(hi - lo, dtype=dtype, device=points_mm.device)
        return (points_mm.to(dtype) - lo_t) / extent
    p = np.asarray(points_mm, dtype=np.float64)
    if p.shape[-1:] != (3,):
        raise VesselfieldError(f"points must have shape (..., 3), got {p.shape}")
    return (p - lo) / (hi - lo)


def level_resolutions(n_levels: int, base_resolution: int, finest_resolution: int) -> list[int]:
    """Per-level grid resolutions ``N_l = floor(N_min * b**l)`` (Instant-NGP eqs. 2-3)."""
    if n_levels == 1:
        return [int(base_resolution)]
    growth = math.exp((math.log(finest_resolution) - math.log(base_resolution)) / (n_levels - 1))
    # The tiny epsilon keeps exact powers (16 * 2**l) from flooring one below through rounding.
    return [int(math.floor(base_resolution * growth**l + 1e-9)) for l in range(n_levels)]


def _tcnn_available() -> bool:
    try:
        import tinycudann  # noqa: F401
    except Exception:  # ImportError, or a build that fails to load its CUDA library
        return False
    return True


class HashGridEncoding(nn.Module):
    """Instant-NGP multiresolution hash encoding of 3D points in ``[0, 1]^3``.

    Args:
        n_levels: number of levels L (paper: 16).
        n_features_per_level: features per level F (paper: 2).
        log2_hashmap_size: log2 of the maximum entries per level T (paper: 19).
        base_resolution: coarsest resolution N_min (paper: 16).
        finest_resolution: finest resolution N_max (paper: 2048 for its NeRF scenes). For a
            volume, ``max(grid.shape)`` to a few times that resolves the voxel scale.
        backend: ``"torch"`` (pure PyTorch, any device), ``"tcnn"`` (tiny-cuda-nn; a
            :class:`VesselfieldError` when it cannot be imported) or ``"auto"``: tcnn when it is
            importable and CUDA is available, else torch. ``auto`` is resolved once, here, and
            kept in ``.backend``: the two backends hold different tables, so choosing per call
            from the input's device would silently give a different field on CPU and GPU.

    Forward: ``x`` (N, 3) in ``[0, 1]^3`` (clamped) -> (N, L * F) float32, level-major
    (features of level 0 first), as tiny-cuda-nn orders them.
    """

    def __init__(
        self,
        n_levels: int = 16,
        n_features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        finest_resolution: int = 2048,
        backend: Literal["torch", "tcnn", "auto"] = "auto",
    ):
        super().__init__()
        if n_levels < 1 or n_features_per_level < 1:
            raise VesselfieldError("hash grid needs at least one level and one feature per level")
        if not 1 <= log2_hashmap_size <= 30:
            raise VesselfieldError(f"log2_hashmap_size must be in [1, 30], got {log2_hashmap_size}")
        if base_resolution < 1 or finest_resolution < base_resolution:
            raise VesselfieldError(
                f"hash grid resolutions must satisfy 1 <= base ({base_resolution}) <= finest ({finest_resolution})"
            )
        if backend not in ("torch", "tcnn", "auto"):
            raise VesselfieldError(f"unknown hash grid backend {backend!r}: use torch, tcnn or auto")
        if backend == "tcnn" and not _tcnn_available():
            raise VesselfieldError("backend='tcnn' was asked for but tinycudann cannot be imported")
        if backend == "auto":
            backend = "tcnn" if torch.cuda.is_available() and _tcnn_available() else "torch"

        self.n_levels = int(n_levels)
        self.n_features_per_level = int(n_features_per_level)
        self.log2_hashmap_size = int(log2_hashmap_size)
        self.hashmap_size = 1 << self.log2_hashmap_size
        self.base_resolution = int(base_resolution)
        self.finest_resolution = int(finest_resolution)
        self.backend = backend
        self.per_level_scale = (
            1.0
            if n_levels == 1
            else math.exp((math.log(finest_resolution) - math.log(base_resolution)) / (n_levels - 1))
        )
        self.resolutions = level_resolutions(n_levels, base_resolution, finest_resolution)
        self.dense_levels = [(n + 1) ** 3 <= self.hashmap_size for n in self.resolutions]
        sizes = [(n + 1) ** 3 if dense else self.hashmap_size for n, dense in zip(self.resolutions, self.dense_levels)]
        self.level_sizes = sizes
        self.level_offsets = [0] + list(np.cumsum(sizes[:-1]).tolist())

        if backend == "tcnn":
            import tinycudann as tcnn

            self._tcnn = tcnn.Encoding(
                n_input_dims=3,
                encoding_config={
                    "otype": "HashGrid",
                    "n_levels": self.n_levels,
                    "n_features_per_level": self.n_features_per_level,
                    "log2_hashmap_size": self.log2_hashmap_size,
                    "base_resolution": self.base_resolution,
                    "per_level_scale": self.per_level_scale,
                },
                dtype=torch.float32,
            )
            self.table = None
        else:
            self._tcnn = None
            self.table = nn.Parameter(
                torch.empty(sum(sizes), self.n_features_per_level).uniform_(-INIT_SCALE, INIT_SCALE)
            )
        # Per-level constants as buffers so that .to(device) carries them.
        res = torch.tensor(self.resolutions, dtype=torch.int64)
        self.register_buffer("_res", res, persistent=False)
        self.register_buffer("_offsets", torch.tensor(self.level_offsets, dtype=torch.int64), persistent=False)
        # Resolutions grow with the level, so the dense levels are the first ones.
        self._n_dense = sum(self.dense_levels)

    @property
    def output_dim(self) -> int:
        """L * F: the width of the encoding."""
        return self.n_levels * self.n_features_per_level

    def level_table(self, level: int) -> torch.Tensor:
        """(size_l, F) view of level ``level``'s entries in the torch backend's flat table."""
        if self.table is None:
            raise VesselfieldError("level_table is only available with the torch backend")
        start = self.level_offsets[level]
        return self.table[start : start + self.level_sizes[level]]

    def _cells(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) points in [0, 1] -> (N, L, 3) lower cell vertex (int64) and (N, L, 3) fraction."""
        scaled = x.clamp(0.0, 1.0)[:, None, :] * self._res.to(x.dtype)[None, :, None]
        # Points on the upper face belong to the last cell (fraction 1), not to a cell past it.
        lower = torch.minimum(scaled.detach().floor().long(), (self._res - 1)[None, :, None])
        return lower, scaled - lower.to(x.dtype)

    def corner_indices(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) points in [0, 1] -> (N, L, 8) table index of each cell corner within its level.

        Corner ``c`` is the vertex ``lower + (c & 1, (c >> 1) & 1, (c >> 2) & 1)``. Dense levels
        index one-to-one, hashed levels by Instant-NGP's XOR hash modulo T; all indices lie in
        ``[0, level_sizes[l]) ⊆ [0, T)``. Add ``level_offsets[l]`` for the flat table.
        """
        lower, _ = self._cells(self._check_points(x))
        return self._corner_indices(lower, with_offsets=False).reshape(lower.shape[0], self.n_levels, 8)

    def _corner_indices(self, lower: torch.Tensor, with_offsets: bool = True) -> torch.Tensor:
        """(N, L, 3) lower vertices -> (N, L, 2, 2, 2) indices, axes (z, y, x) so that the flat
        corner number is ``4 z + 2 y + x``."""
        # Per-axis terms for the lower and upper vertex, (N, L, 2), combined by broadcasting:
        # far fewer int64 operations than forming all 8 corners first.
        v = torch.stack((lower, lower + 1), dim=-1)  # (N, L, 3, 2)
        n_dense = self._n_dense
        parts = []
        if n_dense:
            vd = v[:, :n_dense]
            stride = (self._res[:n_dense] + 1)[None, :, None]
            t0 = vd[:, :, 0]
            if with_offsets:
                t0 = t0 + self._offsets[:n_dense][None, :, None]
            t1 = vd[:, :, 1] * stride
            t2 = vd[:, :, 2] * (stride * stride)
            parts.append(t2[..., :, None, None] + t1[..., None, :, None] + t0[..., None, None, :])
        if n_dense < self.n_levels:
            vh = v[:, n_dense:]
            # int64 products keep the low 32 bits exact and T is a power of two, so this equals
            # the uint32 wrap-around hash of the paper and of tiny-cuda-nn.
            h0 = vh[:, :, 0] * HASH_PRIMES[0]
            h1 = vh[:, :, 1] * HASH_PRIMES[1]
            h2 = vh[:, :, 2] * HASH_PRIMES[2]
            h = (h2[..., :, None, None] ^ h1[..., None, :, None] ^ h0[..., None, None, :]) & (self.hashmap_size - 1)
            if with_offsets:
                h = h + self._offsets[n_dense:][None, :, None, None, None]
            parts.append(h)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _check_points(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != 3:
            raise VesselfieldError(f"hash grid input must have shape (N, 3), got {tuple(x.shape)}")
        return x.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) points in ``[0, 1]^3`` -> (N, L * F) float32 features."""
        x = self._check_points(x)
        if self._tcnn is not None:
            if not x.is_cuda:
                raise VesselfieldError("the tcnn hash grid backend needs CUDA inputs; use backend='torch' on the CPU")
            return self._tcnn(x.clamp(0.0, 1.0)).float()
        lower, frac = self._cells(x)
        n = x.shape[0]
        idx = self._corner_indices(lower)  # (N, L, 2, 2, 2)
        # One gather for every level; index_select's backward (index_add_) is the fastest on CPU.
        feats = self.table.index_select(0, idx.reshape(-1)).view(n * self.n_levels, 8, self.n_features_per_level)
        # Trilinear weights (1 - f, f) per axis, combined in the same (z, y, x) corner order.
        w = torch.stack((1.0 - frac, frac), dim=-1)  # (N, L, 3, 2)
        w = w[:, :, 2, :, None, None] * w[:, :, 1, None, :, None] * w[:, :, 0, None, None, :]
        out = torch.bmm(w.reshape(n * self.n_levels, 1, 8), feats)  # (N L, 1, F)
        return out.view(n, self.output_dim)

    def extra_repr(self) -> str:
        return (
            f"levels={self.n_levels}, features={self.n_features_per_level}, T=2^{self.log2_hashmap_size}, "
            f"resolutions={self.resolutions[0]}..{self.resolutions[-1]}, backend={self.backend}"
        )
