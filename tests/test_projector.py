"""The differentiable cone-beam projector against closed forms, finite differences and itself."""

import copy
import math

import numpy as np
import pytest
import torch

from vesselfield.errors import VesselfieldError
from vesselfield.geometry import ConeBeamView, Geometry, default_geometry
from vesselfield.grid import VolumeGrid
from vesselfield.render import (
    DEFAULT_CHUNK_RAYS,
    DEFAULT_MASK_THRESHOLD_MM,
    default_step_mm,
    project_field,
    project_views,
    project_volume,
    projection_mask,
    ray_box_intersection,
)

ANGLES = [(-37.0, 21.0), (61.0, -33.0), (29.7, 0.1), (2.0, 29.0), (135.0, -10.0)]


def _partial_volume(grid: VolumeGrid, sdf, per_axis: int = 4) -> np.ndarray:
    """Occupancy in [0, 1]: inside/outside at voxel centres, per_axis³ sub-samples near the surface."""
    centers = grid.voxel_centers_mm(np.float64).reshape(-1, 3)
    dist = sdf(centers)
    occ = (dist < 0).astype(np.float64)
    near = np.abs(dist) < 0.5 * np.linalg.norm(grid.spacing) + 1e-9
    offsets = (np.arange(per_axis) + 0.5) / per_axis - 0.5
    sub = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), -1).reshape(-1, 3) * grid.spacing
    points = centers[near][:, None, :] + sub[None]
    occ[near] = (sdf(points.reshape(-1, 3)).reshape(-1, len(sub)) < 0).mean(1)
    return occ.reshape(grid.shape)


def _relative_l1(pred, target):
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    hit = (target > 0) | (pred > 0)
    return np.abs(pred - target)[hit].sum() / target[hit].sum()


def _line_distance(origins, dirs, point):
    w = point - origins
    return np.linalg.norm(w - (w * dirs).sum(1, keepdims=True) * dirs, axis=1)


#: Unit roundoff of float64 (2^-53): one rounding errs by at most U64 relative.
U64 = 2.0**-53


def _max_samples_per_ray(grid: VolumeGrid) -> int:
    """An upper bound on the midpoint samples of one ray: the box diagonal over the default step."""
    return int(math.ceil(np.linalg.norm(np.asarray(grid.shape) * grid.spacing) / default_step_mm(grid)))


def _per_sample_parameter_gradients(mlp: torch.nn.Module, points: torch.Tensor) -> dict:
    """{name: (n, *shape)} gradients of ``mlp(point)`` with respect to each parameter, per point."""
    params = {name: p.detach() for name, p in mlp.named_parameters()}

    def one_sample(values, point):
        return torch.func.functional_call(mlp, values, (point[None],))[0, 0]

    return torch.func.vmap(torch.func.grad(one_sample), in_dims=(None, 0))(params, points)


# ------------------------------------------------------------------------------ ray / box
def test_ray_box_intersection_known_cases():
    origins = torch.tensor([[-5.0, 0.5, 0.5], [0.5, 0.5, 0.5], [-5.0, 3.0, 0.5], [0.5, -5.0, 1.0], [5.0, 0.5, 0.5],
                            [-1.0, -1.0, -1.0]], dtype=torch.float64)
    dirs = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [1.0, 0, 0], [0, 2.0, 0], [1.0, 0, 0], [1.0, 1.0, 1.0]],
                        dtype=torch.float64)
    t_near, t_far = ray_box_intersection(origins, dirs, [0, 0, 0], [1, 1, 1])
    np.testing.assert_allclose(t_near[[0, 1, 3, 5]], [5.0, -0.5, 2.5, 1.0])  # (3) rides on the face z = 1
    np.testing.assert_allclose(t_far[[0, 1, 3, 5]], [6.0, 0.5, 3.0, 2.0])
    assert t_near[2] > t_far[2]  # parallel to x, outside the y slab: misses
    assert t_far[4] < 0  # box behind the origin


