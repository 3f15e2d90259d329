"""Projection losses of SDF-CAR (vesselfield.losses.projection)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vesselfield.errors import VesselfieldError
from vesselfield.geometry.cone_beam import ConeBeamView
from vesselfield.grid import VolumeGrid
from vesselfield.losses import (
    downsample_mask,
    downsample_rendering,
    geometric_projection_loss,
    hard_threshold_geometric_loss,
    occupancy_projection_loss,
    sdf_car_loss,
)
from vesselfield.render import project_volume, projection_mask
from vesselfield.render.soft_distance import signed_distance_2d, soft_signed_distance_2d, soft_silhouette


def sphere_chords(shape, centre, radius_mm, spacing_mm=1.0) -> torch.Tensor:
    """(H, W) parallel-beam line integrals (mm) of a ball of ``radius_mm``: chords 2 sqrt(R² - r²)."""
    rows, cols = np.indices(shape)
    r = np.hypot(rows - centre[0], cols - centre[1]) * spacing_mm
    return torch.tensor(2.0 * np.sqrt(np.clip(radius_mm ** 2 - r ** 2, 0.0, None)))


# ----------------------------------------------------------------------------------- L_occ
def test_occupancy_loss_on_line_integrals_is_the_mse_in_mm2():
    target = sphere_chords((16, 16), (7.5, 8.0), 5.0)
    pred = (target + 0.5).requires_grad_()
    loss = occupancy_projection_loss(pred, target)
    assert loss.item() == pytest.approx(0.25, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(pred.grad, torch.full_like(pred, 2 * 0.5 / pred.numel()))
    assert occupancy_projection_loss(target, target.numpy()).item() == 0.0


def test_occupancy_loss_takes_any_shape_of_rays():
    pred = torch.tensor([0.0, 1.0, 2.0, 4.0])
    assert occupancy_projection_loss(pred, torch.tensor([0.0, 1.0, 1.0, 2.0])).item() == pytest.approx(5 / 4)
    batch = torch.zeros(2, 3, 4)
    assert occupancy_projection_loss(batch, torch.ones(2, 3, 4)).item() == pytest.approx(1.0)


def test_occupancy_loss_weighted_mean():
    pred = torch.tensor([1.0, 3.0])
    target = torch.tensor([0.0, 0.0])
    # sum(w e²) / sum(w) = (1 * 1 + 3 * 9) / 4 = 7
    assert occupancy_projection_loss(pred, target, weight=torch.tensor([1.0, 3.0])).item() == pytest.approx(7.0)
    assert occupancy_projection_loss(pred, target, weight=torch.ones(2)).item() == pytest.approx(5.0)


def test_occupancy_loss_on_masks_compares_the_soft_silhouette():
    pred = torch.tensor([0.0, 1.0, 0.3, 0.0])
    target = np.array([0, 1, 1, 1], dtype=np.uint8)
    # silhouettes 0, 0.9, 1 - 10^-0.3, 0 against 0, 1, 1, 1
    expected = (0.1 ** 2 + (10 ** -0.3) ** 2 + 1.0) / 4
    assert occupancy_projection_loss(pred, target, target_kind="mask").item() == pytest.approx(expected, rel=1e-6)
    # Zero for a rendering whose silhouette is the mask: long chords read 1 exactly in float32.
    full = torch.tensor([0.0, 50.0, 50.0, 0.0])
    assert occupancy_projection_loss(full, [False, True, True, False], target_kind="mask").item() == 0.0


# ----------------------------------------------------------------------------------- L_geo
def test_geometric_loss_is_zero_when_the_soft_target_matches_and_small_against_the_exact_target():
    pred = sphere_chords((48, 48), (23.2, 24.7), 9.0)
    mask = projection_mask(pred)
    binary = torch.where(mask, 50.0, 0.0).double()  # a rendering whose silhouette is exactly the mask
    soft_target = soft_signed_distance_2d(mask.double(), 1.0)
    assert geometric_projection_loss(binary, mask, 1.0, target_distance_mm=soft_target).item() == 0.0
    # Against the exact target the soft-min's bias remains: measured 4.2e-5 (rms 0.16 mm, D_max 24 mm).
    exact = geometric_projection_loss(binary, mask, 1.0).item()
    assert 0.0 < exact < 1e-4
    # Half the temperature cuts the mean squared error in mm² (loss x D_max²) by 5.8 (measured).
    half = geometric_projection_loss(binary, mask, 1.0, temperature_mm=0.5, max_distance_mm=12.0).item()
    assert half * 12.0 ** 2 < exact * 24.0 ** 2 / 4


def test_geometric_loss_is_normalised_into_0_4():
    mask = np.ones((12, 12), dtype=bool)
    empty = torch.zeros(12, 12)
    # Nothing rendered where everything should be: +D_max against -D_max everywhere -> 4.
    assert geometric_projection_loss(empty, mask, 0.5).item() == pytest.approx(4.0, abs=1e-5)
    assert geometric_projection_loss(empty, ~mask, 0.5).item() == pytest.approx(0.0, abs=1e-9)


def test_geometric_loss_reuses_a_precomputed_target_and_takes_batches():
    pred = torch.stack([sphere_chords((20, 24), (9.0, 11.0), 4.0), sphere_chords((20, 24), (10.0, 12.5), 5.0)])
    masks = np.zeros((2, 20, 24), dtype=bool)
    masks[0, 5:14, 6:17] = True
    masks[1, 8:12, 10:15] = True
    both = geometric_projection_loss(pred, masks, (1.0, 0.8))
    singles = [geometric_projection_loss(pred[b], masks[b], (1.0, 0.8)) for b in range(2)]
    assert both.item() == pytest.approx(np.mean([s.item() for s in singles]), rel=1e-12)
    # The raw (unclipped, ±inf allowed) exact transform is clipped inside.
    raw = np.stack([signed_distance_2d(m, (1.0, 0.8)) for m in masks])
    reused = geometric_projection_loss(pred, None, (1.0, 0.8), target_distance_mm=raw)
    assert reused.item() == both.item()


def test_hard_threshold_loss_has_zero_gradient_and_ours_does_not():
    target_mask = projection_mask(sphere_chords((32, 32), (15.5, 18.0), 6.0))
    pred = sphere_chords((32, 32), (15.5, 13.0), 6.0).requires_grad_()  # shifted by 5 pixels
    hard = hard_threshold_geometric_loss(pred, target_mask, 1.0)
    assert hard.item() > 0.01  # the loss sees the shift...
    (grad_hard,) = torch.autograd.grad(hard, pred)
    assert torch.count_nonzero(grad_hard).item() == 0  # ...but its gradient is exactly zero
    ours = geometric_projection_loss(pred, target_mask, 1.0)
    (grad,) = torch.autograd.grad(ours, pred)
    assert torch.isfinite(grad).all() and grad.abs().max().item() > 1e-4
    # Towards the target: rendered chords should grow on the target's side and shrink on the other.
    assert (grad[:, :11] > 0).all() and grad[:, :13].sum().item() > 0.3  # measured 0.35
    assert grad[:, 14:].sum().item() < -0.3 and grad[15, 22].item() < 0  # measured -0.32
    # And the hard loss is zero when the thresholded rendering reproduces the target.
    assert hard_threshold_geometric_loss(torch.where(target_mask, 1.0, 0.0), target_mask, 1.0).item() == 0.0


def tiny_scene():
    """A 16³ x 1 mm volume, a 32 x 32 detector at 1 mm (magnification 4/3), a tube along z."""
    grid = VolumeGrid.centered((16, 16, 16), 1.0)
    view = ConeBeamView(0.0, 0.0, 1000.0, 750.0, (32, 32), (1.0, 1.0))
    x, y, _ = np.meshgrid(*grid.axes_mm(), indexing="ij")

    def tube(centre_x_mm, radius_mm):
        return torch.tensor(((x - centre_x_mm) ** 2 + y ** 2 <= radius_mm ** 2).astype(np.float32))

    return grid, view, tube


def test_geometric_loss_gradient_reaches_a_volume_through_the_projector_and_a_step_lowers_it():
    grid, view, tube = tiny_scene()
    target_mask = projection_mask(project_volume(tube(2.0, 3.0), grid, view))
    assert target_mask.sum().item() == 198  # 9 columns x 22 rows
    volume = tube(-2.0, 3.0).requires_grad_()  # the same tube 4 mm to the right (patient's right, -x)

    def loss_of(v):
        return geometric_projection_loss(project_volume(v, grid, view), target_mask, view.pixel_spacing_mm)

    loss = loss_of(volume)
    (grad,) = torch.autograd.grad(loss, volume)
    assert torch.isfinite(grad).all()
    per_x = grad.sum(dim=(1, 2))  # x = -7.5 .. 7.5 mm
    # Remove occupancy where only the rendering has the tube, add it where only the target has it.
    assert per_x[:3].min().item() > 0.1 and per_x[10:].max().item() < -0.05
    with torch.no_grad():
        stepped = loss_of(volume - 0.1 * grad)
    assert stepped.item() < 0.8 * loss.item()  # measured 0.0317 -> 0.0215
    # The published loss gives this volume nothing to learn from.
    hard = hard_threshold_geometric_loss(project_volume(volume, grid, view), target_mask, 1.0)
    (grad_hard,) = torch.autograd.grad(hard, volume)
    assert hard.item() > 0 and torch.count_nonzero(grad_hard).item() == 0


# ----------------------------------------------------------------------------------- downsampling
def test_downsample_rendering_takes_each_blocks_maximum_and_crops():
    image = torch.arange(70, dtype=torch.float64).reshape(10, 7).requires_grad_()
    small = downsample_rendering(image, 3)
    assert small.shape == (3, 2)
    # Block (0, 0) = rows 0-2, columns 0-2: its maximum is element (2, 2) = 16; block (2, 1): (8, 5) = 61.
    assert small[0, 0].item() == 16.0 and small[2, 1].item() == 61.0
    small.sum().backward()
    # The gradient reaches each block's maximum only; the cropped row 9 and column 6 get none.
    assert image.grad.sum().item() == 6 and image.grad[2, 2].item() == 1 and image.grad[9].eq(0).all()
    torch.testing.assert_close(downsample_rendering(image.detach()[None], 1)[0], image.detach())


def test_downsample_mask_is_any_pixel():
    mask = np.zeros((8, 9), dtype=bool)
    mask[5, 2] = True
    mask[7, 8] = True  # in the cropped column: dropped
    small = downsample_mask(mask, 4)
    assert small.dtype == torch.bool and small.shape == (2, 2)
    assert small.tolist() == [[False, False], [True, False]]
    assert downsample_mask(torch.tensor(mask, dtype=torch.uint8)[None], 2).shape == (1, 4, 4)


def test_pooled_geometric_loss_of_a_rendering_that_matches_its_target_is_small():
    """A view and its own mask, pooled by 4 alike: the coarse silhouette matches the coarse mask,
    and L_geo is only the soft transform's own bias: measured 2.3e-4, against 3.4e-3 for the
    same ball shifted by 2 coarse pixels (4 mm). Float64 and deterministic, so the factor 10
    margin below only has to absorb changes of the soft transform, not machines."""
    fine = sphere_chords((64, 64), (31.5, 31.5), 12.0, spacing_mm=0.5)
    coarse = downsample_rendering(fine, 4)
    mask = downsample_mask(projection_mask(fine), 4)
    assert coarse.shape == mask.shape == (16, 16)
    matched = geometric_projection_loss(coarse, mask, 2.0).item()
    shifted = geometric_projection_loss(downsample_rendering(sphere_chords((64, 64), (39.5, 31.5), 12.0, 0.5), 4),
                                        mask, 2.0).item()
    assert matched < 0.1 * shifted
    # sdf_car_loss(geo_downsample=4) is exactly that pooled comparison.
    _, terms = sdf_car_loss([fine], [fine], 0.5, target_kind="line_integral", geo_downsample=4)
    assert terms["loss_geo"] == pytest.approx(matched, rel=1e-12)


# ----------------------------------------------------------------------------------- total
def test_sdf_car_loss_weights_its_terms():
    preds = [sphere_chords((24, 24), (11.0, 12.0), 5.0), sphere_chords((24, 24), (12.0, 11.0), 4.0)]
    targets = [sphere_chords((24, 24), (11.5, 12.0), 5.0), sphere_chords((24, 24), (12.0, 12.0), 4.5)]
    total, terms = sdf_car_loss(preds, targets, 1.0, target_kind="line_integral")
    occ = np.mean([occupancy_projection_loss(p, t).item() for p, t in zip(preds, targets)])
    geo = np.mean([geometric_projection_loss(p, projection_mask(t), 1.0).item() for p, t in zip(preds, targets)])
    assert terms["loss_occ"] == pytest.approx(occ, rel=1e-12)
    assert terms["loss_geo"] == pytest.approx(geo, rel=1e-12)
    assert terms["loss"] == pytest.approx(1.0 * geo + 0.25 * occ, rel=1e-12) == total.item()
    # A stack and per-view spacings give the same; other weights recombine the same terms.
    stacked, _ = sdf_car_loss(torch.stack(preds), torch.stack(targets), np.ones((2, 2)),
                              target_kind="line_integral")
    assert stacked.item() == pytest.approx(total.item(), rel=1e-12)
    _, neca = sdf_car_loss(preds, targets, 1.0, target_kind="line_integral", lambda_geo=0.0, lambda_occ=1.0)
    assert neca["loss"] == pytest.approx(occ, rel=1e-12)


def test_sdf_car_loss_with_the_methods_economies():
    """What the method passes: L_occ over the rays that can see the field, L_geo skipped on some
    steps, an eikonal term inside λ_occ. Each is a closed form of the plain terms."""
    pred = sphere_chords((24, 24), (11.0, 12.0), 5.0).requires_grad_()
    target = sphere_chords((24, 24), (11.5, 12.0), 5.0)
    full, plain = sdf_car_loss([pred], [target], 1.0, target_kind="line_integral")
    # Pixels where both are zero add nothing to the sum: the restricted mean is the full one x N / P.
    support = torch.nonzero(((pred.detach() > 0) | (target > 0)).reshape(-1))[:, 0]
    _, restricted = sdf_car_loss([pred], [target], 1.0, target_kind="line_integral", occ_pixels=[support])
    assert restricted["loss_occ"] == pytest.approx(plain["loss_occ"] * pred.numel() / len(support), rel=1e-12)
    eik = torch.tensor(0.3, dtype=torch.float64)
    total, terms = sdf_car_loss([pred], [target], 1.0, target_kind="line_integral", with_geo=False, eikonal=eik,
                                eikonal_weight=2.0, lambda_occ=0.25)
    assert "loss_geo" not in terms and terms["loss_eikonal"] == pytest.approx(0.3)
    assert terms["loss"] == pytest.approx(0.25 * (plain["loss_occ"] + 2.0 * 0.3), rel=1e-12) == total.item()
    total.backward()
    assert pred.grad.abs().sum().item() > 0


def test_sdf_car_loss_on_masks_is_zero_for_a_perfect_binary_rendering():
    mask = projection_mask(sphere_chords((20, 20), (9.5, 9.5), 5.0))
    pred = torch.where(mask, 50.0, 0.0).double().requires_grad_()
    soft_target = soft_signed_distance_2d(mask.double(), 1.0)
    total, terms = sdf_car_loss([pred], [mask], 1.0, target_kind="mask", target_distance_mm=[soft_target])
    assert terms == {"loss_occ": 0.0, "loss_geo": 0.0, "loss": 0.0}
    total.backward()
    assert pred.grad.abs().max().item() == 0.0


def test_soft_silhouette_is_what_the_mask_losses_see():
    # 1 mm of occupancy reads 0.9, a 0.3 mm graze 0.5 (the default attenuation ln 10 / mm).
    assert soft_silhouette(torch.tensor(1.0)).item() == pytest.approx(0.9, abs=1e-7)
    assert soft_silhouette(torch.tensor(0.3)).item() == pytest.approx(0.4988, abs=1e-4)
    assert occupancy_projection_loss(torch.tensor([1.0]), [1], target_kind="mask").item() == pytest.approx(0.01)


# ----------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "call",
    [
        lambda: occupancy_projection_loss(np.zeros(3), np.zeros(3)),
        lambda: occupancy_projection_loss(torch.zeros(3), torch.zeros(4)),
        lambda: occupancy_projection_loss(torch.zeros(3), torch.tensor([0.0, math.nan, 0.0])),
        lambda: occupancy_projection_loss(torch.tensor([0.0, math.inf]), torch.zeros(2)),
        lambda: occupancy_projection_loss(torch.zeros(2), torch.tensor([0.0, 0.5]), target_kind="mask"),
        lambda: occupancy_projection_loss(torch.zeros(2), torch.zeros(2), target_kind="silhouette"),
        lambda: occupancy_projection_loss(torch.zeros(2), torch.zeros(2), weight=torch.tensor([1.0, -1.0])),
        lambda: occupancy_projection_loss(torch.zeros(2), torch.zeros(2), weight=torch.zeros(2)),
        lambda: occupancy_projection_loss(torch.zeros(0), torch.zeros(0)),
        lambda: occupancy_projection_loss(torch.zeros(2, dtype=torch.int64), torch.zeros(2)),
        lambda: geometric_projection_loss(torch.zeros(5), np.zeros(5, bool), 1.0),
        lambda: geometric_projection_loss(torch.zeros(4, 4), np.zeros((4, 5), bool), 1.0),
        lambda: geometric_projection_loss(torch.zeros(4, 4), np.full((4, 4), 0.5), 1.0),
        lambda: geometric_projection_loss(torch.zeros(4, 4), None, 1.0),
        lambda: geometric_projection_loss(torch.zeros(4, 4), None, 1.0, target_distance_mm=np.full((4, 4), np.nan)),
        lambda: geometric_projection_loss(torch.zeros(4, 4), np.zeros((4, 4), bool), (1.0, 0.0)),
        lambda: geometric_projection_loss(torch.zeros(4, 4), np.zeros((4, 4), bool), 1.0, temperature_mm=-1.0),
        lambda: hard_threshold_geometric_loss(torch.zeros(4, 4), np.zeros((4, 4), bool), 1.0, math.nan),
        lambda: downsample_rendering(torch.zeros(4, 4), 0),
        lambda: downsample_rendering(torch.zeros(4, 4), 2.0),
        lambda: downsample_rendering(torch.zeros(4, 4), 5),
        lambda: downsample_rendering(np.zeros((4, 4)), 2),
        lambda: downsample_mask(np.full((4, 4), 0.5), 2),
        lambda: sdf_car_loss([torch.zeros(4, 4)], [torch.zeros(4, 4), torch.zeros(4, 4)], 1.0,
                             target_kind="line_integral"),
        lambda: sdf_car_loss([torch.zeros(4, 4)], [torch.zeros(4, 4)], 1.0, target_kind="line_integral",
                             lambda_geo=-1.0),
        lambda: sdf_car_loss([], [], 1.0, target_kind="mask"),
        lambda: sdf_car_loss([torch.zeros(4, 4)] * 2, [torch.zeros(4, 4)] * 2, [(1.0, 1.0)] * 3, target_kind="mask"),
    ],
)
def test_bad_inputs_raise_vesselfield_error(call):
    with pytest.raises(VesselfieldError):
        call()


def test_sdf_car_loss_errors_name_the_view():
    with pytest.raises(VesselfieldError, match="view 1"):
        sdf_car_loss([torch.zeros(4, 4), torch.zeros(4, 4)], [torch.zeros(4, 4), torch.zeros(4, 5)], 1.0,
                     target_kind="line_integral")
