"""Line-integral views as they come off a C-arm: noise level, residual background, vessel mask.

A subtracted angiogram is not an exact line integral: it carries detector noise, a smooth
residual background and blur (:mod:`vesselfield.render.degrade` simulates them). Thresholding it
at a fixed chord (:func:`~vesselfield.render.projection_mask`) takes noise and background pixels
for vessel, and a visual hull built from them is many times the tree. :func:`vessel_mask` does
what a careful user would:

1. **noise level** σ from the median absolute deviation of horizontal pixel differences
   (``1.4826 MAD / √2``, the Gaussian-consistent estimate for white noise; vessels are a small
   fraction of the pixels, so the median ignores them);
2. **background**: the smooth field under the vessels, by normalised convolution of the pixels
   that are not vessel (:func:`fit_background`; vessels only add, so pixels well above the
   current estimate are left out and the estimate is repeated);
3. **mask**: the background-free signal, smoothed by a Gaussian of 1 pixel when noise is present,
   above ``max(threshold_mm, k_high σ_s)``, grown by hysteresis into the pixels above
   ``max(threshold_mm / 2, k_low σ_s)`` when noise is present (σ_s: the smoothed noise level), and
   components smaller than ``min_area_px`` dropped (noise specks). On exact line integrals (σ = 0,
   no background) it is ``projection_mask`` itself;
4. optionally a **vesselness** pre-filter (Frangi et al., MICCAI 1998; scikit-image's
   ``frangi``) for unsubtracted angiograms: the mask is then also required to be tubular.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vesselfield.errors import VesselfieldError

__all__ = ["ViewSignal", "estimate_noise_sigma", "smoothed_noise_sigma", "fit_background", "polynomial_basis", "vessel_mask"]

GAUSSIAN_SMOOTHING_PX = 1.0
"""σ (pixels) of the smoothing before thresholding a noisy view."""

MASK_MARGIN_PX = 2
"""A noisy view's signal is kept within this many pixels of its mask and set to zero beyond."""

# White noise smoothed by a unit-sum Gaussian of σ pixels keeps σ_n / (2 √π σ) of its std (2D).
_SMOOTHED_NOISE = 1.0 / (2.0 * math.sqrt(math.pi) * GAUSSIAN_SMOOTHING_PX)


def smoothed_noise_sigma(noise_sigma: float) -> float:
    """σ of white noise of σ ``noise_sigma`` after the 1-pixel Gaussian smoothing of a noisy view."""
    return float(noise_sigma) * _SMOOTHED_NOISE


def estimate_noise_sigma(image) -> float:
    """Standard deviation of white noise in ``image`` (H, W): ``1.4826 MAD(diff) / √2`` over horizontal
    neighbour differences (each difference of white noise has variance 2σ²). 0 for a noise-free view."""
    x = np.asarray(image, dtype=np.float64)
    d = np.diff(x, axis=1).ravel()
    mad = float(np.median(np.abs(d - np.median(d))))
    return 1.4826 * mad / math.sqrt(2.0)


def polynomial_basis(shape, degree: int) -> np.ndarray:
    """(K, H, W) monomials r^i c^j, i + j <= degree, of coordinates scaled to [-1, 1]; K = (d+1)(d+2)/2."""
    h, w = shape
    r = np.linspace(-1.0, 1.0, h)[:, None] * np.ones((1, w))
    c = np.ones((h, 1)) * np.linspace(-1.0, 1.0, w)[None, :]
    return np.stack([r**i * c**j for i in range(degree + 1) for j in range(degree + 1 - i)])


