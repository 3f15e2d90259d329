"""Phantoms: exact round-cone / tree SDFs, coronary and AAA phantoms, CT-like images, sparse slices.

Reference values are independent of the code under test: the signed distance of a convex body
is max over unit n of (n.p - h(n)) with h its support function (for the hull of two spheres,
h(n) = max(n.a + ra, n.b + rb)), maximised here by brute force over the sphere of directions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import modules_loaded_by
from scipy.optimize import minimize

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.phantoms import (
    AAAPhantom,
    TreePhantom,
    coronary_branch_names,
    coronary_tree,
    ct_like_image,
    default_coronary_grid,
    occupancy_volume,
    round_cone_sdf,
    sdf_volume,
    sparse_slices,
    swc_phantom,
    tree_sdf,
)
from vesselfield.tree import VesselTree


# ------------------------------------------------------------------------- references
def _fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * i / n)
    azimuth = np.pi * (1 + 5**0.5) * i
    return np.column_stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)])


_DIRECTIONS = _fibonacci_sphere(20000)


def _support_sdf(p, a, b, ra, rb) -> float:
    """max_{|n|=1} min(n.(p-a) - ra, n.(p-b) - rb): the convex hull's exact signed distance."""
    def g(n):
        return np.minimum(n @ (p - a) - ra, n @ (p - b) - rb)

    values = g(_DIRECTIONS)
    n0 = _DIRECTIONS[np.argmax(values)]
    start = [np.arccos(np.clip(n0[2], -1, 1)), np.arctan2(n0[1], n0[0])]

    def negative(x):
        n = np.array([np.sin(x[0]) * np.cos(x[1]), np.sin(x[0]) * np.sin(x[1]), np.cos(x[0])])
        return -g(n[None])[0]

    res = minimize(negative, start, method="Nelder-Mead", options=dict(xatol=1e-12, fatol=1e-14, maxiter=4000))
    return max(values.max(), -res.fun)


def _capsule_sdf(p, a, b, r):
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0, 1)
    return np.linalg.norm(p - a - t[:, None] * ab, axis=1) - r


CONES = [
    ((0.0, 0.0, 0.0), (4.0, 1.0, -1.0), 2.0, 0.7),    # tapering
    ((1.0, -1.0, 0.0), (-2.0, 2.0, 3.0), 0.5, 1.8),   # widening
    ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), 2.0, 0.999),   # nearly degenerate (L = 1 > 1.001?)
    ((0.0, 0.0, 0.0), (0.5, 0.5, 0.0), 2.0, 0.5),     # b's sphere inside a's
    ((2.0, 2.0, 2.0), (2.0, 2.0, 2.0), 1.0, 1.5),     # zero length
]


def _sample_near(a, b, ra, rb, n, rng):
    """Points around a cone: half inside the hull (near the sphere sweep), half near/outside."""
    t = rng.uniform(0, 1, n)
    centre = a + t[:, None] * (b - a)
    radius = ra + t * (rb - ra)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    scale = np.where(np.arange(n) % 2 == 0, rng.uniform(0, 0.98, n), rng.uniform(1.02, 3.0, n))
    return centre + d * (radius * scale)[:, None]


# -------------------------------------------------------------------------- round cone
@pytest.mark.parametrize("cone", CONES)
def test_round_cone_matches_support_function_brute_force(cone):
    rng = np.random.default_rng(0)
    a, b, ra, rb = np.array(cone[0]), np.array(cone[1]), cone[2], cone[3]
    points = _sample_near(a, b, ra, rb, 30, rng)
    ours = round_cone_sdf(points, a, b, ra, rb)
    ref = np.array([_support_sdf(p, a, b, ra, rb) for p in points])
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float64 and ours.shape == (30,)
    # The reference is a numerical maximisation (grid of directions + Nelder-Mead), accurate to
    # what the optimiser reaches at the kink of the min: measured <= 1.6e-6 mm over these cones.
    assert np.abs(ours - ref).max() < 1e-4
    assert (ours < 0).sum() >= 10 and (ours > 0).sum() >= 10


