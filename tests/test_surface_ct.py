"""Surface datasets (datasets/surface_ct.py) and the open-surface phantoms (datasets/synthetic_surfaces.py)."""

import json

import numpy as np
import pytest
import trimesh
from conftest import expect_user_error
from scipy.ndimage import binary_dilation, binary_erosion, map_coordinates

from vesselfield.cli import main
from vesselfield.datasets.surface_ct import (
    LoadedSurfaceCase,
    load_surface_case,
    read_surface_dataset,
    write_surface_dataset,
)
from vesselfield.datasets.synthetic_surfaces import (
    DEFAULT_CONTRAST_HU,
    make_open_surface_dataset,
    open_surface_case,
)
from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io import sample_path
from vesselfield.io.volumes import load_volume, save_volume

TINY = (48, 48, 48)


def boundary_edges(mesh) -> int:
    return len(trimesh.grouping.group_rows(mesh.edges_sorted, require_count=1))


def tiny_case(name="c0", offset_mm=0.0):
    grid = VolumeGrid.centered((12, 10, 8), (1.0, 1.5, 2.0))
    image = np.random.default_rng(0).normal(40.0, 100.0, grid.shape).astype(np.float32)
    mesh = trimesh.creation.icosphere(subdivisions=1, radius=4.0)
    mesh.vertices += offset_mm
    return LoadedSurfaceCase(name, image, grid, mesh)


def test_round_trip_keeps_images_and_meshes(tmp_path):
    case = tiny_case()
    summary = write_surface_dataset(tmp_path / "d", [case, ("c1", case.image * 2, case.grid, case.mesh)],
                                    name="tiny", description="two spheres")
    assert summary.details["cases"] == ["c0", "c1"]
    meta = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert meta["name"] == "tiny" and meta["description"] == "two spheres"
    assert meta["training"][0] == {"image": "./imagesTr/c0_0000.nii.gz", "mesh": "./meshesTr/c0.stl"}
    ds = read_surface_dataset(tmp_path / "d")
    assert [c.name for c in ds.cases] == ["c0", "c1"] and ds.name == "tiny"
    back = load_surface_case(ds, "c0")
    # float32 image values and grid come back exactly (NIfTI float32; grid values with few digits).
    np.testing.assert_array_equal(back.image, case.image)
    assert back.grid.is_close(case.grid, atol_mm=1e-6)
    # STL stores every triangle's float32 corners (vertices are renumbered by first use, triangles
    # keep their order): corners within float32 rounding of |x| <= 4 mm, half an ulp = 2^-22 mm.
    np.testing.assert_allclose(back.mesh.triangles, case.mesh.triangles, rtol=0, atol=4.0 * 2.0**-23)
    np.testing.assert_array_equal(load_surface_case(ds.cases[1]).image, case.image * 2)
    # An existing non-empty folder is refused, as by every dataset maker.
    with pytest.raises(VesselfieldError, match="exists and is not empty"):
        write_surface_dataset(tmp_path / "d", [case])


