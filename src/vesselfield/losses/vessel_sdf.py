"""The VesselSDF objective on voxel grids (imports torch).

Esposito, Rebain, Onken, Li & Mac Aodha, "VesselSDF: Distance Field Priors for Vascular Network
Reconstruction", MICCAI 2025, eqs. 4-9:

    L = λs·L_sdf + λo·L_occ + λe·L_eik + λg·L_gauss + λr·L_sur

- ``L_sdf  = mean |f - f*|`` (eq. 5), f* the ground-truth SDF in mm (negative inside);
- ``L_occ  = BCE(stage-1 occupancy, y)`` (eq. 6), on logits;
- ``L_eik  = mean (|∇f|² - 1)²`` (eq. 7) with the gradient taken in world mm on the anisotropic
  grid (see :func:`anisotropic_eikonal_loss` for how this is the paper's γ = Δz/Δx form);
- ``L_gauss = mean |f| · (f - G_σ f)²`` (eq. 8), G_σ a 3D Gaussian blur of σ mm;
- ``L_sur  = mean exp(-β |f|)`` (eq. 9).

Every volume is a ``(B, 1, X, Y, Z)`` tensor on one :class:`~vesselfield.grid.VolumeGrid`
spacing ``(Δx, Δy, Δz)`` mm; every function keeps autograd and runs on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vesselfield.errors import VesselfieldError

__all__ = ["VesselSdfLossWeights", "anisotropic_eikonal_loss", "gaussian_blur_valid", "gaussian_smoothness_loss",
           "gaussian_support_voxels",
           "occupancy_bce_loss", "sdf_l1_loss", "surface_repulsion_loss", "vessel_sdf_loss"]

#: Kernel half-width of :func:`gaussian_blur_valid` in standard deviations: the discarded tail
#: weight of a Gaussian beyond 3σ is 0.27 % (erfc(3/√2)), below the float32 resolution of the
#: blurred values relative to the field's spread at the kernel scale.
TRUNCATE_SIGMAS = 3.0


def _volume(t: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() != 5:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise VesselfieldError(f"{name} must be a (B, C, X, Y, Z) tensor, got {shape}")
    return t


def _spacing(spacing_mm) -> tuple[float, float, float]:
    try:
        s = tuple(float(v) for v in spacing_mm)
    except TypeError:
        s = (float(spacing_mm),) * 3
    if len(s) != 3 or not all(math.isfinite(v) and v > 0 for v in s):
        raise VesselfieldError(f"spacing_mm must be three positive numbers, got {spacing_mm!r}")
    return s


def sdf_l1_loss(pred_sdf_mm: torch.Tensor, target_sdf_mm: torch.Tensor) -> torch.Tensor:
    """L_sdf (eq. 5): mean absolute error in mm. Both ``(B, 1, X, Y, Z)``."""
    _volume(pred_sdf_mm, "pred_sdf_mm")
    if pred_sdf_mm.shape != target_sdf_mm.shape:
        raise VesselfieldError(f"pred and target SDF shapes differ: {tuple(pred_sdf_mm.shape)} vs "
                               f"{tuple(target_sdf_mm.shape)}")
    return (pred_sdf_mm - target_sdf_mm).abs().mean()


def occupancy_bce_loss(pred_logits: torch.Tensor, target_occupancy: torch.Tensor) -> torch.Tensor:
    """L_occ (eq. 6): binary cross-entropy of occupancy logits against 0/1 labels (mean over voxels).

    Computed from logits (``binary_cross_entropy_with_logits``, the log-sum-exp form), which is
    eq. 6 with ``f_o = sigmoid(logits)`` without its overflow for confident voxels.
    """
    _volume(pred_logits, "pred_logits")
    if pred_logits.shape != target_occupancy.shape:
        raise VesselfieldError(f"pred logits and target occupancy shapes differ: {tuple(pred_logits.shape)} vs "
                               f"{tuple(target_occupancy.shape)}")
    return torch.nn.functional.binary_cross_entropy_with_logits(pred_logits, target_occupancy.to(pred_logits.dtype))


def _grad_sq_norm(sdf_mm: torch.Tensor, spacing_mm) -> torch.Tensor:
    """``|∇f|²`` in 1/1 (mm per mm) at every voxel, by second-order differences along each axis.

    ``torch.gradient`` with the axis' spacing: central differences inside, one-sided second-order
    differences at the faces (``edge_order=2``), so a field that is linear along an axis has its
    exact derivative everywhere, faces included.
    """
    dx, dy, dz = _spacing(spacing_mm)
    sizes = sdf_mm.shape[2:]
    if min(sizes) < 3:
        raise VesselfieldError(f"the eikonal term needs at least 3 voxels along each axis, got {tuple(sizes)}")
    gx, gy, gz = torch.gradient(sdf_mm, spacing=(dx, dy, dz), dim=(2, 3, 4), edge_order=2)
    return gx * gx + gy * gy + gz * gz


def anisotropic_eikonal_loss(sdf_mm: torch.Tensor, spacing_mm, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_eik (eq. 7): ``mean (|∇f|² - 1)²`` with the gradient in world mm on an anisotropic grid.

    The paper writes ``(∂x f)² + (∂y f)² + (γ ∂z f)² - 1`` with ``γ = Δz/Δx``: the axial
    derivative has to be rescaled because the slices are ``γ`` times further apart than the
    in-plane voxels. Taking every finite difference with its own axis' spacing in mm does that
    rescaling exactly, and is the form that vanishes on a true SDF (``|∇f| = 1`` in mm), whatever
    the slice spacing; the paper's equation is this one written in in-plane voxel units.

    Args:
        sdf_mm: (B, 1, X, Y, Z) predicted SDF in mm (at least 3 voxels along each axis).
        spacing_mm: (Δx, Δy, Δz) of the grid, mm.
        mask: optional (B, 1, X, Y, Z) bool/0-1 weights of the voxels that count (the voxels where
            a unit gradient is the truth, e.g. inside a truncation band); the mean runs over them.

    Returns:
        scalar tensor.
    """
    _volume(sdf_mm, "sdf_mm")
    residual = (_grad_sq_norm(sdf_mm, spacing_mm) - 1.0) ** 2
    if mask is None:
        return residual.mean()
    w = mask.to(residual.dtype)
    return (residual * w).sum() / w.sum().clamp_min(1.0)


