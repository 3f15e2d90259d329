"""The sparse projection matrix reproduces the projector exactly; the visual hull keeps the vessel."""

import numpy as np
import pytest
import torch

from vesselfield.errors import VesselfieldError
from vesselfield.geometry import ConeBeamView, Geometry
from vesselfield.grid import VolumeGrid
from vesselfield.render import project_volume, projection_mask
from vesselfield.render.system_matrix import all_pixels, ray_voxel_matrix, visual_hull

GRID = VolumeGrid.centered((20, 18, 16), (1.0, 1.2, 0.9), (1.0, -2.0, 0.5))
VIEWS = [
    ConeBeamView(29.7, 0.1, 993.0, 757.0605, (24, 28), (1.5, 1.4)),
    ConeBeamView(-40.0, 25.0, 1055.0, 756.9934, (26, 22), (1.6, 1.6)),
]


def random_volume(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(GRID.shape, generator=g, dtype=torch.float64).float()


@pytest.mark.parametrize("view", VIEWS)
def test_matrix_equals_projector_on_every_pixel(view):
    vol = random_volume()
    A = ray_voxel_matrix(GRID, view)
    expected = project_volume(vol, GRID, view).reshape(-1)
    assert torch.allclose(A.project(vol), expected, rtol=1e-5, atol=1e-4)
    assert A.matrix.shape == (view.detector_shape[0] * view.detector_shape[1], GRID.num_voxels)


def test_matrix_on_pixel_subset_and_voxel_mask():
    view = VIEWS[1]
    vol = random_volume(1)
    mask = np.zeros(GRID.shape, bool)
    mask[4:15, 3:12, 2:14] = True
    vol_masked = vol * torch.from_numpy(mask)
    pixels = all_pixels(view)[::7]
    A = ray_voxel_matrix(GRID, view, pixels, voxel_mask=mask)
    assert A.matrix.shape == (len(pixels), mask.sum())
    expected = project_volume(vol_masked, GRID, view, pixels)
    assert torch.allclose(A.project(vol_masked), expected, rtol=1e-5, atol=1e-4)
    # Column values give the same as the full volume.
    cols = vol_masked.reshape(-1)[A.voxel_index]
    assert torch.allclose(A.project(cols), expected, rtol=1e-5, atol=1e-4)


def test_gradient_is_the_transpose():
    view = VIEWS[0]
    A = ray_voxel_matrix(GRID, view)
    x = random_volume(2).reshape(-1).requires_grad_()
    w = torch.rand(A.matrix.shape[0])
    (A.project(x) * w).sum().backward()
    dense = A.matrix.to_dense()
    assert torch.allclose(x.grad, dense.t() @ w, rtol=1e-5, atol=1e-5)
    # The same gradient as autograd through the projector itself.
    v = random_volume(2).requires_grad_()
    (project_volume(v, GRID, view).reshape(-1) * w).sum().backward()
    assert torch.allclose(x.grad, v.grad.reshape(-1), rtol=1e-4, atol=1e-4)


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