def test_one_line_errors(tmp_path):
    case = tiny_case()
    with pytest.raises(VesselfieldError, match="has no dataset.json"):
        read_surface_dataset(tmp_path)
    write_surface_dataset(tmp_path / "d", [case])
    (tmp_path / "d" / "meshesTr" / "c0.stl").unlink()
    with pytest.raises(VesselfieldError, match="lists mesh .*c0.stl for case c0, but it does not exist"):
        read_surface_dataset(tmp_path / "d")
    # Mesh outside the image: nothing is written.
    with pytest.raises(VesselfieldError, match="lies outside the image"):
        write_surface_dataset(tmp_path / "o", [tiny_case(offset_mm=100.0)])
    assert not (tmp_path / "o").exists()
    # Not a surface: no faces (a point cloud) or zero area.
    cloud = trimesh.PointCloud(case.mesh.vertices)
    with pytest.raises(VesselfieldError, match="no faces: it is not a surface"):
        write_surface_dataset(tmp_path / "p", [("c0", case.image, case.grid, cloud)])
    flat = trimesh.Trimesh(vertices=[[0, 0, 0], [1, 0, 0], [2, 0, 0]], faces=[[0, 1, 2]], process=False)
    with pytest.raises(VesselfieldError, match="zero area"):
        write_surface_dataset(tmp_path / "p", [("c0", case.image, case.grid, flat)])
    # Files written by hand: a point-cloud PLY, a .npy image, a NIfTI without spacing, a far-away mesh.
    root = tmp_path / "h"
    (root / "imagesTr").mkdir(parents=True)
    (root / "meshesTr").mkdir()
    save_volume(root / "imagesTr" / "a_0000.nii.gz", case.image, case.grid)
    cloud.export(root / "meshesTr" / "a.ply")
    np.save(root / "imagesTr" / "b_0000.npy", case.image)
    case.mesh.export(root / "meshesTr" / "b.stl")
    import nibabel as nib

    no_spacing = nib.Nifti1Image(case.image, None)  # no sform / qform: the affine comes from pixdim
    no_spacing.header["pixdim"][1:4] = [1.0, 0.0, 1.0]
    nib.save(no_spacing, str(root / "imagesTr" / "c_0000.nii.gz"))
    case.mesh.export(root / "meshesTr" / "c.stl")
    far = case.mesh.copy()
    far.vertices += 500.0
    far.export(root / "meshesTr" / "d.stl")
    entries = [{"image": f"./imagesTr/{n}_0000.{'npy' if n == 'b' else 'nii.gz'}",
                "mesh": f"./meshesTr/{n}.{'ply' if n == 'a' else 'stl'}"} for n in "abc"] + [{"image": "./imagesTr/a_0000.nii.gz", "mesh": "./meshesTr/d.stl"}]
    (root / "dataset.json").write_text(json.dumps({"name": "h", "training": entries}))
    ds = read_surface_dataset(root)
    for name, message in (("a", "has no faces: it is not a surface"), ("b", "has no voxel spacing"),
                          ("c", "has no voxel spacing"), ("d", "lies outside the image")):
        with pytest.raises(VesselfieldError, match=message) as info:
            load_surface_case(ds, name)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["pouch", "tube"])
def test_open_phantoms_are_open_inside_and_bright(kind):
    # 80 mm ROI at 1 mm: the tube's lumen (radius >= 4 mm) keeps voxels after a 2-voxel erosion.
    for seed in range(3):
        case = open_surface_case(kind, (0, seed), (80, 80, 80))
        # Open: the pouch has one loop at its ostium, the tube two at its ends (32 edges each).
        n_boundary = boundary_edges(case.mesh)
        assert n_boundary == 64 if kind == "tube" else n_boundary > 0
        assert case.grid.contains(case.mesh.vertices).all()
        # Inside (2 voxels in from the ramp) vs outside (2 voxels out): the image holds contrast_hu
        # inside exactly (the blur of a constant), tissue texture (std 10 HU, a 5 mm field whose
        # volume mean is 0) and noise (15 HU / sqrt(N) < 1 HU) outside; blur 0.6 mm leaves < 0.1 HU
        # at 2 mm. Measured over seeds 0-5 of both kinds at OMP_NUM_THREADS=1 and 2: |difference -
        # contrast| <= 1.1 HU; 5 HU (half a texture std) is the bound.
        inside = binary_erosion(case.occupancy >= 1, iterations=2)
        outside = ~binary_dilation(case.occupancy > 0, iterations=2)
        assert inside.sum() > 100
        contrast = case.image[inside].mean() - case.image[outside].mean()
        assert abs(contrast - DEFAULT_CONTRAST_HU) < 5.0, contrast


