"""Implicit neural vessel models (Alblas et al. 2022, IGR): network, losses, fitting, nesting, files."""

import numpy as np
import pytest
import torch
from conftest import sphere_points

from vesselfield.errors import VesselfieldError
from vesselfield.fields.implicit import ImplicitSDFNetwork
from vesselfield.losses.igr import (
    eikonal_loss,
    nesting_loss,
    nesting_violation_fraction,
    normal_loss,
    spatial_gradient,
    surface_loss,
)
from vesselfield.methods.implicit_vessel import (
    PRESETS,
    ImplicitVesselConfig,
    ImplicitVesselModel,
    check_points,
    fit_implicit_sdf,
    inr_config,
    sample_mesh_surface,
)
from vesselfield.metrics import dice


# ------------------------------------------------------------------------------ network
@pytest.mark.parametrize("encoding", ["none", "hash"])
@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_geometric_initialisation_starts_as_a_sphere_sdf(encoding, activation):
    torch.manual_seed(0)
    net = ImplicitSDFNetwork(hidden_dim=256, n_layers=6, skip_layer=2, activation=activation,
                             init_radius=0.5, encoding=encoding)
    x = torch.rand(4000, 3) * 1.6 - 0.8
    f = net(x)[:, 0].detach()
    r = x.norm(dim=1)
    # Zero biases: with ReLU f(0) is the output bias, -radius, exactly. Softplus(0) = ln 2 / 100 per
    # unit adds up through the layers (measured f(0) = -0.17 here) but the centre stays inside.
    f0 = net(torch.zeros(1, 3))[0, 0].item()
    assert f0 == pytest.approx(-0.5, abs=1e-6) if activation == "relu" else -0.5 < f0 < 0.0
    # f ~ c |x| - radius: radial with slope c = 1 in the infinite-width limit (SAL, Atzmon & Lipman
    # 2020); at width 256 (seed 0) measured correlation with |x| 0.84-0.94, c = 1.07-1.34 and the
    # sign of |x| - radius / c matched at 0.966-0.979 of the points over these four settings.
    assert torch.corrcoef(torch.stack((f, r)))[0, 1].item() > 0.8
    slope = ((f + 0.5) / r).mean().item()
    assert 0.75 < slope < 1.4
    assert ((f < 0) == (r < 0.5 / slope)).float().mean() > 0.95


def test_network_rejects_bad_settings_and_inputs():
    with pytest.raises(VesselfieldError):
        ImplicitSDFNetwork(skip_layer=9, n_layers=6)
    with pytest.raises(VesselfieldError):
        ImplicitSDFNetwork(activation="tanh")
    with pytest.raises(VesselfieldError):
        ImplicitSDFNetwork()(torch.zeros(5, 2))


