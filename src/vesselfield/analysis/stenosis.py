"""Stenosis grading along a diameter profile D(s): reference diameters and lesions (QCA).

Definitions (DICOM PS3.17 Annex T, quantitative arterial analysis):

- **interpolated reference** D_ref(s): what the vessel would measure without the lesion. Here a
  locally weighted straight line (Gaussian window of sigma ``window_mm``) fitted to the healthy
  diameters of the same segment, refitted after leaving out the narrowed samples (five rounds,
  the first healthy set from a running median and the noise of D around it); a segment with no
  healthy sample borrows its neighbours' (weight 1e-3);
- **mean-local reference**: the mean of the healthy diameters within ``window_mm`` proximal and
  distal to the lesion;
- **lesion**: a stretch where D < (1 - threshold) D_ref, at least ``min_length_mm`` long; its
  length is measured between the interpolated threshold crossings;
- **MLD**: the smallest D of the stretch, refined by the parabola through it and its neighbours;
  %DS = 100 (1 - MLD / D_ref(s_MLD)); %AS = 100 (1 - (MLD / D_ref)^2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CROSS_SEGMENT_WEIGHT = 1e-3  # a segment's own samples dominate its reference; others only fill gaps


def reference_diameter(s_mm: np.ndarray, d_mm: np.ndarray, excluded: np.ndarray, segment: np.ndarray, *,
                       threshold: float, window_mm: float, rounds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The interpolated reference D_ref(s) and the healthy mask of a profile.

    Args:
        s_mm, d_mm: (m,) arc length and diameter, mm. excluded: (m,) bool, samples never used
            (bifurcation zones, open sections; their D may be NaN). segment: (m,) segment id of
            each sample. threshold: the lesion threshold (a fraction). window_mm: Gaussian sigma.

    Returns:
        (reference (m,), healthy (m,) bool).
    """
    m = len(s_mm)
    healthy = ~excluded & np.isfinite(d_mm)
    ref = np.full(m, np.nan)
    if not healthy.any():
        return ref, healthy
    ds = (s_mm[:, None] - s_mm[None, :]) / window_mm
    gauss = np.exp(-0.5 * ds ** 2) * np.where(segment[:, None] == segment[None, :], 1.0, CROSS_SEGMENT_WEIGHT)
    d = np.where(np.isfinite(d_mm), d_mm, 0.0)
    # Start robustly: a running median over +-window (a lesion shorter than the window does not move
    # it), the noise of D as the robust spread around it away from narrowings, and the first healthy
    # set from both. Without this, a long lesion pulls the first line down, inflates the noise
    # estimate, and is never left out (measured: a 30 % / 10 mm stenosis from a mask went unseen).
    noise = _median_start(s_mm, d_mm, healthy, window_mm, threshold)
    if noise is not None:
        ref0, noise = noise
        low = np.isfinite(d_mm) & (d_mm < np.minimum((1 - 0.25 * threshold) * ref0, ref0 - 2.5 * noise))
        low = _grow(low, np.isfinite(d_mm) & (d_mm < ref0 - noise))
        start = healthy & ~low
        healthy = start if start.sum() >= 3 else healthy
    else:
        noise = 0.0
    for _ in range(rounds):
        w = gauss * healthy[None, :]
        sw = w.sum(1)
        sx = (w * s_mm[None, :]).sum(1)
        sxx = (w * s_mm[None, :] ** 2).sum(1)
        sy = (w * d[None, :]).sum(1)
        sxy = (w * s_mm[None, :] * d[None, :]).sum(1)
        det = sw * sxx - sx ** 2
        ok = det > 1e-12 * np.maximum(sw, 1e-300) ** 2 * window_mm ** 2
        slope = np.where(ok, (sw * sxy - sx * sy) / np.where(ok, det, 1.0), 0.0)
        mean = sy / np.maximum(sw, 1e-300)
        intercept_at = mean + slope * (s_mm - sx / np.maximum(sw, 1e-300))
        new_ref = np.where(sw > 0, intercept_at, np.nan)
        # Narrowed samples are left out of the next fit, so the lesion does not pull its own
        # reference down: below a quarter of the threshold, and the lesion's shoulders (the
        # stretch around each such run where D stays below the reference).
        # Noise-aware: the measurement noise of D (robust spread of the healthy residuals) widens
        # both margins, so a noisy profile (a mask's staircase) does not lose its low healthy
        # samples and bias the reference up.
        resid = (d_mm - new_ref)[healthy & np.isfinite(new_ref)]
        if len(resid) > 4:
            noise = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
        low = np.isfinite(d_mm) & (d_mm < np.minimum((1 - 0.25 * threshold) * new_ref, new_ref - 2.5 * noise))
        under = np.isfinite(d_mm) & (d_mm < new_ref - noise)
        low = _grow(low, under)
        new_healthy = ~excluded & np.isfinite(d_mm) & ~low
        if not new_healthy.any():
            break
        ref, healthy_prev, healthy = new_ref, healthy, new_healthy
        if np.array_equal(healthy_prev, healthy):
            break
    return ref, healthy