def test_pouch_is_cut_at_the_ostium_and_wound_outwards():
    case = open_surface_case("pouch", (0, 0), TINY)
    mesh = case.mesh
    # Normals point out of the blood pool: a short step along each face normal leaves it.
    grid = case.grid
    centroids = mesh.triangles_center
    step = 0.5 * float(grid.spacing.min())

    def occupancy_at(p):
        return map_coordinates(case.occupancy, grid.world_to_index(p).T, order=1)

    assert np.mean(occupancy_at(centroids + step * mesh.face_normals)
                   < occupancy_at(centroids - step * mesh.face_normals)) > 0.95
    # One boundary loop (the ostium): every boundary vertex has exactly two boundary edges.
    edges = mesh.edges_sorted[trimesh.grouping.group_rows(mesh.edges_sorted, require_count=1)]
    counts = np.bincount(edges.ravel())
    assert set(np.unique(counts[counts > 0])) == {2}
    assert len(trimesh.graph.connected_components(edges)) == 1


def test_open_surface_dataset_and_cli(tmp_path, capsys):
    summary = make_open_surface_dataset(tmp_path / "s", n_cases=2, seed=5, shape=TINY)
    assert summary.details["cases"] == ["pouch_000", "tube_001"]
    ds = read_surface_dataset(tmp_path / "s")
    for case in ds.cases:
        loaded = load_surface_case(case)
        assert boundary_edges(loaded.mesh) > 0 and loaded.grid.contains(loaded.mesh.vertices).all()
    # Same seed through the command line (default 80 mm ROI): the image of open_surface_case.
    assert main(["data", "synth-surfaces", "open-phantoms", "--out", str(tmp_path / "q"), "--cases", "1",
                 "--seed", "5", "--quiet"]) == 0
    assert "1 surface case(s): pouch_000" in capsys.readouterr().out
    again = load_surface_case(read_surface_dataset(tmp_path / "q"))
    np.testing.assert_array_equal(again.image, open_surface_case("pouch", (5, 0)).image)
    expect_user_error(capsys, ["data", "synth-surfaces", "vmtk-aorta", "--out", tmp_path / "r", "--seed", "2"],
                      "--seed does not apply to synth-surfaces vmtk-aorta", out_dir=tmp_path / "r")
    expect_user_error(capsys, ["data", "synth-surfaces", "blobs", "--out", tmp_path / "r"],
                      "unknown surface dataset", out_dir=tmp_path / "r")
    expect_user_error(capsys, ["data", "synth-surfaces", "open-phantoms", "--out", tmp_path / "s"],
                      "exists and is not empty")


def test_vmtk_open_aorta_lines_up_with_its_ct(tmp_path, capsys):
    assert main(["data", "synth-surfaces", "vmtk-aorta", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert "100 % of vertices inside the image" in capsys.readouterr().out
    case = load_surface_case(read_surface_dataset(tmp_path / "a"))
    assert case.grid.shape == (157, 393, 34) and boundary_edges(case.mesh) > 0
    # The level set (negative in the lumen) says which side of each vertex is inside; the image is
    # much brighter 1.5 mm inside than 1.5 mm outside when the mesh is in the image's frame.
    level, level_grid = load_volume(sample_path("vmtk_aorta", "aorta-final-levelset.mha"))
    assert level_grid.is_close(case.grid)
    p, n = case.mesh.vertices, case.mesh.vertex_normals
    a, b = p + 1.5 * n, p - 1.5 * n

    def at(volume, q):
        return map_coordinates(np.asarray(volume, np.float64), case.grid.world_to_index(q).T, order=1, mode="nearest")

    la, lb = at(level, a), at(level, b)
    crossing = (la < 0) != (lb < 0)
    # The surface is the level set's zero (SOURCES.md): every vertex has the lumen on one side
    # (measured: all of them; no randomness here, 0.99 leaves room for a few sharp rim vertices).
    assert crossing.mean() > 0.99, crossing.mean()
    inside = np.where((la < 0)[:, None], a, b)[crossing]
    outside = np.where((la < 0)[:, None], b, a)[crossing]
    gap = at(case.image, inside).mean() - at(case.image, outside).mean()
    # Measured 1357 (image units of aorta.mha, about HU + 1024); read as LPS instead of RAS the mesh
    # would miss the image entirely (the "outside the image" error). The bound is a third of it.
    assert gap > 450.0, gap