# ------------------------------------------------------------------------------- losses
def test_igr_terms_vanish_for_an_exact_sphere_sdf_and_carry_gradients():
    x = torch.randn(500, 3, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * 0.7  # on a sphere of radius 0.7
    x.requires_grad_(True)
    f = x.norm(dim=1) - 0.7
    g = spatial_gradient(f, x)
    assert surface_loss(f).item() == pytest.approx(0.0, abs=1e-12)
    assert eikonal_loss(g).item() == pytest.approx(0.0, abs=1e-12)
    assert normal_loss(g, (x / 0.7).detach()).item() == pytest.approx(0.0, abs=1e-9)
    # A scaled field f = 2(|x| - r): ||grad f|| = 2, so the eikonal loss is (2 - 1)^2 = 1.
    g2 = spatial_gradient(2 * (x.norm(dim=1) - 0.7), x)
    assert eikonal_loss(g2).item() == pytest.approx(1.0)
    # Gradients reach parameters through the eikonal term (double backward).
    w = torch.tensor(1.5, requires_grad=True)
    y = torch.randn(100, 3, requires_grad=True)
    eikonal_loss(spatial_gradient(w * y.norm(dim=1), y)).backward()
    assert w.grad.item() == pytest.approx(2 * (1.5 - 1.0), rel=1e-5)


def test_nesting_loss_and_violation_fraction_closed_forms():
    ordered = torch.tensor([[3.0, 2.0, 1.0], [0.5, 0.0, -1.0]])
    assert nesting_loss(ordered).item() == 0.0
    assert nesting_violation_fraction(ordered) == 0.0
    broken = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.5], [2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # relu(f1 - f0): [1, 0, 0, 0] -> mean 0.25; relu(f2 - f1): [0, 0.5, 0, 0] -> 0.125.
    assert nesting_loss(broken).item() == pytest.approx(0.375)
    assert nesting_violation_fraction(broken) == pytest.approx(0.5)
    assert nesting_violation_fraction(broken, tolerance=0.75) == pytest.approx(0.25)
    with pytest.raises(VesselfieldError):
        nesting_loss(torch.zeros(4, 1))


# ------------------------------------------------------------------------------ configs
def test_presets_and_config_checks():
    paper = inr_config("paper")
    assert (paper.hidden_dim, paper.n_layers, paper.skip_layer, paper.activation, paper.encoding) == (
        256, 6, 2, "relu", "none")
    assert paper.learning_rate == 1e-4 and paper.eikonal_weight == 0.1
    # The paper fits with a constant learning rate and no sign prior; fast adds both (issue 14).
    assert (paper.sign_prior, paper.prior_steps, paper.learning_rate_final) == ("sphere", 0, 1e-4)
    fast = inr_config()
    assert (fast.sign_prior, fast.prior_steps, fast.learning_rate_final) == ("visibility", 300, 1e-5)
    assert inr_config("paper", learning_rate=3e-4).learning_rate_final == 3e-4
    assert paper == ImplicitVesselConfig.paper() and inr_config("fast") == ImplicitVesselConfig.fast()
    assert inr_config("fast") == ImplicitVesselConfig()
    assert set(PRESETS) == {"fast", "paper"}
    with pytest.raises(VesselfieldError, match="preset"):
        inr_config("slow")
    with pytest.raises(VesselfieldError, match="no field 'learning_rat'"):
        inr_config(learning_rat=1.0)
    with pytest.raises(VesselfieldError, match="learning_rate"):
        inr_config(learning_rate=0)


def test_point_checks_name_the_problem():
    good, _ = sphere_points(50, 5.0)
    assert check_points(good).shape == (50, 3)
    with pytest.raises(VesselfieldError, match="at least 10"):
        check_points(good[:5])
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(VesselfieldError, match="NaN"):
        check_points(bad)
    with pytest.raises(VesselfieldError, match="distinct"):
        check_points(np.repeat(good[:1], 100, axis=0))
    with pytest.raises(VesselfieldError, match=r"\(N, 3\)"):
        check_points(good[:, :2])
    with pytest.raises(VesselfieldError, match="normals"):
        fit_implicit_sdf(good, np.ones((49, 3)), config=inr_config(iterations=1), device="cpu")


# -------------------------------------------------------------------------------- fits
#: The paper's fitting recipe on the fast preset's network: no sign prior, no prior steps, a
#: constant learning rate. The numbers of the tests that use it were measured with it (the
#: defaults for bare points are tested in test_inr_trees.py).
IGR_ONLY = {"sign_prior": "sphere", "prior_steps": 0, "learning_rate_final": 1e-3}

def capsule_sdf(p, radius=3.0, half_length=15.0):
    q = np.zeros_like(p)
    q[..., 2] = np.clip(p[..., 2], -half_length, half_length)
    return np.linalg.norm(p - q, axis=-1) - radius


def capsule_points(n, radius=3.0, half_length=15.0, seed=0):
    import trimesh

    mesh = trimesh.creation.capsule(height=2 * half_length, radius=radius, count=[32, 32])
    return sample_mesh_surface(mesh, n, seed)


def test_tiny_cpu_fit_of_a_capsule_from_200_points_reaches_a_known_dice():
    points, _ = capsule_points(200)
    result = fit_implicit_sdf(points, config=inr_config(iterations=400, **IGR_ONLY), device="cpu")
    model = result.model
    grid = model.grid(0.5)
    pred = model.sdf_volume(grid) < 0
    ref = capsule_sdf(grid.voxel_centers_mm()) < 0
    d = dice(pred, ref)
    # Ranges below: measured over fit seeds 0-3 x point seeds 0-1 (8 fits, OMP_NUM_THREADS=1;
    # fit seeds 0-1 rerun with 2 threads gave identical numbers), 400 iterations of the fast preset.
    # Dice 0.934-0.965; the initial sphere scores ~0.1.
    assert d > 0.88, d
    # SDF values are in mm: +7 mm at 10 mm from the axis (measured 6.40-7.01). Inside a thin tube
    # the eikonal samples are few and the value lags the true -3 mm (measured -1.75 to -2.09 on
    # the axis): only its sign and order of magnitude are asserted.
    assert -3.5 < model.sdf(np.array([[0.0, 0.0, 0.0]]))[0] < -0.5
    assert model.sdf(np.array([[10.0, 0.0, 0.0]]))[0] == pytest.approx(7.0, abs=1.0)
    # Gradients at the surface are unit outward normals (measured error <= 0.046 per component).
    n = model.gradient(np.array([[3.0, 0.0, 0.0], [0.0, -3.0, 5.0]]))
    np.testing.assert_allclose(n / np.linalg.norm(n, axis=1, keepdims=True), [[1, 0, 0], [0, -1, 0]], atol=0.15)
    assert result.iterations == 400 and len(result.log) == 400 and result.sign_prior == {}
    assert result.log[-1]["loss_surface"] < 0.2 * result.log[0]["loss_surface"]  # measured 0.010-0.033


def test_model_file_round_trip(tmp_path):
    points, normals = sphere_points(100, 8.0, center_mm=(10.0, -5.0, 3.0))
    model = fit_implicit_sdf(points, normals, config=inr_config(iterations=20), device="cpu").model
    model.save(tmp_path / "model.pt")
    again = ImplicitVesselModel.load(tmp_path)
    q = np.random.default_rng(3).uniform(-10, 20, size=(1000, 3))
    np.testing.assert_array_equal(model.sdf(q), again.sdf(q))
    assert again.config == model.config and again.surface_names == ["surface"]
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(VesselfieldError, match="not a readable model file"):
        ImplicitVesselModel.load(tmp_path / "junk.pt")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(VesselfieldError, match="implicit vessel model"):
        ImplicitVesselModel.load(tmp_path / "other.pt")


def test_nesting_penalty_removes_violations_on_concentric_spheres():
    inner, _ = sphere_points(40, 6.0, seed=1)
    outer, _ = sphere_points(40, 7.0, seed=2)
    box = np.random.default_rng(0).uniform(-12, 12, size=(20000, 3))
    config = inr_config(iterations=200, hidden_dim=64, **IGR_ONLY)
    # Separate networks: nothing ties the two fields together away from their points.
    separate = np.stack([fit_implicit_sdf(p, config=config, device="cpu").model.sdf(box) for p in (inner, outer)], 1)
    joint = fit_implicit_sdf([inner, outer], names=["lumen", "wall"],
                             config=inr_config(iterations=200, hidden_dim=64, nesting_weight=1.0, **IGR_ONLY),
                             device="cpu").model
    assert joint.surface_names == ["lumen", "wall"]
    joint_sdfs = joint.sdf(box, "all")
    # Measured over fit seeds 0-3 x point seeds (1, 2), (3, 4), (5, 6) with OMP_NUM_THREADS=1 (and
    # 2 for 6 of them: identical): separate networks break the order in 0.027-0.21 of the box (0.154 for
    # the seeds here); jointly with the penalty the wall lies outside the lumen everywhere, by at
    # least 0.29-0.34 mm (and, on this clean toy, also jointly without the penalty: one network
    # already shares most of its field; benchmarks/inr_experiments.py measures all three on the
    # AAA phantoms). The thresholds keep a factor >= 2.6 from every measured value.
    assert nesting_violation_fraction(separate) > 0.01
    assert nesting_violation_fraction(joint_sdfs) == 0.0
    assert (joint_sdfs[:, 1] - joint_sdfs[:, 0]).max() < -0.1


def test_nesting_penalty_orders_coincident_surfaces_in_one_network():
    # Two surfaces that coincide (as an AAA's thrombus surface is its lumen away from the sac),
    # sampled at different points: without the penalty nothing says which channel is outside.
    inner, _ = sphere_points(40, 6.0, seed=1)
    outer, _ = sphere_points(40, 6.0, seed=2)
    box = np.random.default_rng(0).uniform(-12, 12, size=(20000, 3))
    # The penalty is a hinge, relu(f_outer - f_inner): it pushes the coincident channels to
    # f_outer <= f_inner and then stops, so with it the channels end nearly equal and the
    # fraction of the box with f_outer > f_inner by any amount sits on a knife edge (0.0011 on
    # one CPU, 0.027 on another). Order is therefore counted as broken by more than 0.01 mm
    # (1/50 of a 0.5 mm voxel, 1/600 of the radius).
    tolerance_mm = 0.01
    fractions = {}
    for weight in (0.0, 1.0):
        config = inr_config(iterations=200, hidden_dim=64, nesting_weight=weight, **IGR_ONLY)
        model = fit_implicit_sdf([inner, outer], config=config, device="cpu").model
        fractions[weight] = nesting_violation_fraction(model.sdf(box, "all"), tolerance=tolerance_mm)
    # Measured over fit seeds 0-3 x point seeds (1, 2), (3, 4), (5, 6), each with OMP_NUM_THREADS=1
    # and 2 (identical on one machine): broken by > 0.01 mm in 0.147-0.538 of the box without the
    # penalty, in 0-0.004 with it (at tolerance 0: 0.23-0.59 against 0-0.043; the largest
    # excess with the penalty was 0.017 mm, without it 0.05-0.36 mm). Each threshold keeps a
    # factor of 2.9 or more from every measured value, and the penalty's effect is asserted as a
    # ratio too (measured <= 0.009).
    assert fractions[0.0] > 0.05
    assert fractions[1.0] < 0.02
    assert fractions[1.0] < 0.1 * fractions[0.0]


def test_diverging_fit_stops_with_a_clear_message():
    points, _ = sphere_points(50, 5.0)
    with pytest.raises(VesselfieldError, match="diverged"):
        fit_implicit_sdf(points, config=inr_config(iterations=50, learning_rate=1e30), device="cpu")


def test_time_limit_then_resume_matches_an_uninterrupted_fit(tmp_path):
    points, _ = sphere_points(60, 5.0)
    config = inr_config(iterations=60, checkpoint_every=20)
    whole = fit_implicit_sdf(points, config=config, device="cpu", out_dir=tmp_path / "a").model
    part = fit_implicit_sdf(points, config=inr_config(iterations=60, checkpoint_every=20, time_limit_s=0.0),
                            device="cpu", out_dir=tmp_path / "b")
    assert part.stopped == "time_limit" and part.iterations == 0
    resumed = fit_implicit_sdf(points, config=config, device="cpu", out_dir=tmp_path / "b", resume=True)
    # The 300 prior steps (visibility shape) come first, then the 60 IGR steps; the time limit
    # stopped before either, so the resumed run crosses from one to the other.
    assert (resumed.iterations, resumed.prior_steps, len(resumed.log)) == (60, 300, 360)
    assert "loss_prior" in resumed.log[299] and "loss_sign" in resumed.log[300]
    q = np.random.default_rng(4).uniform(-6, 6, size=(500, 3))
    # The same operations on the same state in the same process: the resumed fit is the same fit.
    np.testing.assert_array_equal(resumed.model.sdf(q), whole.sdf(q))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda_matches_the_cpu_classification():
    points, _ = sphere_points(200, 5.0)
    cpu = fit_implicit_sdf(points, config=inr_config(iterations=200), device="cpu").model
    gpu = fit_implicit_sdf(points, config=inr_config(iterations=200), device="cuda").model
    grid = cpu.grid(0.5)
    # CUDA follows another floating-point trajectory from the same seed; on the CPU, fits from
    # seeds 0-3 agree pairwise at Dice 0.980-0.986 (OMP_NUM_THREADS=1), so 0.95 allows 2.5 times
    # the largest measured disagreement.
    assert dice(gpu.sdf_volume(grid) < 0, cpu.sdf_volume(grid) < 0) > 0.95


def test_grid_over_box_sizes_and_caps():
    from vesselfield.methods.implicit_vessel import grid_over_box

    box = np.array([[0.0, 0.0, 0.0], [10.0, 20.0, 4.0]])
    grid = grid_over_box(box, 1.0, 0.0)
    # 10 mm at 1 mm: 11 voxel centres from 0 to 10 (ceil(10 / 1) + 1), centred on the box.
    assert grid.shape == (11, 21, 5)
    assert np.allclose(grid.origin, box[0]) and np.allclose(grid.origin + (np.array(grid.shape) - 1) * grid.spacing, box[1])
    assert grid_over_box(box, 2.0).shape == (16, 21, 13)  # default margin 5 spacings = 10 mm each side
    with pytest.raises(VesselfieldError, match="use a coarser spacing"):
        grid_over_box(box, 1.0, 0.0, max_voxels=11 * 21 * 5 - 1)
    with pytest.raises(VesselfieldError, match="positive"):
        grid_over_box(box, 0.0)
