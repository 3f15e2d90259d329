"""Small checks that turn bad arrays into one-line :class:`VesselfieldError`s."""

from __future__ import annotations

import numpy as np

from vesselfield.errors import VesselfieldError


def require_finite(array, what: str) -> None:
    """Raise when ``array`` holds NaN or Inf."""
    a = np.asarray(array)
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        n = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise VesselfieldError(f"{what} contains {n} NaN or infinite value(s)")


def require_binary(array, what: str) -> np.ndarray:
    """Return ``array`` as bool, raising when it holds values other than 0 and 1 (or False/True)."""
    a = np.asarray(array)
    require_finite(a, what)
    if a.dtype == bool:
        return a
    vals = np.unique(a)
    if not np.all(np.isin(vals, (0, 1))):
        shown = ", ".join(f"{v:g}" for v in vals[:5])
        raise VesselfieldError(
            f"{what} must be a binary mask (0/1) but holds other values ({shown}{', ...' if len(vals) > 5 else ''}); "
            "pass --threshold to binarise a probability map"
        )
    return a.astype(bool)


def require_ndim(array, ndim: int, what: str) -> None:
    if np.ndim(array) != ndim:
        raise VesselfieldError(f"{what} must be {ndim}D, got shape {tuple(np.shape(array))}")
