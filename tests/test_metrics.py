"""Known answers for vesselfield.metrics: closed forms, hand computations, measured tolerances."""

import math

import numpy as np
import pytest
from conftest import modules_loaded_by

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.metrics import (
    METRIC_INFO,
    assd_mm,
    chamfer_distance_mm,
    chamfer_voxel_mm,
    cldice,
    cldice_scores,
    dice,
    evaluate_volumes,
    format_metrics_table,
    hausdorff95_mm,
    hausdorff_mm,
    iou,
    jaccard_distance,
    mesh_accuracy_mm,
    mesh_accuracy_mm_from_meshes,
    mesh_completion,
    mesh_completion_from_meshes,
    re_error,
    re_mse,
    sample_surface_points,
    skeleton,
    surface_points,
    topology_precision,
    topology_sensitivity,
)

ISO = (1.0, 1.0, 1.0)
ANISO = (0.6, 0.8, 1.4)


# ------------------------------------------------------------------------------- shapes
def ball(shape, center_idx, radius_mm, spacing):
    """Voxels whose centre lies within radius_mm of center_idx (continuous index), mm metric."""
    idx = np.indices(shape, dtype=np.float64)
    d2 = sum(((idx[a] - center_idx[a]) * spacing[a]) ** 2 for a in range(3))
    return d2 <= radius_mm**2


def z_tube(shape, spacing, cx_mm, cy_mm, radius_mm):
    """Infinite cylinder along z (fills every z slice), centre (cx, cy) in mm from voxel 0."""
    x = np.arange(shape[0]) * spacing[0]
    y = np.arange(shape[1]) * spacing[1]
    disc = (x[:, None] - cx_mm) ** 2 + (y[None, :] - cy_mm) ** 2 <= radius_mm**2
    return np.repeat(disc[:, :, None], shape[2], axis=2)


def x_tube(shape, radius_vox, x0, x1, cy, cz):
    """Capped cylinder along x on a unit grid: x in [x0, x1), disc of radius_vox around (cy, cz)."""
    i, j, k = np.indices(shape)
    return ((j - cy) ** 2 + (k - cz) ** 2 <= radius_vox**2) & (i >= x0) & (i < x1)


def lens_area(r, d):
    """Area of the intersection of two discs of radius r whose centres are d apart."""
    return 2 * r * r * math.acos(d / (2 * r)) - 0.5 * d * math.sqrt(4 * r * r - d * d)


# --------------------------------------------------------------------- surface distances
@pytest.mark.parametrize("spacing", [ISO, ANISO], ids=["isotropic", "anisotropic"])
@pytest.mark.parametrize("offset", [(0.0, 0.0, 0.0), (0.31, -0.17, 0.42)])
def test_concentric_spheres_distances_equal_radius_gap(spacing, offset):
    spacing = np.array(spacing)
    shape = tuple(int(n) for n in np.ceil(20.0 / spacing) + 1)
    center = (np.array(shape) - 1) / 2 + np.array(offset)
    r1, r2 = 5.0, 8.0
    inner, outer = ball(shape, center, r1, spacing), ball(shape, center, r2, spacing)
    gap, s = r2 - r1, spacing.max()
    # Tolerances measured over 24 random sub-voxel centres and radii 4-9 mm on grids (1,1,1),
    # (0.8,0.8,1.5) and (0.5,1,2) mm, relative to the largest voxel size s:
    # - surface Chamfer read 0.06-0.18 s low: the staircase surfaces of voxelised spheres are
    #   bumpy and the nearest point of a bumpy surface is closer than its mean radius -> 0.25 s;
    # - ASSD 0.04-0.2 s low -> 0.3 s;
    # - HD high by 0.27-0.61 s, HD95 by 0.1-0.5 s: a boundary voxel centre sits up to one voxel
    #   inside its sphere, so |HD - gap| < s.
    assert chamfer_distance_mm(inner, outer, spacing) == pytest.approx(gap, abs=0.25 * s)
    assert assd_mm(inner, outer, spacing) == pytest.approx(gap, abs=0.3 * s)
    assert hausdorff_mm(inner, outer, spacing) == pytest.approx(gap, abs=s)
    assert hausdorff95_mm(inner, outer, spacing) == pytest.approx(gap, abs=s)
    assert hausdorff95_mm(inner, outer, spacing) <= hausdorff_mm(inner, outer, spacing)
    # Symmetric metrics do not care about argument order.
    assert chamfer_distance_mm(outer, inner, spacing) == pytest.approx(chamfer_distance_mm(inner, outer, spacing))
    assert hausdorff_mm(outer, inner, spacing) == hausdorff_mm(inner, outer, spacing)


