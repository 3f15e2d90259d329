"""Occupancy volumes (vesselfield.meshing.occupancy): mesh voxelisation and box-overlap resampling.

Every expected value is a closed form (block means, box volumes, exact overlaps) or a volume that
the operation conserves by construction; float32 arithmetic sets the tolerances.
"""

from __future__ import annotations

import numpy as np
import pytest

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.meshing import resample_occupancy, voxelize_mesh

trimesh = pytest.importorskip("trimesh")


def mass_mm3(volume, grid: VolumeGrid) -> float:
    return float(np.sum(volume, dtype=np.float64) * grid.voxel_volume_mm3)


def centroid_mm(volume, grid: VolumeGrid) -> np.ndarray:
    w = np.asarray(volume, np.float64)
    return (w[..., None] * grid.voxel_centers_mm(np.float64)).sum((0, 1, 2)) / w.sum()


def box_overlap_mm3(a: VolumeGrid, b: VolumeGrid) -> float:
    lo = np.maximum(a.bounds_mm[0], b.bounds_mm[0])
    hi = np.minimum(a.bounds_mm[1], b.bounds_mm[1])
    return float(np.prod(np.clip(hi - lo, 0.0, None)))


# ------------------------------------------------------------------------------ resampling
def test_nested_voxels_give_the_block_mean():
    rng = np.random.default_rng(0)
    mask = rng.random((8, 6, 4)) > 0.5
    grid = VolumeGrid(mask.shape, (0.4, 0.4, 0.4), (10.2, -3.8, 5.2))
    out = VolumeGrid((4, 3, 2), (0.8, 0.8, 0.8), (10.4, -3.6, 5.4))
    expected = mask.reshape(4, 2, 3, 2, 2, 2).mean(axis=(1, 3, 5))
    # Means of 8 values in {0, 1}: float32 holds them to 1e-7.
    np.testing.assert_allclose(resample_occupancy(mask, grid, out), expected, atol=1e-6)


def test_the_same_grid_is_the_identity():
    rng = np.random.default_rng(1)
    occupancy = rng.random((7, 9, 5)).astype(np.float32)
    grid = VolumeGrid(occupancy.shape, (0.37, 0.41, 1.25), (1.03, 2.71, -3.3))
    # Each weight is (voxel length) / (voxel length) = 1 up to float rounding of the box edges.
    np.testing.assert_allclose(resample_occupancy(occupancy, grid, grid), occupancy, atol=1e-6)


@pytest.mark.parametrize("spacing_out", [0.8, 0.13], ids=["down", "up"])
def test_volume_is_conserved_on_unaligned_anisotropic_grids(spacing_out):
    rng = np.random.default_rng(2)
    occupancy = rng.random((30, 25, 40)).astype(np.float32) * (rng.random((30, 25, 40)) > 0.6)
    grid = VolumeGrid(occupancy.shape, (0.37, 0.41, 0.25), (1.03, 2.71, -3.3))
    # The output box holds the whole source box (both ways), so all of the volume must arrive.
    n = int(np.ceil(14.0 / spacing_out)) + 2
    out = VolumeGrid.centered((n, n, n), spacing_out, grid.center_mm + 0.123)
    moved = resample_occupancy(occupancy, grid, out)
    assert moved.dtype == np.float32 and moved.min() >= 0.0 and moved.max() <= 1.0
    # float32 weights, float64 sums: measured 3e-9 relative; 1e-5 leaves a wide margin.
    assert mass_mm3(moved, out) == pytest.approx(mass_mm3(occupancy, grid), rel=1e-5)
    # Each bit of volume moves at most half an output voxel per axis (box filter), so the centroid does too.
    assert np.all(np.abs(centroid_mm(moved, out) - centroid_mm(occupancy, grid)) <= spacing_out / 2 + 1e-4)


