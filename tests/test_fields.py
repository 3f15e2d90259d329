"""Neural and explicit-grid fields: read-outs, skip/residual wiring, sampling and gradients."""

import numpy as np
import pytest
import torch
from scipy.interpolate import RegularGridInterpolator
from torch import nn

from vesselfield.encodings import FourierFeatures, HashGridEncoding
from vesselfield.errors import VesselfieldError
from vesselfield.fields import BandGridField, BandNeuralField, GridField, NeuralField, ResidualMLP, SkipMLP
from vesselfield.grid import VolumeGrid

# Dyadic grid: spacing 0.5 mm, integer origin and (n - 1) powers of two, so that the mapping to
# grid_sample coordinates is exact in float32.
DYADIC = VolumeGrid((5, 9, 17), (0.5, 0.5, 0.5), (-1.0, 2.0, 3.0))
GENERAL = VolumeGrid((6, 7, 5), (0.7, 1.3, 0.9), (-10.3, 4.1, 2.7))


def hash_field(output="sdf", grid=DYADIC, seed=0, **kwargs):
    torch.manual_seed(seed)
    enc = HashGridEncoding(n_levels=4, log2_hashmap_size=12, base_resolution=4, finest_resolution=32, backend="torch")
    net = ResidualMLP(enc.output_dim, hidden_dim=16, n_layers=3)
    field = NeuralField(enc, net, output, grid=grid, **kwargs)
    with torch.no_grad():  # a table at its 1e-4 initial scale would make every output the same
        enc.table.uniform_(-1.0, 1.0)
    return field


class FirstCoordinate(nn.Module):
    """A 'network' that returns its first input: the normalised x coordinate."""

    in_dim, out_dim = 3, 1

    def forward(self, x):
        return x[:, :1]


# ------------------------------------------------------------------------------------- MLPs
def test_residual_mlp_shapes_and_residual_wiring():
    torch.manual_seed(0)
    net = ResidualMLP(10, hidden_dim=32, n_layers=8)
    assert len(net.layers) == 8
    x = torch.randn(50, 10)
    assert net(x).shape == (50, 1)
    # With every hidden-to-hidden layer zeroed, the residual path carries h_0 through unchanged:
    # out = W_out relu(W_0 x + b_0) + b_out. A plain MLP would give the constant b_out instead.
    with torch.no_grad():
        for layer in net.layers[1:]:
            layer.weight.zero_()
            layer.bias.zero_()
    expected = net.output_layer(torch.relu(net.layers[0](x)))
    torch.testing.assert_close(net(x), expected)
    assert net(x).std() > 1e-3
    for act in ("leaky_relu", "softplus"):
        assert ResidualMLP(4, 8, 2, activation=act)(torch.randn(3, 4)).shape == (3, 1)
    with pytest.raises(VesselfieldError, match="activation"):
        ResidualMLP(4, activation="tanh")


def test_skip_mlp_feeds_the_input_at_layer_4():
    torch.manual_seed(0)
    net = SkipMLP(6, hidden_dim=32, n_layers=8, skip_layer=4)
    assert net.layers[4].in_features == 32 + 6
    assert all(net.layers[l].in_features == (6 if l == 0 else 32) for l in range(8) if l != 4)
    x = torch.randn(40, 6)
    assert net(x).shape == (40, 1)
    with torch.no_grad():
        for layer in net.layers[:4]:
            layer.weight.zero_()
            layer.bias.zero_()
    # Layers 0-3 now output zeros, so the input can only arrive through the skip.
    out = net(x)
    assert out.std() > 1e-4
    with torch.no_grad():
        net.layers[4].weight[:, 32:].zero_()
    out_cut = net(x)
    assert torch.allclose(out_cut, out_cut[:1].expand_as(out_cut))
    with pytest.raises(VesselfieldError):
        SkipMLP(6, n_layers=4, skip_layer=4)