@pytest.mark.parametrize("shift_vox", [1, 2, 4])
def test_surface_chamfer_of_a_shifted_sphere_is_half_the_shift(shift_vox):
    spacing = np.array([0.5, 0.5, 0.5])
    r, delta = 6.0, 0.5 * shift_vox
    a = ball((40, 40, 40), (19.3, 19.6, 19.5), r, spacing)
    b = np.roll(a, shift_vox, axis=0)
    # Sphere B is sphere A moved by δ (< r). From x = r·n on A, d(x, B) = |√(r² - 2rδ cosθ + δ²) - r|;
    # averaged over the sphere (cosθ uniform in [-1, 1]; substitute s = √(...)) it is exactly
    # (1 / 2rδ) · r δ² = δ / 2, whatever r. Both directions agree, so Chamfer = δ / 2.
    # Measured on voxelised spheres: 0.04-0.13 voxel low (staircase, as above) -> 0.25 voxel.
    assert chamfer_distance_mm(a, b, spacing) == pytest.approx(delta / 2, abs=0.25 * 0.5)
    # The boundary moved rigidly by δ, and at the poles no other boundary voxel is closer.
    assert hausdorff_mm(a, b, spacing) == pytest.approx(delta)


def test_chamfer_voxel_matches_hand_computation():
    # One voxel each, 3 voxels apart along x with 2 mm spacing: both directed distances are 6 mm,
    # CD = sqrt(6² + 6²).
    a = np.zeros((5, 2, 2), bool)
    b = np.zeros((5, 2, 2), bool)
    a[0, 0, 0], b[3, 0, 0] = True, True
    assert chamfer_voxel_mm(a, b, (2.0, 1.0, 1.0)) == pytest.approx(math.sqrt(72.0))
    # pred ⊂ target: pred -> target costs 0; target voxels at 0 and 2 mm -> mean square 2, CD = √2.
    p = np.zeros((1, 1, 3), bool)
    t = np.zeros((1, 1, 3), bool)
    p[0, 0, 0] = True
    t[0, 0, [0, 2]] = True
    assert chamfer_voxel_mm(p, t, 1.0) == pytest.approx(math.sqrt(2.0))


@pytest.mark.parametrize("spacing", [ISO, ANISO], ids=["isotropic", "anisotropic"])
def test_chamfer_voxel_of_nested_balls_matches_closed_form(spacing):
    spacing = np.array(spacing)
    shape = tuple(int(n) for n in np.ceil(20.0 / spacing) + 1)
    center = (np.array(shape) - 1) / 2 + 0.21
    r1, r2 = 5.0, 8.0
    inner, outer = ball(shape, center, r1, spacing), ball(shape, center, r2, spacing)
    # Inner ⊂ outer, so only outer -> inner counts: E[(ρ - r1)²₊] for ρ uniform in the outer ball
    # = (3 / r2³) ∫_{r1}^{r2} (ρ - r1)² ρ² dρ, in closed form below.
    integral = (r2**5 - r1**5) / 5 - r1 * (r2**4 - r1**4) / 2 + r1**2 * (r2**3 - r1**3) / 3
    expected = math.sqrt(3 / r2**3 * integral)
    # The nearest inner voxel centre lies up to one voxel inside the continuous ball, so the
    # discrete value reads high: measured +0.17 to +0.33 s on such grids -> tolerance 0.4 s.
    assert chamfer_voxel_mm(inner, outer, spacing) == pytest.approx(expected, abs=0.4 * spacing.max())
    assert chamfer_voxel_mm(outer, inner, spacing) == chamfer_voxel_mm(inner, outer, spacing)


