"""vesselfield.meshing.signed_distance: label -> SDF on anisotropic grids, against closed forms and a brute force."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.meshing.signed_distance import (
    distance_to_voxel_boxes,
    signed_distance_from_mask,
    signed_distance_volume,
)


def brute_force(mask, spacing):
    """Distance from every voxel centre to every box of ``mask``, minimised: the definition itself."""
    centres = np.argwhere(np.ones(mask.shape, bool))
    out = np.full(len(centres), np.inf)
    for q in np.argwhere(mask):
        gap = np.maximum(np.abs(centres - q) - 0.5, 0.0) * spacing
        out = np.minimum(out, np.sqrt((gap ** 2).sum(axis=1)))
    return out.reshape(mask.shape)


def random_masks():
    for seed in range(12):
        rng = np.random.default_rng(seed)
        mask = rng.random((13, 11, 9)) < 0.08
        yield ndimage.binary_dilation(mask) if seed % 2 else mask


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 0.7, 2.0), (0.4, 0.4, 2.5)])
def test_exact_transform_equals_the_definition(spacing):
    spacing = np.asarray(spacing)
    for mask in random_masks():
        # The half-voxel lattice is exact: only float64 rounding of a sqrt separates the two.
        np.testing.assert_allclose(distance_to_voxel_boxes(mask, spacing, exact=True), brute_force(mask, spacing),
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("spacing, bound", [((1.0, 1.0, 1.0), 0.33), ((0.5, 0.7, 2.0), 0.40), ((0.4, 0.4, 2.5), 0.42)])
def test_fast_transform_is_an_upper_bound_within_the_documented_error(spacing, bound):
    """The fast transform measures to one box, so it is never below the true distance; over these
    12 random masks the largest excess was 0.321, 0.375 and 0.406 x the coarse spacing (the
    documented figures); the bound adds a few hundredths. Deterministic: no seeds or threads
    change these integer masks' transforms."""
    spacing = np.asarray(spacing)
    worst = 0.0
    for mask in random_masks():
        fast, exact = distance_to_voxel_boxes(mask, spacing), brute_force(mask, spacing)
        assert (fast >= exact - 1e-12).all()
        worst = max(worst, float((fast - exact).max()) / spacing.max())
    assert worst < bound


@pytest.mark.parametrize("exact", [False, True])
def test_slabs_across_each_axis_are_exact_with_anisotropic_voxels(exact):
    """A half-space crossed along one axis: the surface lies half a voxel beyond the last inside
    centre, whatever that axis's spacing, so |d| = (k + 1/2) Δ_a at the k-th centre off it."""
    spacing = np.array([0.5, 0.8, 3.0])
    for axis in range(3):
        mask = np.zeros((8, 8, 8), bool)
        index = [slice(None)] * 3
        index[axis] = slice(0, 4)
        mask[tuple(index)] = True
        sdf = signed_distance_from_mask(mask, spacing, exact=exact)
        k = np.arange(8) - 3.5  # centre positions relative to the face, in voxels
        expected = np.sign(k) * np.abs(k) * spacing[axis]
        line = np.moveaxis(sdf, axis, 0)[:, 4, 4]
        np.testing.assert_allclose(line, expected, atol=1e-6)


def test_ball_signs_and_distance_from_the_sphere():
    grid = VolumeGrid((40, 40, 24), (0.5, 0.5, 1.0), (-9.75, -9.75, -11.5))
    p = grid.voxel_centers_mm(np.float64)
    r = np.linalg.norm(p, axis=-1)
    occupancy = (r < 6.0).astype(np.float32)
    sdf = signed_distance_volume(occupancy, grid)
    assert sdf.dtype == np.float32 and sdf.shape == grid.shape
    assert (sdf[occupancy >= 0.5] < 0).all() and (sdf[occupancy < 0.5] > 0).all()
    # The staircase of a voxelised sphere lies within half a voxel diagonal of the sphere
    # (sqrt(0.25^2 + 0.25^2 + 0.5^2) = 0.61 mm) and the fast transform adds at most 0.42 x 1 mm.
    shell = np.abs(r - 6.0) < 3.0
    assert np.abs(sdf[shell] - (r[shell] - 6.0)).max() < 0.62 + 0.42


def test_empty_full_and_bad_masks():
    assert np.isposinf(signed_distance_from_mask(np.zeros((3, 3, 3)), 1.0)).all()
    assert np.isneginf(signed_distance_from_mask(np.ones((3, 3, 3), bool), 1.0)).all()
    with pytest.raises(VesselfieldError, match="binary"):
        signed_distance_from_mask(np.full((3, 3, 3), 0.5), 1.0)
    with pytest.raises(VesselfieldError, match="spacing_mm"):
        signed_distance_from_mask(np.eye(3, dtype=bool)[None].repeat(3, 0), (1.0, -1.0, 1.0))
