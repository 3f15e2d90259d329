"""Hash-grid and Fourier encodings: closed forms of trilinear interpolation and of the hash."""

import copy
import math

import numpy as np
import pytest
import torch

from vesselfield.encodings import FourierFeatures, HashGridEncoding, level_resolutions, normalize_points
from vesselfield.encodings.hash_grid import HASH_PRIMES, _tcnn_available
from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid

HAS_TCNN = _tcnn_available()


def small_dense_encoding(seed=0):
    # Resolutions 16 and 32: both dense ((33)^3 < 2^19) and both powers of two, so vertex
    # coordinates v / 16 are exact in float32.
    torch.manual_seed(seed)
    return HashGridEncoding(n_levels=2, log2_hashmap_size=19, base_resolution=16, finest_resolution=32, backend="torch")


def dense_index(v, n):
    return v[..., 0] + (n + 1) * (v[..., 1] + (n + 1) * v[..., 2])


def test_paper_level_layout():
    # Instant-NGP defaults: b = exp(ln(2048 / 16) / 15) = 128^(1/15); dense while (N + 1)^3 <= 2^19.
    enc = HashGridEncoding(backend="torch")
    assert enc.output_dim == 32
    assert enc.per_level_scale == pytest.approx(128 ** (1 / 15), rel=1e-12)
    assert enc.resolutions == [math.floor(16 * 128 ** (l / 15) + 1e-9) for l in range(16)]
    assert enc.resolutions[0] == 16 and enc.resolutions[-1] == 2048
    assert enc.resolutions[:6] == [16, 22, 30, 42, 58, 80]
    # 58^3 -> 59^3 = 205379 fits, 81^3 = 531441 does not.
    assert enc.dense_levels == [True] * 5 + [False] * 11
    assert enc.level_sizes[:5] == [(n + 1) ** 3 for n in enc.resolutions[:5]]
    assert enc.level_sizes[5:] == [2**19] * 11
    assert enc.table.shape == (sum(enc.level_sizes), 2)
    assert enc.table.dtype == torch.float32
    assert enc.table.abs().max().item() <= 1e-4
    assert level_resolutions(1, 16, 16) == [16]


def test_output_shape_and_dtype():
    enc = HashGridEncoding(n_levels=8, log2_hashmap_size=14, finest_resolution=256, backend="torch")
    out = enc(torch.rand(1000, 3))
    assert out.shape == (1000, 16) and out.dtype == torch.float32
    assert enc(torch.rand(1000, 3, dtype=torch.float64)).dtype == torch.float32


def test_auto_backend_is_torch_without_tcnn_or_cuda():
    enc = HashGridEncoding(n_levels=2, log2_hashmap_size=10, finest_resolution=32, backend="auto")
    expected = "tcnn" if (HAS_TCNN and torch.cuda.is_available()) else "torch"
    assert enc.backend == expected


@pytest.mark.skipif(HAS_TCNN, reason="tinycudann is importable here")
def test_explicit_tcnn_backend_raises_when_unavailable():
    with pytest.raises(VesselfieldError, match="tinycudann"):
        HashGridEncoding(backend="tcnn")


def test_bad_arguments_and_inputs():
    with pytest.raises(VesselfieldError):
        HashGridEncoding(backend="cuda")
    with pytest.raises(VesselfieldError):
        HashGridEncoding(base_resolution=64, finest_resolution=32)
    enc = small_dense_encoding()
    with pytest.raises(VesselfieldError, match=r"\(N, 3\)"):
        enc(torch.rand(10, 2))


def test_dense_vertices_return_table_entries_exactly():
    enc = small_dense_encoding()
    g = torch.Generator().manual_seed(1)
    v = torch.randint(0, 17, (500, 3), generator=g)
    v[:3] = torch.tensor([[0, 0, 0], [16, 16, 16], [16, 0, 7]])  # corners and the upper faces
    out = enc(v.float() / 16).detach()
    t0, t1 = enc.level_table(0).detach(), enc.level_table(1).detach()
    assert torch.equal(out[:, 0:2], t0[dense_index(v, 16)])
    assert torch.equal(out[:, 2:4], t1[dense_index(2 * v, 32)])