def test_round_cone_closed_forms():
    a, b = np.array([0.0, 0.0, 0.0]), np.array([5.0, 0.0, 0.0])
    rng = np.random.default_rng(1)
    p = rng.uniform(-4, 9, (200, 3))
    # Equal radii: a capsule, distance to the segment minus r.
    assert np.abs(round_cone_sdf(p, a, b, 1.5, 1.5) - _capsule_sdf(p, a, b, 1.5)).max() < 1e-12
    # On the axis behind a / beyond b: distance to the centre minus the radius.
    ra, rb = 2.0, 1.0
    assert round_cone_sdf([[-3.0, 0, 0]], a, b, ra, rb)[0] == pytest.approx(1.0, abs=1e-12)
    assert round_cone_sdf([[8.0, 0, 0]], a, b, ra, rb)[0] == pytest.approx(2.0, abs=1e-12)
    # On the axis between the ends: minus the distance to the side, x*s - ra with s = (ra-rb)/L.
    s = (ra - rb) / 5.0
    for x in (1.0, 2.5, 4.0):
        assert round_cone_sdf([[x, 0, 0]], a, b, ra, rb)[0] == pytest.approx(x * s - ra, abs=1e-12)
    # Degenerate: one sphere inside the other is the larger sphere; zero length a sphere.
    c = np.array([0.3, -0.2, 0.1])
    big = np.linalg.norm(p - c, axis=1) - 3.0
    assert np.abs(round_cone_sdf(p, c, c + [0.5, 0, 0], 3.0, 1.0) - big).max() < 1e-12
    assert np.abs(round_cone_sdf(p, c + [0.5, 0, 0], c, 1.0, 3.0) - big).max() < 1e-12
    assert np.abs(round_cone_sdf(p, c, c, 3.0, 3.0) - big).max() < 1e-12