def test_surface_points_are_on_the_sphere_in_world_mm():
    grid = VolumeGrid((30, 30, 24), (0.7, 0.7, 0.9), (-12.0, 40.0, 7.5))
    center_mm = np.array([-2.1, 50.3, 17.9])
    center_idx = grid.world_to_index(center_mm)
    mask = ball(grid.shape, center_idx, 6.0, grid.spacing)
    pts = surface_points(mask, grid)
    radii = np.linalg.norm(pts - center_mm, axis=1)
    # Marching-cubes vertices of a binary mask sit halfway between an inside and an outside voxel
    # centre: within half a voxel of the sphere, mean radius within a tenth of a voxel.
    assert np.all(np.abs(radii - 6.0) <= 0.5 * grid.spacing.max())
    assert radii.mean() == pytest.approx(6.0, abs=0.1 * grid.spacing.max())
    assert pts.mean(axis=0) == pytest.approx(center_mm, abs=0.05)
    # Spacing alone: same shape, origin 0.
    shifted = surface_points(mask, grid.spacing_mm)
    assert np.allclose(shifted + grid.origin, pts)
    assert surface_points(np.zeros((4, 4, 4)), 1.0).shape == (0, 3)


def test_surface_points_close_shapes_touching_the_grid_edge():
    full = np.ones((3, 4, 5), bool)
    pts = surface_points(full, (1.0, 2.0, 3.0))
    # The box surface lies half a voxel outside the outer voxel centres.
    assert pts.min(axis=0) == pytest.approx([-0.5, -1.0, -1.5])
    assert pts.max(axis=0) == pytest.approx([2.5, 7.0, 13.5])


# --------------------------------------------------------------------------------- overlap
@pytest.mark.parametrize("spacing", [(0.25, 0.25, 1.0), (0.2, 0.3, 2.0)], ids=["isotropic-xy", "anisotropic"])
@pytest.mark.parametrize("delta_mm", [0.5, 2.5, 4.0, 7.0])
def test_shifted_tubes_overlap_matches_lens_area(spacing, delta_mm):
    spacing = np.array(spacing)
    r = 5.0
    shape = (int(24 / spacing[0]), int(24 / spacing[1]), 3)
    a = z_tube(shape, spacing, 11.93, 12.11, r)
    b = z_tube(shape, spacing, 11.93 + delta_mm, 12.11, r)
    lens = lens_area(r, delta_mm)
    expected_dice = lens / (math.pi * r * r)  # 2·lens·L / (2·πr²·L)
    expected_iou = lens / (2 * math.pi * r * r - lens)
    # Voxelised discs of radius 17-25 voxels: measured |error| <= 0.004 (Dice) and 0.007 (IoU)
    # over random sub-voxel centres -> 0.01.
    assert dice(a, b) == pytest.approx(expected_dice, abs=0.01)
    assert iou(a, b) == pytest.approx(expected_iou, abs=0.01)
    assert jaccard_distance(a, b) == pytest.approx(1.0 - iou(a, b), abs=1e-15)
    # Dice and IoU are two views of one count: IoU = Dice / (2 - Dice), exactly.
    assert iou(a, b) == pytest.approx(dice(a, b) / (2 - dice(a, b)), rel=1e-12)