def test_dense_levels_are_trilinear():
    enc = small_dense_encoding()
    t0 = enc.level_table(0).detach().double()
    g = torch.Generator().manual_seed(2)
    v = torch.randint(0, 16, (200, 3), generator=g)
    # Midway between two vertices along each axis: the average of the two entries. The weights
    # (0, 1/2, 1) and the products are exact in float32, so the only rounding is the final sum's
    # (whatever the order, or a fused multiply-add): at most 2^-24 relative.
    for axis in range(3):
        e = torch.zeros(3, dtype=torch.int64)
        e[axis] = 1
        out = enc((v.float() + 0.5 * e) / 16).detach().double()
        expected = 0.5 * (t0[dense_index(v, 16)] + t0[dense_index(v + e, 16)])
        torch.testing.assert_close(out[:, 0:2], expected, rtol=2.0**-24, atol=0.0)
    # Anywhere in a cell: the trilinear blend of its 8 corners, computed here in float64.
    x = torch.rand(300, 3, generator=g)
    pos = x.double() * 16
    lo = pos.floor().long().clamp(max=15)
    f = pos - lo
    expected = torch.zeros(300, 2, dtype=torch.float64)
    magnitude = torch.zeros(300, 2, dtype=torch.float64)  # Σ_c w_c |t_c|
    for c in range(8):
        bits = torch.tensor([(c >> a) & 1 for a in range(3)])
        w = torch.where(bits.bool(), f, 1 - f).prod(dim=1)
        expected += w[:, None] * t0[dense_index(lo + bits, 16)]
        magnitude += w[:, None] * t0[dense_index(lo + bits, 16)].abs()
    # float32 error bound: x * 16 and its fraction are exact; 1 - f rounds once, a weight takes
    # two more products (<= 5 roundings), w_c t_c one more, the sum of 8 terms 7 more (in any
    # order): |error| <= 13 u Σ_c w_c |t_c| to first order, u = 2^-24; 16 u leaves room for the
    # second-order terms (measured <= 4.7 u over 20 tables x 3000 points). Entries of either sign
    # cancel, so the bound is on the absolute error, per output.
    error = (enc(x).detach().double()[:, 0:2] - expected).abs()
    assert torch.all(error <= 16 * 2.0**-24 * magnitude)


def test_continuity():
    torch.manual_seed(0)
    enc = HashGridEncoding(n_levels=16, log2_hashmap_size=15, finest_resolution=2048, backend="torch")
    x = torch.rand(2000, 3) * 0.98 + 0.01
    y = x + (torch.rand(2000, 3) * 2 - 1) * 1e-6
    delta = (y - x).abs().max().item()  # the step float32 really took
    diff = (enc(y) - enc(x)).abs().max().item()
    # Per level the encoding is Lipschitz with constant N_l * max|t_i - t_j| <= N_l * 2e-4 per axis.
    bound = 3 * 2048 * 2e-4 * delta
    assert diff <= bound
    # whereas unrelated points differ by the table's scale
    far = (enc(torch.rand(2000, 3)) - enc(x)).abs().max().item()
    assert far > 20 * bound


def test_hash_indices_stay_in_table_and_match_the_uint32_hash():
    torch.manual_seed(0)
    log2_t = 12
    enc = HashGridEncoding(
        n_levels=8, log2_hashmap_size=log2_t, base_resolution=8, finest_resolution=2048, backend="torch"
    )
    x = torch.rand(5000, 3)
    x[0] = 1.0  # the far corner of the cube uses vertex N_l
    idx = enc.corner_indices(x)
    assert idx.shape == (5000, 8, 8)
    for l, (n, size) in enumerate(zip(enc.resolutions, enc.level_sizes)):
        assert idx[:, l].min().item() >= 0 and idx[:, l].max().item() < size <= 2**log2_t
    hashed = [l for l, dense in enumerate(enc.dense_levels) if not dense]
    assert hashed, "this configuration must have hashed levels"
    # Reference: the paper's hash in uint32 arithmetic, for a few points and all 8 corners.
    for i, p in enumerate(x[:20]):
        for l in hashed:
            n = enc.resolutions[l]
            lo = [min(int(c), n - 1) for c in (p * n).floor().tolist()]  # float32 scaling, as the encoding
            for c in range(8):
                v = [lo[a] + ((c >> a) & 1) for a in range(3)]
                h = 0
                for a in range(3):
                    h ^= (v[a] * HASH_PRIMES[a]) & 0xFFFFFFFF
                assert idx[i, l, c].item() == h % 2**log2_t
    # Hashed levels spread over the table rather than piling into a few entries.
    used = idx[:, hashed[-1]].unique().numel()
    assert used > 0.8 * (1 - math.exp(-5000 * 8 / 2**log2_t)) * 2**log2_t