# ------------------------------------------------------------------------------ NeuralField
def test_neural_field_shapes_and_sdf_readout():
    field = hash_field("sdf")
    pts = torch.from_numpy(DYADIC.voxel_centers_mm()[::2, ::3, ::4].copy())
    res = field(pts)
    assert res["sdf"].shape == pts.shape[:-1] and res["occupancy"].shape == pts.shape[:-1]
    assert torch.equal(res["occupancy"], torch.sigmoid(-50.0 * res["sdf"]))
    assert res["sdf"].std() > 1e-3
    flat = field(pts.reshape(-1, 3))
    torch.testing.assert_close(flat["sdf"], res["sdf"].reshape(-1))
    torch.testing.assert_close(field.occupancy(pts), res["occupancy"])
    sharper = NeuralField(field.encoding, field.network, "sdf", 200.0, grid=DYADIC)
    assert torch.equal(sharper(pts)["occupancy"], torch.sigmoid(-200.0 * res["sdf"]))


def test_neural_field_occupancy_readout():
    field = hash_field("occupancy")
    pts = torch.rand(100, 3) * 4
    res = field(pts)
    assert res["sdf"] is None
    from vesselfield.encodings import normalize_points

    logits = field.network(field.encoding(normalize_points(pts, DYADIC)))[:, 0]
    assert torch.equal(res["occupancy"], torch.sigmoid(logits))


def test_neural_field_normalises_with_its_grid():
    field = NeuralField(FourierFeatures(0, include_input=True), FirstCoordinate(), grid=GENERAL)
    lo, hi = GENERAL.bounds_mm
    pts = torch.tensor(np.stack([lo, hi, GENERAL.center_mm]), dtype=torch.float32)
    # NeuralField finds its device from its parameters; this stub has none, so give it one.
    field.network.register_parameter("dummy", nn.Parameter(torch.zeros(1)))
    torch.testing.assert_close(field(pts)["sdf"], torch.tensor([0.0, 1.0, 0.5]), atol=1e-6, rtol=0)


def test_neural_field_gradients_reach_encoding_and_network():
    field = hash_field("sdf")
    pts = torch.rand(256, 3) * 4 + torch.tensor([-1.0, 2.0, 3.0])
    target = torch.rand(256)
    loss = (field(pts)["occupancy"] - target).square().mean()
    loss.backward()
    assert field.encoding.table.grad.abs().sum() > 0
    for name, p in field.network.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the gradient is that of the loss: a small step along it lowers the loss
    with torch.no_grad():
        for p in field.parameters():
            p -= 1e-3 * p.grad / max(1e-12, p.grad.norm().item())
    assert (field(pts)["occupancy"] - target).square().mean() < loss


def test_neural_field_evaluate_volume_matches_forward():
    for output in ("sdf", "occupancy"):
        field = hash_field(output, grid=GENERAL)
        vol = field.evaluate_volume(GENERAL, chunk=37)  # chunks that do not divide the volume
        with torch.no_grad():
            ref = field(torch.from_numpy(GENERAL.voxel_centers_mm()))
        assert set(vol) == ({"occupancy", "sdf"} if output == "sdf" else {"occupancy"})
        for key, arr in vol.items():
            assert arr.shape == GENERAL.shape and arr.dtype == np.float32
            np.testing.assert_allclose(arr, ref[key].numpy(), rtol=1e-5, atol=1e-6)


def test_neural_field_init_occupancy_and_errors():
    for output in ("sdf", "occupancy"):
        torch.manual_seed(0)
        enc = HashGridEncoding(n_levels=2, log2_hashmap_size=10, finest_resolution=32, backend="torch")
        field = NeuralField(enc, SkipMLP(enc.output_dim, 32, 6, 3), output, grid=DYADIC, init_occupancy=0.08)
        occ = field.evaluate_volume(DYADIC)["occupancy"]
        np.testing.assert_allclose(occ, 0.08, rtol=1e-5)
    enc = HashGridEncoding(n_levels=2, log2_hashmap_size=10, finest_resolution=32, backend="torch")
    with pytest.raises(VesselfieldError, match="features"):
        NeuralField(enc, ResidualMLP(5), grid=DYADIC)
    with pytest.raises(VesselfieldError, match="output"):
        NeuralField(enc, ResidualMLP(4), "udf", grid=DYADIC)
    with pytest.raises(VesselfieldError):
        NeuralField(enc, ResidualMLP(4), grid=DYADIC, init_occupancy=1.5)
    with pytest.raises(VesselfieldError, match=r"\(\.\.\., 3\)"):
        NeuralField(enc, ResidualMLP(4), grid=DYADIC)(torch.rand(5, 2))


