"""Implicit vessel models of branching trees from bare points (issue 14): the visibility sign prior,
its initial shape, the sign loss, and the branching tree phantom."""

import numpy as np
import pytest
import torch
from conftest import sphere_points

from vesselfield.errors import VesselfieldError
from vesselfield.geometry.point_visibility import LATTICE_DIRECTIONS, point_visibility
from vesselfield.losses.igr import sign_loss
from vesselfield.methods.implicit_vessel import _trilinear, fit_implicit_sdf, inr_config, sample_mesh_surface
from vesselfield.metrics import dice
from vesselfield.phantoms.branching import MURRAY_RATIO, branching_tree
from vesselfield.phantoms.coronary import TreePhantom
from vesselfield.tree import VesselTree


# ------------------------------------------------------------------------------ visibility
def test_visibility_of_a_densely_sampled_sphere_has_a_closed_form():
    # 4000 random points on a sphere of radius 10 (spacing ~0.56, 6th-neighbour distance ~0.8);
    # walls of 1.5 neighbour distances leave no hole a lattice ray slips through. Every voxel outside the wall's outer ball sees at least 13 of
    # the 26 lattice directions escape, because a ball lies in the open half-space in front of any
    # point outside it, and of each pair (d, -d) one direction points away from it (13 / 26 = 0.5).
    # Inside, a hole-free wall stops every ray: escape fraction exactly 0.
    points, _ = sphere_points(4000, 10.0, seed=0)
    vis = point_visibility(points, voxels_longest=48, wall_factor=1.5)
    assert len(LATTICE_DIRECTIONS) == 26
    r = np.linalg.norm(vis.voxel_centers(), axis=-1)
    free = ~vis.wall
    wall_radius = np.abs(r[vis.wall] - 10.0).max()
    outside = free & (r > 10.0 + wall_radius)
    inside = free & (r < 10.0 - wall_radius)
    assert outside.sum() > 1000 and inside.sum() > 100
    assert vis.escape[outside].min() >= 13 / 26
    assert vis.escape[inside].max() == 0.0
    labels = vis.labels(0.5)
    assert np.all(labels[outside] == 1) and np.all(labels[inside] == -1) and np.all(labels[vis.wall] == 0)


def test_visibility_rejects_bad_settings():
    points, _ = sphere_points(100, 5.0)
    with pytest.raises(VesselfieldError, match="voxels_longest"):
        point_visibility(points, voxels_longest=2)
    with pytest.raises(VesselfieldError, match="wall_factor"):
        point_visibility(points, wall_factor=0)
    with pytest.raises(VesselfieldError, match="outside_escape"):
        point_visibility(points, voxels_longest=16).labels(1.5)
    with pytest.raises(VesselfieldError, match=r"\(N >= 2, 3\)"):
        point_visibility(points[:, :2])


def test_sign_loss_closed_form_and_gradient():
    f = torch.tensor([-1.0, 2.0, 0.5, -0.3], requires_grad=True)
    side = torch.tensor([1, 1, -1, 0], dtype=torch.int8)
    loss = sign_loss(f, side)
    # relu(1) + relu(-2) + relu(0.5) + 0, over 3 labelled samples.
    assert loss.item() == pytest.approx(1.5 / 3, abs=1e-7)
    loss.backward()
    np.testing.assert_allclose(f.grad.numpy(), [-1 / 3, 0.0, 1 / 3, 0.0], atol=1e-7)
    with pytest.raises(VesselfieldError, match="shape"):
        sign_loss(f, side[:3])


