"""Projection losses of SDF-CAR: rendered views against X-ray targets, every function ``(pred, target)``.

SDF-CAR (Reda et al., MIDL 2026 submission) renders an occupancy volume into each view with a
cone-beam projector (:func:`vesselfield.render.project_volume`, line integrals in mm) and trains
with::

    loss = λ1 L_geo + λ2 L_occ            (λ1 = 1.0, λ2 = 0.25 in the paper)

- ``L_occ`` (:func:`occupancy_projection_loss`): MSE between the rendered view and the target,
  either target line integrals (mm, so the loss is in mm²) or a binary mask (then the rendered
  view enters through its soft silhouette ``1 - exp(-k I)``, and the loss is in [0, 1]).
- ``L_geo`` (:func:`geometric_projection_loss`): MSE between the 2D signed distance transform of
  the target mask and that of the rendered view, divided by ``D_max²`` (below). The published
  code thresholds the rendered view before its distance transform, so its ``L_geo`` has no
  gradient (:func:`hard_threshold_geometric_loss` reproduces that, for tests only). Ours takes
  the soft signed distance (:func:`vesselfield.render.soft_distance.soft_signed_distance_2d`) of
  the soft silhouette, whose gradient reaches every rendered pixel within ``D_max``.

Normalisation of ``L_geo``: both distance maps are clipped to ``[-D_max, D_max]``
(``max_distance_mm``, default 24 pixels) and the squared difference is divided by ``D_max²``,
so ``L_geo`` lies in [0, 4] whatever the pixel size: an error of one pixel everywhere within
``D_max`` costs (1/24)² ≈ 0.0017, a silhouette with nothing where the target has a vessel costs
up to ~1 on those pixels. That keeps ``λ1 = 1`` and ``λ2 = 0.25`` on comparable scales when
``L_occ`` compares masks ([0, 1]) and, for line integrals, while the vessels' chords are of the
order of a millimetre.

What the soft transform sees (``vesselfield.render.soft_distance``'s docstring has the details): a
membership m enters through ln m, so a faint background (m = 0.01 anywhere) reads as vessel ~2 τ
away, and the inside of a vessel reads at most ``τ sqrt(k I)`` from its edge (I the chord, k the
attenuation). ``L_geo`` therefore also pushes the background towards zero and the silhouette's
inside towards 1; with line-integral targets, where ``L_occ`` wants the true chords, a larger
``k_per_mm`` loosens that pull. The target mask of line-integral targets is
``projection_mask(target, 0.5 mm)``, while the soft silhouette crosses 0.5 at a 0.3 mm chord.

:func:`sdf_car_loss` is the whole objective that the method (:mod:`vesselfield.methods.sdf_car`)
optimises, with the method's three economies as arguments: ``L_occ`` averaged over the rays that
can see the field (``occ_pixels``: every other pixel renders exactly 0 against a zero target),
``L_geo`` on views max-pooled by ``geo_downsample`` (:func:`downsample_rendering` and
:func:`downsample_mask` pool alike: a coarse pixel is vessel when any of its fine pixels is, and
the silhouette is monotone in the line integral), against a precomputed target distance; and
the eikonal prior of an SDF field, weighted inside ``λ2``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from vesselfield.errors import VesselfieldError
from vesselfield.render.projector import DEFAULT_MASK_THRESHOLD_MM, projection_mask
from vesselfield.render.soft_distance import (
    DEFAULT_K_PER_MM,
    resolve_soft_distance_scales,
    signed_distance_2d,
    soft_signed_distance_2d,
    soft_silhouette,
)
from vesselfield.validate import require_binary

__all__ = [
    "TARGET_KINDS",
    "downsample_mask",
    "geometric_projection_loss",
    "hard_threshold_geometric_loss",
    "downsample_rendering",
    "occupancy_projection_loss",
    "sdf_car_loss",
]

TARGET_KINDS = ("line_integral", "mask")
"""What a projection target holds: line integrals (mm) of the true occupancy, or a binary mask."""


# ----------------------------------------------------------------------------------- checks
def _check_pred(pred, name: str = "pred") -> torch.Tensor:
    if not isinstance(pred, torch.Tensor):
        raise VesselfieldError(f"{name} must be a torch tensor, got {type(pred).__name__}")
    if not pred.is_floating_point():
        raise VesselfieldError(f"{name} must be a floating-point tensor, got {pred.dtype}")
    if pred.numel() == 0:
        raise VesselfieldError(f"{name} is empty (shape {tuple(pred.shape)})")
    if not bool(torch.isfinite(pred.detach()).all()):
        raise VesselfieldError(f"{name} contains NaN or infinite values")
    return pred


def _check_shape(value, like: torch.Tensor, name: str) -> None:
    if tuple(value.shape) != tuple(like.shape):
        raise VesselfieldError(f"{name} has shape {tuple(value.shape)} but pred has shape {tuple(like.shape)}")


def _as_values(value, like: torch.Tensor, name: str, *, allow_inf: bool = False) -> torch.Tensor:
    """``value`` (array or tensor) as a tensor on ``like``'s device and dtype, its shape checked."""
    try:
        t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value.detach())
    except (TypeError, ValueError):
        raise VesselfieldError(f"{name} must be an array or tensor of numbers, got {type(value).__name__}") from None
    if t.dtype == torch.bool or t.is_complex():
        raise VesselfieldError(f"{name} must hold real numbers, got dtype {t.dtype} (a mask? use target_kind='mask')")
    _check_shape(t, like, name)
    t = t.to(device=like.device, dtype=like.dtype)
    bad = torch.isnan(t) if allow_inf else ~torch.isfinite(t)
    if bool(bad.any()):
        raise VesselfieldError(f"{name} contains {int(bad.sum())} NaN{'' if allow_inf else ' or infinite'} value(s)")
    return t


