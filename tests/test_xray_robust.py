"""Two-view reconstruction on realistic inputs: noisy views, refined poses, connected trees, files and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import expect_user_error, small_two_view_geometry
from vesselfield.cli import main
from vesselfield.errors import VesselfieldError
from vesselfield.geometry import load_geometry, save_geometry
from vesselfield.io import save_volume
from vesselfield.losses.projection import occupancy_projection_loss
from vesselfield.meshing.connect import topology_report
from vesselfield.methods.sdf_car import check_views, reconstruct_xray, xray_config
from vesselfield.phantoms import TreePhantom, coronary_tree
from vesselfield.render.degrade import Degradation, simulate_views
from vesselfield.render.preprocess import vessel_mask

GEOMETRY = small_two_view_geometry()
GRID = GEOMETRY.volume


@pytest.fixture(scope="module")
def phantom():
    """The left coronary phantom with radii of at least 1.6 mm, so that it is one tree on this 1.6 mm grid."""
    from vesselfield.tree import VesselTree

    t = coronary_tree("left", seed=0)
    thick = VesselTree(t.points_mm, np.maximum(t.radius_mm, 1.6), t.parent, t.labels)
    return np.asarray(TreePhantom(thick).occupancy(GRID), np.float32)


# ----------------------------------------------------------------------------- pieces
def test_huber_term_is_the_mse_below_delta_and_linear_beyond():
    pred = torch.tensor([0.0, 0.1, 0.5, 2.0], requires_grad=True)
    target = torch.zeros(4)
    loss = occupancy_projection_loss(pred, target, huber_delta_mm=0.2)
    # e² below δ; 2 δ |e| - δ² beyond: (0 + 0.01 + (0.2 - 0.04) + (0.8 - 0.04)) / 4.
    assert float(loss.detach()) == pytest.approx((0.01 + 0.16 + 0.76) / 4, rel=1e-6)
    loss.backward()
    assert torch.allclose(pred.grad, torch.tensor([0.0, 0.2, 0.4, 0.4]) / 4)  # |grad| <= 2 δ / n


def test_slightly_negative_views_pass_inverted_ones_do_not():
    image = np.zeros(GEOMETRY.views[0].detector_shape, np.float32)
    image[100:110, 50:200] = 3.0
    noisy = image - 0.2  # noise and background dip below zero
    check_views(GEOMETRY, [noisy, noisy], "line_integral")
    with pytest.raises(VesselfieldError, match="more negative .* than positive"):
        check_views(GEOMETRY, [-image, noisy], "line_integral")


# ----------------------------------------------------------------------------- the method
def test_a_reconstructed_phantom_tree_is_one_connected_tree(phantom):
    images = simulate_views(phantom, GEOMETRY).images
    result = reconstruct_xray(GEOMETRY, images, config=xray_config("sdf-car", iterations=300), device="cpu",
                              progress=False)
    report = topology_report(result.occupancy >= 0.5, phantom >= 0.5)
    # The target of issue 13: the largest component holds >= 95 % of the volume where the truth is one tree.
    # Measured: the fit leaves 16 pieces here; bridged through the hull they are one (fraction 1.0).
    assert report["target_components"] == 1
    assert result.info["connection"]["components_before"] > 1  # the fit alone is in pieces: the bridging works
    assert report["largest_component_fraction"] >= 0.95
    assert result.info["connection"]["components_after"] == report["components"]


def test_noisy_views_are_read_with_their_noise_level(phantom):
    d = Degradation(noise=0.02, blur_px=1.0, background=0.03, seed=1)
    sim = simulate_views(phantom, GEOMETRY, d)
    result = reconstruct_xray(GEOMETRY, sim.images, config=xray_config("sdf-car", iterations=5, refine_pose=False),
                              device="cpu", progress=False)
    peaks = [float(c.max()) for c in sim.clean]
    # The MAD estimate of white noise: the blurred vessels' own pixel differences bias it upwards on this small
    # view (2-6 % over seeds 0-4, measured; its standard error over 65 k differences is ~0.5 %): within 10 %.
    for sigma, peak in zip(result.info["noise_sigma_mm"], peaks):
        assert sigma == pytest.approx(0.02 * peak, rel=0.10)
    # The hull comes from masks above the noise: 24.6-25.0 k voxels over seeds 0-3 against 19.8 k for the clean
    # views (blur widens each vessel by about a pixel), where thresholding the noisy views at 0.5 mm gives
    # 26.6-53.8 k (measured): within 30 % of the clean hull.
    from vesselfield.render import visual_hull

    clean_hull = int(visual_hull([vessel_mask(c).mask for c in sim.clean], GEOMETRY).sum())
    assert result.hull_voxels < 1.3 * clean_hull


# ----------------------------------------------------------------------------- files and errors
def write_views(tmp_path, phantom, degradation=None):
    vol = tmp_path / "tree.nii.gz"
    save_volume(vol, phantom, GRID)
    geo = tmp_path / "geometry.json"
    save_geometry(geo, GEOMETRY)
    out = tmp_path / "views"
    args = ["project", "--volume", str(vol), "--geometry", str(geo), "--out", str(out), "--device", "cpu"]
    if degradation:
        args += ["--degrade", degradation]
    assert main(args) == 0
    return geo, out


def test_project_degrade_writes_the_true_poses(phantom, tmp_path):
    geo, out = write_views(tmp_path, phantom, "angle_deg=1,shift_mm=1.5,noise=0.01,seed=3")
    record = json.loads((out / "degradation.json").read_text())
    assert record["settings"]["angle_deg"] == 1.0 and record["settings"]["seed"] == 3
    true = load_geometry(out / "geometry_true.json")
    assert abs(true.views[1].primary_angle_deg - GEOMETRY.views[1].primary_angle_deg) == pytest.approx(1.0)
    assert np.linalg.norm(true.views[1].isocenter_mm) == pytest.approx(1.5)
    image = np.load(out / "view1.npy")
    assert image.dtype == np.float32 and image.min() < 0  # noise: a real subtracted view dips below zero


def test_reconstruct_writes_the_refined_geometry(phantom, tmp_path, capsys):
    geo, views = write_views(tmp_path, phantom, "angle_deg=1,shift_mm=1.5")
    out = tmp_path / "rec"
    code = main(["reconstruct", "xray", "--geometry", str(geo), "--projections", str(views / "view1.npy"),
                 str(views / "view2.npy"), "--out", str(out), "--iterations", "20", "--device", "cpu", "--quiet"])
    assert code == 0, capsys.readouterr().err
    refined = load_geometry(out / "geometry_refined.json")
    record = json.loads((out / "pose_refinement.json").read_text())
    assert refined.views[0] == GEOMETRY.views[0] and record["views"][1]["residual_px_after"] is not None
    c = record["views"][1]
    assert refined.views[1].primary_angle_deg == pytest.approx(GEOMETRY.views[1].primary_angle_deg
                                                               + c["primary_offset_deg"])
    assert "view 2 refined" in capsys.readouterr().out
    out2 = tmp_path / "rec2"
    assert main(["reconstruct", "xray", "--geometry", str(geo), "--projections", str(views / "view1.npy"),
                 str(views / "view2.npy"), "--out", str(out2), "--iterations", "5", "--device", "cpu", "--quiet",
                 "--no-refine-pose"]) == 0
    assert not (out2 / "geometry_refined.json").exists()


def test_a_diverging_refinement_is_a_one_line_error_naming_the_view(phantom, tmp_path, capsys):
    geo, views = write_views(tmp_path, phantom, "shift_mm=6")
    out = tmp_path / "rec"
    expect_user_error(capsys, ["reconstruct", "xray", "--geometry", str(geo), "--projections",
                               str(views / "view1.npy"), str(views / "view2.npy"), "--out", str(out),
                               "--iterations", "5", "--device", "cpu", "--set", "pose_max_shift_mm=1"],
                      "pose refinement of view 2 diverged")


@pytest.mark.parametrize("text, message", [("noise=2", "must be < 1"), ("nois=0.1", "unknown degradation")])
def test_impossible_degradations_are_refused_by_the_cli(phantom, tmp_path, capsys, text, message):
    vol = tmp_path / "tree.nii.gz"
    save_volume(vol, phantom, GRID)
    geo = tmp_path / "geometry.json"
    save_geometry(geo, GEOMETRY)
    expect_user_error(capsys, ["project", "--volume", str(vol), "--geometry", str(geo), "--out",
                               str(tmp_path / "v"), "--degrade", text], message)
    assert not (tmp_path / "v").exists()


def test_vesselness_prefilter_keeps_tubes_and_drops_most_of_a_blob():
    image = np.zeros((128, 128))
    image[60:66, 10:120] = 2.0  # a vessel
    image[5:45, 5:45] = 2.0  # a 40 px plateau: not tubular (bone, contrast pooling)
    plain = vessel_mask(image).mask
    tubular = vessel_mask(image, vesselness=True).mask
    assert plain[5:45, 5:45].all() and tubular[60:66, 20:110].all()
    # Frangi's response on a plateau survives only along its edges: 35 % of it is left (measured).
    assert tubular[5:45, 5:45].mean() < 0.5


def test_deadzone_term_ignores_residuals_within_epsilon():
    pred = torch.tensor([0.0, 0.1, 0.5])
    loss = occupancy_projection_loss(pred, torch.zeros(3), deadzone_mm=0.2)
    assert float(loss) == pytest.approx((0.3**2) / 3, rel=1e-6)


def test_pooled_data_term_compares_block_means():
    from vesselfield.losses.projection import sdf_car_loss

    pred = torch.arange(16, dtype=torch.float32).view(4, 4)
    target = torch.zeros(4, 4)
    _, terms = sdf_car_loss([pred], [target], 1.0, target_kind="line_integral", lambda_geo=0.0, lambda_occ=1.0,
                            with_geo=False, occ_downsample=2)
    blocks = pred.view(2, 2, 2, 2).mean(dim=(1, 3))  # means of the four 2x2 blocks: 2.5, 4.5, 10.5, 12.5
    assert terms["loss_occ"] == pytest.approx(float((blocks**2).mean()), rel=1e-6)


def test_known_detector_blur_matches_a_gaussian_filter():
    from scipy import ndimage

    from vesselfield.methods.sdf_car import _GaussianBlur

    image = torch.zeros(41, 41)
    image[20, 20] = 1.0
    blurred = _GaussianBlur(1.5)(image).numpy()
    assert blurred.sum() == pytest.approx(1.0, rel=1e-6)
    # The same kernel as scipy's (sampled Gaussian truncated at 4 σ, normalised): float32 rounding only.
    assert np.abs(blurred - ndimage.gaussian_filter(image.numpy().astype(np.float64), 1.5, mode="constant")).max() < 1e-6


def test_masks_are_not_bridged_only_cleaned(phantom):
    images = simulate_views(phantom, GEOMETRY, masks_only=True).images
    result = reconstruct_xray(GEOMETRY, images, kind="mask", config=xray_config("sdf-car", iterations=40),
                              device="cpu", progress=False)
    # connect_max_gap_mm=None means 0 mm for masks: their hull is too loose to bridge through (measured).
    assert result.info["connection"]["bridged"] == 0
    assert result.info["connection"]["components_after"] <= result.info["connection"]["components_before"]