def test_trilinear_sampling_reproduces_an_affine_field_exactly():
    # Trilinear interpolation is exact for affine functions (float32: ~1e-6 relative).
    lo, h = torch.tensor([-1.0, 2.0, 0.5]), 0.25
    idx = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in (6, 7, 8)], indexing="ij"), -1)
    centres = lo + (idx + 0.5) * h
    coef = torch.tensor([0.3, -1.2, 2.0])
    volume = centres @ coef + 0.7
    q = lo + 0.5 * h + torch.rand(200, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([5, 6, 7]) * h
    np.testing.assert_allclose(_trilinear(volume, lo, h, q).numpy(), (q @ coef + 0.7).numpy(), atol=1e-5)


# ------------------------------------------------------------------------------ Y-shaped tube
def y_tree() -> VesselTree:
    """A Y of three tubes of radius 2.5 mm: a 20 mm trunk and two 20 mm branches 50 degrees apart."""
    trunk = np.stack([np.zeros(21), np.zeros(21), np.linspace(20, 0, 21)], 1)
    a = np.radians(25)
    s = np.linspace(1, 20, 20)[:, None]
    left = s * np.array([-np.sin(a), 0, -np.cos(a)])
    right = s * np.array([np.sin(a), 0, -np.cos(a)])
    points = np.concatenate([trunk, left, right])
    parent = np.r_[-1, np.arange(20), 20, np.arange(21, 40), 20, np.arange(41, 60)]
    return VesselTree(points, np.full(len(points), 2.5), parent)


@pytest.fixture(scope="module")
def y_case():
    from vesselfield.meshing.marching_cubes import mesh_from_volume

    phantom = TreePhantom(y_tree())
    fine = phantom.default_grid(0.25)
    mesh = mesh_from_volume(phantom.sdf_volume(fine), fine, 0.0, inside="below")
    grid = phantom.default_grid(0.5, margin_mm=4.0)
    return phantom, mesh, grid, phantom.sdf_volume(grid) < 0


def _fit_y(y_case, seed, **overrides):
    _, mesh, grid, reference = y_case
    points, _ = sample_mesh_surface(mesh, 300, seed=seed)
    model = fit_implicit_sdf(points, config=inr_config(seed=seed, **overrides), device="cpu").model
    sdf = model.sdf_volume(grid)
    return dice(sdf < 0, reference), sdf, grid


def test_y_tube_from_bare_points_gets_the_inside_right(y_case):
    # 300 bare points on a Y of 2.5 mm tubes; 600 IGR steps (after the 300 prior steps), against
    # the paper's recipe (the initial sphere only) with the same network, points and steps.
    d, sdf, grid = _fit_y(y_case, seed=0, iterations=600)
    d_paper, sdf_paper, _ = _fit_y(y_case, seed=0, iterations=600, sign_prior="sphere", prior_steps=0,
                                   learning_rate_final=1e-3)
    # Measured over seeds 0-3 with OMP_NUM_THREADS=1 and 2 (identical per seed): DSC 0.966-0.975
    # with the default, 0.888-0.939 with the paper's recipe, a gain of 0.029-0.078. On the axes
    # the SDF was -1.52 to -1.80 mm, at the outside probes +3.0 to +3.3 mm. The thresholds keep a
    # margin of at least 0.036 DSC and a factor 2.9 on the gain.
    assert d > 0.93, d
    assert d > d_paper + 0.01, (d, d_paper)
    values = {name: _at(sdf, grid, p) for name, p in Y_PROBES.items()}
    assert values["trunk axis"] < 0 and values["left branch axis"] < 0 and values["right branch axis"] < 0, values
    assert values["between the branches"] > 0 and values["beside the trunk"] > 0, values


#: Probe points of the Y (mm): on the axes (inside) and off the tubes (outside).
_A = np.radians(25)
Y_PROBES = {"trunk axis": [0.0, 0.0, 10.0], "left branch axis": [-np.sin(_A) * 12, 0.0, -np.cos(_A) * 12],
            "right branch axis": [np.sin(_A) * 12, 0.0, -np.cos(_A) * 12],
            "between the branches": [0.0, 0.0, -15.0], "beside the trunk": [0.0, 5.5, 10.0]}


def _at(sdf, grid, point_mm):
    i, j, k = np.rint(grid.world_to_index(np.asarray(point_mm, float))).astype(int)
    return float(sdf[i, j, k])


def test_the_fitted_y_is_one_watertight_component(y_case):
    from vesselfield.meshing import cfd_check, mesh_from_volume

    _, sdf, grid = _fit_y(y_case, seed=1, iterations=600)
    mesh = mesh_from_volume(sdf, grid, 0.0, inside="below")
    summary, warning = cfd_check(mesh, sdf)
    # Measured one watertight component for seeds 0-3, 1 and 2 threads.
    assert summary["components"] == 1 and summary["watertight"] and warning is None, summary
    # The check itself: a second, separate blob is reported and warned about.
    two = np.minimum(sdf, np.linalg.norm(grid.voxel_centers_mm() - np.array([9.0, 0.0, 15.0]), axis=-1) - 1.5)
    summary, warning = cfd_check(mesh_from_volume(two, grid, 0.0, inside="below"), two)
    assert summary["components"] == 2 and "2 separate components" in warning


def test_prior_initialisation_on_an_exact_capsule_tree(y_case):
    # Only the prior steps (iterations=0): the network regresses the SDF of the visibility
    # envelope shrunk by one wall radius; it starts as a sphere and ends close to the Y.
    _, mesh, grid, reference = y_case
    points, _ = sample_mesh_surface(mesh, 300, seed=0)
    start = fit_implicit_sdf(points, config=inr_config(iterations=0, prior_steps=0), device="cpu").model
    prior = fit_implicit_sdf(points, config=inr_config(iterations=0), device="cpu")
    assert (prior.iterations, prior.prior_steps) == (0, 300)
    d_start = dice(start.sdf_volume(grid) < 0, reference)
    d_prior = dice(prior.model.sdf_volume(grid) < 0, reference)
    # Measured over seeds 0-3, 1 and 2 threads (identical): DSC 0.149-0.189 from the sphere,
    # 0.822-0.857 after the prior steps; margins of 0.11 and 0.07.
    assert d_start < 0.3 and d_prior > 0.75, (d_start, d_prior)
    # The labels it came from: the Y's axis is inside, the far corners outside.
    share = prior.sign_prior["surface"]
    assert share["inside"] > 0 and share["outside"] > 0.5 and abs(sum(
        share[k] for k in ("inside", "outside", "unknown")) - 1) < 1e-3


# ------------------------------------------------------------------------------ the tree phantom
def test_branching_tree_phantom_is_seeded_murray_and_clear():
    tree = branching_tree(3)
    np.testing.assert_array_equal(tree.points_mm, branching_tree(3).points_mm)
    assert not np.array_equal(tree.points_mm, branching_tree(4).points_mm)
    labels = np.unique(tree.labels)
    assert len(labels) == 2 ** 5 - 1  # 31 branches, 16 outlets
    radii = np.sort(np.unique(np.round(tree.radius_mm, 9)))[::-1]
    np.testing.assert_allclose(radii, 4.0 * MURRAY_RATIO ** np.arange(5), rtol=1e-8)
    lo, hi = tree.bounds_mm()  # centred: the box, radii included, is symmetric about the origin
    np.testing.assert_allclose(lo, -hi, atol=1e-9)
    # Clearance, as drawn: nodes more than 3 parent radii from their branch's bifurcation keep
    # 1.5 mm (surface to surface) from such nodes of every branch but their parent and children.
    first = {lab: int(np.nonzero(tree.labels == lab)[0][0]) for lab in labels}
    parent_label = {lab: int(tree.labels[tree.parent[i]]) if tree.parent[i] > 0 else 0 for lab, i in first.items()}
    far = np.zeros(len(tree), bool)
    for lab, i in first.items():
        fork = tree.points_mm[tree.parent[i]] if tree.parent[i] >= 0 else tree.points_mm[i]
        mine = tree.labels == lab
        far[mine] = np.linalg.norm(tree.points_mm[mine] - fork, axis=1) > 3 * tree.radius_mm[tree.parent[i]]
    for lab in labels[1:]:
        mine = (tree.labels == lab) & far
        children = [c for c, p in parent_label.items() if p == lab]
        others = far & ~np.isin(tree.labels, [lab, parent_label[lab], *children])
        gap = (np.linalg.norm(tree.points_mm[mine][:, None] - tree.points_mm[others][None], axis=2)
               - tree.radius_mm[mine][:, None] - tree.radius_mm[others][None])
        assert gap.min() >= 1.5 - 1e-9, (lab, gap.min())
    with pytest.raises(VesselfieldError, match="generations"):
        branching_tree(0, generations=0)
