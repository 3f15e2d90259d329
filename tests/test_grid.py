"""VolumeGrid: index <-> world (LPS mm), centring, bounds, affines, validation."""

import numpy as np
import pytest

from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.tree import VesselTree
from vesselfield.validate import require_binary, require_finite


def test_index_world_round_trip_and_centring():
    g = VolumeGrid.centered((128, 128, 128), 0.8)
    assert g.origin_mm == pytest.approx((-50.8, -50.8, -50.8))
    assert g.center_mm == pytest.approx((0, 0, 0))
    lo, hi = g.bounds_mm
    assert lo == pytest.approx([-51.2] * 3) and hi == pytest.approx([51.2] * 3)
    ijk = np.array([[0, 0, 0], [127, 5.5, 64]])
    xyz = g.index_to_world(ijk)
    assert xyz[1] == pytest.approx([50.8, -50.8 + 4.4, 0.4])
    assert g.world_to_index(xyz) == pytest.approx(ijk)


def test_anisotropic_affines_and_voxel_centres():
    g = VolumeGrid((4, 5, 6), (0.5, 1.0, 2.5), (10.0, -3.0, 7.0))
    assert g.affine_lps @ np.array([1, 2, 3, 1.0]) == pytest.approx([10.5, -1.0, 14.5, 1.0])
    # NIfTI's RAS frame negates x and y.
    assert g.affine_ras @ np.array([1, 2, 3, 1.0]) == pytest.approx([-10.5, 1.0, 14.5, 1.0])
    c = g.voxel_centers_mm()
    assert c.shape == (4, 5, 6, 3) and c[3, 4, 5] == pytest.approx([11.5, 1.0, 19.5])
    assert g.voxel_volume_mm3 == pytest.approx(1.25)
    assert VolumeGrid.from_dict(g.to_dict()) == g
    assert g.contains([[10, -3, 7], [100, 0, 0]]).tolist() == [True, False]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(shape=(4, 4, 0), spacing_mm=(1, 1, 1)), "shape"),
        (dict(shape=(4, 4, 4), spacing_mm=(1, -1, 1)), "spacing_mm"),
        (dict(shape=(4, 4, 4), spacing_mm=(1, 1)), "3 values"),
        (dict(shape=(4, 4, 4), spacing_mm=(1, 1, 1), origin_mm=(0, float("nan"), 0)), "origin_mm"),
    ],
)
def test_bad_grids_are_user_errors(kwargs, message):
    with pytest.raises(VesselfieldError, match=message):
        VolumeGrid(**kwargs)


def test_grid_mismatch_message_names_both():
    a = VolumeGrid((4, 4, 4), (1, 1, 1))
    b = VolumeGrid((4, 4, 4), (1, 1, 1.5))
    with pytest.raises(VesselfieldError, match="different grids"):
        a.require_same(b, "prediction and ground truth")
    a.require_same(VolumeGrid((4, 4, 4), (1, 1, 1.0000001)))


def test_validators():
    with pytest.raises(VesselfieldError, match="1 NaN"):
        require_finite(np.array([1.0, np.nan]), "x")
    assert require_binary(np.array([0, 1, 1]), "m").tolist() == [False, True, True]
    with pytest.raises(VesselfieldError, match="binary"):
        require_binary(np.array([0, 0.5, 1]), "m")


def test_tree_segments_and_validation():
    t = VesselTree([[0, 0, 0], [0, 0, 5], [0, 3, 8], [20, 0, 0]], [2, 1.5, 1, 1], [-1, 0, 1, -1])
    a, b, ra, rb = t.segments()
    # Two child->parent tubes plus the isolated root as a zero-length (sphere) segment.
    assert len(a) == 3 and ra.tolist() == [1.5, 1.0, 1.0] and rb.tolist() == [2.0, 1.5, 1.0]
    assert (a[2] == b[2]).all()
    lo, hi = t.bounds_mm()
    assert lo == pytest.approx([-2, -2, -2]) and hi == pytest.approx([21, 4, 9])
    with pytest.raises(VesselfieldError, match="positive"):
        VesselTree([[0, 0, 0]], [0.0], [-1])
    with pytest.raises(VesselfieldError, match="parent"):
        VesselTree([[0, 0, 0], [1, 0, 0]], [1, 1], [-1, 5])
