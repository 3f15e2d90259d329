"""The VesselSDF loss terms (eqs. 5-9) on analytic fields, with gradients."""

import math

import numpy as np
import pytest
import torch

from vesselfield.errors import VesselfieldError
from vesselfield.losses.vessel_sdf import (
    VesselSdfLossWeights,
    anisotropic_eikonal_loss,
    gaussian_blur_valid,
    gaussian_smoothness_loss,
    occupancy_bce_loss,
    sdf_l1_loss,
    surface_repulsion_loss,
    vessel_sdf_loss,
)

# Sparse-slice CT spacing: 0.8 mm in plane, 4 mm between slices (γ = 5).
SPACING = (0.8, 0.8, 4.0)


def _coords(shape, spacing, dtype=torch.float64):
    axes = [torch.arange(n, dtype=dtype) * s for n, s in zip(shape, spacing)]
    return torch.meshgrid(*axes, indexing="ij")


def _plane_sdf(shape, spacing, normal, offset_mm, dtype=torch.float64):
    n = np.asarray(normal, dtype=float)
    n = n / np.linalg.norm(n)
    x, y, z = _coords(shape, spacing, dtype)
    return (n[0] * x + n[1] * y + n[2] * z - offset_mm)[None, None]


def test_eikonal_is_zero_on_an_exact_planar_sdf_with_anisotropic_spacing():
    # A plane's SDF is linear, so second-order differences are exact everywhere (edges included):
    # the residual is rounding only, ~1e-15 in float64 (n·n = 1 to 2 ulp).
    f = _plane_sdf((12, 10, 7), SPACING, (0.3, -0.5, 0.8), 3.0)
    assert float(anisotropic_eikonal_loss(f, SPACING)) < 1e-24


def test_eikonal_is_small_on_a_sampled_ball_sdf_away_from_its_centre():
    # |x - c| - r sampled on the anisotropic grid, voxels at least 8 mm from the centre: the
    # central difference of |x| along an axis of step h has relative error <= h²/(2 d²)
    # (Taylor: the second derivative of |x| is <= 1/d), so |∇f|² - 1 <= 2 * 4²/(2*8²) = 0.25 and
    # the squared residual averages far below that; a wrong γ (the z derivative unscaled) gives
    # (1/0.8² ... ) errors of order 1 instead.
    shape = (40, 40, 12)
    x, y, z = _coords(shape, SPACING)
    c = (16.0, 16.0, 22.0)
    d = torch.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
    f = (d - 5.0)[None, None]
    mask = (d > 8.0)[None, None]
    loss = float(anisotropic_eikonal_loss(f, SPACING, mask))
    assert loss < 0.25 ** 2
    # Scaling the field by γ along z (ignoring the slice spacing) is far from unit gradient.
    wrong = float(anisotropic_eikonal_loss(f, (0.8, 0.8, 0.8), mask))
    assert wrong > 100 * loss


def test_eikonal_gradient_matches_finite_differences():
    torch.manual_seed(0)
    f = torch.randn(1, 1, 5, 6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: anisotropic_eikonal_loss(t, SPACING), (f,))


def test_gaussian_term_is_zero_on_a_linear_field_and_positive_on_a_noisy_one():
    f = _plane_sdf((16, 16, 8), SPACING, (0.6, 0.2, 0.4), 5.0)
    # A symmetric normalised kernel reproduces a linear field on the valid region: rounding only
    # (values ~10 mm, float64 ulp 2e-15, squared and weighted by |f| ~10: < 1e-26).
    assert float(gaussian_smoothness_loss(f, 1.0, SPACING)) < 1e-24
    noisy = f + 0.5 * torch.randn(f.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert float(gaussian_smoothness_loss(noisy, 1.0, SPACING)) > 1e-2


def test_gaussian_blur_valid_region_and_weights():
    f = torch.zeros(1, 1, 15, 15, 9, dtype=torch.float64)
    f[0, 0, 7, 7, 4] = 1.0
    blurred, (rx, ry, rz) = gaussian_blur_valid(f, 0.8, SPACING)
    # σ = 1 voxel in plane -> r = 3; σ = 0.2 voxel along z -> r = 1.
    assert (rx, ry, rz) == (3, 3, 1)
    assert blurred.shape == (1, 1, 9, 9, 7)
    # The impulse response sums to 1 (a normalised kernel) and is the separable Gaussian product.
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-12)
    k1 = np.exp(-0.5 * np.arange(-3, 4) ** 2)
    k1 /= k1.sum()
    kz = np.exp(-0.5 * (np.arange(-1, 2) / 0.2) ** 2)
    kz /= kz.sum()
    assert float(blurred[0, 0, 4, 4, 3]) == pytest.approx(k1[3] * k1[3] * kz[1], rel=1e-12)


