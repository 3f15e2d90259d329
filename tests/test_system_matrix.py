"""The sparse projection matrix reproduces the projector exactly; the visual hull keeps the vessel."""

import math

import numpy as np
import pytest
import torch

from vesselfield.errors import VesselfieldError
from vesselfield.geometry import ConeBeamView, Geometry
from vesselfield.grid import VolumeGrid
from vesselfield.render import default_step_mm, project_volume, projection_mask
from vesselfield.render.system_matrix import all_pixels, ray_voxel_matrix, visual_hull

GRID = VolumeGrid.centered((20, 18, 16), (1.0, 1.2, 0.9), (1.0, -2.0, 0.5))
VIEWS = [
    ConeBeamView(29.7, 0.1, 993.0, 757.0605, (24, 28), (1.5, 1.4)),
    ConeBeamView(-40.0, 25.0, 1055.0, 756.9934, (26, 22), (1.6, 1.6)),
]


#: Unit roundoffs (one rounding errs by at most u relative) of float32 and float64.
U32, U64 = 2.0**-24, 2.0**-53


def random_volume(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(GRID.shape, generator=g, dtype=torch.float64).float()


def _max_nnz_per_row(matrix: torch.Tensor) -> int:
    return int(matrix.crow_indices().diff().max())


def _float64_agreement(n_samples: int, moved_mm: float) -> dict:
    """rtol/atol for A's float32 entries applied in float64 against the float64 projector.

    Everything here is non-negative (trilinear weights x step lengths, volumes and ray weights
    in [0, 1]), so relative bounds hold: storing each entry in float32 errs by at most U32
    relative; both sides sum the 8 corner terms of at most ``n_samples`` samples, and two
    orders of summing n float64 terms differ by at most 2 n U64 relative (Higham 2002, eq. 4.4).
    The matrix and the projector also compute a sample's position differently (mm vs
    normalised grid coordinates): by a few U64 in voxel units, <= 4 U64 N voxels for N voxels
    along an axis, which moves each of the sample's trilinear weights by at most 3 x that
    (slope <= 1 per axis). ``moved_mm`` bounds the summed step lengths of those samples (a
    chord for a line integral).
    """
    return dict(rtol=U32 + 2 * (8 * n_samples + 32) * U64, atol=12 * U64 * max(GRID.shape) * moved_mm)


#: The longest chord through the box (mm), and the most samples one ray takes.
DIAGONAL_MM = float(np.linalg.norm(np.asarray(GRID.shape) * GRID.spacing))
RAY_SAMPLES = math.ceil(DIAGONAL_MM / default_step_mm(GRID))


def _assert_float32_product_close(A, values: torch.Tensor, exact: torch.Tensor):
    """``A.project(values)`` (float32 sparse products) against the same product in float64.

    A row of at most n non-negative products is summed in float32 to within (n + 1) U32
    relative (one rounding per product, n - 1 per sum; Higham 2002, eq. 3.5).
    """
    rtol = (_max_nnz_per_row(A.matrix) + 1) * U32
    torch.testing.assert_close(A.project(values).double(), exact, rtol=rtol, atol=0.0)


@pytest.mark.parametrize("view", VIEWS)
def test_matrix_equals_projector_on_every_pixel(view):
    vol = random_volume()
    A = ray_voxel_matrix(GRID, view)
    assert A.matrix.shape == (view.detector_shape[0] * view.detector_shape[1], GRID.num_voxels)
    # Compared in float64: the float32 projector and matrix would differ by rounding alone.
    expected = project_volume(vol.double(), GRID, view).reshape(-1)
    product = A.matrix.to(torch.float64) @ vol.double().reshape(-1)
    torch.testing.assert_close(product, expected, **_float64_agreement(RAY_SAMPLES, DIAGONAL_MM))
    _assert_float32_product_close(A, vol, product)


def test_matrix_on_pixel_subset_and_voxel_mask():
    view = VIEWS[1]
    vol = random_volume(1)
    mask = np.zeros(GRID.shape, bool)
    mask[4:15, 3:12, 2:14] = True
    vol_masked = vol * torch.from_numpy(mask)
    pixels = all_pixels(view)[::7]
    A = ray_voxel_matrix(GRID, view, pixels, voxel_mask=mask)
    assert A.matrix.shape == (len(pixels), mask.sum())
    expected = project_volume(vol_masked.double(), GRID, view, pixels)
    cols = vol_masked.reshape(-1)[A.voxel_index]
    product = A.matrix.to(torch.float64) @ cols.double()
    torch.testing.assert_close(product, expected, **_float64_agreement(RAY_SAMPLES, DIAGONAL_MM))
    # The full volume and its column values give the same line integrals (the same float32 sums).
    _assert_float32_product_close(A, vol_masked, product)
    assert torch.equal(A.project(cols), A.project(vol_masked))


def test_gradient_is_the_transpose():
    view = VIEWS[0]
    A = ray_voxel_matrix(GRID, view)
    x = random_volume(2).reshape(-1).requires_grad_()
    w = torch.rand(A.matrix.shape[0])
    (A.project(x) * w).sum().backward()
    # A^T w in float64 from the float32 entries and weights: the float32 backward sums at most
    # n non-negative products per column, within (n + 1) U32 relative (as a row above).
    exact = A.matrix_t.to(torch.float64) @ w.double()
    column_nnz = _max_nnz_per_row(A.matrix_t)
    torch.testing.assert_close(x.grad.double(), exact, rtol=(column_nnz + 1) * U32, atol=0.0)
    torch.testing.assert_close(A.matrix.to_dense().t().double() @ w.double(), exact, rtol=2 * (column_nnz + 32) * U64,
                               atol=0.0)
    # The same gradient as autograd through the projector itself, in float64 (bounds as above):
    # a voxel's gradient gathers the samples within one voxel of it, on each of its column_nnz
    # rays at most (2 voxels + 1 step) / step of them, each with weight h <= one step.
    v = random_volume(2).double().requires_grad_()
    (project_volume(v, GRID, view).reshape(-1) * w.double()).sum().backward()
    step_mm = default_step_mm(GRID)
    near_samples = column_nnz * math.ceil((2 * GRID.spacing.max() + step_mm) / step_mm)
    torch.testing.assert_close(v.grad.reshape(-1), exact, **_float64_agreement(near_samples, near_samples * step_mm))


def test_visual_hull_contains_the_object_and_is_bounded():
    grid = VolumeGrid.centered((32, 32, 32), 1.0)
    p = grid.voxel_centers_mm(np.float64)
    ball = (np.linalg.norm(p - [3.0, -2.0, 1.0], axis=-1) < 6.0).astype(np.float32)
    views = [ConeBeamView(0.0, 0.0, 1000.0, 750.0, (48, 48), (1.0, 1.0)),
             ConeBeamView(90.0, 0.0, 1000.0, 750.0, (48, 48), (1.0, 1.0))]
    geometry = Geometry(grid, views)
    masks = [projection_mask(project_volume(torch.from_numpy(ball), grid, v)).numpy() for v in views]
    hull = visual_hull(masks, geometry, dilate_voxels=0)
    assert hull[ball > 0].all()
    # Two orthogonal silhouettes of a sphere carve the intersection of two cylinders:
    # volume 16 r^3 / 3 against the sphere's 4 pi r^3 / 3 (ratio 4 / pi = 1.27); magnification
    # and the 0.5 mm mask threshold widen it slightly.
    ratio = hull.sum() / ball.sum()
    assert 1.2 < ratio < 1.6
    with pytest.raises(VesselfieldError, match="masks for 2 views"):
        visual_hull(masks[:1], geometry)
    with pytest.raises(VesselfieldError, match="shape"):
        visual_hull([masks[0][:10], masks[1]], geometry)