def _median_start(s_mm, d_mm, usable, window_mm: float, threshold: float):
    """(running median of D over +-window_mm, robust noise of D around it) or None with too few samples."""
    idx = np.nonzero(usable)[0]
    if len(idx) < 5:
        return None
    ss, dd = s_mm[idx], d_mm[idx]
    lo = np.searchsorted(ss, s_mm - window_mm, side="left")
    hi = np.searchsorted(ss, s_mm + window_mm, side="right")
    ref0 = np.array([np.median(dd[a:b]) if b > a else np.nan for a, b in zip(lo, hi)])
    resid = (d_mm - ref0)[usable & np.isfinite(ref0) & (d_mm >= (1 - 0.5 * threshold) * ref0)]
    if len(resid) < 5:
        return None
    return ref0, 1.4826 * float(np.median(np.abs(resid - np.median(resid))))


def _grow(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``seed`` grown along the profile through contiguous ``allowed`` samples."""
    out = seed.copy()
    for i in range(1, len(out)):
        out[i] |= out[i - 1] and allowed[i]
    for i in range(len(out) - 2, -1, -1):
        out[i] |= out[i + 1] and allowed[i]
    return out


@dataclass
class LesionSpan:
    """A lesion on a profile: sample indices and measures (mm, %)."""

    start: int
    end: int  # inclusive
    at: int  # sample of the MLD
    s_mld_mm: float
    mld_mm: float
    reference_mm: float
    reference_mean_local_mm: float
    length_mm: float


def find_lesions(s_mm, d_mm, reference_mm, healthy, excluded, *, threshold: float, min_length_mm: float,
                 window_mm: float) -> list[LesionSpan]:
    """Stretches where D < (1 - threshold) D_ref (see the module docstring)."""
    s_mm, d_mm = np.asarray(s_mm, float), np.asarray(d_mm, float)
    limit = (1 - threshold) * reference_mm
    below = ~excluded & np.isfinite(d_mm) & np.isfinite(limit) & (d_mm < limit)
    spans = []
    i, m = 0, len(s_mm)
    while i < m:
        if not below[i]:
            i += 1
            continue
        j = i
        while j + 1 < m and below[j + 1]:
            j += 1
        # Length between the interpolated crossings of D = limit at both ends.
        def crossing(a, b):  # a inside (below), b outside
            if b < 0 or b >= m or not np.isfinite(d_mm[b]) or excluded[b]:
                return s_mm[a]
            ga, gb = d_mm[a] - limit[a], d_mm[b] - limit[b]
            return s_mm[a] + (s_mm[b] - s_mm[a]) * ga / (ga - gb) if gb != ga else s_mm[a]
        s0, s1 = crossing(i, i - 1), crossing(j, j + 1)
        length = float(s1 - s0)
        if length >= min_length_mm:
            k = i + int(np.nanargmin(d_mm[i:j + 1]))
            s_min, d_min = float(s_mm[k]), float(d_mm[k])
            if 0 < k < m - 1 and np.all(np.isfinite(d_mm[k - 1:k + 2])) and not excluded[k - 1:k + 2].any():
                y0, y1, y2 = d_mm[k - 1], d_mm[k], d_mm[k + 1]
                h0, h1 = s_mm[k] - s_mm[k - 1], s_mm[k + 1] - s_mm[k]
                if abs(h0 - h1) < 1e-6 * max(h0, h1) and (y0 - 2 * y1 + y2) > 0:
                    delta = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
                    if abs(delta) <= 1:
                        d_min = float(y1 - 0.25 * (y0 - y2) * delta)
                        s_min = float(s_mm[k] + delta * h0)
            ref_at = float(np.interp(s_min, s_mm[np.isfinite(reference_mm)], reference_mm[np.isfinite(reference_mm)]))
            prox = healthy & (s_mm < s0) & (s_mm >= s0 - window_mm)
            dist = healthy & (s_mm > s1) & (s_mm <= s1 + window_mm)
            sides = [float(np.mean(d_mm[x])) for x in (prox, dist) if x.any()]
            mean_local = float(np.mean(sides)) if sides else float("nan")
            spans.append(LesionSpan(i, j, k, s_min, d_min, ref_at, mean_local, length))
        i = j + 1
    return spans