def test_round_cone_gradient_unit_outside_and_dtypes():
    a, b = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64), torch.tensor([4.0, 1.0, -1.0], dtype=torch.float64)
    rng = np.random.default_rng(2)
    p_np = _sample_near(a.numpy(), b.numpy(), 2.0, 0.7, 400, rng)
    p = torch.tensor(p_np, requires_grad=True)
    d = round_cone_sdf(p, a, b, 2.0, 0.7)
    (grad,) = torch.autograd.grad(d.sum(), p)
    outside = d.detach() > 1e-3
    assert outside.sum() > 100
    assert (grad[outside].norm(dim=1) - 1).abs().max() < 1e-4
    assert torch.isfinite(grad).all()
    # float32 in -> float32 out (torch and NumPy), same values to float32 rounding (u = 6e-8): the
    # inputs (|p| <= 6 mm) round by <= 6e-7 mm and the SDF is 1-Lipschitz; ~10 operations on
    # quantities <= 10 mm add <= 10 x 10 x 6e-8 = 6e-6 mm (measured 5.4e-7 mm in all).
    d32 = round_cone_sdf(p.detach().float(), a, b, 2.0, 0.7)
    assert d32.dtype == torch.float32 and (d32.double() - d.detach()).abs().max() < 1e-5
    assert round_cone_sdf(p_np.astype(np.float32), a.numpy(), b.numpy(), 2.0, 0.7).dtype == np.float32
    # The gradient on the axis and at a sphere centre is finite (no NaN from the norms).
    q = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.5, -0.5], [-1.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    (gq,) = torch.autograd.grad(round_cone_sdf(q, a, b, 2.0, 0.7).sum(), q)
    assert torch.isfinite(gq).all()


def test_round_cone_sign_matches_sphere_sweep_membership():
    # The hull of two spheres is the union of the linearly interpolated spheres.
    a, b, ra, rb = np.array([0.0, 0.0, 0.0]), np.array([3.0, 2.0, 0.0]), 1.8, 0.6
    p = np.random.default_rng(3).uniform(-3, 6, (2000, 3))
    t = np.linspace(0, 1, 1001)
    centres = a + t[:, None] * (b - a)
    radii = ra + t * (rb - ra)
    margin = (np.linalg.norm(p[:, None] - centres[None], axis=2) - radii).min(1)
    d = round_cone_sdf(p, a, b, ra, rb)
    sure = np.abs(margin) > 1e-3
    assert np.array_equal(d[sure] < 0, margin[sure] < 0)
    assert (d < 0).sum() > 60  # ~90 of 2000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_round_cone_follows_cuda_device():
    p = torch.randn(100, 3, device="cuda")
    d = tree_sdf(VesselTree([[0, 0, 0], [1, 0, 0]], [0.5, 0.3], [-1, 0]), p)
    assert d.device.type == "cuda"
    ref = round_cone_sdf(p.cpu().double(), [1, 0, 0], [0, 0, 0], 0.3, 0.5)
    assert (d.cpu().double() - ref).abs().max() < 1e-5


# ---------------------------------------------------------------------------------- tree
def test_tree_sdf_two_nodes_is_the_round_cone_and_capsule():
    rng = np.random.default_rng(4)
    p = rng.uniform(-5, 10, (5000, 3))
    tree = VesselTree([[0, 0, 0], [5, 1, 0]], [1.0, 1.0], [-1, 0])
    assert np.abs(tree_sdf(tree, p) - _capsule_sdf(p, np.zeros(3), np.array([5.0, 1, 0]), 1.0)).max() < 1e-12
    tree = VesselTree([[0, 0, 0], [5, 1, 0]], [2.0, 0.5], [-1, 0])
    assert np.abs(tree_sdf(tree, p) - round_cone_sdf(p, [5, 1, 0], [0, 0, 0], 0.5, 2.0)).max() < 1e-12
    # Any leading shape is kept.
    assert tree_sdf(tree, p.reshape(10, 500, 3)).shape == (10, 500)


def test_tree_sdf_culling_is_exact_on_a_coronary_tree():
    tree = coronary_tree("left", seed=1)
    rng = np.random.default_rng(5)
    near = tree.points_mm[rng.integers(0, len(tree), 1500)] + rng.normal(size=(1500, 3)) * 3
    far = rng.uniform(-60, 60, (1000, 3))
    p = np.vstack([near, far])
    brute = np.stack([round_cone_sdf(p, *seg) for seg in zip(*tree.segments())]).min(0)
    assert np.abs(tree_sdf(tree, p) - brute).max() < 1e-9
    clamped = tree_sdf(tree, p, max_distance_mm=2.0)
    assert np.abs(clamped - np.minimum(brute, 2.0)).max() < 1e-9
    # float32 on the same points: float32 rounding only (u = 6e-8): inputs |p| <= 60 mm round by
    # <= 6e-6 mm, ~10 operations on quantities <= 100 mm add <= 6e-5 mm (measured 1.1e-5 mm).
    assert np.abs(tree_sdf(tree, p.astype(np.float32)) - brute).max() < 1e-4


def test_tree_sdf_gradients_unit_outside():
    tree = coronary_tree("right", seed=0)
    rng = np.random.default_rng(6)
    p = torch.tensor(tree.points_mm[rng.integers(0, len(tree), 500)] + rng.normal(size=(500, 3)) * 4,
                     requires_grad=True)
    d = tree_sdf(tree, p)
    (grad,) = torch.autograd.grad(d.sum(), p)
    outside = d.detach() > 0.05
    assert outside.sum() > 200
    assert (grad[outside].norm(dim=1) - 1).abs().max() < 1e-4
    # And it is the gradient of the values (central differences), inside and outside.
    q = p.detach().numpy()[:50]
    eps = 1e-6
    fd = np.stack([(tree_sdf(tree, q + eps * e) - tree_sdf(tree, q - eps * e)) / (2 * eps) for e in np.eye(3)], 1)
    assert np.abs(fd - grad[:50].numpy()).max() < 1e-5
    # With a narrow band, clamped points have zero gradient.
    dc = tree_sdf(tree, p, max_distance_mm=1.0)
    (gc,) = torch.autograd.grad(dc.sum(), p)
    assert torch.all(gc[dc.detach() >= 1.0] == 0) and torch.allclose(gc[d.detach() < 0.9], grad[d.detach() < 0.9])


def test_tree_sdf_inside_is_a_bound_at_a_junction():
    # Two capsules crossing at right angles: at the crossing the union is deeper than either.
    tree = VesselTree([[-5, 0, 0], [5, 0, 0], [0, -5, 0], [0, 5, 0]], [1.0] * 4, [-1, 0, -1, 2])
    d = tree_sdf(tree, np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]))
    assert d[0] == pytest.approx(-1.0)  # min over members; true depth is larger (>= 1)
    assert d[1] == pytest.approx(-1.0)  # away from the junction: exact


