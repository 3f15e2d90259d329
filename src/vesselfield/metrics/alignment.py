"""Rigid alignment of a prediction to its target, for what a method cannot observe.

Two X-ray views with imperfect poses fix a vessel tree only up to a motion that no image reveals
(docs/methods/sdf-car.md, "Pose refinement"): after self-calibration the tree is consistent with
both views but may sit a millimetre or two from where it truly is. Scores against the truth then
mix two things: the shape, which the method controls, and the absolute placement, which it
cannot. :func:`rigidly_aligned` moves a prediction onto its target by the translation that best
overlays them (cross-correlation), so a benchmark can report both.
"""

from __future__ import annotations

import numpy as np

from vesselfield.errors import VesselfieldError

__all__ = ["rigidly_aligned"]


def rigidly_aligned(pred, target, grid, *, max_shift_mm: float = 8.0):
    """``pred`` moved by the translation that best overlays it on ``target``.

    The translation maximises the cross-correlation of the two occupancies (FFT, every whole-voxel
    shift up to ``max_shift_mm``, then a parabola through the peak and its neighbours on each axis for
    the fraction of a voxel). A translation, not a general rigid motion: what two views leave unseen
    after self-calibration is mostly a shift of the whole tree (measured in docs/methods/sdf-car.md), and
    point-based ICP on thin tubes of different thickness falls into wrong rotations.

    Args:
        pred: (X, Y, Z) occupancy in [0, 1] (or bool) on ``grid``.
        target: (X, Y, Z) bool (or 0/1) on ``grid``.
        grid: the :class:`~vesselfield.grid.VolumeGrid` of both.
        max_shift_mm: the largest shift looked for, per axis.

    Returns:
        ``(moved, shift_mm)``: the (X, Y, Z) float32 occupancy after the shift (trilinear, zero outside)
        and the (3,) shift in mm that takes pred onto target.
    """
    from scipy import ndimage

    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target).astype(np.float64)
    if p.shape != t.shape or p.shape != tuple(grid.shape):
        raise VesselfieldError(f"pred {p.shape} and target {t.shape} must both have the grid's shape {tuple(grid.shape)}")
    if not (p >= 0.5).any() or not t.any():
        return p.astype(np.float32), np.zeros(3)
    # Zero padding so that the correlation is not circular.
    shape = [2 * n for n in p.shape]
    corr = np.fft.irfftn(np.fft.rfftn(t, shape) * np.conj(np.fft.rfftn(p, shape)), shape)
    reach = np.minimum(np.ceil(max_shift_mm / grid.spacing).astype(int), np.asarray(p.shape) - 1)
    window = corr[np.ix_(*[np.r_[0:r + 1, n - r:n] for r, n in zip(reach, shape)])]
    offsets = [np.r_[0:r + 1, -r:0] for r in reach]
    best = np.unravel_index(int(np.argmax(window)), window.shape)
    shift_vox = np.array([offsets[a][best[a]] for a in range(3)], dtype=np.float64)
    for a in range(3):
        i = best[a]
        if 0 < i < window.shape[a] - 1 and offsets[a][i - 1] == offsets[a][i] - 1 and offsets[a][i + 1] == offsets[a][i] + 1:
            idx = list(best)
            idx[a] = i - 1
            lo = window[tuple(idx)]
            idx[a] = i + 1
            hi = window[tuple(idx)]
            mid = window[best]
            denom = lo - 2 * mid + hi
            if denom < 0:
                shift_vox[a] += 0.5 * (lo - hi) / denom
    moved = ndimage.shift(p, shift_vox, order=1, mode="constant", cval=0.0)
    return moved.astype(np.float32), shift_vox * grid.spacing
