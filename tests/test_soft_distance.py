"""Exact and soft signed distance transforms of 2D projections (vesselfield.render.soft_distance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vesselfield.errors import VesselfieldError
from vesselfield.render.soft_distance import (
    DEFAULT_K_PER_MM,
    resolve_soft_distance_scales,
    signed_distance_2d,
    soft_signed_distance_2d,
    soft_silhouette,
)


def brute_force_signed_distance(mask: np.ndarray, spacing) -> np.ndarray:
    """Distance from every pixel centre to the nearest pixel rectangle of the other side (module convention)."""
    dr, dc = spacing
    rows, cols = np.indices(mask.shape)
    centres = np.stack([rows.ravel(), cols.ravel()], axis=1)
    out = np.empty(mask.size)
    for sign, src, dst in ((1.0, mask, ~mask), (-1.0, ~mask, mask)):
        q = np.argwhere(src)
        p = centres[dst.ravel()]
        gap_r = np.maximum(np.abs(p[:, None, 0] - q[None, :, 0]) * dr - 0.5 * dr, 0.0)
        gap_c = np.maximum(np.abs(p[:, None, 1] - q[None, :, 1]) * dc - 0.5 * dc, 0.0)
        out[dst.ravel()] = sign * np.hypot(gap_r, gap_c).min(axis=1)
    return out.reshape(mask.shape)


def disc(shape, centre, radius_mm, spacing=(1.0, 1.0)):
    """(mask, r_mm): pixels whose centre lies within ``radius_mm`` of ``centre`` (in pixels), and their radii."""
    rows, cols = np.indices(shape)
    r = np.hypot((rows - centre[0]) * spacing[0], (cols - centre[1]) * spacing[1])
    return r <= radius_mm, r


def disc_and_bar():
    """A disc of radius 10 px and a 3-pixel-wide bar: thick and thin structures on 64 x 64."""
    mask, _ = disc((64, 64), (31.3, 30.6), 10.0)
    rows, cols = np.indices(mask.shape)
    return mask | ((np.abs(rows - 50) <= 1) & (cols > 5) & (cols < 60))


# ----------------------------------------------------------------------------------- exact transform
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 2.5), (0.3, 0.7)])
def test_exact_transform_matches_brute_force_over_pixel_rectangles(spacing):
    rng = np.random.default_rng(7)
    for density in (0.03, 0.3, 0.8):
        mask = rng.random((20, 23)) < density
        np.testing.assert_allclose(signed_distance_2d(mask, spacing), brute_force_signed_distance(mask, spacing),
                                   rtol=0, atol=1e-12)


def test_exact_transform_of_two_pixels_takes_the_nearer_diagonal_rectangle():
    # From (7, 7): the centre (7, 0) is nearer (7 px) than (2, 2) (7.07 px), but the rectangle
    # of (2, 2) is nearer: hypot(4.5, 4.5) = 6.364 < 6.5.
    mask = np.zeros((10, 10), dtype=bool)
    mask[7, 0] = mask[2, 2] = True
    assert signed_distance_2d(mask)[7, 7] == pytest.approx(math.hypot(4.5, 4.5), abs=1e-12)


def test_exact_transform_of_a_half_plane_puts_the_boundary_half_way_between_centres():
    spacing = (0.5, 2.0)
    mask = np.zeros((6, 20), dtype=bool)
    mask[:, :10] = True  # columns 0..9 inside: the boundary is at column 9.5
    expected = (np.arange(20) - 9.5) * spacing[1]
    np.testing.assert_allclose(signed_distance_2d(mask, spacing), np.broadcast_to(expected, (6, 20)), atol=1e-12)
    rows = np.zeros((20, 6), dtype=bool)
    rows[:10] = True
    expected = (np.arange(20) - 9.5) * spacing[0]
    np.testing.assert_allclose(signed_distance_2d(rows, spacing), np.broadcast_to(expected[:, None], (20, 6)),
                               atol=1e-12)


@pytest.mark.parametrize("radius, centre", [(12.3, (31.2, 30.7)), (10.0, (32.0, 32.0)), (7.7, (30.5, 31.5))])
def test_exact_transform_of_a_disc_is_r_minus_R_within_half_a_pixel_diagonal(radius, centre):
    mask, r = disc((64, 64), centre, radius)
    err = signed_distance_2d(mask, 1.0) - (r - radius)
    # The union of the pixel squares lies between the discs of radius R -/+ sqrt(2)/2, so the
    # signed distance to it is r - R within half a pixel diagonal; measured 0.63-0.70.
    assert np.abs(err).max() <= math.sqrt(0.5) + 1e-12
    assert np.sqrt(np.mean(err[np.abs(r - radius) < 8] ** 2)) < 0.5


@pytest.mark.parametrize("spacing", [(0.5, 1.0), (1.0, 0.4)])
def test_exact_transform_of_a_disc_on_anisotropic_pixels_is_in_mm(spacing):
    radius_mm = 9.1
    mask, r = disc((64, 64), (31.3, 30.8), radius_mm, spacing)
    err = signed_distance_2d(mask, spacing) - (r - radius_mm)
    band = np.abs(r - radius_mm) < 20
    # Same bound, with the anisotropic half diagonal; measured 0.54 and 0.52 mm.
    assert np.abs(err[band]).max() <= 0.5 * math.hypot(*spacing) + 1e-12
    assert np.abs(err[band]).max() > 0.4  # not trivially small: the staircase is really there


def test_exact_transform_of_empty_and_full_masks_is_infinite():
    assert np.all(signed_distance_2d(np.zeros((4, 5), dtype=bool)) == np.inf)
    assert np.all(signed_distance_2d(np.ones((4, 5), dtype=np.uint8)) == -np.inf)


def test_exact_transform_accepts_tensors_and_0_1_values():
    mask = torch.zeros(5, 5)
    mask[2, 2] = 1
    out = signed_distance_2d(mask, (1.0, 1.0))
    assert out[2, 2] == -0.5 and out[2, 3] == 0.5 and out[0, 0] == pytest.approx(math.hypot(1.5, 1.5))


# ----------------------------------------------------------------------------------- soft transform
def test_soft_transform_tends_to_the_exact_one_as_the_temperature_decreases():
    mask = disc_and_bar()
    exact = signed_distance_2d(mask)
    image = torch.tensor(mask, dtype=torch.float64)
    errors = []
    for tau in (1.0, 0.5, 0.25):
        dmax = min(24.0, 30.0 * tau)
        soft = soft_signed_distance_2d(image, 1.0, temperature_mm=tau, max_distance_mm=dmax).numpy()
        clipped = np.clip(exact, -dmax, dmax)
        errors.append(np.abs(soft - clipped)[np.abs(clipped) < dmax].max())
    # Measured 1.14, 0.50, 0.050 px: the soft-min reads low by ~τ² log(#near pixels) in D².
    assert errors[0] > errors[1] > errors[2]
    assert errors[0] <= 1.2 and errors[1] <= 0.55 and errors[2] <= 0.06


@pytest.mark.parametrize(
    "spacing, limits",
    [  # measured: (0.707, 1.127, 0.254, 0.114), (0.901, 0.801, 0.239, 0.116), (0.901, 1.5, 0.368, 0.150)
        ((1.0, 1.0), (0.71, 1.13, 0.26, 0.12)),
        ((0.5, 1.0), (0.91, 0.81, 0.25, 0.12)),
        ((1.0, 0.3), (0.91, 1.51, 0.37, 0.151)),
    ],
)
def test_soft_transform_error_at_the_default_temperature(spacing, limits):
    # The numbers of DEFAULT_TEMPERATURE_PIXELS' docstring, in pixels of the larger spacing. The
    # limits sit just above the measured values because nothing here follows a trajectory: one
    # float64 evaluation of a fixed image, which another machine reproduces to ~1e-13 (libm's
    # exp/log differ by at most an ulp or two), far inside the 0.001-0.01 px margins.
    mask = disc_and_bar()
    pixel = max(spacing)
    exact = np.clip(signed_distance_2d(mask, spacing), -24 * pixel, 24 * pixel)
    soft = soft_signed_distance_2d(torch.tensor(mask, dtype=torch.float64), spacing).numpy()
    err = np.abs(soft - exact) / pixel
    dist = np.abs(exact) / pixel
    assert err[dist <= 1.01].max() <= limits[0]  # next to the boundary
    assert err[(dist > 1.01) & (dist < 3)].max() <= limits[1]  # e.g. the middle of the 3-pixel bar
    assert err[dist >= 3].max() <= limits[2]
    assert err[dist >= 6].max() <= limits[3]
    assert err[dist >= 23].max() <= 0.03  # near the clamp


def test_soft_transform_clamps_empty_and_full_images_to_max_distance():
    empty = soft_signed_distance_2d(torch.zeros(8, 9), 0.5, max_distance_mm=3.0)
    full = soft_signed_distance_2d(torch.ones(8, 9), 0.5, max_distance_mm=3.0)
    # Off by eps / (2 D_max) only, eps = (0.02 τ)² the square root's floor: 1.7e-5 mm here.
    off = (0.02 * 0.5) ** 2 / (2 * 3.0)
    np.testing.assert_allclose(empty.numpy(), 3.0 - off, rtol=0, atol=1e-6)
    np.testing.assert_allclose(full.numpy(), -3.0 + off, rtol=0, atol=1e-6)


def test_soft_transform_is_monotone_in_every_membership():
    torch.manual_seed(0)
    mask, r = disc((24, 24), (11.5, 12.2), 5.0)
    # A disc, full in its middle and soft near its edge, on a background empty in places and faint elsewhere.
    soft_edge = torch.tensor(np.clip(5.0 - r, 0.0, 1.0))
    image = torch.tensor(mask, dtype=torch.float64) * (0.5 + 0.5 * soft_edge)
    image[11, 12] = 0.5
    image = image + (torch.rand(24, 24, dtype=torch.float64) < 0.2) * 1e-3
    image.requires_grad_()
    base = soft_signed_distance_2d(image, (0.7, 1.0))
    # Any non-negative combination of distances has a non-positive gradient everywhere.
    weights = torch.rand(24, 24, dtype=torch.float64)
    (grad,) = torch.autograd.grad((weights * base).sum(), image)
    assert grad.max().item() <= 0.0
    assert grad.min().item() < -1.0
    # And finitely: raising one pixel's membership lowers no distance anywhere, and lowers its own
    # when it lies away from the disc's boundary (outside: D_out falls; inside: D_in rises).
    for r, c in ((0, 0), (11, 12), (20, 23), (11, 21)):
        raised = image.detach().clone()
        raised[r, c] = min(1.0, raised[r, c].item() + 0.5)
        diff = soft_signed_distance_2d(raised, (0.7, 1.0)) - base.detach()
        assert diff.max().item() <= 1e-12
        assert diff[r, c].item() < -0.1


def test_soft_transform_gradient_grows_the_silhouette_towards_occupancy_outside():
    mask, _ = disc((40, 40), (20.0, 20.0), 6.0)
    image = torch.tensor(mask, dtype=torch.float64).requires_grad_()
    p = (20, 29)  # outside: the disc's pixels stop at column 26, so the exact distance is 2.5
    assert signed_distance_2d(mask)[p] == 2.5
    soft = soft_signed_distance_2d(image, 1.0)
    (grad,) = torch.autograd.grad(soft[p], image)
    # Occupancy at p or next to it, on empty pixels, would lower the distance at p...
    assert grad[p].item() < -0.1
    assert grad[20, 28].item() < -0.1 and grad[20, 27].item() < -0.1
    # ...and the gradient reaches empty pixels several pixels away (in the window).
    assert grad[20, 35].item() < 0 and grad[14, 29].item() < 0
    raised = image.detach().clone()
    raised[p] = 0.5
    lowered = soft_signed_distance_2d(raised, 1.0)[p].item()
    assert lowered < soft[p].item() - 0.5  # measured 2.37 -> 0.31 mm


def test_soft_pixels_cap_the_soft_distances():
    # D_out(p) <= τ sqrt(ln(1/m_p)) and D_in(p) <= τ sqrt(k I_p) for m = 1 - exp(-k I) (module docstring).
    mask, r = disc((40, 40), (19.6, 20.3), 8.0)
    chord = torch.tensor(2.0 * np.sqrt(np.clip(8.0 ** 2 - r ** 2, 0.0, None)))  # a sphere's chords, mm
    line = chord + 1e-3  # a faint background everywhere
    sil = soft_silhouette(line)
    soft = soft_signed_distance_2d(sil, 1.0, temperature_mm=1.0, max_distance_mm=24.0)
    outside_cap = torch.sqrt(torch.log(1.0 / sil))
    inside_cap = torch.sqrt(DEFAULT_K_PER_MM * line)
    assert (soft <= outside_cap + 1e-9).all() and (-soft <= inside_cap + 1e-9).all()
    # The background (m = 0.0023) reads at most 2.46 mm from the disc wherever it is (measured
    # 2.19: its many equal pixels lower the soft-min further), far below the exact 24 mm.
    assert 2.0 < soft.max().item() <= math.sqrt(math.log(1 / (1 - 10 ** -1e-3)))


def test_soft_transform_gradient_is_exact_near_the_silhouette_and_bounded_far_from_it():
    mask, _ = disc((32, 32), (15.5, 15.5), 4.0)
    image = torch.tensor(mask, dtype=torch.float64).requires_grad_()
    f = lambda x: soft_signed_distance_2d(x, 1.0)  # noqa: E731  (τ = 1 mm, D_max = 24 mm)
    d = f(image)
    for p, near in (((15, 20), True), ((15, 21), True), ((2, 2), False), ((15, 30), False)):
        (grad,) = torch.autograd.grad(d[p], image, retain_graph=True)
        for q in (p, (p[0], p[1] - 1)):
            # One-sided, into [0, 1]: memberships are clamped there.
            h = 1e-8 if image[q] == 0 else -1e-8
            moved = image.detach().clone()
            moved[q] += h
            fd = (f(moved)[p] - d[p]).item() / h
            if near:  # D(p) <= 2 τ: the exact gradient
                assert grad[q].item() == pytest.approx(fd, rel=1e-4)
            else:  # the exact one is astronomically large; the floored one keeps its sign
                assert fd < -1e6 and -60.0 < grad[q].item() < 0.0


def test_soft_transform_gradient_is_finite_in_float32_with_empty_regions():
    # Exact gradients reach exp(D_max²/λ) on empty pixels: inf in float32 (the floor prevents it).
    mask = torch.tensor(disc_and_bar(), dtype=torch.float32)
    for dmax_pixels in (24.0, 30.0):
        image = (0.999 * mask).requires_grad_()
        soft_signed_distance_2d(image, 0.278, max_distance_mm=dmax_pixels * 0.278).sum().backward()
        assert torch.isfinite(image.grad).all()
        assert image.grad.abs().max().item() < 100.0  # measured 26.5


def test_soft_transform_batch_matches_single_images_and_keeps_dtype():
    torch.manual_seed(1)
    batch = torch.rand(3, 10, 12)
    out = soft_signed_distance_2d(batch, (1.0, 0.5))
    assert out.dtype == torch.float32 and out.shape == (3, 10, 12)
    # The transform runs in float64 and rounds once to the input's dtype, so a batch and its
    # single images (different convolution shapes, hence summation orders) may differ by float64
    # rounding before that cast (the window sums of <= 10 x 12 terms: ~1e-13 relative) and so by
    # one float32 rounding after it, at most 2^-23 relative (round to nearest, then a tie flip);
    # 1e-9 mm absolute covers values within float64 noise of 0.
    for b in range(3):
        torch.testing.assert_close(out[b], soft_signed_distance_2d(batch[b], (1.0, 0.5)), rtol=2.0**-23, atol=1e-9)


def test_resolve_soft_distance_scales_defaults_to_pixels_of_the_larger_spacing():
    assert resolve_soft_distance_scales((0.5, 0.25)) == (0.5, 12.0)
    assert resolve_soft_distance_scales(0.278, 0.1, 3.0) == (0.1, 3.0)


# ----------------------------------------------------------------------------------- silhouette
def test_soft_silhouette_values():
    line = torch.tensor([0.0, 0.3, 0.5, 1.0, 2.0, -1.0], dtype=torch.float64)
    sil = soft_silhouette(line)
    # 1 - 10^-I: 0, 0.4988, 0.6838, 0.9, 0.99; negative line integrals read as 0.
    expected = [0.0, 1 - 10 ** -0.3, 1 - 10 ** -0.5, 0.9, 0.99, 0.0]
    torch.testing.assert_close(sil, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)
    assert DEFAULT_K_PER_MM == pytest.approx(math.log(10))
    assert soft_silhouette(torch.tensor(1.0), k_per_mm=1.0).item() == pytest.approx(1 - math.exp(-1))


# ----------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "call",
    [
        lambda: soft_signed_distance_2d(np.zeros((4, 4))),
        lambda: soft_signed_distance_2d(torch.zeros(4)),
        lambda: soft_signed_distance_2d(torch.zeros(1, 1, 4, 4)),
        lambda: soft_signed_distance_2d(torch.tensor([[0.0, float("nan")]])),
        lambda: soft_signed_distance_2d(torch.zeros(4, 4), (1.0, -1.0)),
        lambda: soft_signed_distance_2d(torch.zeros(4, 4), (1.0, 2.0, 3.0)),
        lambda: soft_signed_distance_2d(torch.zeros(4, 4), "a"),
        lambda: soft_signed_distance_2d(torch.zeros(4, 4), temperature_mm=0.0),
        lambda: soft_signed_distance_2d(torch.zeros(4, 4), temperature_mm=0.1, max_distance_mm=3.5),
        lambda: soft_signed_distance_2d(torch.zeros(4, 4), max_distance_mm=float("inf")),
        lambda: signed_distance_2d(np.zeros((2, 3, 4))),
        lambda: signed_distance_2d(np.array([[0.0, 0.5]])),
        lambda: signed_distance_2d(np.array([[0.0, np.nan]])),
        lambda: soft_silhouette(torch.ones(3), k_per_mm=0.0),
    ],
)
def test_bad_inputs_raise_vesselfield_error(call):
    with pytest.raises(VesselfieldError):
        call()