def test_sphere_sdf_and_occupancy_volume():
    r = 5.0
    grid = VolumeGrid.centered((28, 28, 28), 0.5, (0.3, -0.2, 0.1))
    tree = VesselTree([[0.3, -0.2, 0.1]], [r], [-1])
    sdf = sdf_volume(tree, grid)
    exact = np.linalg.norm(grid.voxel_centers_mm(np.float64) - [0.3, -0.2, 0.1], axis=-1) - r
    # float32 storage of values <= 9 mm: half an ulp, <= 5e-7 mm (plus float64 noise).
    assert sdf.dtype == np.float32 and sdf.shape == grid.shape and np.abs(sdf - exact).max() < 1e-5
    occ = occupancy_volume(tree, grid)
    assert occ.dtype == np.float32 and occ.min() == 0.0 and occ.max() == 1.0
    volume = occ.sum() * grid.voxel_volume_mm3
    assert volume == pytest.approx(4 / 3 * np.pi * r**3, rel=0.01)
    # Partial voxels only near the surface; a callable gives the same answer.
    assert np.all((occ > 0) & (occ < 1) <= (np.abs(exact) < np.linalg.norm(grid.spacing)))
    occ_fn = occupancy_volume(lambda p: np.linalg.norm(p - [0.3, -0.2, 0.1], axis=1) - r, grid)
    assert np.abs(occ_fn - occ).max() < 1e-6


# ----------------------------------------------------------------------------- coronary
@pytest.mark.parametrize("side", ["left", "right"])
def test_coronary_tree_is_seeded_and_anatomically_plausible(side):
    t0, t0b, t1 = coronary_tree(side, 0), coronary_tree(side, 0), coronary_tree(side, 1)
    for name in ("points_mm", "radius_mm", "parent", "labels"):
        assert np.array_equal(getattr(t0, name), getattr(t0b, name))
    assert len(t0) != len(t1) or not np.allclose(t0.points_mm, t1.points_mm)
    half = default_coronary_grid().spacing_mm[0] * 64  # 51.2 mm
    for seed in range(4):
        tree = coronary_tree(side, seed)
        lo, hi = tree.bounds_mm()
        assert np.all(lo >= -half + 3.0) and np.all(hi <= half - 3.0)
        assert tree.radius_mm.min() >= 0.5 - 1e-9 and tree.radius_mm.max() <= 2.5 + 1e-9
        assert tree.radius_mm[tree.parent < 0][0] == pytest.approx(2.5)
        assert (tree.parent < 0).sum() == 1  # one root: connected
        a, b, ra, rb = tree.segments()
        length = np.linalg.norm(a - b, axis=1)
        assert 0.5 <= length.min() and length.max() <= 1.0
        children = np.bincount(tree.parent[tree.parent >= 0], minlength=len(tree))
        names = coronary_branch_names(side, seed)
        assert set(np.unique(tree.labels)) == set(names)
        frustum_mm3 = np.sum(np.pi * length * (ra**2 + ra * rb + rb**2) / 3)
        if side == "left":
            assert children.max() == 2 and (children == 2).sum() >= 4
            assert 7 <= len(names) <= 9 and list(names.values())[:3] == ["LM", "LAD", "LCx"]
            assert 330 <= length.sum() <= 450 and 1400 <= frustum_mm3 <= 1900
        else:
            assert (children == 2).sum() >= 2
            assert 4 <= len(names) <= 7 and names[1] == "RCA" and "PDA" in names.values()
            assert 220 <= length.sum() <= 380 and 1300 <= frustum_mm3 <= 1900
    shifted = coronary_tree(side, 0, center_mm=(10.0, -5.0, 2.0))
    assert np.allclose(shifted.points_mm - t0.points_mm, [10.0, -5.0, 2.0])


