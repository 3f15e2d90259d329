"""Self-calibration of two C-arm views from the trees' landmarks (methods/xray_pose.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import small_two_view_geometry
from vesselfield.errors import VesselfieldError
from vesselfield.geometry import Geometry
from vesselfield.methods.xray_pose import landmarks, refine_poses, relative_rotation_error_deg
from vesselfield.phantoms import TreePhantom, coronary_tree
from vesselfield.render.preprocess import vessel_mask
from vesselfield.render.projector import project_volume

RECORDED = small_two_view_geometry()
GRID = RECORDED.volume


@pytest.fixture(scope="module")
def phantom():
    tree = coronary_tree("left", seed=0)
    occ = torch.from_numpy(np.asarray(TreePhantom(tree).occupancy(GRID), np.float32))
    return tree, occ


def masks_from(occ, geometry):
    return [vessel_mask(project_volume(occ, GRID, v).numpy()).mask for v in geometry.views]


def ray_gap_mm(points, view0, view1, true1):
    """Mean distance between the two rays that see each 3D point: zero when the two views agree."""
    o0, d0 = view0.rays(view0.project_points(points))
    o1, d1 = view1.rays(true1.project_points(points))
    n = np.cross(d0, d1)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    return float(np.abs(((o1 - o0) * n).sum(1)).mean())


def test_landmarks_of_a_y_are_three_ends_and_one_fork():
    mask = np.zeros((80, 80), bool)
    for t in np.linspace(0, 1, 200):
        for a, b in (((40, 40), (10, 40)), ((40, 40), (70, 15)), ((40, 40), (70, 65))):
            r, c = (1 - t) * np.array(a) + t * np.array(b)
            mask[int(r) - 1:int(r) + 2, int(c) - 1:int(c) + 2] = True
    found = landmarks(mask, min_branch_px=5)
    assert len(found.endpoints) == 3 and len(found.junctions) == 1
    assert np.linalg.norm(found.junctions[0] - (40, 40)) < 2.5  # the fork's centroid, within a skeleton's wobble


def test_exact_geometry_is_left_alone(phantom):
    tree, occ = phantom
    result = refine_poses(RECORDED, masks_from(occ, RECORDED))
    # The best fit to the landmarks' localisation noise moves the pose by ~0.1° but lowers the median
    # residual by a few % only (0.49 -> 0.46 px, measured): not a pose error, so the recorded pose stays.
    assert result.geometry.to_dict() == RECORDED.to_dict()
    assert "less than 25 %" in result.corrections[1]["kept"]
    # Without that guard the noise fit itself is small.
    free = refine_poses(RECORDED, masks_from(occ, RECORDED), min_improvement=0.0).corrections[1]
    assert abs(free["primary_offset_deg"]) < 0.3 and abs(free["secondary_offset_deg"]) < 0.3
    assert np.abs(free["shift_mm"]).max() < 0.5


@pytest.mark.parametrize("angles, shift", [((1.0, -1.0), (1.0, -0.5, 1.0)), ((1.0, 1.0), (-1.2, 0.6, 0.6))])
def test_a_1_degree_1_5_mm_error_is_recovered_to_consistent_views(phantom, angles, shift):
    tree, occ = phantom
    shift = 1.5 * np.asarray(shift) / np.linalg.norm(shift)
    true = Geometry(GRID, [RECORDED.views[0], RECORDED.views[1].moved(primary_deg=angles[0], secondary_deg=angles[1],
                                                                      shift_mm=shift)])
    result = refine_poses(RECORDED, masks_from(occ, true))
    points = np.asarray(tree.points_mm)
    before = ray_gap_mm(points, RECORDED.views[0], RECORDED.views[1], true.views[1])
    after = ray_gap_mm(points, RECORDED.views[0], result.geometry.views[1], true.views[1])
    # The rays through each centreline point no longer miss each other: 1.18 / 0.62 mm before, 0.33 / 0.30
    # after (measured); below half a voxel of this 1.6 mm grid, where the visual hull holds the tree again.
    assert before > 0.5 and after < 0.4 and after < 0.6 * before
    c = result.corrections[1]
    assert c["residual_px_after"] < c["residual_px_before"]
    # What two views cannot see stays: the relative rotation is not recovered to 0.3° (docs/methods/sdf-car.md).
    assert relative_rotation_error_deg(*result.geometry.views, *true.views) < 2.0


def test_views_without_landmarks_keep_their_pose_and_say_why():
    blob = np.zeros(RECORDED.views[0].detector_shape, bool)
    blob[100:110, 100:110] = True
    result = refine_poses(RECORDED, [blob, blob])
    assert result.geometry.to_dict() == RECORDED.to_dict()
    assert "fewer than 6: the recorded pose is kept" in result.corrections[1]["skipped"]


def test_a_refinement_that_runs_to_its_bound_names_the_view(phantom):
    tree, occ = phantom
    true = Geometry(GRID, [RECORDED.views[0], RECORDED.views[1].moved(primary_deg=0.0, shift_mm=(6.0, 0.0, 0.0))])
    with pytest.raises(VesselfieldError, match="pose refinement of view 2 diverged"):
        refine_poses(RECORDED, masks_from(occ, true), max_shift_mm=1.0)
