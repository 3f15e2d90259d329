"""Realistic degradations of two-view inputs: each one has the statistics its option says."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vesselfield.errors import VesselfieldError
from vesselfield.geometry import ConeBeamView, Geometry, default_geometry
from vesselfield.grid import VolumeGrid
from vesselfield.render.degrade import (
    BACKGROUND_SCALE,
    Degradation,
    break_thin_branches,
    degrade_line_integrals,
    degrade_masks,
    parse_degradation,
    perturb_poses,
    truth_in_reference_frame,
)
from vesselfield.render.preprocess import estimate_noise_sigma, fit_background, vessel_mask

PEAK = 10.0


def flat_view(shape=(128, 128)):
    """A view that is zero except one pixel at PEAK: the peak that every fraction refers to."""
    image = np.zeros(shape)
    image[0, 0] = PEAK
    return image


# ----------------------------------------------------------------------------- options
def test_parse_round_trip_and_defaults():
    d = parse_degradation("noise=0.02, blur_px=1,background=0.03,angle_deg=1,shift_mm=1.5")
    assert (d.noise, d.blur_px, d.background, d.angle_deg, d.shift_mm) == (0.02, 1.0, 0.03, 1.0, 1.5)
    assert parse_degradation(d.to_text()) == d
    assert parse_degradation(None) == Degradation() and not Degradation().images and not Degradation().poses
    assert parse_degradation("noise=0.1", seed=7).seed == 7


@pytest.mark.parametrize("text, message", [
    ("noize=0.1", "unknown degradation 'noize'"),
    ("noise", "is not NAME=VALUE"),
    ("noise=abc", "is not a number"),
    ("noise=-0.1", "must be >= 0"),
    ("noise=1.5", "must be < 1"),
    ("background=2", "must be < 1"),
    ("angle_deg=45", "not a calibration error"),
    ("breaks=1.5", "whole number"),
    ("blur_px=nan", "finite number"),
])
def test_impossible_values_are_refused(text, message):
    with pytest.raises(VesselfieldError, match=message):
        parse_degradation(text)


# ----------------------------------------------------------------------------- images
def test_gaussian_noise_has_the_specified_sigma():
    out = degrade_line_integrals([flat_view()], Degradation(noise=0.02, seed=3))[0].astype(np.float64)
    residual = out - flat_view()
    n = residual.size
    # The sample std of n Gaussian values has relative standard error 1/sqrt(2n) (0.55 % here): 5 of them.
    assert abs(residual.std() / (0.02 * PEAK) - 1) < 5 / math.sqrt(2 * n)
    assert abs(residual.mean()) < 5 * 0.02 * PEAK / math.sqrt(n)
    # And the estimator the method uses finds it (MAD of differences: efficiency 37 %, so 5 / sqrt(0.37 n)).
    assert abs(estimate_noise_sigma(out) / (0.02 * PEAK) - 1) < 5 / math.sqrt(0.37 * n)


def test_poisson_noise_variance_grows_with_the_signal():
    image = np.zeros((128, 128))
    image[:64] = PEAK
    image[64:] = PEAK / 4
    out = degrade_line_integrals([image], Degradation(poisson=0.05, seed=1))[0].astype(np.float64) - image
    top, bottom = out[:64].std(), out[64:].std()
    # variance poisson² peak I: σ = 0.05 peak at I = peak, half that at I = peak / 4.
    tol = 5 / math.sqrt(2 * 64 * 128)  # relative standard error of a std over 64 x 128 values: 5 of them
    assert abs(top / (0.05 * PEAK) - 1) < tol
    assert abs(bottom / (0.025 * PEAK) - 1) < tol


def test_blur_has_the_specified_sigma():
    image = np.zeros((101, 101))
    image[50, 50] = PEAK
    out = degrade_line_integrals([image], Degradation(blur_px=2.0))[0].astype(np.float64)
    r = np.arange(101) - 50
    w = out / out.sum()
    var_rows = float((w.sum(1) * r**2).sum())
    # scipy's kernel is the sampled Gaussian truncated at 4σ and renormalised: its variance is σ² (1 - 1.07e-3)
    # (truncated normal); 5e-3 leaves room for the sampling of a σ = 2 px kernel.
    assert abs(var_rows / 4.0 - 1) < 5e-3
    assert out.sum() == pytest.approx(PEAK, rel=1e-6)  # blur conserves the integral


def test_background_is_smooth_and_as_large_as_specified():
    shape = (128, 128)
    out = degrade_line_integrals([flat_view(shape)], Degradation(background=0.03, seed=2))[0].astype(np.float64)
    b = out - flat_view(shape)
    assert np.abs(b).max() == pytest.approx(0.03 * PEAK, rel=1e-5)  # float32 output
    # White noise filtered with σ px has a spectrum exp(-k² σ²): E|Δb|² / E|b|² = 2 / σ⁴; a factor 3 for one draw.
    sigma = BACKGROUND_SCALE * min(shape)
    lap = b[:-2, 1:-1] + b[2:, 1:-1] + b[1:-1, :-2] + b[1:-1, 2:] - 4 * b[1:-1, 1:-1]
    assert np.sqrt((lap**2).mean() / (b**2).mean()) < 3 * math.sqrt(2) / sigma**2
    # And the method's background model takes out most of it: a 0.3 mm background (below the 0.5 mm vessel
    # threshold) on a 256² view leaves an rms of 2.0-4.9 % of its amplitude over seeds 0-5 (measured): < 10 %.
    big = 0.3 * (degrade_line_integrals([flat_view((256, 256))], Degradation(background=0.03, seed=2))[0]
                 - flat_view((256, 256))) / (0.03 * PEAK)
    assert np.sqrt(((big - fit_background(big, 16.0)) ** 2).mean()) < 0.1 * 0.3


def test_same_seed_same_degradation_other_seed_other():
    d = Degradation(noise=0.02, background=0.03, blur_px=1, seed=5)
    a = degrade_line_integrals([flat_view()], d)[0]
    assert np.array_equal(a, degrade_line_integrals([flat_view()], d)[0])
    other = degrade_line_integrals([flat_view()], Degradation(noise=0.02, background=0.03, blur_px=1, seed=6))[0]
    assert not np.array_equal(a, other)


def test_vessel_mask_of_an_exact_view_is_the_projection_mask_and_ignores_noise_specks():
    image = np.zeros((128, 128))
    image[60:66, 10:120] = 2.0  # a 6 px wide vessel of 2 mm chord
    clean = vessel_mask(image)
    assert np.array_equal(clean.mask, image > 0.5) and clean.noise_sigma_mm == 0.0
    noisy = degrade_line_integrals([image], Degradation(noise=0.04, background=0.05, seed=0))[0]
    found = vessel_mask(noisy).mask
    # Noise σ 0.08 mm and ±0.1 mm background: the naive 0.5 mm threshold is clean here, but the found mask must
    # hold the vessel and nothing else: every component touches it.
    from scipy import ndimage

    labels, n = ndimage.label(found, structure=np.ones((3, 3)))
    assert n == 1 and found[60:66, 12:118].all()
    assert (found & ~ndimage.binary_dilation(image > 0.5, iterations=2)).sum() == 0


# ----------------------------------------------------------------------------- poses
def test_pose_errors_are_as_specified():
    g = default_geometry()
    true, record = perturb_poses(g, Degradation(angle_deg=1.5, shift_mm=2.0, seed=4))
    for i, (rec, t, r) in enumerate(zip(g.views, true.views, record)):
        assert abs(t.primary_angle_deg - rec.primary_angle_deg) == pytest.approx(1.5, abs=1e-12)
        assert abs(t.secondary_angle_deg - rec.secondary_angle_deg) == pytest.approx(1.5, abs=1e-12)
        shift = np.asarray(r["shift_mm"])
        assert np.linalg.norm(shift) == pytest.approx(0.0 if i == 0 else 2.0, abs=1e-12)
        assert np.allclose(np.asarray(t.isocenter_mm), -shift)  # the view sees the object moved by +shift
    again, _ = perturb_poses(g, Degradation(angle_deg=1.5, shift_mm=2.0, seed=4))
    assert again.to_dict() == true.to_dict()


def test_a_shifted_isocenter_sees_the_object_shifted():
    view = ConeBeamView(20.0, 10.0, 1000.0, 750.0, (64, 64), (0.5, 0.5))
    p = np.array([[3.0, -2.0, 5.0]])
    t = np.array([1.0, 2.0, -0.5])
    moved = view.moved(shift_mm=t)
    assert np.allclose(moved.project_points(p), view.project_points(p + t), atol=1e-9)
    g = Geometry(VolumeGrid.centered((8, 8, 8), 1.0), [moved])
    assert Geometry.from_dict(g.to_dict()).views[0] == moved  # isocenter_mm round-trips in geometry files


def test_truth_in_reference_frame_moves_a_point_where_the_formula_says():
    grid = VolumeGrid.centered((48, 48, 48), 1.0)
    centres = grid.voxel_centers_mm(np.float64)
    x0 = np.array([6.0, -4.0, 3.0])
    ball = (np.linalg.norm(centres - x0, axis=-1) <= 4.0).astype(np.float32)
    rec = default_geometry().views[0]
    true = rec.moved(primary_deg=3.0, secondary_deg=-2.0, shift_mm=(1.0, 0.5, -1.0))
    moved = truth_in_reference_frame(ball, grid, rec, true)
    expect = rec.rotation.T @ true.rotation @ (x0 - np.asarray(true.isocenter_mm)) + np.asarray(rec.isocenter_mm)
    centroid = (moved[..., None] * centres).reshape(-1, 3).sum(0) / moved.sum()
    # Trilinear resampling of a 4 mm ball on a 1 mm grid: the centroid moves by well under a tenth of a voxel.
    assert np.linalg.norm(centroid - expect) < 0.1
    assert moved.sum() == pytest.approx(ball.sum(), rel=0.02)  # a rigid motion keeps the volume
    assert np.array_equal(truth_in_reference_frame(ball, grid, rec, rec), ball)


# ----------------------------------------------------------------------------- masks
def ring(shape=(200, 200), radius=70.0, width=5.0):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    d = np.hypot(rr - shape[0] / 2, cc - shape[1] / 2)
    return np.abs(d - radius) <= width / 2


@pytest.mark.parametrize("breaks", [1, 3, 5])
def test_breaks_cut_thin_branches_into_pieces(breaks):
    from scipy import ndimage

    cut = degrade_masks([ring()], Degradation(breaks=breaks, gap_px=4, seed=breaks))[0]
    # A closed ring has no ends: k cuts through it leave exactly k pieces.
    assert ndimage.label(cut, structure=np.ones((3, 3)))[1] == breaks
    assert (cut & ~ring()).sum() == 0


def test_breaks_spare_thick_vessels():
    thick = ring(width=15.0)
    rng = np.random.default_rng(0)
    assert np.array_equal(break_thin_branches(thick, 3, rng, thin_px=3.0), thick)


def test_blobs_are_separate_discs_of_the_given_radius():
    from scipy import ndimage

    mask = ring()
    out = degrade_masks([mask], Degradation(blobs=4, blob_px=3, seed=1))[0]
    labels, n = ndimage.label(out, structure=np.ones((3, 3)))
    assert n == 5
    rr, cc = np.mgrid[-3:4, -3:4]
    disc_area = int((rr**2 + cc**2 <= 9).sum())
    sizes = sorted(np.bincount(labels.ravel())[1:])
    assert sizes[:4] == [disc_area] * 4 and (out & ~mask).sum() == 4 * disc_area
