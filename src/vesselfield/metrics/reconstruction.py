"""Voxel-wise reconstruction errors: reError (mean absolute error) and reMSE (mean squared error).

NeCA (Wang, Banerjee & Grau, Bioengineering 2024) and SDF-CAR report "reError" and "reMSE" next
to Dice and the Chamfer distance. In the NeCA-lineage evaluation code we could read (the
``eval.py`` of the NeCA fork that SDF-CAR builds on, and a re-implementation that documents its
differences from it), both are computed on the **3D volumes**, not on reprojections: the
predicted occupancy volume (sigmoid output in [0, 1], before thresholding) against the binary
ground-truth volume, averaged over **every voxel of the grid**, background included. Because
vessels fill a few percent of the grid, the values are small (reMSE ~1e-4 in NeCA's tables). That
code's reMSE was at one point a root-mean-square error; the papers' 1e-4 scale is a plain mean
square, which is what :func:`re_mse` computes. We could not read the papers' own definitions,
so the above is what their code does, not a quotation of their text.

Both functions here are generic: any two arrays of the same shape, no thresholding, no mask.
:func:`vesselfield.metrics.evaluate.evaluate_volumes` applies them to occupancy volumes in
[0, 1] exactly as the NeCA code does.
"""

from __future__ import annotations

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.validate import require_finite


def _float_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred), np.asarray(target)
    if p.shape != t.shape:
        raise VesselfieldError(f"pred has shape {p.shape} but target has shape {t.shape}")
    if p.size == 0:
        raise VesselfieldError(f"pred and target have no elements (shape {p.shape})")
    require_finite(p, "pred")
    require_finite(t, "target")
    # float64 accumulation: a float32 mean over 2M voxels of tiny errors loses digits.
    return p.astype(np.float64, copy=False), t.astype(np.float64, copy=False)


def re_error(pred, target) -> float:
    """reError: mean absolute error, (1/N) Σ |pred_i − target_i| over all N elements.

    Args:
        pred, target: arrays of the same shape (any ndim; bool counts as 0/1).

    Returns:
        MAE in the unit of the values (unitless for occupancies).
    """
    p, t = _float_pair(pred, target)
    return float(np.mean(np.abs(p - t)))


def re_mse(pred, target) -> float:
    """reMSE: mean squared error, (1/N) Σ (pred_i − target_i)² over all N elements (no square root).

    Args:
        pred, target: arrays of the same shape (any ndim; bool counts as 0/1).

    Returns:
        MSE in the squared unit of the values (unitless for occupancies).
    """
    p, t = _float_pair(pred, target)
    return float(np.mean((p - t) ** 2))