def test_left_coronary_occupancy_on_the_default_grid():
    tree = coronary_tree("left", 0)
    phantom = TreePhantom(tree)
    grid = default_coronary_grid()
    occ = phantom.occupancy(grid)
    a, b, ra, rb = tree.segments()
    length = np.linalg.norm(a - b, axis=1)
    frustum_mm3 = np.sum(np.pi * length * (ra**2 + ra * rb + rb**2) / 3)
    volume = occ.sum() * grid.voxel_volume_mm3
    # The union of the tapered tubes is within a few percent of the sum of frusta (overlaps at
    # junctions and round ends); measured 1661 vs 1686 mm^3.
    assert volume == pytest.approx(frustum_mm3, rel=0.05)
    # Nothing touches the border (3 mm margin).
    assert occ[:4].sum() == occ[-4:].sum() == occ[:, :4].sum() == occ[:, -4:].sum() == 0
    assert occ[:, :, :4].sum() == occ[:, :, -4:].sum() == 0


def test_tree_phantom_and_swc_phantom(tmp_path):
    tree = VesselTree([[0, 0, 0], [4, 0, 0], [8, 2, 0], [4, 4, 1]], [2.0, 1.5, 1.0, 0.8], [-1, 0, 1, 1])
    phantom = TreePhantom(tree)
    lo, hi = phantom.bounds_mm()
    assert np.allclose(lo, [-2, -2, -2]) and np.allclose(hi, [9, 4.8, 2])
    p = np.random.default_rng(7).uniform(-3, 10, (500, 3))
    ref = tree_sdf(tree, p)
    assert np.array_equal(phantom.sdf(p), ref)
    assert torch.allclose(phantom.sdf(torch.tensor(p)), torch.tensor(ref))
    grid = phantom.default_grid(spacing_mm=0.5)
    assert np.all(phantom.sdf_volume(grid)[[0, -1]] > 2.5)
    swc = tmp_path / "tree.swc"
    swc.write_text("# id type x y z r parent\n1 1 0 0 0 2.0 -1\n2 3 4 0 0 1.5 1\n3 3 8 2 0 1.0 2\n4 3 4 4 1 0.8 2\n")
    assert np.abs(swc_phantom(swc).sdf(p) - ref).max() < 1e-12


# ---------------------------------------------------------------------------------- AAA
def test_aaa_surfaces_nest_and_are_seeded():
    ph = AAAPhantom(seed=0)
    assert ph.surface_names == ("lumen", "thrombus", "wall")
    lo, hi = ph.bounds_mm()
    rng = np.random.default_rng(8)
    p = rng.uniform(lo - 5, hi + 5, (20000, 3))
    f = ph.sdfs(p)
    assert f.shape == (20000, 3)
    assert np.all(f[:, 2] < f[:, 1]) and np.all(f[:, 1] <= f[:, 0])
    assert np.allclose(f[:, 1] - f[:, 2], ph.wall_thickness_mm)
    for i, name in enumerate(ph.surface_names):
        assert np.array_equal(ph.sdf(p, name), f[:, i])
    assert (f[:, 0] < 0).sum() > 100 and ((f[:, 1] < 0) & (f[:, 0] > 0)).sum() > 100
    assert np.array_equal(AAAPhantom(seed=0).sdfs(p), f)
    assert not np.allclose(AAAPhantom(seed=1).sdfs(p), f)
    # Torch in, torch out, with gradients of unit length outside the wall.
    pt = torch.tensor(p[:500], requires_grad=True)
    ft = ph.sdfs(pt)
    (grad,) = torch.autograd.grad(ft[:, 2].sum(), pt)
    outside = ft[:, 2].detach() > 0.1
    assert outside.sum() > 100 and (grad[outside].norm(dim=1) - 1).abs().max() < 1e-6
    # An aneurysm: sac diameter 36-54 mm around an aorta of ~20 mm.
    assert 36 <= 2 * min(ph.summary["sac_radius_mm"]) and 2 * max(ph.summary["sac_radius_mm"]) <= 54


