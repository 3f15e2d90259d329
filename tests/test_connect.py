"""Bridging a reconstruction's pieces into one tree, and counting pieces and breaks."""

from __future__ import annotations

import numpy as np
import pytest

from vesselfield.grid import VolumeGrid
from vesselfield.meshing.connect import connect_components, topology_report

GRID = VolumeGrid.centered((64, 32, 32), 0.5)


def tube(radius_mm=1.2, x_range=(-14.0, 14.0)):
    p = GRID.voxel_centers_mm(np.float64)
    d = np.hypot(p[..., 1], p[..., 2])
    inside = (d <= radius_mm) & (p[..., 0] >= x_range[0]) & (p[..., 0] <= x_range[1])
    return inside


def beads(gaps_mm=(-6.0, 0.0, 6.0), gap_width_mm=2.0):
    """The tube with slabs of ``gap_width_mm`` cut out at the given x: a chain of beads."""
    x = GRID.voxel_centers_mm(np.float64)[..., 0]
    out = tube().copy()
    for g in gaps_mm:
        out[np.abs(x - g) < gap_width_mm / 2] = False
    return out


def test_topology_report_counts_components_and_breaks():
    truth = tube()
    rep = topology_report(beads(), truth)
    assert rep["components"] == 4 and rep["target_components"] == 1
    # 3 cuts of 2 mm (4 voxels of 0.5 mm; the one-voxel tolerance closes 2 of them): 4 pieces, 3 breaks.
    assert rep["skeleton_breaks"] == 3
    full = topology_report(truth, truth)
    assert full == {"components": 1, "largest_component_fraction": 1.0, "target_components": 1, "skeleton_breaks": 0}


def test_bead_chain_is_bridged_into_one_tube_within_the_hull():
    from scipy import ndimage

    hull = ndimage.binary_dilation(tube(), iterations=2)
    occ = beads().astype(np.float32)
    out, rep = connect_components(occ, GRID, hull, max_gap_mm=3.0)
    assert rep["components_before"] == 4 and rep["bridged"] == 3 and rep["components_after"] == 1
    # Each gap is 2 mm wide (4 voxels): the path's empty steps add up to 2 mm, +/- one step of 0.5 mm.
    assert all(1.5 <= g <= 2.5 for g in rep["gaps_mm"])
    assert topology_report(out >= 0.5, tube())["skeleton_breaks"] == 0
    # Nothing outside the hull, and the pieces themselves unchanged.
    assert not (out[~hull] > 0).any() and np.array_equal(out[beads()], occ[beads()])


def test_gaps_longer_than_the_limit_stay_and_small_fragments_go():
    occ = beads(gaps_mm=(0.0,), gap_width_mm=6.0).astype(np.float32)
    p = GRID.voxel_centers_mm(np.float64)
    speck = np.linalg.norm(p - np.array([0.0, 5.5, 5.5]), axis=-1) <= 0.6
    occ[speck] = 1.0
    out, rep = connect_components(occ, GRID, None, max_gap_mm=2.0, min_fragment_fraction=0.02)
    # Two halves of the tube 6 mm apart: not bridged (> 2 mm), both kept (each ~half the volume); the speck
    # (a few voxels, far from both) is removed.
    assert rep["bridged"] == 0 and rep["removed"] == 1 and rep["components_after"] == 2
    assert not (out[speck] > 0).any()


def test_one_piece_is_left_alone():
    occ = tube().astype(np.float32) * 0.9
    out, rep = connect_components(occ, GRID, None)
    assert np.array_equal(out, occ) and rep["components_before"] == 1 and rep["bridged"] == 0


@pytest.mark.parametrize("bad", [np.zeros((4, 4)), np.zeros((2, 2, 2, 2))])
def test_bad_shapes(bad):
    from vesselfield.errors import VesselfieldError

    with pytest.raises(VesselfieldError, match="3D volume"):
        connect_components(bad, GRID)
