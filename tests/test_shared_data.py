"""The bundled real data (data/samples, see its SOURCES.md): what each file holds, in numbers.

The bounds below were measured on these files (trimesh 5.2, SimpleITK 2.5, nibabel 5.4) and
are set a little above the measured value, which is given in a comment.
docs/data.md tabulates the same numbers.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import trimesh
from scipy.ndimage import map_coordinates

from vesselfield.errors import VesselfieldError
from vesselfield.io import load_centerline_vtp, load_mesh, load_volume, read_vtp, sample_path
from vesselfield.tree import VesselTree


def _trilinear(volume: np.ndarray, grid, points_mm: np.ndarray) -> np.ndarray:
    return map_coordinates(volume.astype(np.float64), grid.world_to_index(points_mm).T, order=1, mode="nearest")


def _root_to_leaf_lengths_mm(tree: VesselTree) -> np.ndarray:
    """Length along the tree from the root to every leaf, mm."""
    step = np.where(tree.parent >= 0, np.linalg.norm(tree.points_mm - tree.points_mm[tree.parent], axis=1), 0.0)
    # Nodes come in breadth-first order from the loaders, so parents precede children.
    assert np.all(tree.parent < np.arange(len(tree)))
    length = np.zeros(len(tree))
    for i in range(len(tree)):
        length[i] = step[i] + (length[tree.parent[i]] if tree.parent[i] >= 0 else 0.0)
    return length[np.setdiff1d(np.arange(len(tree)), tree.parent)]


def _radius_error(tree: VesselTree, distance_mm: np.ndarray) -> np.ndarray:
    """|radius - distance to the surface| / radius at every centreline node."""
    return np.abs(tree.radius_mm - distance_mm) / tree.radius_mm


def test_vmtk_aorta():
    image, grid = load_volume(sample_path("vmtk_aorta", "aorta.mha"))
    level_set, ls_grid = load_volume(sample_path("vmtk_aorta", "aorta-final-levelset.mha"))
    assert image.shape == level_set.shape == (157, 393, 34)
    assert grid == ls_grid
    assert grid.spacing_mm == (0.878906, 0.878906, 1.50009)
    # The files' direction is diag(-1, -1, 1) with origin (-156.445, -24.6094, 0): flipping x
    # and y moves the origin to the far corner.
    assert np.allclose(grid.origin_mm, (-156.445 - 156 * 0.878906, -24.6094 - 392 * 0.878906, 0.0), atol=1e-9)

    surface = load_mesh(sample_path("vmtk_aorta", "aorta-surface.stl"), frame="RAS")
    assert surface.vertices.shape == (6468, 3) and surface.faces.shape == (12932, 3)
    assert surface.is_watertight
    # The file's triangles wind inwards: a negative signed volume (-13184 mm^3).
    assert surface.volume == pytest.approx(-13184.27, abs=0.1)
    assert grid.contains(surface.vertices).all()
    on_zero_level = _trilinear(level_set, grid, surface.vertices)
    assert np.abs(on_zero_level).max() < 5e-5  # measured 1.5e-5 mm, against 0.88 mm voxels
    # Read in the wrong frame, the surface lies outside the image altogether.
    as_lps = load_mesh(sample_path("vmtk_aorta", "aorta-surface.stl"), frame="LPS")
    assert grid.contains(as_lps.vertices).mean() < 0.01  # measured 0.0

    open_ends = load_mesh(sample_path("vmtk_aorta", "aorta-surface-open-ends.stl"), frame="RAS")
    assert open_ends.faces.shape == (11887, 3) and not open_ends.is_watertight
    assert np.median(np.abs(_trilinear(level_set, grid, open_ends.vertices))) < 1e-5  # measured 1.7e-6

    tree = load_centerline_vtp(sample_path("vmtk_aorta", "aorta-centerline.vtp"), frame="RAS")
    # 409 points on 2 polylines from one inlet; coincident trunk points merge into 346 nodes.
    assert len(tree) == 346 and int(np.sum(tree.parent < 0)) == 1
    assert tree.radius_mm.min() == pytest.approx(2.77587, abs=1e-5)
    assert tree.radius_mm.max() == pytest.approx(7.57802, abs=1e-5)
    assert _trilinear(level_set, grid, tree.points_mm).max() < -2.0  # measured -2.08: well inside
    assert np.allclose(sorted(_root_to_leaf_lengths_mm(tree)), [76.16, 77.81], atol=0.01)
    # Unsigned distance: this surface winds inwards, so a signed one would have the wrong sign.
    rel = _radius_error(tree, trimesh.proximity.closest_point(surface, tree.points_mm)[1])
    assert np.median(rel) < 0.01  # measured 0.0064
    assert rel.max() < 0.05  # measured 0.042


def test_simvascular_aortoiliac():
    model = sample_path("simvascular_aortoiliac", "data_DemoProject_Models_demo.vtp")
    raw = read_vtp(model)  # appended base64, zlib, UInt32 headers, Int64 cells
    assert raw.points.shape == (7319, 3) and raw.polys.shape == (14634, 3)
    # Five model faces: the wall and four caps (inlet, outlets).
    assert np.bincount(raw.cell_data["ModelFaceID"]).tolist() == [0, 9267, 5222, 78, 35, 32]

    surface = load_mesh(model, scale_to_mm=10.0)  # the model is in cm
    assert surface.is_watertight and surface.is_winding_consistent
    assert surface.volume == pytest.approx(133937.0, rel=1e-5)  # mm^3, outward winding
    # The stored cell normals are the faces' own normals: faces and points were read in order.
    assert np.einsum("ij,ij->i", raw.cell_data["Normals"], surface.face_normals).min() > 0.9999
    assert np.allclose(surface.extents, (149.884, 89.892, 345.040), atol=1e-3)  # mm

    tree = load_centerline_vtp(sample_path("simvascular_aortoiliac", "data_meshing_demo-centerlines.vtp"), scale_to_mm=10.0)
    # 2354 points on 6 polylines (2 centrelines x 3 tracts); shared points merge into one tree.
    assert len(tree) == 1778 and int(np.sum(tree.parent < 0)) == 1
    assert tree.radius_mm.min() == pytest.approx(4.46786, abs=1e-5)
    assert tree.radius_mm.max() == pytest.approx(12.67470, abs=1e-5)
    # Aorta to each external iliac outlet, along the centreline: 430 and 449 mm.
    assert np.allclose(sorted(_root_to_leaf_lengths_mm(tree)), [430.07, 449.44], atol=0.01)
    signed = trimesh.proximity.signed_distance(surface, tree.points_mm)  # > 0 inside
    assert signed.min() > -1e-4  # inside or on the surface
    assert int(np.sum(signed > 1e-3)) == len(tree) - 3  # the inlet and two outlet ends lie on the caps
    rel = _radius_error(tree, np.abs(signed))
    assert np.median(rel) < 0.02  # measured 0.0136
    assert np.percentile(rel, 95) < 0.05  # measured 0.038


TOPCOW_CT = {
    "003": ((86, 69, 30), (0.50390625, 0.50390625, 0.75)),
    "014": ((74, 59, 31), (0.5527344, 0.5527344, 0.75)),
    "023": ((113, 81, 31), (0.41992188, 0.41992188, 0.7000122)),
}


@pytest.mark.parametrize("case", sorted(TOPCOW_CT))
def test_topcow_ct_roi(case):
    labels, grid = load_volume(sample_path("topcow_roi", f"topcow_ct_roi_{case}.nii.gz"))
    shape, spacing = TOPCOW_CT[case]
    assert labels.shape == shape and grid.spacing_mm == spacing
    assert labels.dtype.kind in "iu" and labels.min() == 0 and 10 <= labels.max() <= 15
    assert set(np.unique(labels).tolist()) <= set(range(16))


@pytest.mark.parametrize("case,tilt_deg", [("003", 6.84), ("014", 7.78), ("023", 0.88)])
def test_topcow_mr_roi_is_oblique_and_resampled(case, tilt_deg):
    path = sample_path("topcow_roi", f"topcow_mr_roi_{case}.nii.gz")
    # The MR crops are tilted against the patient axes: refused on request, resampled by default.
    with pytest.raises(VesselfieldError, match="oblique"):
        load_volume(path, oblique="error")
    img = nib.load(path)
    resampled, grid = load_volume(path)
    file_labels = np.asanyarray(img.dataobj)
    assert grid.spacing_mm == pytest.approx((0.296875,) * 3)
    assert set(np.unique(resampled).tolist()) <= set(np.unique(file_labels).tolist())
    # Each vessel keeps its volume and its world position (file affine RAS -> LPS).
    vox_file = float(np.prod(img.header.get_zooms()))
    for label in np.unique(file_labels)[1:]:
        vol_file = (file_labels == label).sum() * vox_file
        vol_new = (resampled == label).sum() * grid.voxel_volume_mm3
        assert vol_new == pytest.approx(vol_file, rel=0.15)
    big = np.bincount(file_labels.ravel())[1:].argmax() + 1
    ras = nib.affines.apply_affine(img.affine, np.argwhere(file_labels == big)).mean(0)
    lps = grid.index_to_world(np.argwhere(resampled == big)).mean(0)
    assert lps == pytest.approx(ras * [-1, -1, 1], abs=0.3)
    zooms = img.header.get_zooms()
    assert np.allclose(zooms, (0.296875, 0.296875, 0.6), atol=1e-5)
    cosines = img.affine[:3, :3] / np.asarray(zooms)
    assert np.degrees(np.arccos(np.abs(cosines).max(axis=0))).max() == pytest.approx(tilt_deg, abs=0.01)
    labels = np.asanyarray(img.dataobj)
    assert labels.dtype.kind in "iu" and set(np.unique(labels).tolist()) <= set(range(16))


HEPATIC = {
    "002": ((512, 512, 66), (0.951172, 0.951172, 3.75)),
    "008": ((512, 512, 47), (0.84375, 0.84375, 5.0)),
    "010": ((512, 512, 49), (0.861328, 0.861328, 4.0)),
}


@pytest.mark.parametrize("case", sorted(HEPATIC))
def test_hepatic_msd(case):
    labels, grid = load_volume(sample_path("hepatic_msd", f"hepaticvessel_{case}_vsnet.nii.gz"))
    shape, spacing = HEPATIC[case]
    assert labels.shape == shape and grid.spacing_mm == spacing
    assert np.unique(labels).tolist() == [0, 1, 2]
    # RAS affine with positive steps: x and y are flipped into LPS, which puts the origin at ~0.
    assert np.allclose(grid.origin_mm, 0.0, atol=1e-4)


def test_xcat_coronary():
    tree = load_mesh(sample_path("xcat_coronary", "xcat_phantom_coronary.stl"))
    assert tree.vertices.shape == (33937, 3) and tree.faces.shape == (67834, 3)
    pieces = tree.split(only_watertight=False)
    assert len(pieces) == 10 and all(p.is_watertight for p in pieces)
    assert np.allclose(tree.extents, (72.866, 65.534, 75.801), atol=1e-3)  # mm: a whole coronary tree
    assert sorted(np.round(p.extents.max(), 1) for p in pieces)[-1] == pytest.approx(72.9)