def test_aaa_label_volume_ordering():
    ph = AAAPhantom(seed=2)
    grid = ph.default_grid(spacing_mm=2.0)
    labels = ph.label_volume(grid)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2, 3}
    f = ph.sdfs(grid.voxel_centers_mm(np.float64).reshape(-1, 3)).reshape(grid.shape + (3,))
    assert np.array_equal(labels == 1, f[..., 0] < 0)
    assert np.array_equal(labels >= 1, f[..., 2] < 0)  # labelled voxels are inside the wall
    # The grid covers the wall with margin: its border is background.
    for axis in range(3):
        assert not np.take(labels, [0, -1], axis=axis).any()
    # Along a ray from the lumen centre through the sac's thick side: 1 ... 2 ... 3 ... 0.
    a, b, ra, rb = ph.sac
    mid = (a + b) / 2
    centre = ph.lumen_tree.points_mm[np.argmin(np.abs(ph.lumen_tree.points_mm[:, 2] - mid[2]))]
    direction = mid - centre
    direction[2] = 0
    direction = direction / np.linalg.norm(direction) if np.linalg.norm(direction) > 1e-6 else np.array([0, -1.0, 0])
    ray = centre + np.linspace(0, 45, 451)[:, None] * direction
    fr = ph.sdfs(ray)
    lab = np.where(fr[:, 0] < 0, 1, np.where(fr[:, 1] < 0, 2, np.where(fr[:, 2] < 0, 3, 0)))
    order = np.array([{1: 0, 2: 1, 3: 2, 0: 3}[v] for v in lab])
    assert order[0] == 0 and order[-1] == 3 and np.all(np.diff(order) >= 0)
    assert set(lab) == {0, 1, 2, 3}
    # The wall layer along the ray is wall_thickness_mm thick.
    assert (lab == 3).sum() * 0.1 == pytest.approx(ph.wall_thickness_mm, abs=0.11)


# ----------------------------------------------------------------------------------- CT
def test_ct_like_image_intensities_noise_and_blur():
    grid = VolumeGrid.centered((48, 48, 24), (0.5, 0.5, 1.0))
    tree = VesselTree([[0.0, 0.0, 0.0]], [7.0], [-1])
    occ = occupancy_volume(tree, grid)
    img = ct_like_image(occ, grid, seed=3)
    assert img.dtype == np.float32 and img.shape == grid.shape
    assert np.array_equal(img, ct_like_image(occ, grid, seed=3))
    assert not np.array_equal(img, ct_like_image(occ, grid, seed=4))
    r = np.linalg.norm(grid.voxel_centers_mm(np.float64), axis=-1)
    inside, outside = r < 5.0, r > 10.0
    # Means: white noise of 15 HU over ~2,100 voxels inside (standard error 0.33 HU: 2 HU is 6 of
    # them); outside, the texture (10 HU, correlated over 5 mm) adds a little. Seeded (NumPy's
    # PCG64: the same numbers on every machine).
    assert img[inside].mean() == pytest.approx(350.0, abs=2.0)
    assert img[outside].mean() == pytest.approx(40.0, abs=4.0)
    # Noise alone: standard deviation noise_hu. 55,296 voxels: the mean's standard error is
    # 15 / sqrt(55296) = 0.064 HU (0.2 HU = 3.1 of them), the standard deviation's 0.3 % (2 % = 7).
    plain = ct_like_image(np.zeros(grid.shape), grid, seed=0, blur_sigma_mm=0.0, tissue_texture_hu=0.0)
    assert plain.mean() == pytest.approx(40.0, abs=0.2) and plain.std() == pytest.approx(15.0, rel=0.02)
    # Blur in mm on an anisotropic grid: an impulse spreads with sigma 1.5 mm along x and z.
    impulse = np.zeros(grid.shape)
    impulse[24, 24, 12] = 1.0
    psf = ct_like_image(impulse, grid, vessel_hu=1.0, background_hu=0.0, noise_hu=0.0,
                        tissue_texture_hu=0.0, blur_sigma_mm=1.5).astype(np.float64)
    x, _, z = grid.axes_mm()
    sx = np.sqrt((psf.sum((1, 2)) * (x - x[24]) ** 2).sum() / psf.sum())
    sz = np.sqrt((psf.sum((0, 1)) * (z - z[12]) ** 2).sum() / psf.sum())
    assert sx == pytest.approx(1.5, rel=0.03) and sz == pytest.approx(1.5, rel=0.03)
    assert psf.sum() == pytest.approx(1.0, rel=1e-4)


