"""Overlap of two binary volumes: Dice, IoU (Jaccard index) and the Jaccard distance.

All functions take ``(pred, target)``: two arrays of the same shape holding a binary mask each
(bool, or 0/1 values; binarise probability maps yourself, e.g. ``prob >= 0.5``). They work on
any number of dimensions and return a Python float.

Empty inputs: when both masks are empty the two segmentations agree perfectly, so Dice = IoU = 1
and the Jaccard distance is 0; when only one is empty Dice = IoU = 0 (the formulas, no special
case).
"""

from __future__ import annotations

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.validate import require_binary


def _binary_pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``(pred, target)`` as two same-shaped, non-empty binary masks; return them as bool.

    Raises :class:`VesselfieldError` on a shape mismatch, an array with no voxels, NaN/Inf, or
    values other than 0 and 1.
    """
    p, t = np.asarray(pred), np.asarray(target)
    if p.shape != t.shape:
        raise VesselfieldError(f"pred has shape {p.shape} but target has shape {t.shape}")
    if p.size == 0:
        raise VesselfieldError(f"pred and target have no voxels (shape {p.shape})")
    return require_binary(p, "pred"), require_binary(t, "target")


def dice(pred, target) -> float:
    """Dice similarity coefficient, 2|P ∩ T| / (|P| + |T|) (Dice 1945; Sørensen 1948).

    Args:
        pred, target: binary masks of the same shape (any ndim).

    Returns:
        Dice in [0, 1]; 1.0 when both masks are empty.
    """
    p, t = _binary_pair(pred, target)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & t)) / total


def iou(pred, target) -> float:
    """Intersection over union (Jaccard index 1912), |P ∩ T| / |P ∪ T|.

    Args:
        pred, target: binary masks of the same shape (any ndim).

    Returns:
        IoU in [0, 1]; 1.0 when both masks are empty. IoU = Dice / (2 - Dice).
    """
    p, t = _binary_pair(pred, target)
    union = int(np.count_nonzero(p | t))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(p & t)) / union


def jaccard_distance(pred, target) -> float:
    """Jaccard distance 1 - IoU (a metric on sets: symmetric, triangle inequality holds).

    Returns:
        Distance in [0, 1]; 0.0 when both masks are empty.
    """
    return 1.0 - iou(pred, target)


def _crop_to_union(*masks: np.ndarray, margin: int = 1) -> tuple[list[np.ndarray], np.ndarray]:
    """Crop same-shaped masks to the bounding box of their union, with ``margin`` zero voxels around.

    Vessels fill a few percent of a volume, so skeletons, distance transforms and marching cubes
    run on the crop instead of the whole grid. Where the box reaches the array edge the crop is
    zero-padded, which is what those algorithms assume outside the array anyway.

    Returns:
        (crops, offset): the cropped masks, and the (ndim,) integer index in the original array of
        crop index 0 (negative where padding was added). At least one mask must be non-empty.
    """
    union = np.logical_or.reduce(masks) if len(masks) > 1 else masks[0]
    nonzero = [np.flatnonzero(np.any(union, axis=tuple(a for a in range(union.ndim) if a != ax)))
               for ax in range(union.ndim)]
    lo = np.array([n[0] for n in nonzero]) - margin
    hi = np.array([n[-1] for n in nonzero]) + 1 + margin
    shape = np.array(union.shape)
    src = tuple(slice(max(l, 0), min(h, s)) for l, h, s in zip(lo, hi, shape))
    pad = [(max(-l, 0), max(h - s, 0)) for l, h, s in zip(lo, hi, shape)]
    crops = [np.pad(m[src], pad) if any(p != (0, 0) for p in pad) else np.ascontiguousarray(m[src])
             for m in masks]
    return crops, lo