def test_gradients_reach_only_the_8_corners_with_trilinear_weights():
    torch.manual_seed(0)
    enc = HashGridEncoding(n_levels=6, log2_hashmap_size=14, base_resolution=4, finest_resolution=512, backend="torch")
    x = torch.tensor([[0.3141, 0.5926, 0.5358]])
    enc(x).sum().backward()
    grad = enc.table.grad
    idx = enc.corner_indices(x)[0]  # (L, 8)
    for l in range(enc.n_levels):
        g = grad[enc.level_offsets[l] : enc.level_offsets[l] + enc.level_sizes[l]]
        rows = torch.nonzero(g.abs().sum(dim=1)).flatten()
        assert set(rows.tolist()) == set(idx[l].tolist())
        assert len(rows) <= 8
        # d(sum of features)/d(entry) is the corner's trilinear weight, the same for each feature;
        # the weights of a cell sum to one.
        assert torch.equal(g[rows, 0], g[rows, 1])
        # Each float32 weight is within 5 u of exact (see test_dense_levels_are_trilinear), plus
        # one rounding where two corners share a hashed entry, so their float64 sum is within
        # 6 u (+ second order) of 1; 8 u = 4.8e-7 (measured <= 1.01 u over 30 random points).
        assert g[rows, 0].double().sum().item() == pytest.approx(1.0, abs=8 * 2.0**-24)
    assert torch.count_nonzero(grad.abs().sum(dim=1)) <= 8 * enc.n_levels


def test_gradient_with_respect_to_points_matches_finite_differences():
    torch.manual_seed(0)
    enc = HashGridEncoding(n_levels=1, log2_hashmap_size=19, base_resolution=16, finest_resolution=16, backend="torch")
    with torch.no_grad():
        enc.table.mul_(1e4)  # entries ~1 so that float32 differences are accurate
    x = torch.tensor([[0.30, 0.40, 0.55]], requires_grad=True)  # inside one cell, away from its faces
    weights = torch.tensor([[1.0, -2.0]])
    (enc(x) * weights).sum().backward()
    h = 1e-3
    fd = []
    for a in range(3):
        e = torch.zeros(1, 3)
        e[0, a] = h
        with torch.no_grad():
            fd.append(((enc(x + e) - enc(x - e)) * weights).sum().item() / (2 * h))
    # Trilinear interpolation is linear along each axis within a cell, so central differences are
    # exact but for float32 rounding: outputs of size ~1 err by ~1e-7, divided by 2h = 2e-3 that is
    # ~1e-4 of a derivative of size ~|t| N ~ 16; and x ± h itself rounds by ~3e-8 of h = 1e-3.
    np.testing.assert_allclose(x.grad[0].numpy(), fd, rtol=2e-3)


def test_determinism_with_a_seed():
    x = torch.rand(100, 3)
    a, b = small_dense_encoding(seed=5), small_dense_encoding(seed=5)
    assert torch.equal(a.table, b.table)
    assert torch.equal(a(x), b(x))
    assert torch.equal(a(x), a(x))
    assert not torch.equal(small_dense_encoding(seed=6).table, a.table)


def test_normalize_points_maps_the_grid_box_to_the_unit_cube():
    grid = VolumeGrid((10, 20, 5), (0.5, 0.25, 2.0), (-3.0, 1.0, 7.0))
    lo, hi = grid.bounds_mm
    pts = np.stack([lo, hi, grid.center_mm, grid.origin])
    expected = np.array([[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [0.05, 0.025, 0.1]])
    np.testing.assert_allclose(normalize_points(pts, grid), expected, atol=1e-12)
    t = normalize_points(torch.tensor(pts, dtype=torch.float32), grid)
    assert t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), expected, atol=1e-6)
    with pytest.raises(VesselfieldError):
        normalize_points(np.zeros((4, 2)), grid)


