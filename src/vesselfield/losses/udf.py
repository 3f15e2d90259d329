"""NUDF's distance loss: L1 between clamped unsigned distances (Sørensen, Juhl et al., ISBI 2022, eq. 2).

``L = mean_i | min(f(p_i), c) - min(d_i, c) |`` with ``c`` the clamp (Chibane et al., NDF,
NeurIPS 2020, clamp 0.1 in normalised units). Clamping both sides means the network only has to
be right near the surface: beyond ``c`` any prediction that is itself beyond ``c`` costs nothing,
so capacity is not spent on the far field, which the mesher discards anyway.
"""

from __future__ import annotations

from vesselfield.errors import VesselfieldError

__all__ = ["clamped_l1_loss"]


def clamped_l1_loss(pred, target, clamp: float | None):
    """Mean absolute difference of ``min(pred, clamp)`` and ``min(target, clamp)`` (eq. 2).

    Args:
        pred: predicted unsigned distances, any shape (a tensor; same unit as ``target``).
        target: true unsigned distances, the shape of ``pred``.
        clamp: the clamp ``c`` (> 0), or None for the plain L1.

    Returns:
        0-dim tensor. Its gradient w.r.t. ``pred`` is ``sign(pred - target) / N`` where
        ``pred < clamp`` and 0 where ``pred >= clamp`` and ``target >= clamp``.
    """
    import torch

    if pred.shape != target.shape:
        raise VesselfieldError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if clamp is not None:
        if not clamp > 0:
            raise VesselfieldError(f"clamp must be positive, got {clamp}")
        pred = torch.clamp(pred, max=float(clamp))
        target = torch.clamp(target, max=float(clamp))
    return (pred - target).abs().mean()