def _as_mask(mask, like: torch.Tensor, name: str) -> torch.Tensor:
    """Binary ``mask`` (bool or 0/1, array or tensor) as a bool tensor on ``like``'s device."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    try:
        m = np.asarray(mask)
    except (TypeError, ValueError):
        raise VesselfieldError(f"{name} must be a binary array or tensor, got {type(mask).__name__}") from None
    if m.dtype.kind not in "biuf":
        raise VesselfieldError(f"{name} must be a binary mask (bool or 0/1), got dtype {m.dtype}")
    _check_shape(m, like, name)
    return torch.from_numpy(require_binary(m, name).copy()).to(like.device)


def _check_kind(target_kind) -> str:
    if target_kind not in TARGET_KINDS:
        raise VesselfieldError(f"target_kind must be one of {', '.join(TARGET_KINDS)}, got {target_kind!r}")
    return target_kind


def _check_factor(factor) -> int:
    if isinstance(factor, bool) or not isinstance(factor, numbers.Integral) or factor < 1:
        raise VesselfieldError(f"factor must be a positive integer, got {factor!r}")
    return int(factor)


def _check_weight(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise VesselfieldError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------------- L_occ
def occupancy_projection_loss(
    pred: torch.Tensor,
    target,
    *,
    target_kind: str = "line_integral",
    k_per_mm: float = DEFAULT_K_PER_MM,
    weight=None,
    huber_delta_mm: float | None = None,
    deadzone_mm: float | None = None,
) -> torch.Tensor:
    """SDF-CAR's ``L_occ``: (weighted) MSE between rendered line integrals and the target.

    Args:
        pred: rendered line integrals, mm, any shape (a view (H, W), views (B, H, W), or a 1D
            subset of rays (N,)); carries autograd.
        target: same shape (array or tensor). ``target_kind="line_integral"``: line integrals of
            the true occupancy, mm; the loss is ``mean((pred - target)²)``, mm².
            ``target_kind="mask"``: binary (bool or 0/1); the loss is
            ``mean((soft_silhouette(pred, k_per_mm) - target)²)``, in [0, 1].
        target_kind: ``"line_integral"`` or ``"mask"``.
        k_per_mm: attenuation of :func:`~vesselfield.render.soft_distance.soft_silhouette`
            (``"mask"`` only), 1/mm.
        weight: optional non-negative pixel weights, same shape; the loss is then the weighted
            mean ``sum(w e²) / sum(w)`` (so ``weight=1`` everywhere gives the plain MSE).
        huber_delta_mm: line integrals only: replace ``e²`` by the Huber penalty ``e²`` for
            ``|e| <= δ`` and ``2 δ |e| - δ²`` beyond (twice torch's ``huber_loss``, so it equals the
            MSE below δ); None: the MSE.
        deadzone_mm: line integrals only: residuals within ±ε cost nothing and beyond cost
            ``(|e| - ε)²`` (an ε-insensitive MSE: the noise band of the view is left to the priors).

    Returns:
        Scalar tensor (pred's dtype and device). Zero when the rendering matches the target.
    """
    pred = _check_pred(pred)
    if _check_kind(target_kind) == "mask":
        estimate = soft_silhouette(pred, k_per_mm)
        reference = _as_mask(target, pred, "target").to(pred.dtype)
    else:
        estimate = pred
        reference = _as_values(target, pred, "target")
    if huber_delta_mm is not None and _check_kind(target_kind) == "line_integral":
        sq = 2.0 * torch.nn.functional.huber_loss(estimate, reference, reduction="none", delta=float(huber_delta_mm))
    elif deadzone_mm is not None and _check_kind(target_kind) == "line_integral":
        sq = torch.relu((estimate - reference).abs() - float(deadzone_mm)) ** 2
    else:
        sq = (estimate - reference) ** 2
    if weight is None:
        return sq.mean()
    w = _as_values(weight, pred, "weight")
    if bool((w < 0).any()):
        raise VesselfieldError("weight must be non-negative")
    total = w.sum()
    if float(total) <= 0:
        raise VesselfieldError("weight sums to zero: no pixel would count")
    return (w * sq).sum() / total


# ----------------------------------------------------------------------------------- L_geo
def _target_distance(target_mask, target_distance_mm, pred: torch.Tensor, spacing, dmax: float) -> torch.Tensor:
    """(H, W) or (B, H, W) exact signed distance of the target, mm, clipped to [-dmax, dmax]."""
    if target_distance_mm is not None:
        dist = _as_values(target_distance_mm, pred, "target_distance_mm", allow_inf=True)
        return dist.clamp(-dmax, dmax)
    if target_mask is None:
        raise VesselfieldError("give target_mask or target_distance_mm")
    mask = _as_mask(target_mask, pred, "target_mask").cpu().numpy()
    slices = mask if mask.ndim == 3 else mask[None]
    dist = np.stack([signed_distance_2d(m, spacing) for m in slices])
    dist = torch.from_numpy(np.clip(dist, -dmax, dmax)).to(device=pred.device, dtype=pred.dtype)
    return dist if mask.ndim == 3 else dist[0]


def _check_image_pred(pred) -> torch.Tensor:
    pred = _check_pred(pred)
    if pred.dim() not in (2, 3):
        raise VesselfieldError(f"pred must be a view (H, W) or views (B, H, W), got shape {tuple(pred.shape)}")
    return pred


def geometric_projection_loss(
    pred: torch.Tensor,
    target_mask,
    pixel_spacing_mm,
    *,
    k_per_mm: float = DEFAULT_K_PER_MM,
    temperature_mm: float | None = None,
    max_distance_mm: float | None = None,
    target_distance_mm=None,
) -> torch.Tensor:
    """SDF-CAR's ``L_geo`` with a gradient: soft signed distance of the rendering vs the target's exact one.

    ``L_geo = mean(((soft_sdt(soft_silhouette(pred)) - clip(sdt(target_mask), ±D_max)) / D_max)²)``,
    in [0, 4] (normalisation: module docstring). The soft transform (τ = ``temperature_mm``) is a
    soft-min and reads slightly low: a rendering whose silhouette is exactly the target still
    costs a little (measured in ``tests/test_losses.py``), which a smaller τ reduces; and faint
    or partial memberships read as nearer than they are (module docstring).

    Args:
        pred: (H, W) or (B, H, W) rendered line integrals, mm; carries autograd.
        target_mask: same shape, binary (bool or 0/1, array or tensor); may be None when
            ``target_distance_mm`` is given.
        pixel_spacing_mm: (row Δr, column Δc) mm of ``pred``'s pixels, or one number.
        k_per_mm: attenuation of the soft silhouette, 1/mm.
        temperature_mm, max_distance_mm: τ and D_max of the soft transform, mm (defaults: 1 and
            24 pixels, see :func:`~vesselfield.render.soft_distance.resolve_soft_distance_scales`).
        target_distance_mm: optional precomputed ``signed_distance_2d(target_mask, pixel_spacing_mm)``
            (same shape, mm, ±inf allowed; clipped here), to skip recomputing it every step.
            It takes precedence over ``target_mask``.

    Returns:
        Scalar tensor (pred's dtype and device).
    """
    pred = _check_image_pred(pred)
    tau, dmax = resolve_soft_distance_scales(pixel_spacing_mm, temperature_mm, max_distance_mm)
    target = _target_distance(target_mask, target_distance_mm, pred, pixel_spacing_mm, dmax)
    soft = soft_signed_distance_2d(
        soft_silhouette(pred, k_per_mm), pixel_spacing_mm, temperature_mm=tau, max_distance_mm=dmax
    )
    return (((soft - target) / dmax) ** 2).mean()


def hard_threshold_geometric_loss(
    pred: torch.Tensor,
    target_mask,
    pixel_spacing_mm,
    threshold_mm: float = DEFAULT_MASK_THRESHOLD_MM,
    *,
    max_distance_mm: float | None = None,
) -> torch.Tensor:
    """DEMONSTRATION ONLY, do not train with it: ``L_geo`` as the public SDF-CAR code computes it.

    The published code thresholds the rendered view (``pred > 0.5``) and takes the distance
    transform of the binary result, so the loss is piecewise constant in ``pred`` and its gradient
    is exactly zero: ``L_geo`` never trains anything and only ``L_occ`` does. Here the threshold is
    written as ``sign(pred - threshold).clamp(0)`` (derivative 0) and the exact signed distances
    of the thresholded mask are blended by it, so the loss stays in the autograd graph and
    ``backward()`` yields exactly zero gradients instead of failing. Distances use
    :func:`~vesselfield.render.soft_distance.signed_distance_2d` on both sides, clipped and
    normalised as :func:`geometric_projection_loss`, so the two compare.

    Args:
        pred: (H, W) or (B, H, W) rendered line integrals, mm.
        target_mask: same shape, binary.
        pixel_spacing_mm: (Δr, Δc) mm or one number.
        threshold_mm: line-integral threshold, mm (0.5, as the published code).
        max_distance_mm: clip, mm; default 24 pixels.

    Returns:
        Scalar tensor; zero when ``pred > threshold_mm`` reproduces the target mask.
    """
    pred = _check_image_pred(pred)
    if isinstance(threshold_mm, bool) or not isinstance(threshold_mm, numbers.Real) or not math.isfinite(threshold_mm):
        raise VesselfieldError(f"threshold_mm must be a finite number, got {threshold_mm!r}")
    _, dmax = resolve_soft_distance_scales(pixel_spacing_mm)
    if max_distance_mm is not None:
        dmax = _check_weight(max_distance_mm, "max_distance_mm")
        if dmax == 0:
            raise VesselfieldError("max_distance_mm must be positive, got 0")
    target = _target_distance(target_mask, None, pred, pixel_spacing_mm, dmax)

    binary = torch.sign(pred - threshold_mm).clamp_min(0.0)
    mask = binary.detach().cpu().numpy() > 0.5
    slices = mask if mask.ndim == 3 else mask[None]
    # Inside distance where binary = 1, outside distance where it is 0: the blend is the signed
    # distance of the thresholded view, tied to pred only through the zero-derivative sign().
    sdt = np.stack([np.clip(signed_distance_2d(m, pixel_spacing_mm), -dmax, dmax) for m in slices])
    sdt = torch.from_numpy(sdt.reshape(pred.shape)).to(device=pred.device, dtype=pred.dtype)
    inside = torch.from_numpy(mask).to(pred.device)
    hard = binary * torch.where(inside, sdt, 0.0) + (1.0 - binary) * torch.where(inside, 0.0, sdt)
    return (((hard - target) / dmax) ** 2).mean()


# ----------------------------------------------------------------------------------- downsampling
def _image_batch(image, name: str) -> tuple[torch.Tensor, bool]:
    if image.dim() not in (2, 3):
        raise VesselfieldError(f"{name} must be (H, W) or (B, H, W), got shape {tuple(image.shape)}")
    return (image, True) if image.dim() == 3 else (image[None], False)


def _check_fits(shape, factor: int, name: str) -> None:
    if shape[-2] < factor or shape[-1] < factor:
        raise VesselfieldError(f"{name} of shape {tuple(shape)} is smaller than the factor {factor}")


def downsample_mask(mask, factor: int) -> torch.Tensor:
    """Max-pool a binary mask by ``factor``: a coarse pixel is inside when any of its fine pixels is.

    Args:
        mask: (H, W) or (B, H, W) binary (bool or 0/1), array or tensor.
        factor: positive integer.

    Returns:
        (H // f, W // f) (or batched) bool tensor (on the mask's device when it is a tensor).
        Cropping, not padding: the last ``H mod f`` rows and ``W mod f`` columns are dropped, so
        coarse pixel (i, j) covers fine rows ``i f .. i f + f - 1`` and columns ``j f .. j f + f - 1``,
        exactly as :func:`downsample_rendering` pools a rendering.
    """
    device = mask.device if isinstance(mask, torch.Tensor) else torch.device("cpu")
    factor = _check_factor(factor)
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if arr.dtype.kind not in "biuf":
        raise VesselfieldError(f"mask must be a binary mask (bool or 0/1), got dtype {arr.dtype}")
    m = torch.from_numpy(require_binary(arr, "mask").astype(np.float32))
    x, batched = _image_batch(m, "mask")
    _check_fits(x.shape, factor, "mask")
    out = F.max_pool2d(x[:, None], factor)[:, 0] > 0.5
    out = out.to(device)
    return out if batched else out[0]


# ----------------------------------------------------------------------------------- total
def _per_view(values, n: int | None, name: str) -> list:
    if isinstance(values, torch.Tensor) or isinstance(values, np.ndarray):
        if values.ndim != 3:
            raise VesselfieldError(f"{name} must be a list of (H, W) views or a (V, H, W) stack, got shape "
                                   f"{tuple(values.shape)}")
        views = list(values)
    elif isinstance(values, (list, tuple)):
        views = list(values)
    else:
        raise VesselfieldError(f"{name} must be a list of views or a (V, H, W) stack, got {type(values).__name__}")
    if not views:
        raise VesselfieldError(f"{name} is empty")
    if n is not None and len(views) != n:
        raise VesselfieldError(f"{name} has {len(views)} views but pred_views has {n}")
    return views


def _per_view_spacing(pixel_spacing_mm, n: int) -> list:
    """One spacing (number or (Δr, Δc)) for every view, or a list (or (n, 2) array) of per-view pairs."""
    per_view = (isinstance(pixel_spacing_mm, np.ndarray) and pixel_spacing_mm.ndim == 2) or (
        isinstance(pixel_spacing_mm, (list, tuple)) and len(pixel_spacing_mm) > 0
        and all(isinstance(s, (list, tuple, np.ndarray)) for s in pixel_spacing_mm)
    )
    if per_view:
        if len(pixel_spacing_mm) != n:
            raise VesselfieldError(f"pixel_spacing_mm gives {len(pixel_spacing_mm)} views' spacings for {n} views")
        return list(pixel_spacing_mm)
    return [pixel_spacing_mm] * n


def downsample_rendering(image: torch.Tensor, factor: int) -> torch.Tensor:
    """Max-pool a rendered view by ``factor`` (differentiable): the coarse view ``L_geo`` compares.

    Max-pooling keeps the coarse silhouette consistent with :func:`downsample_mask`'s "any fine
    pixel" (the soft silhouette ``1 - exp(-k I)`` is monotone in ``I``); average pooling would
    fade vessels thinner than a coarse pixel.

    Args:
        image: (H, W) or (B, H, W) line integrals, mm (tensor; gradients flow to each block's maximum).
        factor: positive integer; the coarse pixel spacing is ``pixel_spacing_mm x factor``.

    Returns:
        (H // f, W // f) (or batched), cropped as :func:`downsample_mask`.
    """
    if not isinstance(image, torch.Tensor):
        raise VesselfieldError(f"image must be a torch tensor, got {type(image).__name__}")
    factor = _check_factor(factor)
    x, batched = _image_batch(image, "image")
    _check_fits(x.shape, factor, "image")
    if not x.is_floating_point():
        x = x.float()
    out = F.max_pool2d(x[:, None], factor)[:, 0]
    return out if batched else out[0]


def sdf_car_loss(
    pred_views,
    targets,
    pixel_spacing_mm,
    *,
    target_kind: str,
    lambda_geo: float = 1.0,
    lambda_occ: float = 0.25,
    k_per_mm: float = DEFAULT_K_PER_MM,
    temperature_mm: float | None = None,
    max_distance_mm: float | None = None,
    mask_threshold_mm: float = DEFAULT_MASK_THRESHOLD_MM,
    target_distance_mm=None,
    geo_downsample: int = 1,
    with_geo: bool = True,
    occ_pixels=None,
    eikonal: torch.Tensor | None = None,
    eikonal_weight: float = 0.0,
    huber_delta_mm=None,
    deadzone_mm=None,
    occ_downsample: int = 1,
) -> tuple[torch.Tensor, dict[str, float]]:
    """SDF-CAR's objective ``λ_geo L_geo + λ_occ (L_occ + w E)`` over whole views (Reda et al., MIDL 2026 submission).

    The paper's loss is ``λ1 L_geo + λ2 L_occ`` (its eq. for the total loss, λ1 = 1, λ2 = 0.25);
    ``E`` is our eikonal prior of an SDF field (``eikonal``, weight ``w`` relative to ``L_occ``;
    docs/methods/sdf-car.md). This function is what :func:`vesselfield.methods.sdf_car.reconstruct_xray`
    optimises, every step.

    Args:
        pred_views: list of (H, W) rendered line-integral views (mm; shapes may differ between
            views) or a (V, H, W) tensor; carry autograd.
        targets: as many targets (arrays or tensors): line integrals (mm) or binary masks.
        pixel_spacing_mm: one spacing for all views (a number or (Δr, Δc)), or a list with one
            (Δr, Δc) pair per view, of the full-resolution views.
        target_kind: ``"line_integral"`` (then ``L_geo``'s mask is
            ``projection_mask(target, mask_threshold_mm)``) or ``"mask"``.
        lambda_geo, lambda_occ: weights, the paper's 1.0 and 0.25.
        k_per_mm, temperature_mm, max_distance_mm: as :func:`geometric_projection_loss`
            (``k_per_mm`` also for ``L_occ`` on masks).
        mask_threshold_mm: threshold of the target mask for line-integral targets, mm.
        target_distance_mm: optional list of precomputed target signed distances, one per view, at
            the pooled resolution (see :func:`geometric_projection_loss`).
        geo_downsample: ``L_geo`` compares :func:`downsample_rendering` of each view with
            :func:`downsample_mask` of its target mask at ``pixel_spacing_mm x geo_downsample``.
        with_geo: compute ``L_geo`` (False: skip it this step; it is then absent from ``terms``
            and from the total).
        occ_pixels: optional list of (P,) flat pixel indices per view: ``L_occ`` is the mean over
            these pixels only. Pixels whose rays cannot reach the field render exactly 0; where
            their target is 0 too they add nothing to the sum, and leaving them out keeps the
            mean from being diluted by the detector's empty area.
        eikonal: optional scalar tensor, the eikonal residual ``E`` of an SDF field.
        eikonal_weight: ``w``.
        huber_delta_mm, deadzone_mm: None (MSE), or one value (mm) or None per view: the Huber
            or ε-insensitive ``L_occ`` of :func:`occupancy_projection_loss` on line integrals.
        occ_downsample: ``L_occ`` compares views average-pooled by this factor (the mean line
            integral over f x f pixels; noise averages down by f); ``occ_pixels`` then index the
            pooled views.

    Returns:
        ``(total, terms)``: the scalar loss tensor, and floats ``loss_occ``, ``loss_geo`` (when
        computed), ``loss_eikonal`` (when given) and ``loss`` (the total); each projection term
        is the mean over views of that view's loss (unweighted).
    """
    kind = _check_kind(target_kind)
    lambda_geo = _check_weight(lambda_geo, "lambda_geo")
    lambda_occ = _check_weight(lambda_occ, "lambda_occ")
    eikonal_weight = _check_weight(eikonal_weight, "eikonal_weight")
    factor = _check_factor(geo_downsample)
    preds = _per_view(pred_views, None, "pred_views")
    targs = _per_view(targets, len(preds), "targets")
    spacings = _per_view_spacing(pixel_spacing_mm, len(preds))
    dists = [None] * len(preds) if target_distance_mm is None else _per_view(
        target_distance_mm, len(preds), "target_distance_mm")
    pixels = [None] * len(preds) if occ_pixels is None else _per_view(occ_pixels, len(preds), "occ_pixels")
    deltas = huber_delta_mm if isinstance(huber_delta_mm, (list, tuple)) else [huber_delta_mm] * len(preds)
    zones = deadzone_mm if isinstance(deadzone_mm, (list, tuple)) else [deadzone_mm] * len(preds)

    occ_terms, geo_terms = [], []
    for i, (pred, target, spacing, dist, pix, delta, zone) in enumerate(
            zip(preds, targs, spacings, dists, pixels, deltas, zones)):
        try:
            pred = _check_image_pred(pred)
            occ_pred, occ_target = pred, target
            if occ_downsample > 1:
                f = int(occ_downsample)
                occ_pred = torch.nn.functional.avg_pool2d(pred[None, None], f)[0, 0]
                occ_target = torch.nn.functional.avg_pool2d(
                    torch.as_tensor(target, device=pred.device, dtype=pred.dtype)[None, None], f)[0, 0]
            if pix is None:
                occ_terms.append(occupancy_projection_loss(occ_pred, occ_target, target_kind=kind, k_per_mm=k_per_mm,
                                                           huber_delta_mm=delta, deadzone_mm=zone))
            else:
                pix = torch.as_tensor(pix, dtype=torch.int64, device=pred.device)
                flat_target = torch.as_tensor(occ_target, device=pred.device).reshape(-1)[pix]
                occ_terms.append(occupancy_projection_loss(occ_pred.reshape(-1)[pix], flat_target, target_kind=kind,
                                                           k_per_mm=k_per_mm, huber_delta_mm=delta, deadzone_mm=zone))
            if not with_geo:
                continue
            if dist is not None:
                mask = None
            elif kind == "mask":
                mask = target
            else:
                mask = projection_mask(_as_values(target, pred, "target"), mask_threshold_mm)
            if factor > 1:
                pred = downsample_rendering(pred, factor)
                mask = None if mask is None else downsample_mask(mask, factor)
                spacing = tuple(float(s) * factor for s in _spacing_of(spacing))
            geo_terms.append(geometric_projection_loss(
                pred, mask, spacing, k_per_mm=k_per_mm, temperature_mm=temperature_mm,
                max_distance_mm=max_distance_mm, target_distance_mm=dist))
        except VesselfieldError as err:
            raise VesselfieldError(f"view {i}: {err}") from None
    # sum() rather than stack(): views may come in different dtypes.
    loss_occ = sum(occ_terms) / len(occ_terms)
    occ_part = loss_occ
    terms = {"loss_occ": float(loss_occ.detach())}
    if eikonal is not None:
        occ_part = occ_part + eikonal_weight * eikonal
        terms["loss_eikonal"] = float(eikonal.detach())
    total = lambda_occ * occ_part
    if with_geo:
        loss_geo = sum(geo_terms) / len(geo_terms)
        total = lambda_geo * loss_geo + total
        terms["loss_geo"] = float(loss_geo.detach())
    terms["loss"] = float(total.detach())
    return total, terms


def _spacing_of(pixel_spacing_mm) -> tuple[float, float]:
    if np.isscalar(pixel_spacing_mm):
        return (float(pixel_spacing_mm),) * 2
    return tuple(float(v) for v in pixel_spacing_mm)
