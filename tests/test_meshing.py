"""Marching cubes into world mm: analytic spheres and tubes on anisotropic grids."""

import numpy as np
import pytest
from conftest import ball, sphere_sdf

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.meshing import infer_inside, mesh_from_volume, mesh_summary


def sphere_sdf_volume(grid, center_mm, radius_mm):
    """(X, Y, Z) float32 SDF of a sphere at the grid's voxel centres, as a saved volume holds it."""
    return sphere_sdf(grid.voxel_centers_mm(np.float64), center_mm, radius_mm).astype(np.float32)


def test_sphere_sdf_mesh_lies_on_the_sphere_with_anisotropic_spacing():
    grid = VolumeGrid.centered((40, 50, 30), (0.5, 0.4, 0.7), (3.0, -2.0, 5.0))
    sdf = sphere_sdf_volume(grid, (3.0, -2.0, 5.0), 6.0)
    mesh = mesh_from_volume(sdf, grid)
    radial = np.linalg.norm(mesh.vertices - [3.0, -2.0, 5.0], axis=1)
    # Linear interpolation of an exact SDF along voxel edges is off by at most ~h^2/(8R) ≈ 0.01 mm.
    assert np.abs(radial - 6.0).max() < 0.02
    s = mesh_summary(mesh)
    assert s["watertight"] and s["components"] == 1
    assert s["volume_mm3"] == pytest.approx(4 / 3 * np.pi * 6.0**3, rel=0.01)
    assert mesh.volume > 0  # outward normals


def test_occupancy_mesh_volume_matches_voxel_count():
    grid = VolumeGrid.centered((48, 48, 48), (0.5, 0.5, 0.5))
    occ = ball(grid, (0, 0, 0), 8.0)
    assert infer_inside(occ) == "above"
    mesh = mesh_from_volume(occ, grid)  # level 0.5 by default
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(occ.sum() * grid.voxel_volume_mm3, rel=0.03)


def test_shape_cut_by_the_grid_border_is_closed():
    # A tube along z that leaves the grid at both ends: padding closes the caps.
    grid = VolumeGrid.centered((30, 30, 20), 0.5)
    p = grid.voxel_centers_mm(np.float64)
    sdf = (np.hypot(p[..., 0], p[..., 1]) - 4.0).astype(np.float32)
    mesh = mesh_from_volume(sdf, grid)
    assert mesh.is_watertight
    length = grid.bounds_mm[1][2] - grid.bounds_mm[0][2] - grid.spacing[2]  # between end voxel centres
    assert mesh.volume == pytest.approx(np.pi * 16.0 * length, rel=0.02)


def test_largest_component_keeps_the_bigger_sphere():
    grid = VolumeGrid.centered((60, 30, 30), 0.5)
    sdf = np.minimum(sphere_sdf_volume(grid, (-7, 0, 0), 5.0), sphere_sdf_volume(grid, (8, 0, 0), 3.0))
    both = mesh_from_volume(sdf, grid)
    assert mesh_summary(both)["components"] == 2
    big = mesh_from_volume(sdf, grid, largest_component=True)
    assert mesh_summary(big)["components"] == 1
    assert big.centroid[0] == pytest.approx(-7.0, abs=0.05)


def test_no_surface_and_nan_are_user_errors():
    grid = VolumeGrid.centered((8, 8, 8), 1.0)
    with pytest.raises(VesselfieldError, match="no surface"):
        mesh_from_volume(np.ones(grid.shape, np.float32), grid, 0.5, inside="above")
    bad = sphere_sdf_volume(grid, (0, 0, 0), 2.0)
    bad[0, 0, 0] = np.nan
    with pytest.raises(VesselfieldError, match="NaN"):
        mesh_from_volume(bad, grid)
    with pytest.raises(VesselfieldError, match="shape"):
        mesh_from_volume(np.zeros((4, 4, 4), np.float32), grid)
