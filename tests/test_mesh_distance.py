"""Point-to-mesh distances (vesselfield.metrics.MeshDistance, surface_distance_to_zero_level_mm):
closed forms for a triangle, a box and an icosphere, brute force on long thin triangles."""

import math

import numpy as np
import pytest

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.metrics import MeshDistance, surface_distance_to_zero_level_mm
from vesselfield.metrics.surface import _closest_points_on_triangles

trimesh = pytest.importorskip("trimesh")

ISO = (1.0, 1.0, 1.0)
ANISO = (0.6, 0.8, 1.4)


def test_distance_to_one_triangle_in_each_voronoi_region():
    triangle = (np.array([[0.0, 0, 0], [4, 0, 0], [0, 3, 0]]), np.array([[0, 1, 2]]))
    points = np.array([
        [1.0, 1.0, 2.0],    # above the face: the height, 2
        [2.0, -1.0, 1.0],   # beside edge AB: to (2, 0, 0), √2
        [-1.0, -1.0, 0.0],  # beyond vertex A: √2
        [4.0, 3.0, 0.0],    # beyond the hypotenuse 3x + 4y = 12: |12 + 12 - 12| / 5 = 2.4
        [6.0, -1.0, -2.0],  # beyond vertex B: √(4 + 1 + 4) = 3
    ])
    expected = [2.0, math.sqrt(2.0), math.sqrt(2.0), 2.4, 3.0]
    # One triangle and float64: only rounding separates the result from the closed form.
    np.testing.assert_allclose(MeshDistance(triangle)(points), expected, rtol=0, atol=1e-12)


def test_distance_to_a_box_is_the_closed_form_inside_and_out():
    half = np.array([2.0, 3.0, 5.0])
    box = trimesh.creation.box(extents=2 * half)
    points = np.random.default_rng(0).uniform(-12, 12, size=(4000, 3))
    outside = np.linalg.norm(np.maximum(np.abs(points) - half, 0.0), axis=1)
    inside = np.min(half - np.abs(points), axis=1)
    expected = np.where(np.all(np.abs(points) <= half, axis=1), inside, outside)
    np.testing.assert_allclose(MeshDistance(box)(points), expected, rtol=0, atol=1e-12)


def test_distance_to_an_icosphere_lies_within_its_sagitta_of_the_sphere():
    radius = 10.0
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    # The vertices lie on the sphere and the faces inside it, down to the nearest face plane:
    # between those two spheres, |d - |r - R|| <= R - (smallest face-plane distance).
    planes = np.abs(np.einsum("ij,ij->i", sphere.face_normals, sphere.triangles_center))
    sagitta = radius - planes.min()
    rng = np.random.default_rng(1)
    directions = rng.normal(size=(2000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    radii = np.r_[rng.uniform(2.0, planes.min(), 1000), rng.uniform(radius, 20.0, 1000)]
    distance = MeshDistance(sphere)(directions * radii[:, None])
    assert np.all(np.abs(distance - np.abs(radii - radius)) <= sagitta + 1e-12)
    assert 0.01 < sagitta < 0.02  # subdivision 4 of radius 10: a fine sphere


def test_exact_on_long_thin_triangles_and_the_fast_mode_bounded():
    # The capsule's sides are 20 mm x 2 mm slivers: the triangles of the nearest sample points on
    # them are not always the nearest triangles, which the exact mode must not miss.
    capsule = trimesh.creation.capsule(height=20.0, radius=8.0, count=[24, 24])
    rng = np.random.default_rng(2)
    points = np.r_[capsule.sample(1500, seed=3) + rng.normal(scale=0.5, size=(1500, 3)),
                   rng.uniform(-20, 20, size=(500, 3))]
    a, b, c = capsule.triangles.transpose(1, 0, 2)
    brute = np.array([np.min(np.linalg.norm(p - _closest_points_on_triangles(np.repeat(p[None], len(a), 0), a, b, c),
                                            axis=1)) for p in points])
    np.testing.assert_allclose(MeshDistance(capsule)(points), brute, rtol=0, atol=1e-9)
    fast = MeshDistance(capsule, exact=False)(points)
    # Never below the truth; at most h (<= the median triangle's centroid-to-vertex distance) above.
    radius = np.linalg.norm(capsule.triangles - capsule.triangles_center[:, None], axis=2).max(axis=1)
    assert np.all(fast >= brute - 1e-9) and np.all(fast <= brute + np.median(radius) + 1e-9)


def test_quadrature_areas_sum_to_the_mesh_area():
    capsule = trimesh.creation.capsule(height=20.0, radius=8.0, count=[24, 24])
    distance = MeshDistance(capsule)
    # Sub-triangles tile their triangle: the areas add up to the area, in float64.
    assert distance.areas.sum() == pytest.approx(capsule.area, rel=1e-12)
    assert len(distance.points) == len(distance.areas) == len(distance.triangle)


def test_inputs_are_checked():
    with pytest.raises(VesselfieldError, match="no faces"):
        MeshDistance((np.zeros((3, 3)), np.zeros((0, 3), int)))
    with pytest.raises(VesselfieldError, match="triangle mesh"):
        MeshDistance("mesh.stl")
    distance = MeshDistance((np.eye(3), np.array([[0, 1, 2]])))
    with pytest.raises(VesselfieldError, match=r"\(N, 3\)"):
        distance(np.zeros((4, 2)))
    assert distance(np.zeros((0, 3))).shape == (0,)


@pytest.mark.parametrize("spacing", [ISO, ANISO], ids=["isotropic", "anisotropic"])
def test_distance_to_the_zero_level_of_a_sphere_sdf(spacing):
    grid = VolumeGrid((30, 30, 30), spacing, (-9.0, -11.0, -20.0))
    center, radius = grid.center_mm + np.array([0.31, -0.27, 0.45]), 5.5
    sdf = np.linalg.norm(grid.voxel_centers_mm(np.float64) - center, axis=-1) - radius
    directions = np.random.default_rng(4).normal(size=(400, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    # Marching cubes of an exact SDF sampled on the grid: measured within 0.09 mm of the sphere
    # over 6 seeds (radii 4-7 mm, on and 2-2.5 mm off the surface) on these grids -> 0.12 x the
    # largest voxel size.
    for offset in (0.0, 2.5, -2.0):
        distance = surface_distance_to_zero_level_mm(sdf, grid, center + (radius + offset) * directions)
        assert np.abs(distance - abs(offset)).max() < 0.12 * max(spacing)
    assert np.all(np.isinf(surface_distance_to_zero_level_mm(sdf + 100.0, grid, directions)))


def test_exact_below_a_threshold_and_a_bound_beyond_it():
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    dist = MeshDistance(sphere)
    rng = np.random.default_rng(0)
    points = rng.uniform(-30, 30, (3000, 3))
    exact = dist(points)
    capped = dist(points, exact_below_mm=3.5)
    below = exact < 3.5
    assert below.sum() > 100 and (~below).sum() > 100
    # Where the exact distance is below the threshold the result is the same computation (float64).
    np.testing.assert_array_equal(capped[below], exact[below])
    # Beyond it: a surface point's distance, so never below the exact one, and at least the threshold.
    assert np.all(capped[~below] >= exact[~below] - 1e-12)
    assert np.all(capped[~below] >= 3.5)