def test_ct_like_image_rejects_bad_input():
    grid = VolumeGrid((8, 8, 8), (1.0, 1.0, 1.0))
    with pytest.raises(VesselfieldError, match="shape"):
        ct_like_image(np.zeros((8, 8, 7)), grid)
    with pytest.raises(VesselfieldError, match=r"\[0, 1\]"):
        ct_like_image(np.full((8, 8, 8), 2.0), grid)
    bad = np.zeros((8, 8, 8))
    bad[0, 0, 0] = np.nan
    with pytest.raises(VesselfieldError, match="NaN"):
        ct_like_image(bad, grid)
    with pytest.raises(VesselfieldError, match="noise_hu"):
        ct_like_image(np.zeros((8, 8, 8)), grid, noise_hu=-1.0)


@pytest.mark.parametrize("axis,keep_every,offset", [(2, 3, 1), (0, 2, 0), (-2, 4, 3), (2, 1, 0)])
def test_sparse_slices_keep_world_positions(axis, keep_every, offset):
    grid = VolumeGrid((10, 12, 14), (0.5, 0.7, 1.2), (-3.0, 2.0, 10.0))
    vol = np.zeros(grid.shape, np.float32)
    mark = [4, 5, 6]
    mark[axis % 3] = offset + 2 * keep_every
    vol[tuple(mark)] = 7.0
    kept, g = sparse_slices(vol, grid, keep_every, axis=axis, offset=offset)
    n = grid.shape[axis % 3]
    assert kept.shape[axis % 3] == len(range(offset, n, keep_every)) and g.shape == kept.shape
    assert g.spacing_mm[axis % 3] == pytest.approx(grid.spacing_mm[axis % 3] * keep_every)
    found = np.argwhere(kept == 7.0)
    assert len(found) == 1
    assert np.allclose(g.index_to_world(found[0]), grid.index_to_world(mark))
    # Every kept voxel: same value and world position as in the full volume.
    full = np.random.default_rng(0).normal(size=grid.shape)
    kept_full, g2 = sparse_slices(full, grid, keep_every, axis=axis, offset=offset)
    ijk = np.argwhere(np.ones(kept_full.shape, bool))
    src = np.rint(grid.world_to_index(g2.index_to_world(ijk))).astype(int)
    assert np.array_equal(kept_full[tuple(ijk.T)], full[tuple(src.T)])


def test_sparse_slices_rejects_bad_arguments():
    grid = VolumeGrid((4, 4, 4), (1.0, 1.0, 1.0))
    vol = np.zeros(grid.shape)
    for kwargs, match in [(dict(keep_every=0), "keep_every"), (dict(keep_every=2, axis=3), "axis"),
                          (dict(keep_every=2, offset=4), "offset"), (dict(keep_every=2.0), "integer"),
                          (dict(keep_every=True), "integer")]:
        with pytest.raises(VesselfieldError, match=match):
            sparse_slices(vol, grid, **kwargs)
    with pytest.raises(VesselfieldError, match="shape"):
        sparse_slices(np.zeros((4, 4, 5)), grid, 2)


# ------------------------------------------------------------------------- input errors
def test_user_errors_are_one_line():
    with pytest.raises(VesselfieldError, match="NaN"):
        tree_sdf(VesselTree([[0, 0, 0]], [1.0], [-1]), np.array([[np.nan, 0, 0]]))
    with pytest.raises(VesselfieldError, match=r"\(\.\.\., 3\)"):
        round_cone_sdf(np.zeros((4, 2)), [0, 0, 0], [1, 0, 0], 1.0, 1.0)
    with pytest.raises(VesselfieldError, match="left"):
        coronary_tree("middle")
    with pytest.raises(VesselfieldError, match="surface"):
        AAAPhantom(0).sdf(np.zeros((1, 3)), "adventitia")
    with pytest.raises(VesselfieldError, match="supersample"):
        occupancy_volume(VesselTree([[0, 0, 0]], [1.0], [-1]), VolumeGrid((4, 4, 4), (1, 1, 1)), supersample=0)


def test_importing_phantoms_does_not_import_torch():
    code = "import vesselfield.phantoms as p; p.coronary_tree('left'); p.ct_like_image; p.sparse_slices"
    assert modules_loaded_by(code, ["torch"]) == []
