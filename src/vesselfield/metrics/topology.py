"""Topology-aware overlap for tubular structures: centreline Dice (clDice).

clDice (Shit et al., "clDice - a Novel Topology-Preserving Loss Function for Tubular Structure
Segmentation", CVPR 2021, eqs. 1-3) compares each mask's skeleton with the *other* mask:

    Tprec = |S(P) ∩ T| / |S(P)|       topology precision: how much of the predicted centreline
                                       lies inside the target
    Tsens = |S(T) ∩ P| / |S(T)|       topology sensitivity: how much of the target centreline
                                       the prediction covers
    clDice = 2 · Tprec · Tsens / (Tprec + Tsens)

It is not the Dice of the two skeletons: a one-voxel shift of a centreline leaves clDice at 1
while the skeletons' Dice drops to about 0. S is the 3D skeleton from Lee's thinning
(``skimage.morphology.skeletonize``; Lee, Kashyap & Chu 1994), which keeps every connected
component and every loop, so a break in a vessel removes a piece of S(T) from P and lowers Tsens.

Empty inputs: both masks empty -> 1.0 for all three (perfect agreement). A ratio whose skeleton
is empty while the other mask is not is 0.0 (nothing predicted covers nothing / nothing to
check), and clDice is 0.0 when Tprec + Tsens = 0.
"""

from __future__ import annotations

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.metrics.overlap import _binary_pair, _crop_to_union
from vesselfield.validate import require_binary


def skeleton(mask) -> np.ndarray:
    """Skeleton of a binary mask by Lee's thinning (2D or 3D), same shape, bool.

    Args:
        mask: (X, Y, Z) or (X, Y) binary mask (bool or 0/1).

    Returns:
        Bool array of ``mask``'s shape, one voxel wide, topology-preserving (Lee et al. 1994).
        Thinning works in index space: with anisotropic spacing the skeleton is that of the voxel
        grid, which is what clDice uses.
    """
    from skimage.morphology import skeletonize

    m = np.asarray(mask)
    if m.ndim not in (2, 3):
        raise VesselfieldError(f"skeleton needs a 2D or 3D mask, got shape {m.shape}")
    if m.size == 0:
        raise VesselfieldError(f"mask has no voxels (shape {m.shape})")
    m = require_binary(m, "mask")
    out = np.zeros(m.shape, dtype=bool)
    if not m.any():
        return out
    (crop,), lo = _crop_to_union(m, margin=1)
    skel = skeletonize(crop, method="lee")
    # Skeleton voxels lie inside the mask, hence inside the array: shift them back by the offset.
    out[tuple(i + l for i, l in zip(np.nonzero(skel), lo))] = True
    return out


def _ratio(skel: np.ndarray, other: np.ndarray, other_empty_value: float) -> float:
    n = int(np.count_nonzero(skel))
    if n == 0:
        return other_empty_value
    return int(np.count_nonzero(skel & other)) / n


def _precision_sensitivity(p: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    if not p.any() and not t.any():
        return 1.0, 1.0
    if not p.any() or not t.any():
        return 0.0, 0.0
    # Both skeletons from one crop of the union: thinning only sees local neighbourhoods, so the
    # zero-margin crop gives the same skeleton as the full grid at a fraction of the cost.
    (pc, tc), _ = _crop_to_union(p, t, margin=1)
    from skimage.morphology import skeletonize

    sp = skeletonize(pc, method="lee").astype(bool)
    st = skeletonize(tc, method="lee").astype(bool)
    return _ratio(sp, tc, 0.0), _ratio(st, pc, 0.0)


def topology_precision(pred, target) -> float:
    """Tprec = |S(pred) ∩ target| / |S(pred)| (Shit et al., CVPR 2021, eq. 1).

    Args:
        pred, target: binary masks of the same 2D or 3D shape.

    Returns:
        Fraction in [0, 1] of the predicted skeleton inside the target: low when the prediction
        has spurious branches. 1.0 when both are empty, 0.0 when exactly one is.
    """
    p, t = _binary_pair(pred, target)
    _require_2d_3d(p)
    return _precision_sensitivity(p, t)[0]


def topology_sensitivity(pred, target) -> float:
    """Tsens = |S(target) ∩ pred| / |S(target)| (Shit et al., CVPR 2021, eq. 2).

    Args:
        pred, target: binary masks of the same 2D or 3D shape.

    Returns:
        Fraction in [0, 1] of the target skeleton covered by the prediction: low when the
        prediction misses or breaks vessels. 1.0 when both are empty, 0.0 when exactly one is.
    """
    p, t = _binary_pair(pred, target)
    _require_2d_3d(p)
    return _precision_sensitivity(p, t)[1]


def cldice(pred, target) -> float:
    """Centreline Dice: harmonic mean of Tprec and Tsens (Shit et al., CVPR 2021, eq. 3).

    Args:
        pred, target: binary masks of the same 2D or 3D shape.

    Returns:
        clDice in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.
    """
    p, t = _binary_pair(pred, target)
    _require_2d_3d(p)
    tprec, tsens = _precision_sensitivity(p, t)
    return cldice_from_components(tprec, tsens)


def cldice_from_components(tprec: float, tsens: float) -> float:
    """2 · Tprec · Tsens / (Tprec + Tsens), 0.0 when both are 0."""
    if tprec + tsens == 0:
        return 0.0
    return 2.0 * tprec * tsens / (tprec + tsens)


def _require_2d_3d(mask: np.ndarray) -> None:
    if mask.ndim not in (2, 3):
        raise VesselfieldError(f"clDice needs 2D or 3D masks, got shape {mask.shape}")