def test_upsampling_copies_each_source_voxel_into_the_voxels_it_holds():
    occupancy = np.zeros((3, 3, 3), np.float32)
    occupancy[1, 1, 1], occupancy[0, 2, 1] = 0.6, 1.0
    grid = VolumeGrid(occupancy.shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    # Voxels of 0.25 mm, aligned so that each lies wholly inside one source voxel.
    fine = VolumeGrid((12, 12, 12), (0.25, 0.25, 0.25), (-0.375, -0.375, -0.375))
    moved = resample_occupancy(occupancy, grid, fine)
    np.testing.assert_allclose(moved, np.repeat(np.repeat(np.repeat(occupancy, 4, 0), 4, 1), 4, 2), atol=1e-6)


def test_a_thin_vessel_keeps_its_volume_when_downsampled():
    # A one-voxel line (0.3 mm square section) crossing 0.8 mm voxels at an unaligned offset: the
    # coarse voxels it crosses are only (0.3 / 0.8)² = 14 % full, and its volume is all there.
    grid = VolumeGrid((60, 60, 60), (0.3, 0.3, 0.3), (0.0, 0.0, 0.0))
    line = np.zeros(grid.shape, bool)
    line[31, 17, :] = True
    out = VolumeGrid((24, 24, 24), (0.8, 0.8, 0.8), (0.07, -0.11, 0.05))
    moved = resample_occupancy(line, grid, out)
    inside = box_overlap_mm3(VolumeGrid((1, 1, 60), (0.3, 0.3, 0.3), (31 * 0.3, 17 * 0.3, 0.0)), out)
    assert mass_mm3(moved, out) == pytest.approx(inside, rel=1e-5)
    assert moved.max() <= (0.3 / 0.8) ** 2 + 1e-6


def test_only_the_part_inside_the_target_box_arrives_and_outside_is_zero():
    grid = VolumeGrid((20, 20, 20), (1.0, 1.0, 1.0), (-9.5, -9.5, -9.5))
    ones = np.ones(grid.shape, np.float32)
    shifted = VolumeGrid((20, 20, 20), (0.7, 0.7, 0.7), (-1.52, -9.9, -3.1))
    moved = resample_occupancy(ones, grid, shifted)
    # A uniform block: the result is the overlap of the two boxes, voxel by voxel and in total.
    assert mass_mm3(moved, shifted) == pytest.approx(box_overlap_mm3(grid, shifted), rel=1e-5)
    centres = shifted.voxel_centers_mm(np.float64)
    outside = np.any(centres - 0.35 >= 10.0, axis=-1) | np.any(centres + 0.35 <= -10.0, axis=-1)
    assert np.all(moved[outside] == 0.0) and np.allclose(moved[np.all(np.abs(centres) + 0.35 <= 10.0, axis=-1)], 1.0)
    far = VolumeGrid((4, 4, 4), (1.0, 1.0, 1.0), (100.0, 0.0, 0.0))
    assert not resample_occupancy(ones, grid, far).any()


def test_bad_occupancies_are_refused():
    grid = VolumeGrid((2, 2, 2), (1.0, 1.0, 1.0))
    with pytest.raises(VesselfieldError, match=r"must lie in \[0, 1\]"):
        resample_occupancy(np.full((2, 2, 2), 255.0), grid, grid)
    with pytest.raises(VesselfieldError):
        resample_occupancy(np.zeros((3, 2, 2)), grid, grid)
    with pytest.raises(VesselfieldError):
        resample_occupancy(np.full((2, 2, 2), np.nan), grid, grid)


# ------------------------------------------------------------------------------ voxelisation
def test_a_box_on_voxel_boundaries_is_voxelised_exactly():
    grid = VolumeGrid((10, 10, 12), (1.0, 1.0, 1.0), (0.5, 0.5, 0.5))  # voxel k spans [k, k + 1) mm
    box = trimesh.creation.box(extents=(4.0, 3.0, 5.3))
    box.apply_translation((2.0 + 2.0, 3.0 + 1.5, 2.35 + 2.65))  # x [2, 6], y [3, 6], z [2.35, 7.65]
    occupancy = voxelize_mesh(box, grid)
    expected = np.zeros(grid.shape)
    z = np.arange(12)
    expected[2:6, 3:6, :] = np.clip(np.minimum(z + 1, 7.65) - np.maximum(z, 2.35), 0, 1)
    # Exact along z; x and y faces between sub-columns: only float rounding of the crossings.
    np.testing.assert_allclose(occupancy, expected, atol=1e-6)


def test_a_sphere_keeps_its_volume_and_centre():
    grid = VolumeGrid.centered((32, 32, 32), 3.0)
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=20.0)
    sphere.apply_translation((3.3, 1.1, -2.2))
    occupancy = voxelize_mesh(sphere, grid)
    # 3 x 3 rays per 3 mm voxel column: measured 0.03 % off the mesh's volume, centre within 0.003 mm.
    assert mass_mm3(occupancy, grid) == pytest.approx(sphere.volume, rel=1e-3)
    assert np.allclose(centroid_mm(occupancy, grid), (3.3, 1.1, -2.2), atol=0.01)


def test_overlapping_pieces_count_once_and_parts_outside_are_cut():
    grid = VolumeGrid((20, 20, 20), (1.0, 1.0, 1.0), (0.5, 0.5, 0.5))
    a = trimesh.creation.box(extents=(4.0, 4.0, 4.0))
    a.apply_translation((6.0, 6.0, 6.0))  # [4, 8]^3
    b = a.copy()
    b.apply_translation((2.0, 0.0, 0.0))  # [6, 10] x [4, 8]^2: overlaps a in a 2 x 4 x 4 block
    c = trimesh.creation.box(extents=(4.0, 4.0, 4.0))
    c.apply_translation((19.0, 10.0, 10.0))  # half outside the grid's box [0, 20]^3
    occupancy = voxelize_mesh(trimesh.util.concatenate([a, b, c]), grid)
    # a ∪ b = [4, 10] x [4, 8]²: 96 mm³ (not 128); c's part inside: [17, 20] x [8, 12]²: 48 mm³.
    assert mass_mm3(occupancy, grid) == pytest.approx(96 + 48, rel=1e-6)


def test_bad_meshes_are_refused():
    grid = VolumeGrid((8, 8, 8), (1.0, 1.0, 1.0))
    open_box = trimesh.creation.box(extents=(4.0, 4.0, 4.0))
    open_box.apply_translation((3.5, 3.5, 3.5))
    # Without one of its top triangles, the rays (along z) under it cross the box once.
    top = np.flatnonzero(open_box.face_normals[:, 2] > 0.5)[0]
    open_box.update_faces(np.arange(len(open_box.faces)) != top)
    with pytest.raises(VesselfieldError, match="not closed"):
        voxelize_mesh(open_box, grid)
    with pytest.raises(VesselfieldError, match="supersample"):
        voxelize_mesh(open_box, grid, supersample=0)
    with pytest.raises(VesselfieldError, match="no faces"):
        voxelize_mesh(trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), int)), grid)