# -------------------------------------------------------------------------------- GridField
def random_grid_field(grid, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    return GridField(grid, init_sdf=rng.normal(size=grid.shape), **kwargs)


def test_grid_field_returns_stored_values_at_voxel_centres():
    field = random_grid_field(DYADIC)
    centres = torch.from_numpy(DYADIC.voxel_centers_mm())
    assert torch.equal(field.sample(centres), field.volume().detach())
    res = field(centres)
    assert torch.equal(res["sdf"], field.values.detach())
    assert torch.equal(res["occupancy"], torch.sigmoid(-50.0 * field.values.detach()))
    # On a general grid float32 centres are rounded (~1e-6 mm at 10 mm), and values of unit
    # scale change by ~5 per mm here: measured error 3.6e-6.
    general = random_grid_field(GENERAL)
    got = general.sample(torch.from_numpy(GENERAL.voxel_centers_mm())).detach()
    torch.testing.assert_close(got, general.values.detach(), atol=1e-5, rtol=0)


def test_grid_field_is_trilinear_between_centres():
    field = random_grid_field(GENERAL, seed=1)
    vol = field.values.detach().double().numpy()
    # Midway between two neighbouring centres: their average.
    a = GENERAL.index_to_world([2, 3, 1])
    b = GENERAL.index_to_world([3, 3, 1])
    mid = field.sample(torch.tensor((a + b) / 2, dtype=torch.float32)).item()
    assert mid == pytest.approx(0.5 * (vol[2, 3, 1] + vol[3, 3, 1]), abs=2e-6)
    # Anywhere between the outer centres: scipy's trilinear interpolant.
    rng = np.random.default_rng(2)
    ijk = rng.uniform(0, np.asarray(GENERAL.shape) - 1, size=(500, 3))
    pts = GENERAL.index_to_world(ijk)
    expected = RegularGridInterpolator(GENERAL.axes_mm(), vol, method="linear")(pts)
    got = field.sample(torch.tensor(pts, dtype=torch.float32)).detach().double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Beyond the outer centres the edge values are held (border padding).
    lo, _ = GENERAL.bounds_mm
    corner = torch.tensor(lo - 5.0, dtype=torch.float32)
    assert field.sample(corner).item() == pytest.approx(vol[0, 0, 0], abs=1e-6)


def test_grid_field_gradients():
    field = random_grid_field(GENERAL, seed=3)
    ijk = np.array([1.25, 4.5, 2.75])
    p = torch.tensor(GENERAL.index_to_world(ijk), dtype=torch.float32, requires_grad=True)
    field.sample(p).backward()
    g = field.values.grad
    nz = torch.nonzero(g).tolist()
    assert sorted(map(tuple, nz)) == [(i, j, k) for i in (1, 2) for j in (4, 5) for k in (2, 3)]
    # d(sample)/d(value at corner) = its trilinear weight
    f = ijk - np.floor(ijk)
    assert g[1, 4, 2].item() == pytest.approx((1 - f[0]) * (1 - f[1]) * (1 - f[2]), abs=1e-6)
    assert g[2, 5, 3].item() == pytest.approx(f[0] * f[1] * f[2], abs=1e-6)
    assert g.sum().item() == pytest.approx(1.0, abs=1e-6)
    # and the gradient with respect to the point is the interpolant's slope: (v1 - v0) / spacing along x
    vol = field.values.detach().double().numpy()
    w = np.array([[(1 - f[1]) * (1 - f[2]), (1 - f[1]) * f[2]], [f[1] * (1 - f[2]), f[1] * f[2]]])
    slope_x = ((vol[2, 4:6, 2:4] - vol[1, 4:6, 2:4]) * w).sum() / GENERAL.spacing_mm[0]
    assert p.grad[0].item() == pytest.approx(slope_x, rel=1e-4)


def test_grid_field_initialisation_and_readouts():
    sdf_field = GridField(GENERAL)  # init_occupancy = 0.08
    occ = sdf_field(torch.rand(50, 3) * 5 + torch.tensor(GENERAL.origin_mm, dtype=torch.float32))["occupancy"]
    torch.testing.assert_close(occ, torch.full((50,), 0.08), atol=1e-6, rtol=0)
    assert sdf_field.values[0, 0, 0].item() == pytest.approx(np.log(0.92 / 0.08) / 50.0, rel=1e-6)
    occ_field = GridField(GENERAL, init_occupancy=0.3, output="occupancy")
    res = occ_field(torch.tensor(GENERAL.center_mm, dtype=torch.float32))
    assert res["sdf"] is None and res["occupancy"].item() == pytest.approx(0.3, abs=1e-6)
    torch.testing.assert_close(occ_field.occupancy_volume(), torch.full(GENERAL.shape, 0.3), atol=1e-6, rtol=0)
    vol = occ_field.evaluate_volume(GENERAL)
    np.testing.assert_allclose(vol["occupancy"], 0.3, atol=1e-6)
    one_voxel_thick = VolumeGrid((4, 1, 3), (1.0, 1.0, 1.0))
    thin = random_grid_field(one_voxel_thick)
    torch.testing.assert_close(thin.sample(torch.from_numpy(one_voxel_thick.voxel_centers_mm())), thin.values.detach())
    with pytest.raises(VesselfieldError, match="shape"):
        GridField(GENERAL, init_sdf=np.zeros((2, 2, 2)))
    with pytest.raises(VesselfieldError):
        GridField(GENERAL, init_occupancy=0.0)
    with pytest.raises(VesselfieldError, match="NaN"):
        GridField(GENERAL, init_sdf=np.full(GENERAL.shape, np.nan))
    with pytest.raises(VesselfieldError):
        GridField(GENERAL, init_sdf=0.0, output="occupancy")


# ------------------------------------------------------------------------------- band fields
@pytest.mark.parametrize("output", ["sdf", "occupancy"])
def test_band_grid_field_reads_out_like_every_field(output):
    """It starts at init_occupancy everywhere and reads out through field_outputs: o = sigmoid(-a s) or sigmoid(v)."""
    field = BandGridField(7, output, sdf_sharpness_alpha=50.0, init_occupancy=0.08)
    out = field()
    torch.testing.assert_close(out["occupancy"], torch.full((7,), 0.08), rtol=0, atol=1e-6)
    with torch.no_grad():
        field.values.copy_(torch.linspace(-0.1, 0.1, 7))
    out = field()
    expected = torch.sigmoid(-50.0 * field.values) if output == "sdf" else torch.sigmoid(field.values)
    torch.testing.assert_close(out["occupancy"], expected, rtol=0, atol=0)
    assert (out["sdf"] is field.values) if output == "sdf" else out["sdf"] is None
    out["occupancy"].sum().backward()
    assert field.values.grad.abs().min() > 0


def test_band_neural_field_is_the_neural_field_at_the_band_points():
    field = hash_field("sdf", init_occupancy=0.08)
    points = torch.as_tensor(DYADIC.voxel_centers_mm(np.float32).reshape(-1, 3)[::7])
    band = BandNeuralField(field, points)
    out, direct = band(), field(points)
    torch.testing.assert_close(out["occupancy"], direct["occupancy"], rtol=0, atol=0)
    torch.testing.assert_close(out["sdf"], direct["sdf"], rtol=0, atol=0)
    assert band.output == "sdf" and "points_mm" not in band.state_dict()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fields_on_cuda_match_cpu():
    pts = torch.from_numpy(GENERAL.voxel_centers_mm()).reshape(-1, 3)
    for field in (hash_field("sdf", grid=GENERAL), random_grid_field(GENERAL)):
        ref = field(pts)
        field = field.cuda()
        out = field(pts.cuda())
        torch.testing.assert_close(out["occupancy"].cpu(), ref["occupancy"], atol=1e-5, rtol=1e-4)
        vol = field.evaluate_volume(GENERAL, chunk=50)
        np.testing.assert_allclose(vol["sdf"].reshape(-1), ref["sdf"].detach().numpy(), atol=1e-5, rtol=1e-4)
        out["occupancy"].sum().backward()
        assert all(p.grad is not None for p in field.parameters())