def test_gaussian_term_gradient():
    f = torch.randn(1, 1, 9, 9, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: gaussian_smoothness_loss(t, 0.8, SPACING), (f,))


def test_surface_term_is_largest_at_zero():
    values = torch.linspace(-3, 3, 61, dtype=torch.float64).reshape(1, 1, 61, 1, 1)
    per_voxel = torch.stack([surface_repulsion_loss(values[..., i:i + 1, :, :], 1.5) for i in range(61)])
    assert int(per_voxel.argmax()) == 30  # f = 0
    assert float(per_voxel[30]) == pytest.approx(1.0, abs=1e-12)  # linspace puts ~1e-16 there, not 0
    assert float(per_voxel[40]) == pytest.approx(math.exp(-1.5 * 1.0), rel=1e-12)
    f = values.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: surface_repulsion_loss(t + 0.05, 1.5), (f,))


def test_sdf_and_occupancy_terms_closed_forms():
    pred = torch.full((1, 1, 2, 2, 2), 1.0)
    target = torch.zeros(1, 1, 2, 2, 2)
    target[..., 0] = 3.0
    assert float(sdf_l1_loss(pred, target)) == pytest.approx(1.5)
    logits = torch.zeros(1, 1, 2, 2, 2)
    assert float(occupancy_bce_loss(logits, target > 0)) == pytest.approx(math.log(2.0), rel=1e-6)


def test_combined_loss_weights_terms_and_per_sample_spacing():
    g = torch.Generator().manual_seed(3)
    shape = (2, 1, 12, 12, 6)  # the 1 mm Gaussian needs 2 * ceil(3 * 1 / 0.8) + 1 = 9 voxels in plane
    sdf = torch.randn(shape, generator=g, dtype=torch.float64)
    logits = torch.randn(shape, generator=g, dtype=torch.float64)
    target = {"sdf_mm": torch.randn(shape, generator=g, dtype=torch.float64),
              "occupancy": (torch.rand(shape, generator=g) > 0.5).double()}
    w = VesselSdfLossWeights()
    spacings = torch.tensor([[0.8, 0.8, 4.0], [0.9, 0.9, 5.0]], dtype=torch.float64)
    loss, terms = vessel_sdf_loss({"occupancy_logits": logits, "sdf_mm": sdf}, target, spacings, w)
    eik = 0.5 * (anisotropic_eikonal_loss(sdf[:1], (0.8, 0.8, 4.0)) + anisotropic_eikonal_loss(sdf[1:], (0.9, 0.9, 5.0)))
    assert terms["eik"] == pytest.approx(float(eik), rel=1e-12)
    expected = (w.sdf * terms["sdf"] + w.occupancy * terms["occ"] + w.eikonal * terms["eik"] + w.gauss * terms["gauss"]
                + w.surface * terms["sur"])
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    # Occupancy-only prediction: only the occupancy term.
    loss, terms = vessel_sdf_loss({"occupancy_logits": logits, "sdf_mm": None}, target, SPACING, w)
    assert set(terms) == {"occ"} and float(loss) == pytest.approx(w.occupancy * terms["occ"], rel=1e-12)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(VesselfieldError, match="spacing_mm"):
        anisotropic_eikonal_loss(torch.zeros(1, 1, 4, 4, 4), (1.0, -1.0, 1.0))
    with pytest.raises(VesselfieldError, match="too small"):
        gaussian_smoothness_loss(torch.zeros(1, 1, 4, 4, 4), 2.0, (0.5, 0.5, 0.5))
    with pytest.raises(VesselfieldError, match="shapes differ"):
        sdf_l1_loss(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 3))
