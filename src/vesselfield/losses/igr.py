"""Implicit Geometric Regularisation losses for SDFs fitted to surface points (imports torch).

Gropp, Yariv, Haim, Atzmon & Lipman, "Implicit Geometric Regularization for Learning Shapes",
ICML 2020, eq. 2; as used for vessels by Alblas et al., STACOM 2022, eq. 1:

    L = mean_i |f(x_i)|  +  tau * mean_i ||grad f(x_i) - n_i||  +  lambda * E_y (||grad f(y)|| - 1)^2

with ``x_i`` on the surface, ``n_i`` their unit normals (the term only when normals are known),
and ``y`` sampled near the surface and in the domain. Every function takes ``(pred, target)``-
style arguments where a target exists, works on any device and keeps autograd.
"""

from __future__ import annotations

import torch

from vesselfield.errors import VesselfieldError


def spatial_gradient(values: torch.Tensor, points: torch.Tensor, *, create_graph: bool = True) -> torch.Tensor:
    """Gradient of each channel of ``values`` with respect to ``points``.

    Args:
        values: (N,) or (N, K) field values computed from ``points`` (which requires grad).
        points: (N, 3) the inputs.
        create_graph: keep the graph so a loss on the gradient trains the field (eikonal terms).

    Returns:
        (N, 3) for (N,) values, (N, K, 3) for (N, K).
    """
    if not points.requires_grad:
        raise VesselfieldError("spatial_gradient needs points with requires_grad=True")
    single = values.ndim == 1
    v = values[:, None] if single else values
    grads = [
        torch.autograd.grad(v[:, k], points, grad_outputs=torch.ones_like(v[:, k]), create_graph=create_graph,
                            retain_graph=True)[0]
        for k in range(v.shape[1])
    ]
    return grads[0] if single else torch.stack(grads, dim=1)


def surface_loss(pred_sdf: torch.Tensor) -> torch.Tensor:
    """``mean |f(x_i)|`` over surface points: (N,) or (N, K) SDF values -> scalar."""
    return pred_sdf.abs().mean()


def normal_loss(pred_gradient: torch.Tensor, target_normals: torch.Tensor) -> torch.Tensor:
    """IGR's normal term ``mean ||grad f(x_i) - n_i||`` (L2 norm, not squared).

    Args:
        pred_gradient: (N, 3) gradients of the SDF at surface points.
        target_normals: (N, 3) outward unit normals there.
    """
    if pred_gradient.shape != target_normals.shape:
        raise VesselfieldError(
            f"normals must have the shape of the points, {tuple(pred_gradient.shape)}, got {tuple(target_normals.shape)}"
        )
    return (pred_gradient - target_normals).norm(dim=-1).mean()


def eikonal_loss(pred_gradient: torch.Tensor) -> torch.Tensor:
    """``mean (||grad f|| - 1)^2`` over sample points: (..., 3) gradients -> scalar."""
    return ((pred_gradient.norm(dim=-1) - 1.0) ** 2).mean()


def nesting_loss(pred_sdfs: torch.Tensor) -> torch.Tensor:
    """Penalty for broken nesting of K surfaces ordered from the innermost (channel 0) outwards.

    Nested solids (lumen inside inner wall inside outer wall) have ``f_0 >= f_1 >= ... >= f_{K-1}``
    at every point. The penalty is ``sum_k mean relu(f_{k+1} - f_k)``: zero when the order holds.

    Args:
        pred_sdfs: (N, K) SDF values at sample points, K >= 2.
    """
    if pred_sdfs.ndim != 2 or pred_sdfs.shape[1] < 2:
        raise VesselfieldError(f"nesting needs (N, K >= 2) SDF values, got {tuple(pred_sdfs.shape)}")
    return torch.relu(pred_sdfs[:, 1:] - pred_sdfs[:, :-1]).mean(dim=0).sum()


def nesting_violation_fraction(pred_sdfs, tolerance: float = 0.0) -> float:
    """Fraction of points where the nesting order ``f_k >= f_{k+1}`` is broken by more than ``tolerance``.

    Args:
        pred_sdfs: (N, K) SDF values (array or tensor), innermost surface first.
        tolerance: allowed excess ``f_{k+1} - f_k``, in the SDFs' units.
    """
    f = torch.as_tensor(pred_sdfs)
    if f.ndim != 2 or f.shape[1] < 2:
        raise VesselfieldError(f"nesting needs (N, K >= 2) SDF values, got {tuple(f.shape)}")
    broken = (f[:, 1:] - f[:, :-1] > tolerance).any(dim=1)
    return float(broken.float().mean())


def sign_loss(pred_sdf: torch.Tensor, target_side: torch.Tensor) -> torch.Tensor:
    """Penalty for samples on the wrong side: ``relu(-side * f)`` averaged over the labelled samples.

    A sign prior for fits from unoriented points (vesselfield.geometry.point_visibility): samples
    known to be outside (side +1) must have ``f >= 0``, samples known to be inside (side -1)
    ``f <= 0``; side 0 (unknown) adds nothing.

    Args:
        pred_sdf: (N,) SDF values at the samples.
        target_side: (N,) +1 outside, -1 inside, 0 unknown (any integer or float dtype).
    """
    if pred_sdf.shape != target_side.shape:
        raise VesselfieldError(f"sides must have the shape of the SDF values {tuple(pred_sdf.shape)}, "
                               f"got {tuple(target_side.shape)}")
    side = target_side.to(pred_sdf.dtype)
    labelled = (side != 0).sum().clamp_min(1)
    return torch.relu(-side * pred_sdf).sum() / labelled