def _gaussian_kernel_1d(sigma_voxels: float, dtype, device) -> torch.Tensor:
    """Normalised, symmetric 1D Gaussian samples at integer offsets ``-r..r``, ``r = ceil(3σ)``."""
    if sigma_voxels <= 0:
        return torch.ones(1, dtype=dtype, device=device)
    r = max(1, math.ceil(TRUNCATE_SIGMAS * sigma_voxels))
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma_voxels) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_support_voxels(sigma_mm: float, spacing_mm) -> tuple[int, int, int]:
    """Voxels ``2r + 1`` of the :func:`gaussian_blur_valid` kernel along each axis (a volume needs more)."""
    return tuple(2 * ((_gaussian_kernel_1d(float(sigma_mm) / step, torch.float64, "cpu").numel() - 1) // 2) + 1
                 for step in _spacing(spacing_mm))


def gaussian_blur_valid(volume: torch.Tensor, sigma_mm: float, spacing_mm) -> tuple[torch.Tensor, tuple]:
    """Separable Gaussian blur of σ mm (σ/Δ voxels per axis), on the valid region only.

    Only voxels whose whole kernel lies inside the volume are returned (no padding), so the blur
    is an exact weighted mean everywhere it is defined: a symmetric, normalised kernel maps a
    linear field to itself there. MONAI's ``GaussianFilter`` pads (zeros or reflection), which
    would make the smoothness term of a linear field non-zero at the faces; hence this small
    function.

    Args:
        volume: (B, C, X, Y, Z).
        sigma_mm: standard deviation in mm (> 0).
        spacing_mm: (Δx, Δy, Δz) mm.

    Returns:
        ``(blurred, crop)``: blurred (B, C, X - 2rx, Y - 2ry, Z - 2rz) and the ``(rx, ry, rz)``
        margins, so ``volume[..., rx:X-rx, ry:Y-ry, rz:Z-rz]`` are the matching input voxels.
    """
    _volume(volume, "volume")
    if not (math.isfinite(float(sigma_mm)) and sigma_mm > 0):
        raise VesselfieldError(f"sigma_mm must be a positive number, got {sigma_mm!r}")
    spacing = _spacing(spacing_mm)
    b, c = volume.shape[:2]
    out = volume.reshape(b * c, 1, *volume.shape[2:])
    margins = []
    for axis, step in enumerate(spacing):
        k = _gaussian_kernel_1d(float(sigma_mm) / step, volume.dtype, volume.device)
        r = (k.numel() - 1) // 2
        if out.shape[2 + axis] <= 2 * r:
            raise VesselfieldError(f"the volume ({tuple(volume.shape[2:])} voxels) is too small for a Gaussian of "
                                   f"{sigma_mm:g} mm along axis {axis} ({2 * r + 1} voxels)")
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        out = torch.nn.functional.conv3d(out, k.reshape(shape))
        margins.append(r)
    return out.reshape(b, c, *out.shape[2:]), tuple(margins)


def gaussian_smoothness_loss(sdf_mm: torch.Tensor, sigma_mm: float, spacing_mm) -> torch.Tensor:
    """L_gauss (eq. 8): ``mean |f| · (f - G_σ f)²`` over the voxels where the blur is defined.

    Zero on any field that is linear over each kernel's support (a plane's SDF), positive on a
    noisy one; the weight ``|f|`` lets the field keep detail near its zero level. Gradients flow
    through both factors, as in eq. 8. Units: mm³.

    Args:
        sdf_mm: (B, 1, X, Y, Z) SDF in mm.
        sigma_mm: σ of the Gaussian, mm.
        spacing_mm: (Δx, Δy, Δz) mm.
    """
    blurred, (rx, ry, rz) = gaussian_blur_valid(sdf_mm, sigma_mm, spacing_mm)
    x, y, z = sdf_mm.shape[2:]
    f = sdf_mm[..., rx:x - rx, ry:y - ry, rz:z - rz]
    return (f.abs() * (f - blurred) ** 2).mean()


def surface_repulsion_loss(sdf_mm: torch.Tensor, beta_per_mm: float) -> torch.Tensor:
    """L_sur (eq. 9): ``mean exp(-β |f|)``, largest (1) where ``f = 0``; β in 1/mm."""
    _volume(sdf_mm, "sdf_mm")
    if not (math.isfinite(float(beta_per_mm)) and beta_per_mm > 0):
        raise VesselfieldError(f"beta_per_mm must be a positive number, got {beta_per_mm!r}")
    return torch.exp(-float(beta_per_mm) * sdf_mm.abs()).mean()


def _spacing_groups(spacing_mm, batch: int) -> list[tuple[list[int], tuple[float, float, float]]]:
    """``[(sample indices, spacing)]``: one group per distinct spacing of a batch."""
    rows = spacing_mm.tolist() if isinstance(spacing_mm, torch.Tensor) else spacing_mm
    try:
        per_sample = len(rows) == batch and all(hasattr(r, "__len__") and len(r) == 3 for r in rows)
    except TypeError:
        per_sample = False
    if not per_sample:
        return [(list(range(batch)), _spacing(spacing_mm))]
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(_spacing(r), []).append(i)
    return [(idx, s) for s, idx in groups.items()]


def _sample_mean(groups, term) -> torch.Tensor:
    """Mean over samples of a per-group mean term (each group weighted by its sample count)."""
    total = sum(len(idx) for idx, _ in groups)
    return sum(term(idx, s) * (len(idx) / total) for idx, s in groups)


@dataclass(frozen=True)
class VesselSdfLossWeights:
    """The λ of eq. 4 and the two free constants of eqs. 8-9 (the paper's values by default)."""

    sdf: float = 0.1
    occupancy: float = 0.01
    eikonal: float = 0.01
    gauss: float = 0.1
    surface: float = 0.1
    gauss_sigma_mm: float = 1.0
    surface_beta_per_mm: float = 1.0


def vessel_sdf_loss(pred: dict, target: dict, spacing_mm, weights: VesselSdfLossWeights,
                    *, band_mm: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 4 on one batch: ``(loss, {term: float})``.

    Args:
        pred: ``{"occupancy_logits": (B,1,X,Y,Z) or None, "sdf_mm": (B,1,X,Y,Z) or None}``; the
            SDF terms are skipped without an SDF, the occupancy term without logits.
        target: ``{"occupancy": (B,1,X,Y,Z) 0/1, "sdf_mm": (B,1,X,Y,Z) mm}``.
        spacing_mm: (Δx, Δy, Δz) of the batch's grid, or (B, 3) one per sample (patches of cases
            with different spacings: the spacing-dependent terms are then computed per group of
            samples that share a spacing and averaged with each sample counting once).
        weights: :class:`VesselSdfLossWeights` (a zero weight skips its term's computation).
        band_mm: when the target SDF was truncated at ±``band_mm``, the eikonal term counts only
            voxels with ``|f*| < band_mm`` (a truncated target has no unit gradient beyond).

    Returns:
        the weighted sum, and each unweighted term as a float (``sdf``, ``occ``, ``eik``,
        ``gauss``, ``sur``) for the log.
    """
    terms: dict[str, tuple] = {}
    logits, sdf = pred.get("occupancy_logits"), pred.get("sdf_mm")
    if logits is None and sdf is None:
        raise VesselfieldError("the prediction holds neither occupancy logits nor an SDF")
    if logits is not None and weights.occupancy:
        terms["occ"] = (weights.occupancy, occupancy_bce_loss(logits, target["occupancy"]))
    if sdf is not None:
        if weights.sdf:
            terms["sdf"] = (weights.sdf, sdf_l1_loss(sdf, target["sdf_mm"]))
        groups = _spacing_groups(spacing_mm, sdf.shape[0])
        if weights.eikonal:
            band = None if band_mm is None else target["sdf_mm"].abs() < band_mm
            terms["eik"] = (weights.eikonal, _sample_mean(
                groups, lambda idx, s: anisotropic_eikonal_loss(sdf[idx], s, None if band is None else band[idx])))
        if weights.gauss:
            terms["gauss"] = (weights.gauss, _sample_mean(
                groups, lambda idx, s: gaussian_smoothness_loss(sdf[idx], weights.gauss_sigma_mm, s)))
        if weights.surface:
            terms["sur"] = (weights.surface, surface_repulsion_loss(sdf, weights.surface_beta_per_mm))
    if not terms:
        raise VesselfieldError("every weight of the terms this prediction has is zero: nothing to minimise")
    loss = sum(w * t for w, t in terms.values())
    return loss, {k: float(t.detach()) for k, (_, t) in terms.items()}
