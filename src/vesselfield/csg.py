"""Constructive solid geometry on signed distance fields (negative inside, any units).

- ``union(a, b) = min(a, b)``, ``intersection(a, b) = max(a, b)``, ``difference(a, b) = max(a, -b)``
  (a minus b): exact on the inside/outside classification; away from the surfaces they are
  bounds of the true distance rather than distances.
- ``smooth_union(a, b, k)``: the quadratic polynomial smooth minimum (I. Quilez, "smooth
  minimum", 2013), the blend Alblas et al. (STACOM 2022, Sec. 2.3) use to join vessels::

      h = max(k - |a - b|, 0) / k
      smooth_union(a, b, k) = min(a, b) - k * h**2 / 4

  It equals ``min(a, b)`` wherever ``|a - b| >= k`` (far from a junction) and lies below it,
  by at most ``k / 4`` (where ``a == b``), inside the blend region, which fills the crease
  between two vessels with a fillet about ``k`` wide. The same function is often written as
  ``mix(b, a, g) - k g (1 - g)`` with ``g = clamp(1/2 + (b - a) / (2k), 0, 1)``: the two forms are
  algebraically identical (tests check it). ``k`` is in the units of the SDFs (mm for blended
  vessel models); ``k = 0`` gives ``min``.

Every function takes NumPy arrays or torch tensors (broadcast together) and returns the same
kind; torch inputs keep autograd.
"""

from __future__ import annotations

from functools import reduce
from typing import Sequence

import numpy as np

from vesselfield.errors import VesselfieldError


def _pair(a, b):
    """(library, a, b): torch when either input is a tensor (both converted), else NumPy."""
    if any(type(v).__module__.startswith("torch") for v in (a, b)):
        import torch

        like = a if isinstance(a, torch.Tensor) else b
        as_t = lambda v: v if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=like.dtype, device=like.device)
        return torch, as_t(a), as_t(b)
    return np, np.asarray(a), np.asarray(b)


def _check_k(k) -> float:
    k = float(k)
    if not (np.isfinite(k) and k >= 0):
        raise VesselfieldError(f"smoothing width k must be a finite number >= 0, got {k}")
    return k


def union(a, b):
    """Union of two solids: ``min(a, b)`` (elementwise, broadcast)."""
    lib, a, b = _pair(a, b)
    return lib.minimum(a, b)


def intersection(a, b):
    """Intersection of two solids: ``max(a, b)``."""
    lib, a, b = _pair(a, b)
    return lib.maximum(a, b)


def difference(a, b):
    """``a`` minus ``b``: ``max(a, -b)``."""
    lib, a, b = _pair(a, b)
    return lib.maximum(a, -b)


def smooth_union(a, b, k: float):
    """Quadratic polynomial smooth minimum of two SDFs with smoothing width ``k`` (see module doc).

    Args:
        a, b: SDF values (broadcastable arrays or tensors), negative inside.
        k: smoothing width in the SDFs' units (mm for world SDFs), >= 0.

    Returns:
        ``min(a, b) - k h^2 / 4`` with ``h = max(k - |a - b|, 0) / k``; ``min(a, b)`` for ``k = 0``.
    """
    k = _check_k(k)
    lib, a, b = _pair(a, b)
    m = lib.minimum(a, b)
    if k == 0.0:
        return m
    h = lib.clip(k - abs(a - b), 0.0, None) / k if lib is np else (k - (a - b).abs()).clamp(min=0.0) / k
    return m - 0.25 * k * h * h


def union_all(sdfs: Sequence, k: float = 0.0):
    """Fold :func:`smooth_union` (``k > 0``) or :func:`union` (``k = 0``) over several SDFs."""
    sdfs = list(sdfs)
    if not sdfs:
        raise VesselfieldError("union_all needs at least one SDF")
    k = _check_k(k)
    return reduce(lambda x, y: smooth_union(x, y, k), sdfs)