def test_uniform_volume_gives_box_chords_on_an_anisotropic_offset_grid():
    grid = VolumeGrid((20, 25, 15), (0.8, 0.6, 1.0), (-7.0, -6.0, -9.0))
    view = ConeBeamView(-37.0, 21.0, 1000.0, 750.0, (24, 24), (1.2, 1.2))
    image = project_volume(torch.full(grid.shape, 2.0, dtype=torch.float64), grid, view).numpy().ravel()
    origins, dirs = view.rays()
    t_near, t_far = ray_box_intersection(torch.tensor(origins), torch.tensor(dirs), *grid.bounds_mm)
    chord = (t_far - t_near).clamp_min(0).numpy()
    assert (chord > 0).sum() > 100 and (chord == 0).sum() > 20  # some rays miss the small box
    np.testing.assert_allclose(image, 2.0 * chord, atol=1e-9)


# ------------------------------------------------------------------------------ closed forms
@pytest.fixture(scope="module")
def sphere_volume():
    grid = VolumeGrid.centered((72, 72, 72), 0.4)
    center, radius = np.array([1.1, -0.7, 0.9]), 12.0
    occ = _partial_volume(grid, lambda p: np.linalg.norm(p - center, axis=1) - radius)
    return grid, torch.tensor(occ, dtype=torch.float32), center, radius


def _sphere_chords(view, center, radius):
    origins, dirs = view.rays()
    rho = _line_distance(origins, dirs, center)
    return 2.0 * np.sqrt(np.clip(radius**2 - rho**2, 0.0, None))


@pytest.mark.parametrize("alpha,beta", ANGLES)
def test_sphere_chords_project_volume(sphere_volume, alpha, beta):
    grid, volume, center, radius = sphere_volume
    view = ConeBeamView(alpha, beta, 1000.0, 750.0, (36, 36), (0.95, 0.95))
    expected = _sphere_chords(view, center, radius)
    image = project_volume(volume, grid, view)
    assert image.shape == (36, 36) and image.dtype == torch.float32
    assert (expected > 0).mean() > 0.6  # the sphere fills most of the small detector
    # measured 0.6 %: the blur of partial volume + trilinear interpolation, not the sampling
    assert _relative_l1(image.numpy().ravel(), expected) < 0.01


@pytest.mark.parametrize("alpha,beta", ANGLES)
def test_sphere_chords_project_field(alpha, beta):
    center, radius = np.array([2.3, -4.1, 3.2]), 10.0
    grid = VolumeGrid.centered((64, 64, 64), 0.8)
    view = ConeBeamView(alpha, beta, 1000.0, 750.0, (32, 32), (0.9, 0.9))
    c = torch.tensor(center, dtype=torch.float32)

    def soft_sphere(points):
        return torch.sigmoid((radius - torch.linalg.norm(points - c, dim=1)) / 0.05)

    image = project_field(soft_sphere, grid, view)
    assert image.shape == (32, 32)
    assert _relative_l1(image.numpy().ravel(), _sphere_chords(view, center, radius)) < 0.01  # measured 0.3 %


@pytest.fixture(scope="module")
def cylinder_volume():
    grid = VolumeGrid.centered((64, 64, 80), 0.4)
    axis_xy, radius = np.array([1.3, -0.9]), 10.0
    occ = _partial_volume(grid, lambda p: np.linalg.norm(p[:, :2] - axis_xy, axis=1) - radius)
    return grid, torch.tensor(occ, dtype=torch.float32), axis_xy, radius


def _cylinder_chords(view, grid, axis_xy, radius, margin_mm=1.0):
    """Chords of the infinite cylinder along z, and the pixels whose chord stays inside the box in z.

    In the plane ⟂ z the ray's shadow passes the axis at distance ρ; the chord is the 2D chord
    2·sqrt(r² - ρ²) divided by sin θ, θ the angle between ray and axis (|d_xy| = sin θ).
    """
    origins, dirs = view.rays()
    sin_theta = np.linalg.norm(dirs[:, :2], axis=1)
    w = axis_xy - origins[:, :2]
    rho = np.abs(w[:, 0] * dirs[:, 1] - w[:, 1] * dirs[:, 0]) / sin_theta
    half_2d = np.sqrt(np.clip(radius**2 - rho**2, 0.0, None))
    chord = 2.0 * half_2d / sin_theta
    t_mid = (w * dirs[:, :2]).sum(1) / sin_theta**2
    z = origins[:, 2:3] + (t_mid[:, None] + np.array([-0.5, 0.5]) * chord[:, None]) * dirs[:, 2:3]
    lo, hi = grid.bounds_mm
    inside = (z.min(1) > lo[2] + margin_mm) & (z.max(1) < hi[2] - margin_mm)
    h, w_ = view.detector_shape
    return chord[inside], np.argwhere(inside.reshape(h, w_))