def _assert_backend_on_device_matches_cpu(enc: HashGridEncoding, x: torch.Tensor, device: str):
    """Outputs and table gradients of Σ out² on ``device`` against the CPU, within float32 bounds.

    The torch backend has no float64 path, so the bounds are float32's (u = 2^-24), from the
    error analysis in test_dense_levels_are_trilinear: an output errs by at most 16 u Σ_c w_c |t_c|
    <= 16 u max|t| (the weights sum to 1) on either device. A table entry's gradient sums the
    m_e terms 2 out w of the (point, corner) pairs that use it, in another order on another
    device (atomics): within (m_e + 8) u Σ 2 |out| w from rounding the terms and the sum, plus
    2 w x 16 u max|t| per term from the outputs themselves.
    """
    u = 2.0**-24
    table = enc.table.detach()
    ref = enc(x)
    ref.square().sum().backward()
    ref_grad = enc.table.grad.clone()
    # Σ 2 |out| w and Σ w per table entry (the same for every feature of an entry).
    enc.zero_grad()
    (2 * ref.detach().abs() * enc(x)).sum().backward()
    magnitude = enc.table.grad.clone()
    enc.zero_grad()
    enc(x).sum().backward()
    weight_sum = enc.table.grad.clone()
    enc.zero_grad()
    offsets = torch.tensor(enc.level_offsets[:enc.n_levels])[None, :, None]
    uses = torch.bincount((enc.corner_indices(x) + offsets).reshape(-1), minlength=len(table))
    other = copy.deepcopy(enc).to(device)
    out = other(x.to(device))
    out.square().sum().backward()
    t_max = table.abs().max()
    assert torch.all((out.detach().cpu() - ref.detach()).abs() <= 32 * u * t_max)
    bound = 2 * ((uses.max() + 8) * u * magnitude + 32 * u * t_max * weight_sum)
    assert torch.all((other.table.grad.cpu() - ref_grad).abs() <= bound)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_backend_on_cuda_matches_cpu():
    enc = small_dense_encoding()
    torch.manual_seed(1)
    big = HashGridEncoding(n_levels=16, log2_hashmap_size=15, backend="torch")
    x = torch.rand(4096, 3)
    for e in (enc, big):
        _assert_backend_on_device_matches_cpu(e, x, "cuda")


@pytest.mark.skipif(not (HAS_TCNN and torch.cuda.is_available()), reason="needs tinycudann and CUDA")
def test_tcnn_and_torch_backends_behave_alike():
    # tiny-cuda-nn places and hashes vertices differently, so only their behaviour is compared:
    # same width, same initial scale, continuity, and gradients reaching the parameters.
    torch.manual_seed(0)
    kwargs = dict(n_levels=8, log2_hashmap_size=17, base_resolution=16, finest_resolution=512)
    ours = HashGridEncoding(backend="torch", **kwargs).cuda()
    theirs = HashGridEncoding(backend="tcnn", **kwargs).cuda()
    assert theirs.output_dim == ours.output_dim
    x = torch.rand(20000, 3, device="cuda")
    a, b = ours(x), theirs(x)
    assert a.shape == b.shape and b.dtype == torch.float32
    assert b.abs().max().item() <= 1e-4 + 1e-7
    assert 0.5 < b.std().item() / a.std().item() < 2.0
    assert (theirs(x + 1e-5) - b).abs().max().item() < 1e-5
    b.square().sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in theirs.parameters())


def test_fourier_features_known_values():
    ff = FourierFeatures(2, include_input=True, in_dim=3)
    assert ff.output_dim == 15
    p = torch.tensor([[0.25, 0.5, 1.0 / 6.0]], dtype=torch.float64)
    out = ff(p)[0].numpy()
    x = p[0].numpy()
    expected = np.concatenate(
        [x, np.sin(np.pi * x), np.cos(np.pi * x), np.sin(2 * np.pi * x), np.cos(2 * np.pi * x)]
    )
    np.testing.assert_allclose(out, expected, atol=1e-7)
    # sin(pi/4) = cos(pi/4) = sqrt(2)/2; sin(pi/2) = 1; sin(pi/6) = 1/2
    assert out[3] == pytest.approx(math.sqrt(0.5)) and out[4] == pytest.approx(1.0) and out[5] == pytest.approx(0.5)
    no_input = FourierFeatures(3, include_input=False, in_dim=2)
    assert no_input.output_dim == 12
    q = torch.rand(4, 7, 2)
    assert no_input(q).shape == (4, 7, 12)
    torch.testing.assert_close(no_input(q)[..., 8:10], torch.sin(4 * math.pi * q))
    with pytest.raises(VesselfieldError):
        ff(torch.rand(5, 2))