def test_identical_volumes_are_perfect():
    spacing = np.array(ANISO)
    shape = (30, 24, 14)
    a = ball(shape, (14.2, 11.7, 6.6), 5.0, spacing)
    assert dice(a, a) == 1.0
    assert iou(a, a) == 1.0
    assert jaccard_distance(a, a) == 0.0
    assert cldice(a, a) == 1.0
    for distance in (chamfer_distance_mm, chamfer_voxel_mm, hausdorff_mm, hausdorff95_mm, assd_mm):
        assert distance(a, a, spacing) == 0.0


def test_empty_mask_conventions():
    empty = np.zeros((8, 8, 8), bool)
    some = empty.copy()
    some[2:5, 2:5, 2:5] = True
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0 and jaccard_distance(empty, empty) == 0.0
    assert dice(empty, some) == 0.0 and iou(some, empty) == 0.0
    assert cldice(empty, empty) == 1.0 and cldice(empty, some) == 0.0 and cldice(some, empty) == 0.0
    for distance in (chamfer_distance_mm, chamfer_voxel_mm, hausdorff_mm, hausdorff95_mm, assd_mm):
        assert distance(empty, empty, 1.0) == 0.0
        assert distance(empty, some, 1.0) == math.inf
        assert distance(some, empty, 1.0) == math.inf


# -------------------------------------------------------------------------------- topology
def test_cldice_of_a_tube_with_itself_is_one():
    # Centred on a half-integer, this tube is symmetric with an even width: plain scikit-image
    # thinning deletes it entirely (issue #3757); the guard in skeleton() must keep it.
    tube = x_tube((64, 17, 17), 2.5, 8, 56, 8.5, 8.5)
    assert cldice(tube, tube) == 1.0
    s = skeleton(tube)
    per_slice = np.bincount(np.argwhere(s)[:, 0], minlength=64)
    # One voxel per x slice along the whole tube but for about a radius at each cap.
    assert per_slice.max() == 1
    assert 48 - 2 * 3 <= s.sum() <= 48
    assert np.all(s <= tube)