@pytest.mark.parametrize("alpha,beta", ANGLES)
def test_cylinder_chords_project_volume(cylinder_volume, alpha, beta):
    grid, volume, axis_xy, radius = cylinder_volume
    view = ConeBeamView(alpha, beta, 1000.0, 750.0, (40, 40), (1.0, 1.0))
    expected, pixels = _cylinder_chords(view, grid, axis_xy, radius)
    assert (expected > 0).sum() > 400
    values = project_volume(volume, grid, view, pixels)
    assert values.shape == (len(pixels),)
    assert _relative_l1(values.numpy(), expected) < 0.01  # measured 0.3-0.7 %


@pytest.mark.parametrize("alpha,beta", ANGLES[:3])
def test_cylinder_chords_project_field(alpha, beta):
    grid = VolumeGrid.centered((48, 48, 64), 0.8)
    axis_xy, radius = np.array([-2.0, 1.5]), 7.0
    view = ConeBeamView(alpha, beta, 1000.0, 750.0, (40, 40), (1.0, 1.0))
    expected, pixels = _cylinder_chords(view, grid, axis_xy, radius)
    a = torch.tensor(axis_xy, dtype=torch.float32)

    def soft_cylinder(points):
        return torch.sigmoid((radius - torch.linalg.norm(points[:, :2] - a, dim=1)) / 0.05)

    assert _relative_l1(project_field(soft_cylinder, grid, view, pixels).numpy(), expected) < 0.01


def test_rays_that_miss_give_zero():
    grid = VolumeGrid.centered((8, 8, 8), 1.0)
    view = ConeBeamView(10.0, 5.0, 1000.0, 750.0, (64, 64), (1.0, 1.0))
    image = project_volume(torch.ones(grid.shape), grid, view)
    rc = view.project_points(grid.voxel_centers_mm(np.float64).reshape(-1, 3))
    assert image[0, 0] == 0 and image[-1, -1] == 0  # corners: far from the 8 mm box
    assert image[int(round(rc[:, 0].mean())), int(round(rc[:, 1].mean()))] > 7.9


def test_default_sampling():
    assert default_step_mm(VolumeGrid((4, 4, 4), (0.8, 0.6, 1.0))) == pytest.approx(0.3)
    assert DEFAULT_MASK_THRESHOLD_MM == 0.5