def fit_background(image, scale_px: float = 16.0, noise_sigma: float | None = None, *, threshold_mm: float = 0.5,
                   iterations: int = 6) -> np.ndarray:
    """Smooth residual background of a view (module docstring, step 2): (H, W) float64.

    Normalised convolution (Knutsson & Westin 1993): ``B = G*(w x) / G*w`` with a Gaussian G of σ
    ``scale_px`` and weights w that leave the vessels out: pixels more than ``max(3 σ, threshold_mm / 4)``
    above the current B, grown by two pixels, get w = 0, and B is estimated again (``iterations``
    times). Under a vessel B is the surroundings' background, interpolated. A view that is exactly
    zero on most of its non-vessel pixels (a clean simulation) has no background: zeros.
    """
    from scipy import ndimage

    x = np.asarray(image, dtype=np.float64)
    if scale_px <= 0 or np.mean(x == 0) > 0.25:
        return np.zeros_like(x)
    sigma = estimate_noise_sigma(x) if noise_sigma is None else float(noise_sigma)
    cut = max(3.0 * sigma, 0.25 * float(threshold_mm))
    w = np.ones_like(x)
    background = np.zeros_like(x)
    for _ in range(iterations):
        num = ndimage.gaussian_filter(x * w, scale_px, mode="nearest")
        den = ndimage.gaussian_filter(w, scale_px, mode="nearest")
        background = num / np.maximum(den, 1e-6)
        keep = ndimage.binary_erosion((x - background) < cut, iterations=2)
        if not keep.any():
            break
        w = keep.astype(np.float64)
    return background


@dataclass
class ViewSignal:
    """What :func:`vessel_mask` finds in one line-integral view.

    Attributes:
        signal: (H, W) float32 line integrals with the background removed (mm); on a noisy view,
            smoothed by the same 1-pixel Gaussian as the mask and zero more than ``MASK_MARGIN_PX``
            pixels outside the mask (what is left there is noise: no hull voxel projects there).
        background: (H, W) float32 fitted background (mm).
        noise_sigma_mm: estimated white-noise σ of the view (mm).
        mask: (H, W) bool vessel mask.
        threshold_mm: the high threshold used on the (smoothed) signal.
    """

    signal: np.ndarray
    background: np.ndarray
    noise_sigma_mm: float
    mask: np.ndarray
    threshold_mm: float


def vessel_mask(image, *, threshold_mm: float = 0.5, background_scale_px: float = 16.0, k_high: float = 5.0,
                k_low: float = 3.0, min_area_px: int | None = None, vesselness: bool = False) -> ViewSignal:
    """The vessel mask of a (possibly noisy, background-carrying) line-integral view (module docstring).

    Args:
        image: (H, W) line integrals (mm); may be negative where noise and background are.
        threshold_mm: the chord below which a pixel is not vessel on a clean view
            (``projection_mask``'s 0.5 mm).
        background_scale_px: σ (pixels) of the background's normalised convolution (0: no background
            removal).
        k_high, k_low: hysteresis thresholds in smoothed-noise σ (seeds at k_high σ, growth to k_low σ).
        min_area_px: drop mask components smaller than this (None: 40 pixels when the view is noisy,
            0 for an exact view).
        vesselness: also require a Frangi vesselness response (unsubtracted angiograms).
    """
    from scipy import ndimage

    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2:
        raise VesselfieldError(f"a view must be a 2D image, got shape {x.shape}")
    sigma = estimate_noise_sigma(x)
    background = fit_background(x, background_scale_px, sigma, threshold_mm=threshold_mm)
    signal = x - background
    peak = float(signal.max())
    noisy = sigma > 1e-3 * max(threshold_mm, 1e-12)
    smooth = ndimage.gaussian_filter(signal, GAUSSIAN_SMOOTHING_PX) if noisy else signal
    sigma_s = sigma * _SMOOTHED_NOISE if noisy else 0.0
    high = max(threshold_mm, k_high * sigma_s)
    if noisy:
        from skimage.filters import apply_hysteresis_threshold

        low = min(high, max(0.5 * threshold_mm, k_low * sigma_s))
        mask = apply_hysteresis_threshold(smooth, low, high)
    else:
        mask = smooth > high
    if vesselness and mask.any():
        from skimage.filters import frangi

        response = frangi(smooth, sigmas=(1.0, 2.0, 3.0, 4.0), black_ridges=False)
        positive = response[mask]
        if positive.size and float(positive.max()) > 0:
            mask &= response > 0.05 * float(np.percentile(positive, 95))
    area = (40 if noisy else 0) if min_area_px is None else int(min_area_px)
    if area > 0 and mask.any():
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        mask = (sizes >= area)[labels] & mask
    if peak <= 0:
        mask[:] = False
    if noisy:
        near = ndimage.binary_dilation(mask, iterations=MASK_MARGIN_PX) if mask.any() else mask
        signal = np.where(near, smooth, 0.0)
    return ViewSignal(signal=signal.astype(np.float32), background=background.astype(np.float32),
                      noise_sigma_mm=float(sigma), mask=mask, threshold_mm=float(high))