def test_skeleton_matches_scikit_image_where_thinning_is_reliable():
    # An oblique tube with round caps (no issue-#3757 symmetry): skeleton() is Lee's thinning,
    # and cropping to the foreground must not move a single voxel.
    from skimage.morphology import skeletonize

    idx = np.indices((40, 36, 30)).reshape(3, -1).T.astype(float)
    a, b = np.array([6.0, 8.0, 5.0]), np.array([33.0, 27.0, 24.0])
    t = np.clip((idx - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
    mask = (np.linalg.norm(idx - (a + t[:, None] * (b - a)), axis=1) <= 2.7).reshape(40, 36, 30)
    expected = skeletonize(mask, method="lee")
    assert expected.sum() > 20
    assert np.array_equal(skeleton(mask), expected)


@pytest.mark.parametrize("center", [8.0, 8.5])
def test_cldice_of_a_broken_tube_drops_by_the_removed_centreline_fraction(center):
    shape = (64, 17, 17)
    target = x_tube(shape, 3.0, 8, 56, center, center)
    gap = 4
    broken = target.copy()
    broken[30:30 + gap] = False
    n_skel = int(skeleton(target).sum())  # one voxel per slice (checked above), ~ tube length
    # Both halves of the broken tube lie inside the target: Tprec = 1. The target centreline
    # loses exactly the `gap` voxels in the cut: Tsens = 1 - gap / |S(target)|.
    tprec, tsens, cl = cldice_scores(broken, target)
    assert tprec == 1.0
    assert tsens == pytest.approx(1 - gap / n_skel, abs=1e-12)
    assert cl == pytest.approx(2 * tsens / (1 + tsens), abs=1e-12)
    # In closed form |S| is the tube length (48) minus up to a radius at each cap: 1 - 4/48 ..
    # 1 - 4/42, i.e. clDice between 0.950 and 0.957.
    assert 0.949 < cl < 0.958
    # Dice barely notices the same break (4 of 48 slices): the two metrics differ in focus.
    assert dice(broken, target) == pytest.approx(2 * (48 - gap) / (48 - gap + 48), abs=1e-12)


def test_cldice_ignores_thickness_where_dice_does_not():
    shape = (64, 17, 17)
    thin = x_tube(shape, 1.5, 8, 56, 8, 8)
    thick = x_tube(shape, 4.5, 8, 56, 8, 8)
    assert cldice(thick, thin) == 1.0 and cldice(thin, thick) == 1.0
    # thin ⊂ thick, so Dice = 2|thin| / (|thin| + |thick|) exactly; with discs of 9 and 69 voxels
    # (radii 1.5 and 4.5) that is 0.23.
    expected = 2 * thin.sum() / (thin.sum() + thick.sum())
    assert dice(thick, thin) == pytest.approx(expected, abs=1e-12)
    assert dice(thick, thin) < 0.3


def test_topology_precision_and_sensitivity_swap_with_the_arguments():
    shape = (64, 40, 17)
    target = x_tube(shape, 2.0, 8, 56, 8, 8)
    # The prediction adds a spurious branch along y, outside the target.
    i, j, k = np.indices(shape)
    branch = ((i - 30) ** 2 + (k - 8) ** 2 <= 4) & (j >= 8) & (j < 34)
    pred = target | branch
    tprec, tsens = topology_precision(pred, target), topology_sensitivity(pred, target)
    assert tsens == 1.0  # the whole target centreline is covered
    # Tprec ≈ main length / (main length + branch length outside the target): the main
    # centreline spans the 48-voxel tube less up to a radius (2) at each cap, the branch runs
    # from y = 11 (just outside the target) to y = 33 less up to 2 at its tip: 44-48 voxels
    # against 21-23, so 0.66-0.70.
    assert 0.65 < tprec < 0.71
    assert topology_precision(target, pred) == tsens
    assert topology_sensitivity(target, pred) == tprec
    assert cldice(pred, target) == cldice(target, pred)  # the harmonic mean is symmetric


# ------------------------------------------------------------------------------ reconstruction
def test_reconstruction_errors_by_hand():
    pred = np.array([[0.0, 0.5], [1.0, 0.25]])
    target = np.array([[0, 1], [1, 0]])
    # |diff| = 0, 0.5, 0, 0.25 -> mean 0.1875; diff² = 0, 0.25, 0, 0.0625 -> mean 0.078125.
    assert re_error(pred, target) == 0.1875
    assert re_mse(pred, target) == 0.078125
    assert re_error(target, pred) == re_error(pred, target)
    assert re_error(target, target) == 0.0 and re_mse(target, target) == 0.0


# ----------------------------------------------------------------------- accuracy / completion
def test_mesh_accuracy_and_completion_on_offset_points():
    target = np.stack([np.arange(100.0), np.zeros(100), np.zeros(100)], axis=1)  # x = 0..99 mm
    pred = target[:50] + [0.0, 0.0, 1.0]  # first half only, lifted 1 mm
    # Every pred point is 1 mm from the target.
    assert mesh_accuracy_mm(pred, target) == pytest.approx(1.0)
    # Target points x = 0..49 are 1 mm away, x = 50 is √2 mm away, x = 51 is √5 > 2 mm away.
    assert mesh_completion(pred, target, threshold_mm=2.0) == pytest.approx(0.51)
    assert mesh_completion(pred, target, threshold_mm=0.99) == 0.0
    # Swapped arguments: the asymmetric metrics change.
    d = np.array([1.0] * 50 + [math.hypot(x - 49, 1.0) for x in range(50, 100)])
    assert mesh_accuracy_mm(target, pred) == pytest.approx(np.percentile(d, 90))
    assert mesh_accuracy_mm(target, pred, percentile=50) == pytest.approx(np.percentile(d, 50))
    assert mesh_completion(target, pred, threshold_mm=2.0) == 1.0


def test_mesh_metrics_from_trimesh_spheres():
    import trimesh

    inner = trimesh.creation.icosphere(subdivisions=4, radius=5.0)
    outer = trimesh.creation.icosphere(subdivisions=4, radius=6.0)
    # Concentric spheres 1 mm apart: every distance is ~1 mm. Faceting (sag < 0.01 mm) and
    # nearest-sample error (20k samples on ~450 mm²: spacing ~0.15 mm, NN error ~0.01 mm) -> 0.03.
    acc = mesh_accuracy_mm_from_meshes(inner, outer, n_points=20_000)
    assert acc == pytest.approx(1.0, abs=0.03)
    assert mesh_completion_from_meshes(inner, outer, threshold_mm=1.1, n_points=20_000) == 1.0
    assert mesh_completion_from_meshes(inner, outer, threshold_mm=0.9, n_points=20_000) == 0.0
    pts = sample_surface_points(outer.vertices, outer.faces, 5000, seed=3)
    assert np.linalg.norm(pts, axis=1) == pytest.approx(6.0, abs=0.02)
    assert np.array_equal(pts, sample_surface_points(outer.vertices, outer.faces, 5000, seed=3))


# ---------------------------------------------------------------------------------- errors
def test_bad_inputs_raise_one_line_errors():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 5), bool)
    for metric in (dice, iou, cldice, re_error, re_mse):
        with pytest.raises(VesselfieldError, match="shape"):
            metric(a, b)
    with pytest.raises(VesselfieldError, match="shape"):
        chamfer_distance_mm(a, b, 1.0)
    nan = np.zeros((4, 4, 4))
    nan[1, 1, 1] = np.nan
    for metric in (dice, re_error, re_mse):
        with pytest.raises(VesselfieldError, match="NaN"):
            metric(nan, a)
    with pytest.raises(VesselfieldError, match="NaN"):
        hausdorff_mm(a, nan, 1.0)
    with pytest.raises(VesselfieldError, match="binary"):
        dice(np.full((4, 4, 4), 0.7), a)
    with pytest.raises(VesselfieldError, match="3D"):
        assd_mm(np.zeros((4, 4), bool), np.zeros((4, 4), bool), 1.0)
    with pytest.raises(VesselfieldError, match="spacing"):
        chamfer_distance_mm(a, a, (1.0, -1.0, 1.0))
    with pytest.raises(VesselfieldError, match="empty"):
        mesh_accuracy_mm(np.zeros((0, 3)), np.zeros((5, 3)))
    with pytest.raises(VesselfieldError, match=r"\(N, 3\)"):
        mesh_completion(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(VesselfieldError, match="percentile"):
        hausdorff_mm(a, a, 1.0, percentile=101)
    with pytest.raises(VesselfieldError):
        re_error(np.zeros(0), np.zeros(0))


# -------------------------------------------------------------------------------- evaluate
def _probability_pair():
    grid = VolumeGrid.centered((40, 36, 30), (0.8, 0.8, 1.0))
    centers = grid.voxel_centers_mm(np.float64)
    r = np.linalg.norm(centers[..., :2] - [0.4, -0.3], axis=-1)  # tube along z, radius 4 mm
    target = (r <= 4.0).astype(np.float32)
    r_pred = np.linalg.norm(centers[..., :2] - [1.2, -0.3], axis=-1)  # shifted 0.8 mm along x
    pred = (1.0 / (1.0 + np.exp(3.0 * (r_pred - 3.6)))).astype(np.float32)  # a soft occupancy
    return pred, target, grid


def test_evaluate_volumes_returns_every_metric_in_order_and_agrees_with_the_functions():
    pred, target, grid = _probability_pair()
    result = evaluate_volumes(pred, target, grid)
    assert list(result) == list(METRIC_INFO)
    assert all(isinstance(v, float) for v in result.values())
    p, t, s = pred >= 0.5, target >= 0.5, grid.spacing
    assert result["dice"] == pytest.approx(dice(p, t), abs=1e-12)
    assert result["iou"] == pytest.approx(iou(p, t), abs=1e-12)
    assert result["jaccard_distance"] == pytest.approx(jaccard_distance(p, t), abs=1e-12)
    assert result["cldice"] == pytest.approx(cldice(p, t), abs=1e-12)
    assert result["topology_precision"] == pytest.approx(topology_precision(p, t), abs=1e-12)
    assert result["topology_sensitivity"] == pytest.approx(topology_sensitivity(p, t), abs=1e-12)
    assert result["chamfer_mm"] == pytest.approx(chamfer_distance_mm(p, t, s), rel=1e-12)
    assert result["chamfer_voxel_mm"] == pytest.approx(chamfer_voxel_mm(p, t, s), rel=1e-12)
    assert result["hausdorff_mm"] == pytest.approx(hausdorff_mm(p, t, s), rel=1e-12)
    assert result["hausdorff95_mm"] == pytest.approx(hausdorff95_mm(p, t, s), rel=1e-12)
    assert result["assd_mm"] == pytest.approx(assd_mm(p, t, s), rel=1e-12)
    # re_* use the soft values, not the masks.
    assert result["re_error"] == pytest.approx(re_error(pred, target), rel=1e-12)
    assert result["re_mse"] == pytest.approx(re_mse(pred, target), rel=1e-12)
    assert result["re_error"] != pytest.approx(re_error(p, t))
    # The predicted tube (radius 3.6 mm) lies within the target (radius 4, shifted 0.8 mm):
    # every pred surface point is at most ~1.2 mm from the target surface, so 90 % are closer,
    # and the whole target surface is within 2 mm of the prediction.
    assert 0.0 < result["mesh_accuracy_mm"] <= 1.3
    assert result["mesh_completion"] == 1.0


def test_evaluate_volumes_on_identical_masks_and_its_checks():
    _, target, grid = _probability_pair()
    perfect = evaluate_volumes(target, target.astype(bool), grid)
    for name, (_, _, higher) in METRIC_INFO.items():
        assert perfect[name] == (1.0 if higher else 0.0), name
    with pytest.raises(VesselfieldError, match="different grids"):
        evaluate_volumes(target, target, grid, target_grid=VolumeGrid(grid.shape, (1.0, 1.0, 1.0)))
    with pytest.raises(VesselfieldError, match="shape"):
        evaluate_volumes(target[:-1], target, grid)
    with pytest.raises(VesselfieldError, match=r"\[0, 1\]"):
        evaluate_volumes(target * 255, target, grid)
    with pytest.raises(VesselfieldError, match="threshold"):
        evaluate_volumes(target, target, grid, threshold=0.0)


def test_evaluate_volumes_with_an_empty_prediction_still_fills_the_table():
    _, target, grid = _probability_pair()
    result = evaluate_volumes(np.zeros_like(target), target, grid)
    assert result["dice"] == 0.0 and result["cldice"] == 0.0
    assert result["chamfer_mm"] == math.inf and result["hausdorff95_mm"] == math.inf
    assert result["mesh_completion"] == 0.0
    assert result["re_error"] == pytest.approx(target.mean())


def test_format_metrics_table_lists_every_metric_with_unit_and_direction():
    pred, target, grid = _probability_pair()
    result = evaluate_volumes(pred, target, grid)
    table = format_metrics_table({**result, "runtime_s": 12.5})
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["metric", "value", "unit", "better"]
    assert len(lines) == 2 + len(result) + 1
    for name in result:
        row = next(line for line in lines if line.startswith(name + " "))
        assert METRIC_INFO[name][1] in row.split()
        assert ("higher" if METRIC_INFO[name][2] else "lower") in row.split()
    assert f"{result['dice']:.4f}" in table
    assert lines[-1].split() == ["runtime_s", "12.5000"]
    assert "inf" in format_metrics_table({"chamfer_mm": math.inf})


def test_importing_metrics_does_not_import_torch():
    assert modules_loaded_by("import vesselfield, vesselfield.metrics", ["torch"]) == []