def test_sampling_converges_on_thin_tubes():
    """Against a dense (step/16) reference, default sampling is within 0.5 % on r = 0.6-1.2 mm tubes."""
    geometry = default_geometry()
    grid = VolumeGrid.centered((48, 48, 48), 0.8)
    segments = [((-15.0, -10.0, -12.0), (14.0, 9.0, 13.0), 0.6), ((-12.0, 12.0, -3.0), (10.0, -8.0, 9.0), 1.2),
                ((4.0, -14.0, -15.0), (-6.0, 13.0, 14.0), 0.9)]

    def sdf(p):
        out = np.full(len(p), np.inf)
        for a, b, r in segments:
            a, b = np.asarray(a), np.asarray(b)
            t = np.clip((p - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
            out = np.minimum(out, np.linalg.norm(p - a - t[:, None] * (b - a), axis=1) - r)
        return out

    volume = torch.tensor(_partial_volume(grid, sdf), dtype=torch.float32)
    for view in geometry.views:
        rc = np.unique(np.round(view.project_points(grid.voxel_centers_mm(np.float64).reshape(-1, 3)[
            volume.numpy().ravel() > 0])).astype(int), axis=0)
        rc = rc[(rc >= 0).all(1) & (rc < 512).all(1)][::3]
        dense = project_volume(volume.double(), grid, view, rc, step_mm=default_step_mm(grid) / 16)
        default = project_volume(volume, grid, view, rc)
        assert _relative_l1(default.numpy(), dense.numpy()) < 0.005  # measured 0.3-0.4 %
        coarse = project_volume(volume, grid, view, rc, step_mm=0.8)
        assert _relative_l1(coarse.numpy(), dense.numpy()) > _relative_l1(default.numpy(), dense.numpy())


# ------------------------------------------------------------------------------ gradients
def test_volume_gradient_support_and_total():
    grid = VolumeGrid.centered((20, 20, 20), 1.0)
    view = ConeBeamView(23.0, -14.0, 1000.0, 750.0, (64, 64), (0.5, 0.5))
    pixels = np.array([[31, 30], [10, 50], [45, 12]])
    volume = torch.rand(grid.shape, dtype=torch.float64, requires_grad=True)
    project_volume(volume, grid, view, pixels).sum().backward()
    grad = volume.grad.numpy()
    origins, dirs = view.rays(pixels)
    centers = grid.voxel_centers_mm(np.float64).reshape(-1, 3)
    nearest = np.min([_line_distance(np.broadcast_to(o, centers.shape), np.broadcast_to(d, centers.shape), centers)
                      for o, d in zip(origins, dirs)], axis=0).reshape(grid.shape)
    assert np.all(grad >= 0)  # trilinear weights are non-negative
    assert np.all(grad[nearest < 0.3] > 0)  # voxels the rays pass through
    assert np.all(grad[nearest >= math.sqrt(3)] == 0)  # out of every sample's trilinear reach
    assert (grad > 0).sum() > 3 * 20
    # Each sample's trilinear weights sum to 1, so the gradient sums to the rays' chords in the box.
    t_near, t_far = ray_box_intersection(torch.tensor(origins), torch.tensor(dirs), *grid.bounds_mm)
    assert grad.sum() == pytest.approx(float((t_far - t_near).clamp_min(0).sum()), rel=1e-10)


def test_volume_gradient_matches_finite_differences_and_sign():
    grid = VolumeGrid((6, 7, 5), (1.0, 0.8, 1.2), (-2.5, -2.0, -2.0))
    view = ConeBeamView(40.0, 25.0, 600.0, 400.0, (12, 12), (1.0, 1.0))
    pixels = np.array([[5, 6], [4, 4], [7, 8], [6, 5]])
    torch.manual_seed(0)
    volume = torch.rand(grid.shape, dtype=torch.float64, requires_grad=True)
    weights = torch.tensor([1.0, -0.5, 2.0, 0.7], dtype=torch.float64)

    def loss(v):
        return (project_volume(v, grid, view, pixels, step_mm=0.3) * weights).sum()

    loss(volume).backward()
    eps = 1e-4
    flat = volume.detach().clone().view(-1)
    for index in np.argsort(-np.abs(volume.grad.numpy().ravel()))[:6].tolist() + [0, 100]:
        plus, minus = flat.clone(), flat.clone()
        plus[index] += eps
        minus[index] -= eps
        fd = (loss(plus.view(grid.shape)) - loss(minus.view(grid.shape))).item() / (2 * eps)
        assert volume.grad.view(-1)[index].item() == pytest.approx(fd, abs=1e-8)
    # Sign: raising a voxel that ray 0 passes through raises that ray's integral.
    single = torch.zeros(grid.shape, dtype=torch.float64, requires_grad=True)
    project_volume(single, grid, view, pixels[:1], step_mm=0.3).sum().backward()
    i = np.unravel_index(int(single.grad.argmax()), grid.shape)
    before = project_volume(volume.detach(), grid, view, pixels[:1])
    bumped = volume.detach().clone()
    bumped[i] += 0.5
    assert project_volume(bumped, grid, view, pixels[:1]) > before + 0.1


def test_field_gradient_reaches_mlp_parameters():
    torch.manual_seed(0)
    grid = VolumeGrid.centered((16, 16, 16), 1.0)
    view = ConeBeamView(-20.0, 10.0, 1000.0, 750.0, (16, 16), (1.0, 1.0))
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Softplus(), torch.nn.Linear(16, 1), torch.nn.Sigmoid())
    image = project_field(lambda p: mlp(p / 8.0), grid, view)
    assert image.shape == (16, 16) and torch.all(image >= 0)
    image.sum().backward()
    for name, p in mlp.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name

    # Checkpointed chunks give the same parameter gradients. Both runs add the same per-sample
    # terms t_s = h dmlp(p_s)/dθ, in different orders; in float32 that alone moved a gradient by
    # 4e-5 on one CPU and not on another, so the comparison is made in float64 against the
    # rounding bound: any order of summing n terms errs by at most (n - 1) u Σ|t_s| (Higham,
    # "Accuracy and Stability of Numerical Algorithms", 2002, eq. 4.4) and each term is itself
    # computed to within a few u, so two orders differ by at most 2 (n + 32) u Σ|t_s|.
    mlp64 = copy.deepcopy(mlp).double()
    samples = []

    def field64(points):
        samples.append(points.detach())
        return mlp64(points / 8.0)

    grads = []
    for chunk in (DEFAULT_CHUNK_RAYS, 50):  # one chunk (no checkpointing), then 6 checkpointed ones
        mlp64.zero_grad()
        project_field(field64, grid, view, chunk_rays=chunk, dtype=torch.float64).sum().backward()
        grads.append([p.grad.clone() for p in mlp64.parameters()])
    points = samples[0]  # every sample point, from the single-chunk run's one call
    # Σ|t_s| per parameter from per-sample gradients; every ray's step h is at most the default step.
    per_sample = _per_sample_parameter_gradients(mlp64, points / 8.0)
    bound_factor = 2 * (len(points) + 32) * U64 * default_step_mm(grid)
    for (name, _), whole, chunked in zip(mlp64.named_parameters(), *grads):
        bound = bound_factor * per_sample[name].abs().sum(0)
        assert torch.all((chunked - whole).abs() <= bound), name


def test_field_gradient_matches_finite_differences_for_sphere_radius():
    grid = VolumeGrid.centered((24, 24, 24), 1.0)
    view = ConeBeamView(31.0, -17.0, 1000.0, 750.0, (24, 24), (0.8, 0.8))
    center = torch.tensor([0.7, -1.1, 0.4], dtype=torch.float64)
    pixels = np.argwhere(np.ones((24, 24), bool))[::7]

    def integral(radius):
        def field(points):
            return torch.sigmoid((radius - torch.linalg.norm(points - center, dim=1)) / 0.8)

        return project_field(field, grid, view, pixels, dtype=torch.float64).sum()

    radius = torch.tensor(6.0, dtype=torch.float64, requires_grad=True)
    integral(radius).backward()
    eps = 1e-5
    plus, minus = (torch.tensor(6.0 + sign * eps, dtype=torch.float64) for sign in (1, -1))
    fd = integral(plus) - integral(minus)
    assert radius.grad.item() > 0
    assert radius.grad.item() == pytest.approx(fd.item() / (2 * eps), rel=1e-6)


# ------------------------------------------------------------------------------ subsets, chunks
def test_pixel_subsets_and_chunking_agree_with_full_image():
    grid = VolumeGrid.centered((24, 20, 28), 0.9)
    view = ConeBeamView(15.0, 35.0, 1000.0, 750.0, (20, 24), (1.2, 1.2))
    torch.manual_seed(1)
    # float64: subsets and chunks change only the order of sums and where a sample sits in a
    # vectorised loop, so they are compared against float64 rounding bounds (float32 results
    # would differ by machine-dependent amounts of the same origin, 2^29 times larger).
    volume = torch.rand(grid.shape, dtype=torch.float64)
    n_ray = _max_samples_per_ray(grid)  # 84 here
    n_all = n_ray * view.detector_shape[0] * view.detector_shape[1]
    # A line integral sums <= n_ray non-negative terms: two orders agree to 2 n_ray u relative.
    # A sample's position may round differently (by a few u in [-1, 1] grid coordinates, i.e.
    # <= 4 u N voxels for N voxels along an axis), which moves a trilinear value of a volume in
    # [0, 1] by at most 4 u N: at most 4 u N x chord (<= the box diagonal) per integral.
    diagonal_mm = float(np.linalg.norm(np.asarray(grid.shape) * grid.spacing))
    rtol, atol = 2 * (n_ray + 32) * U64, 4 * U64 * max(grid.shape) * diagonal_mm
    full = project_volume(volume, grid, view)
    pixels = np.array([[0, 0], [19, 23], [10, 12], [3, 17], [10, 12]])
    subset = project_volume(volume, grid, view, pixels)
    np.testing.assert_allclose(subset.numpy(), full.numpy()[pixels[:, 0], pixels[:, 1]], rtol=rtol, atol=atol)
    as_tensor = project_volume(volume, grid, view, torch.tensor(pixels))
    np.testing.assert_array_equal(as_tensor.numpy(), subset.numpy())
    np.testing.assert_allclose(project_volume(volume, grid, view, chunk_rays=37).numpy(), full.numpy(),
                               rtol=rtol, atol=atol)
    # Chunked (checkpointed) backward gives the unchunked gradient. d/dv_j Σ I² = Σ_s 2 I h w_sj
    # sums at most n_all non-negative terms: 2 n_all u relative. A sample's weight w_sj moves by
    # at most 3 x 4 u N when its position rounds differently (slope <= 1 per axis, 3 axes), which
    # moves a term by at most 2 max(I) h x 12 u N, for at most n_all terms.
    grads = []
    for chunk in (10**6, 37):
        v = volume.clone().requires_grad_()
        (project_volume(v, grid, view, chunk_rays=chunk) ** 2).sum().backward()
        grads.append(v.grad.numpy())
    grad_atol = n_all * 2 * float(full.max()) * default_step_mm(grid) * 12 * U64 * max(grid.shape)
    np.testing.assert_allclose(grads[1], grads[0], rtol=2 * (n_all + 32) * U64, atol=grad_atol)
    # A field of ones integrates to the chord, like a volume of ones (sums of equal terms h).
    field = project_field(lambda p: torch.ones(len(p), dtype=torch.float64), grid, view, pixels, chunk_rays=2,
                          dtype=torch.float64)
    ones = project_volume(torch.ones(grid.shape, dtype=torch.float64), grid, view, pixels)
    np.testing.assert_allclose(field.numpy(), ones.numpy(), rtol=rtol, atol=atol)


def test_project_views_and_mask():
    geometry = Geometry(VolumeGrid.centered((16, 16, 16), 1.0),
                        [ConeBeamView(0.0, 0.0, 1000.0, 750.0, (8, 10), (2.0, 2.0)),
                         ConeBeamView(90.0, 0.0, 1000.0, 750.0, (6, 6), (2.0, 2.0))])
    images = project_views(torch.ones(16, 16, 16), geometry)
    assert [tuple(i.shape) for i in images] == [(8, 10), (6, 6)]
    # α = 0 and α = 90 look along -y and +x: the central rays cross the 16 mm cube nearly straight
    assert images[0][4, 5] == pytest.approx(16.0 / math.cos(math.atan(math.hypot(1.0, 1.0) / 750 * 0.75)), rel=1e-3)
    image = torch.tensor([[0.0, 0.2, 0.5], [0.51, 3.0, -1.0]])
    np.testing.assert_array_equal(projection_mask(image).numpy(), [[False, False, False], [True, True, False]])
    np.testing.assert_array_equal(projection_mask(image, threshold_mm=0.1).numpy(), [[False, True, True],
                                                                                     [True, True, False]])


def test_bad_inputs_raise():
    grid = VolumeGrid.centered((8, 8, 8), 1.0)
    view = ConeBeamView(0.0, 0.0, 1000.0, 750.0, (4, 4), (1.0, 1.0))
    with pytest.raises(VesselfieldError, match=r"volume has shape \(8, 8, 7\), grid has \(8, 8, 8\)"):
        project_volume(torch.zeros(8, 8, 7), grid, view)
    with pytest.raises(VesselfieldError, match="must be a torch tensor"):
        project_volume(np.zeros((8, 8, 8)), grid, view)
    with pytest.raises(VesselfieldError, match="step_mm must be a positive number"):
        project_volume(torch.zeros(8, 8, 8), grid, view, step_mm=0.0)
    with pytest.raises(VesselfieldError, match="chunk_rays must be a positive integer"):
        project_volume(torch.zeros(8, 8, 8), grid, view, chunk_rays=0)
    with pytest.raises(VesselfieldError, match="outside the 4x4 detector"):
        project_volume(torch.zeros(8, 8, 8), grid, view, np.array([[4, 0]]))
    with pytest.raises(VesselfieldError, match="field returned shape"):
        project_field(lambda p: p, grid, view)
    with pytest.raises(VesselfieldError, match="threshold_mm must be finite"):
        projection_mask(torch.zeros(2), float("nan"))


# ------------------------------------------------------------------------------ CUDA
def _assert_devices_agree(device_a: str, device_b: str):
    """The projector's results on two devices, in float64, within the bounds of float64 rounding.

    The devices sum in other orders (atomics, other kernels) and may round a sample's position
    differently. Bounds as in test_pixel_subsets_and_chunking_agree_with_full_image (volumes)
    and test_field_gradient_reaches_mlp_parameters (fields); for fields the sample points are
    recorded on both devices, so the effect of their different rounding is computed exactly.
    """
    grid = VolumeGrid.centered((32, 28, 36), 0.8)
    view = ConeBeamView(29.7, 0.1, 993.0, 757.0605, (48, 40), (0.6, 0.6))
    pixels = np.array([[3, 4], [24, 20], [40, 33]])
    torch.manual_seed(0)
    volume = torch.rand(grid.shape, dtype=torch.float64)
    torch.manual_seed(1)
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    results = {}
    for device in (device_a, device_b):
        v = volume.to(device, copy=True).requires_grad_()
        image = project_volume(v, grid, view, chunk_rays=500)
        (image**2).sum().backward()
        net = copy.deepcopy(mlp).to(device)
        seen = []

        def field(points):
            seen.append(points.detach().cpu())
            return net(points)

        integrals = project_field(field, grid, view, pixels, device=device, dtype=torch.float64)
        integrals.sum().backward()
        results[device] = dict(image=image.detach().cpu(), volume_grad=v.grad.cpu(), field=integrals.detach().cpu(),
                               parameter_grads=[p.grad.cpu() for p in net.parameters()], points=seen[0])
    a, b = results[device_a], results[device_b]
    step = default_step_mm(grid)
    n_ray = _max_samples_per_ray(grid)
    n_all = n_ray * view.detector_shape[0] * view.detector_shape[1]
    diagonal_mm = float(np.linalg.norm(np.asarray(grid.shape) * grid.spacing))
    position = 4 * U64 * max(grid.shape)  # voxels a sample may move by
    torch.testing.assert_close(b["image"], a["image"], rtol=2 * (n_ray + 32) * U64, atol=position * diagonal_mm)
    grad_atol = n_all * 2 * float(a["image"].max()) * step * 3 * position
    torch.testing.assert_close(b["volume_grad"], a["volume_grad"], rtol=2 * (n_all + 32) * U64, atol=grad_atol)
    # Fields: terms h f(p_s) of either sign, so bounds on Σ h |f| (every ray's h <= step).
    pa, pb = a["points"], b["points"]
    assert pa.shape == pb.shape
    with torch.no_grad():
        f_a, f_b = mlp(pa)[:, 0], mlp(pb)[:, 0]
    n = len(pa)
    tolerance = 2 * (n + 32) * U64 * step * f_a.abs().sum() + step * (f_b - f_a).abs().sum()
    assert torch.all((b["field"] - a["field"]).abs() <= tolerance)
    t_a, t_b = _per_sample_parameter_gradients(mlp, pa), _per_sample_parameter_gradients(mlp, pb)
    for (name, _), grad_a, grad_b in zip(mlp.named_parameters(), a["parameter_grads"], b["parameter_grads"]):
        bound = 2 * (n + 32) * U64 * step * t_a[name].abs().sum(0) + step * (t_b[name] - t_a[name]).abs().sum(0)
        assert torch.all((grad_b - grad_a).abs() <= bound), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    grid = VolumeGrid.centered((32, 28, 36), 0.8)
    view = ConeBeamView(29.7, 0.1, 993.0, 757.0605, (48, 40), (0.6, 0.6))
    pixels = np.array([[3, 4], [24, 20], [40, 33]])
    # Results stay on the device they were computed on.
    torch.manual_seed(1)
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).cuda()
    assert project_volume(torch.rand(grid.shape, device="cuda"), grid, view).device.type == "cuda"
    assert project_field(mlp, grid, view, pixels).device.type == "cuda"  # a Module: its parameters' device
    # a plain function needs the device named
    assert project_field(lambda p: mlp(p / 10.0), grid, view, pixels, device="cuda").device.type == "cuda"
    _assert_devices_agree("cpu", "cuda")
