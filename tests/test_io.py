"""Readers and writers: exact round trips, world positions of marked voxels, and every user error."""

from __future__ import annotations

import base64
import zlib

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import trimesh
from conftest import modules_loaded_by

import vesselfield.io as vio
from vesselfield.errors import VesselfieldError
from vesselfield.grid import VolumeGrid
from vesselfield.io import (
    PolyData,
    load_centerline_vtp,
    load_mesh,
    load_points,
    load_swc,
    load_volume,
    read_vtp,
    sample_path,
    save_mesh,
    save_points,
    save_swc,
    save_volume,
    write_vtp,
)
from vesselfield.tree import VesselTree

# Values exactly representable in float32, so that even NIfTI (float32 geometry) is exact.
GRID = VolumeGrid((6, 5, 4), (0.5, 0.75, 1.25), (-10.5, 3.25, 7.0))


def _volume(dtype=np.int16, shape=GRID.shape, seed=0):
    return np.random.default_rng(seed).integers(-300, 300, size=shape).astype(dtype)


# ------------------------------------------------------------------------------ volumes
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".npy"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_volume_round_trip_is_exact(tmp_path, suffix, dtype):
    array = _volume(dtype)
    path = tmp_path / f"vol{suffix}"
    save_volume(path, array, GRID)
    loaded, grid = load_volume(path, GRID if suffix == ".npy" else None)
    assert loaded.dtype == array.dtype
    assert np.array_equal(loaded, array)
    assert grid == GRID
    # Atomic writes leave no temporary files behind; .mhd/.nhdr name their data file.
    data_file = {".mhd": ["vol.zraw"], ".nhdr": ["vol.raw.gz"]}.get(suffix, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, *data_file])


def test_nifti_round_trip_keeps_decimal_geometry(tmp_path):
    # 0.878906 and -156.445 are not float32 numbers; NIfTI stores float32 but we read them back
    # as the decimals that were written.
    grid = VolumeGrid((3, 4, 5), (0.878906, 0.878906, 1.50009), (-156.445, -24.6094, 0.1))
    save_volume(tmp_path / "a.nii.gz", np.ones(grid.shape, np.float32), grid)
    assert load_volume(tmp_path / "a.nii.gz")[1] == grid


def test_nifti_header_has_mm_units_and_both_forms(tmp_path):
    save_volume(tmp_path / "a.nii.gz", _volume(), GRID)
    img = nib.load(tmp_path / "a.nii.gz")
    assert img.header.get_xyzt_units()[0] == "mm"
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    assert np.allclose(img.get_qform(), GRID.affine_ras) and np.allclose(img.get_sform(), GRID.affine_ras)


def test_bool_volume_is_saved_as_uint8(tmp_path):
    mask = _volume() > 0
    save_volume(tmp_path / "m.nii.gz", mask, GRID)
    loaded, _ = load_volume(tmp_path / "m.nii.gz")
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, mask)


def _brightest_world(path) -> np.ndarray:
    array, grid = load_volume(path)
    return grid.index_to_world(np.unravel_index(np.argmax(array), array.shape))


SIGNED_PERMUTATIONS = [
    np.diag([-1.0, -1.0, 1.0]),  # what vmtk writes
    np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),  # file axes -> (-y, +z, -x)
    np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]),
]


@pytest.mark.parametrize("direction", SIGNED_PERMUTATIONS)
@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_flipped_and_permuted_directions_keep_world_positions(tmp_path, direction, suffix):
    file_shape = (7, 5, 3)  # ITK index order (x, y, z)
    spacing = (0.5, 0.8, 2.0)
    array = np.zeros(file_shape[::-1], np.float32)  # SimpleITK's numpy view is (z, y, x)
    array[2, 3, 4] = 1.0  # ITK index (4, 3, 2)
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin((12.0, -30.5, 40.25))
    img.SetDirection(tuple(direction.ravel()))
    sitk.WriteImage(img, str(tmp_path / f"v{suffix}"))
    expected = np.array(img.TransformIndexToPhysicalPoint((4, 3, 2)))

    loaded, grid = load_volume(tmp_path / f"v{suffix}")
    assert np.allclose(_brightest_world(tmp_path / f"v{suffix}"), expected, atol=1e-9)
    # Spacing follows the axes: world axis a gets the spacing of the file axis that runs along it.
    file_axis = np.argmax(np.abs(direction), axis=1)
    assert grid.spacing_mm == tuple(spacing[c] for c in file_axis)
    assert loaded.shape == tuple(file_shape[c] for c in file_axis)
    # Every voxel centre of the loaded grid is a voxel centre of the file, at the same place.
    corners = grid.index_to_world(np.array([[0, 0, 0], np.array(grid.shape) - 1]))
    lo = np.min([img.TransformIndexToPhysicalPoint(i) for i in [(0, 0, 0), tuple(n - 1 for n in file_shape)]], 0)
    assert np.allclose(corners[0], lo)


def test_nifti_ras_affine_maps_to_lps(tmp_path):
    # Built by hand: file axis 0 runs to the patient's right (RAS +x... negative step in R),
    # axis 1 runs superior, axis 2 anterior. RAS world of index v is affine @ v.
    affine = np.array(
        [
            [-0.5, 0.0, 0.0, 20.0],
            [0.0, 0.0, 2.0, -15.0],
            [0.0, 1.25, 0.0, 33.5],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    array = np.zeros((8, 6, 4), np.int16)
    index = (5, 2, 3)
    array[index] = 7
    nib.save(nib.Nifti1Image(array, affine), tmp_path / "ras.nii.gz")
    ras = affine @ np.r_[index, 1.0]
    lps = ras[:3] * np.array([-1.0, -1.0, 1.0])
    loaded, grid = load_volume(tmp_path / "ras.nii.gz")
    assert np.allclose(_brightest_world(tmp_path / "ras.nii.gz"), lps, atol=1e-9)
    assert grid.spacing_mm == (0.5, 2.0, 1.25) and loaded.shape == (8, 4, 6)
    assert int(loaded.sum()) == 7


def test_nifti_saved_grid_is_lps_in_nibabel_terms(tmp_path):
    # Our voxel (i, j, k) is at LPS origin + ijk * spacing; nibabel reports RAS.
    array = np.zeros(GRID.shape, np.uint8)
    array[4, 1, 2] = 1
    save_volume(tmp_path / "a.nii.gz", array, GRID)
    img = nib.load(tmp_path / "a.nii.gz")
    ras = nib.affines.apply_affine(img.affine, np.argwhere(np.asanyarray(img.dataobj))[0])
    assert np.allclose(ras * [-1, -1, 1], GRID.index_to_world([4, 1, 2]))


def _rotation_z(deg):
    t = np.radians(deg)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("deg", [10.0, 0.1])
def test_oblique_volumes_are_rejected_on_request(tmp_path, deg):
    img = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32))
    img.SetDirection(tuple(_rotation_z(deg).ravel()))
    sitk.WriteImage(img, str(tmp_path / "o.mha"))
    with pytest.raises(VesselfieldError, match="oblique.*resample"):
        load_volume(tmp_path / "o.mha", oblique="error")
    affine = np.eye(4)
    affine[:3, :3] = _rotation_z(deg) * 0.7
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), affine), tmp_path / "o.nii.gz")
    with pytest.raises(VesselfieldError, match="oblique"):
        load_volume(tmp_path / "o.nii.gz", oblique="error")


def test_oblique_volume_is_resampled_in_place(tmp_path):
    """A block of label 3 in a volume tilted 20 degrees lands at the same world place, same size."""
    data = np.zeros((30, 30, 12), np.uint8)
    data[10:20, 8:22, 3:9] = 3
    affine = np.eye(4)
    affine[:3, :3] = _rotation_z(20.0) @ np.diag([0.5, 0.5, 1.0])
    affine[:3, 3] = [5.0, -7.0, 2.0]
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "tilted.nii.gz")
    labels, grid = load_volume(tmp_path / "tilted.nii.gz")
    assert labels.dtype == np.uint8 and set(np.unique(labels).tolist()) == {0, 3}
    assert grid.spacing_mm == pytest.approx((0.5, 0.5, 0.5))
    # Same physical volume (nearest-neighbour resampling: within a few % of 10*14*6 voxels of 0.25 mm^3).
    assert (labels == 3).sum() * grid.voxel_volume_mm3 == pytest.approx(10 * 14 * 6 * 0.25, rel=0.05)
    # Same centroid in world coordinates (RAS -> LPS for the file's own positions).
    ras = nib.affines.apply_affine(affine, np.argwhere(data == 3)).mean(0)
    lps = grid.index_to_world(np.argwhere(labels == 3)).mean(0)
    # Nearest-neighbour ties (new z spacing 0.5 mm, file 1 mm) may move the block by <= 0.25 mm.
    assert lps == pytest.approx(ras * [-1, -1, 1], abs=0.26)


def test_direction_within_tolerance_is_snapped(tmp_path):
    # 0.01 degrees = 1.7e-4 off-axis: below the 1e-3 tolerance, read as axis-aligned.
    img = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32))
    img.SetDirection(tuple(_rotation_z(0.01).ravel()))
    img.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(img, str(tmp_path / "near.mha"))
    array, grid = load_volume(tmp_path / "near.mha")
    assert array.shape == (5, 4, 3) and np.allclose(grid.spacing, 2.0, rtol=1e-7)


def test_trailing_singleton_axes_are_squeezed(tmp_path):
    array = _volume(np.float32)[..., None]
    nib.save(nib.Nifti1Image(array, GRID.affine_ras), tmp_path / "t.nii.gz")
    loaded, grid = load_volume(tmp_path / "t.nii.gz")
    assert loaded.shape == GRID.shape and np.array_equal(loaded, array[..., 0]) and grid == GRID


def test_volume_errors_are_user_errors(tmp_path):
    for name in ("missing.nii.gz", "missing.mha", "missing.npy"):
        with pytest.raises(VesselfieldError, match="does not exist"):
            load_volume(tmp_path / name, GRID)
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti file at all")
    (tmp_path / "junk.mha").write_bytes(b"ObjectType = Nonsense\n")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    for name in ("junk.nii.gz", "junk.mha", "junk.npy"):
        with pytest.raises(VesselfieldError, match="cannot read .*junk"):
            load_volume(tmp_path / name, GRID)
    with pytest.raises(VesselfieldError, match="unknown volume file type"):
        load_volume(tmp_path / "vol.tif")
    # 2D, and 4D with more than one channel.
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), tmp_path / "flat.nii")
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 2), np.float32), np.eye(4)), tmp_path / "two.nii")
    for name in ("flat.nii", "two.nii"):
        with pytest.raises(VesselfieldError, match=f"{name} must be 3D"):
            load_volume(tmp_path / name)
    vec = sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.float32), isVector=True)
    sitk.WriteImage(vec, str(tmp_path / "vec.mha"))
    with pytest.raises(VesselfieldError, match="3 components"):
        load_volume(tmp_path / "vec.mha")
    # NPY: no grid, wrong shape, not 3D.
    np.save(tmp_path / "a.npy", _volume())
    with pytest.raises(VesselfieldError, match="--spacing/--origin or a geometry file"):
        load_volume(tmp_path / "a.npy")
    with pytest.raises(VesselfieldError, match="shape"):
        load_volume(tmp_path / "a.npy", VolumeGrid((4, 4, 4), (1.0, 1.0, 1.0)))
    np.save(tmp_path / "b.npy", np.zeros((4, 5)))
    with pytest.raises(VesselfieldError, match="must be 3D"):
        load_volume(tmp_path / "b.npy", GRID)
    # A grid given for a file with a header must agree with it.
    save_volume(tmp_path / "c.nii.gz", _volume(), GRID)
    with pytest.raises(VesselfieldError, match="different grids"):
        load_volume(tmp_path / "c.nii.gz", VolumeGrid(GRID.shape, (1.0, 1.0, 1.0)))
    with pytest.raises(VesselfieldError, match="must be 3D"):
        save_volume(tmp_path / "d.nii.gz", np.zeros((4, 5)), GRID)
    with pytest.raises(VesselfieldError, match="shape"):
        save_volume(tmp_path / "d.nii.gz", np.zeros((4, 5, 6)), GRID)


def test_nan_is_passed_through(tmp_path):
    array = _volume(np.float32)
    array[1, 2, 3] = np.nan
    save_volume(tmp_path / "n.mha", array, GRID)
    assert np.isnan(load_volume(tmp_path / "n.mha")[0][1, 2, 3])


# ------------------------------------------------------------------------------- meshes
def _mesh() -> trimesh.Trimesh:
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=7.25)
    # Coordinates on a 1/1024 mm lattice are exact in float32 (STL) and in decimal text (OBJ).
    vertices = np.round(sphere.vertices * 1024) / 1024 + [10.5, -3.25, 100.0]
    faces = sphere.faces[np.random.default_rng(1).permutation(len(sphere.faces))]
    return trimesh.Trimesh(vertices, faces, process=False)


def _first_appearance_order(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    order = np.unique(mesh.faces.ravel(), return_index=True)[1]
    used = mesh.faces.ravel()[np.sort(order)]
    new = np.empty(len(mesh.vertices), np.int64)
    new[used] = np.arange(len(used))
    return trimesh.Trimesh(mesh.vertices[used], new[mesh.faces], process=False)


@pytest.mark.parametrize("suffix", [".stl", ".ply", ".obj", ".vtp"])
@pytest.mark.parametrize("frame", ["LPS", "RAS"])
def test_mesh_round_trip(tmp_path, suffix, frame):
    mesh = _mesh()
    if suffix == ".stl":
        # STL has no shared vertices: corners are merged in order of first appearance.
        mesh = _first_appearance_order(mesh)
    save_mesh(tmp_path / f"m{suffix}", mesh, frame=frame)
    loaded = load_mesh(tmp_path / f"m{suffix}", frame=frame)
    assert np.array_equal(loaded.vertices, mesh.vertices)
    assert np.array_equal(loaded.faces, mesh.faces)
    assert loaded.is_watertight and loaded.volume == pytest.approx(mesh.volume, rel=1e-12)


def test_stl_any_vertex_order_keeps_triangles(tmp_path):
    mesh = _mesh()
    save_mesh(tmp_path / "m.stl", mesh)
    loaded = load_mesh(tmp_path / "m.stl")
    assert len(loaded.vertices) == len(mesh.vertices) == 162
    assert np.array_equal(loaded.vertices[loaded.faces], mesh.vertices[mesh.faces])


def test_mesh_frame_and_scale(tmp_path):
    mesh = _mesh()
    save_mesh(tmp_path / "m.ply", mesh, frame="RAS")
    as_lps = load_mesh(tmp_path / "m.ply")  # read with the wrong frame: x and y come out negated
    assert np.array_equal(as_lps.vertices, mesh.vertices * [-1, -1, 1])
    in_cm = load_mesh(tmp_path / "m.ply", frame="ras", scale_to_mm=10.0)
    assert np.allclose(in_cm.vertices, mesh.vertices * 10.0, rtol=1e-15)
    # The RAS <-> LPS turn keeps the outward orientation of faces: the volume stays positive.
    assert as_lps.volume == pytest.approx(mesh.volume, rel=1e-12) and mesh.volume > 0


def test_mesh_errors_are_user_errors(tmp_path):
    with pytest.raises(VesselfieldError, match="does not exist"):
        load_mesh(tmp_path / "none.stl")
    with pytest.raises(VesselfieldError, match="unknown mesh file type"):
        load_mesh(tmp_path / "m.off")
    with pytest.raises(VesselfieldError, match="unknown frame"):
        load_mesh(tmp_path / "m.stl", frame="RAI")
    save_points(tmp_path / "cloud.ply", np.eye(3))
    with pytest.raises(VesselfieldError, match="no faces"):
        load_mesh(tmp_path / "cloud.ply")
    write_vtp(tmp_path / "line.vtp", PolyData(points=np.eye(3), lines=[[0, 1, 2]]))
    with pytest.raises(VesselfieldError, match="no faces"):
        load_mesh(tmp_path / "line.vtp")
    (tmp_path / "junk.ply").write_bytes(b"ply\nformat nonsense\n")
    with pytest.raises(VesselfieldError, match="junk.ply"):
        load_mesh(tmp_path / "junk.ply")
    (tmp_path / "junk.stl").write_bytes(b"\x00" * 30)
    with pytest.raises(VesselfieldError, match="junk.stl"):
        load_mesh(tmp_path / "junk.stl")
    with pytest.raises(VesselfieldError, match="no faces"):
        save_mesh(tmp_path / "e.stl", trimesh.Trimesh(np.eye(3), np.zeros((0, 3), int), process=False))


# ---------------------------------------------------------------------------------- VTP
def _polydata() -> PolyData:
    rng = np.random.default_rng(2)
    points = rng.normal(size=(9, 3)) * 50
    return PolyData(
        points=points,
        polys=[[0, 1, 2], [2, 3, 4, 5], [5, 6, 7]],
        lines=[[0, 8, 3], [4, 5]],
        verts=[[8]],
        strips=[[1, 2, 3, 4, 6]],
        point_data={"radius": rng.random(9), "label": np.arange(9, dtype=np.int32), "vec": rng.normal(size=(9, 3))},
        cell_data={"group": np.array([3, 1, 1, 2, 2, 2, 7], np.int16), "flag": np.array([1, 0, 1, 1, 0, 0, 1], bool)},
    )


def _assert_same_polydata(a: PolyData, b: PolyData):
    assert np.array_equal(a.points, b.points)
    for kind in ("lines", "verts", "strips"):
        assert [c.tolist() for c in getattr(a, kind)] == [c.tolist() for c in getattr(b, kind)]
    assert [list(c) for c in a.polys] == [list(c) for c in b.polys]
    assert a.point_data.keys() == b.point_data.keys() and a.cell_data.keys() == b.cell_data.keys()
    for k in a.point_data:
        assert np.array_equal(a.point_data[k], b.point_data[k])
    for k in a.cell_data:
        assert np.array_equal(a.cell_data[k], b.cell_data[k])


def test_vtp_round_trip(tmp_path):
    pd = _polydata()
    write_vtp(tmp_path / "p.vtp", pd)
    back = read_vtp(tmp_path / "p.vtp")
    _assert_same_polydata(back, pd)
    assert back.point_data["label"].dtype == np.int32 and back.cell_data["group"].dtype == np.int16
    assert back.cell_data["flag"].dtype == np.uint8 and back.point_data["vec"].shape == (9, 3)
    assert isinstance(back.polys, list)  # a quad among them: general form
    text = (tmp_path / "p.vtp").read_text()
    assert 'header_type="UInt64"' in text and 'compressor="vtkZLibDataCompressor"' in text


def test_vtp_all_triangles_are_an_array_and_large_arrays_span_blocks(tmp_path):
    rng = np.random.default_rng(3)
    points = rng.normal(size=(5000, 3))  # 120 kB of Float64: four 32 kB zlib blocks
    tris = rng.integers(0, 5000, size=(3000, 3))
    write_vtp(tmp_path / "t.vtp", PolyData(points=points, polys=tris))
    back = read_vtp(tmp_path / "t.vtp")
    assert isinstance(back.polys, np.ndarray) and np.array_equal(back.polys, tris)
    assert np.array_equal(back.points, points)


def test_polydata_triangles():
    pd = PolyData(points=np.zeros((7, 3)), polys=[[0, 1, 2, 3]], strips=[[2, 3, 4, 5, 6]])
    # Quad fan: (0,1,2), (0,2,3). Strip: every second triangle (p[k+1], p[k], p[k+2]), as VTK
    # decomposes strips, so that all keep one orientation.
    assert pd.triangles().tolist() == [[0, 1, 2], [0, 2, 3], [2, 3, 4], [4, 3, 5], [4, 5, 6]]


# A writer independent of ours, for the encodings we read but do not write.
def _encode(values, header, compressed, block=64):
    raw = np.ascontiguousarray(values).tobytes()
    if not compressed:
        return np.array([len(raw)], header).tobytes(), raw
    blocks = [zlib.compress(raw[i : i + block]) for i in range(0, len(raw), block)]
    head = np.array([len(blocks), block, len(raw) % block] + [len(b) for b in blocks], header).tobytes()
    return head, b"".join(blocks)


def _vtp_text(mode, header="<u4", compressed=False, big_endian=False, leading_zero=False):
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    conn = np.array([0, 1, 2, 0, 2, 3, 1, 3])
    offsets = np.array([0, 3, 6, 8] if leading_zero else [3, 6, 8])
    arrays = [
        ("PointData", "Float32", "r", 1, np.array([0.5, 1.5, 2.5, 3.5], "f4")),
        ("CellData", "Int32", "id", 1, np.array([10, 20, 30], "i4")),
        ("Points", "Float64", "Points", 3, pts),
        ("Polys", "Int64", "connectivity", 1, conn[:6]),
        ("Polys", "Int64", "offsets", 1, offsets[:-1]),
        ("Lines", "Int64", "connectivity", 1, conn[6:]),
        ("Lines", "Int64", "offsets", 1, np.array([0, 2] if leading_zero else [2])),
    ]
    order = ">" if big_endian else "<"
    appended, xml_sections = b"", {}
    for section, vtype, name, ncomp, values in arrays:
        values = values.astype(values.dtype.newbyteorder(order))
        attrs = f'type="{vtype}" Name="{name}" NumberOfComponents="{ncomp}"'
        if mode == "ascii":
            body = f'<DataArray {attrs} format="ascii">{" ".join(map(str, values.ravel().tolist()))}</DataArray>'
        else:
            head, data = _encode(values, np.dtype(header).newbyteorder(order), compressed)
            if mode == "binary":
                text = (
                    base64.b64encode(head).decode() + base64.b64encode(data).decode()
                    if compressed
                    else base64.b64encode(head + data).decode()
                )
                body = f'<DataArray {attrs} format="binary">\n  {text}\n</DataArray>'
            else:
                chunk = head + data if mode == "raw" else (
                    (base64.b64encode(head) + base64.b64encode(data)) if compressed else base64.b64encode(head + data)
                )
                body = f'<DataArray {attrs} format="appended" offset="{len(appended)}"/>'
                appended += chunk
        xml_sections.setdefault(section, []).append(body)
    hdr_name = "UInt32" if header == "<u4" else "UInt64"
    comp = ' compressor="vtkZLibDataCompressor"' if compressed else ""
    xml = (
        f'<?xml version="1.0"?>\n<VTKFile type="PolyData" version="0.1" '
        f'byte_order="{"BigEndian" if big_endian else "LittleEndian"}" header_type="{hdr_name}"{comp}>\n'
        '<PolyData><Piece NumberOfPoints="4" NumberOfVerts="0" NumberOfLines="1" NumberOfStrips="0" NumberOfPolys="2">\n'
        + "".join(f"<{s}>{''.join(xml_sections[s])}</{s}>\n" for s in ("PointData", "CellData", "Points", "Lines", "Polys"))
        + "</Piece></PolyData>\n"
    ).encode()
    if mode in ("raw", "appended-base64"):
        enc = "raw" if mode == "raw" else "base64"
        xml += f'<AppendedData encoding="{enc}">\n   _'.encode() + appended + b"\n</AppendedData>\n"
    return xml + b"</VTKFile>\n"


@pytest.mark.parametrize(
    "mode,header,compressed,big_endian,leading_zero",
    [
        ("ascii", "<u4", False, False, False),
        ("ascii", "<u4", False, False, True),
        ("binary", "<u4", False, False, False),
        ("binary", "<u8", False, False, False),
        ("binary", "<u4", True, False, False),
        ("binary", "<u8", True, True, False),
        ("raw", "<u4", False, False, False),
        ("raw", "<u8", True, False, True),
        ("raw", "<u4", False, True, False),
        ("appended-base64", "<u4", False, False, False),
        ("appended-base64", "<u4", True, False, False),
        ("appended-base64", "<u8", True, False, False),
    ],
)
def test_vtp_reader_encodings(tmp_path, mode, header, compressed, big_endian, leading_zero):
    path = tmp_path / "e.vtp"
    path.write_bytes(_vtp_text(mode, header, compressed, big_endian, leading_zero))
    pd = read_vtp(path)
    assert pd.points.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert pd.polys.tolist() == [[0, 1, 2], [0, 2, 3]]
    assert [ln.tolist() for ln in pd.lines] == [[1, 3]]
    assert pd.point_data["r"].tolist() == [0.5, 1.5, 2.5, 3.5]
    assert pd.cell_data["id"].tolist() == [10, 20, 30]


def test_vtp_errors_are_user_errors(tmp_path):
    with pytest.raises(VesselfieldError, match="does not exist"):
        read_vtp(tmp_path / "none.vtp")
    good = _vtp_text("binary", "<u4", True)
    cases = {
        "grid.vtp": good.replace(b'type="PolyData"', b'type="UnstructuredGrid"'),
        "lz4.vtp": good.replace(b"vtkZLibDataCompressor", b"vtkLZ4DataCompressor"),
        "xml.vtp": good[:200],
        "trunc.vtp": _vtp_text("raw", "<u4", False)[:-60],
        "count.vtp": good.replace(b'NumberOfPoints="4"', b'NumberOfPoints="5"'),
        "index.vtp": _vtp_text("ascii").replace(b">0 1 2 0 2 3<", b">0 1 2 0 2 9<"),
        "zlib.vtp": _vtp_text("binary", "<u8", True).replace(b"eJ", b"AA", 1),
    }
    messages = {"grid.vtp": "UnstructuredGrid", "lz4.vtp": "LZ4", "index.vtp": "outside"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(VesselfieldError, match=messages.get(name, f"cannot read VTP file .*{name}")):
            read_vtp(tmp_path / name)
    with pytest.raises(VesselfieldError, match="rows"):
        write_vtp(tmp_path / "w.vtp", PolyData(points=np.eye(3), point_data={"a": np.zeros(2)}))
    with pytest.raises(VesselfieldError, match="outside"):
        write_vtp(tmp_path / "w.vtp", PolyData(points=np.eye(3), lines=[[0, 3]]))
    with pytest.raises(VesselfieldError, match="cannot store"):
        write_vtp(tmp_path / "w.vtp", PolyData(points=np.eye(3), point_data={"c": np.zeros(3, complex)}))


# ------------------------------------------------------------------------- centrelines
def _centerline_file(tmp_path, **point_data) -> str:
    points = np.array([[0, 0, 0], [0, 0, 10], [0, 0, 20], [0, 0, 20], [5, 0, 25], [-5, 0, 25], [9, 9, 9]], float)
    # Line 0 is the trunk; line 1 starts on a copy of the trunk's end (same coordinates);
    # line 2 shares the trunk's end by index. Point 6 is in no line.
    pd = PolyData(
        points=points,
        lines=[[0, 1, 2], [3, 4], [2, 5]],
        point_data=point_data or {"MaximumInscribedSphereRadius": np.array([3, 2.5, 2, 2, 1.5, 1.25, 9.0])},
    )
    write_vtp(tmp_path / "cl.vtp", pd)
    return tmp_path / "cl.vtp"


def test_centerline_chains_join_at_shared_points(tmp_path):
    tree = load_centerline_vtp(_centerline_file(tmp_path))
    assert len(tree) == 5 and tree.parent.tolist() == [-1, 0, 1, 2, 2]
    assert tree.points_mm.tolist() == [[0, 0, 0], [0, 0, 10], [0, 0, 20], [5, 0, 25], [-5, 0, 25]]
    assert tree.radius_mm.tolist() == [3, 2.5, 2, 1.5, 1.25]
    assert tree.labels.tolist() == [0, 0, 0, 1, 2]
    scaled = load_centerline_vtp(_centerline_file(tmp_path), frame="RAS", scale_to_mm=10.0)
    assert np.array_equal(scaled.points_mm, tree.points_mm * [-10, -10, 10])
    assert np.array_equal(scaled.radius_mm, tree.radius_mm * 10)


def test_centerline_radius_array_choice_and_errors(tmp_path):
    path = _centerline_file(tmp_path, Radius=np.full(7, 2.0), other=np.ones(7))
    assert load_centerline_vtp(path).radius_mm.tolist() == [2.0] * 5
    assert load_centerline_vtp(path, radius_array="other").radius_mm.tolist() == [1.0] * 5
    with pytest.raises(VesselfieldError, match="no radius array R2.*Radius, other"):
        load_centerline_vtp(path, radius_array="R2")
    path = _centerline_file(tmp_path, Radius=np.array([1, 1, 0, 1, 1, 1, 1.0]))
    with pytest.raises(VesselfieldError, match="1 point"):
        load_centerline_vtp(path)
    write_vtp(tmp_path / "tri.vtp", PolyData(points=np.eye(3), polys=[[0, 1, 2]], point_data={"Radius": np.ones(3)}))
    with pytest.raises(VesselfieldError, match="no polyline"):
        load_centerline_vtp(tmp_path / "tri.vtp")


# ---------------------------------------------------------------------------------- SWC
def test_swc_ids_need_not_be_sorted(tmp_path):
    (tmp_path / "t.swc").write_text(
        "# a comment\n"
        "\n"
        "10 3 1.5 2 3 0.5 7   # child listed before its parent\n"
        "7 1 0 0 0 1.25 -1\n"
        "42 3 1.5 2 8 0.25 10\n"
        "5.0 2 -1 0 0 0.75 7\n"
    )
    tree = load_swc(tmp_path / "t.swc")
    assert tree.parent.tolist() == [1, -1, 0, 1]
    assert tree.labels.tolist() == [3, 1, 3, 2]
    assert tree.radius_mm.tolist() == [0.5, 1.25, 0.25, 0.75]
    assert tree.points_mm[2].tolist() == [1.5, 2.0, 8.0]


def test_swc_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    tree = VesselTree(
        points_mm=rng.normal(size=(20, 3)) * 30,
        radius_mm=rng.random(20) + 0.1,
        parent=np.r_[-1, rng.integers(0, np.arange(1, 20))],
        labels=rng.integers(0, 5, 20),
    )
    save_swc(tmp_path / "t.swc", tree)
    back = load_swc(tmp_path / "t.swc")
    for name in ("points_mm", "radius_mm", "parent", "labels"):
        assert np.array_equal(getattr(back, name), getattr(tree, name))
    save_swc(tmp_path / "ras.swc", tree, frame="RAS")
    assert np.array_equal(load_swc(tmp_path / "ras.swc", frame="RAS").points_mm, tree.points_mm)
    assert np.array_equal(load_swc(tmp_path / "ras.swc").points_mm, tree.points_mm * [-1, -1, 1])


@pytest.mark.parametrize(
    "text,match",
    [
        ("1 1 0 0 0 1 -1\n2 1 0 0\n", "line 2: expected 7 columns"),
        ("1 1 0 0 0 1 -1\n\n2 1 0 x 0 1 1\n", "line 3: non-numeric"),
        ("1 1 0 0 0 1 -1\n2 1 0 0 0 1 1.5\n", "line 2: non-numeric or non-integer"),
        ("1 1 0 0 0 1 -1\n2 1 0 0 0 1 9\n", "line 2: parent 9 is not an id"),
        ("1 1 0 0 0 1 -1\n1 1 0 0 0 1 -1\n", "line 2: id 1 already used on line 1"),
        ("1 1 0 0 0 0 -1\n", "line 1: .*radius positive"),
        ("1 1 0 nan 0 1 -1\n", "line 1: coordinates must be finite"),
        ("1 1 0 0 0 1 -1\n2 1 0 0 0 1 3\n3 1 0 0 0 1 2\n", "line 2: parent links form a cycle"),
        ("1 1 0 0 0 1 1\n", "line 1: node 1 is its own parent"),
        ("# nothing\n", "no nodes"),
    ],
)
def test_swc_errors_name_the_line(tmp_path, text, match):
    (tmp_path / "bad.swc").write_text(text)
    with pytest.raises(VesselfieldError, match=match):
        load_swc(tmp_path / "bad.swc")


def test_swc_missing_file(tmp_path):
    with pytest.raises(VesselfieldError, match="does not exist"):
        load_swc(tmp_path / "none.swc")


# ------------------------------------------------------------------------------- points
@pytest.mark.parametrize("suffix", [".npy", ".xyz", ".txt", ".csv", ".ply"])
@pytest.mark.parametrize("with_normals", [False, True])
def test_points_round_trip(tmp_path, suffix, with_normals):
    rng = np.random.default_rng(5)
    points, normals = rng.normal(size=(40, 3)) * 25, rng.normal(size=(40, 3))
    save_points(tmp_path / f"p{suffix}", points, normals if with_normals else None)
    p, n = load_points(tmp_path / f"p{suffix}")
    assert np.array_equal(p, points)
    assert (n is None) if not with_normals else np.array_equal(n, normals)


def test_points_text_variants(tmp_path):
    (tmp_path / "a.csv").write_text("z, x ,y,NX,ny,nz\n3,1,2,0,0,1\n6,4,5,1,0,0\n")
    p, n = load_points(tmp_path / "a.csv")
    assert p.tolist() == [[1, 2, 3], [4, 5, 6]] and n.tolist() == [[0, 0, 1], [1, 0, 0]]
    (tmp_path / "b.xyz").write_text("# scanner points\n1 2 3\n\n4\t5 6  # last\n")
    p, n = load_points(tmp_path / "b.xyz", frame="RAS", scale_to_mm=2.0)
    assert p.tolist() == [[-2, -4, 6], [-8, -10, 12]] and n is None
    mesh = _mesh()
    save_mesh(tmp_path / "m.ply", mesh)
    p, n = load_points(tmp_path / "m.ply")  # mesh vertices; no normals stored in the file
    assert np.array_equal(p, mesh.vertices) and n is None
    np.save(tmp_path / "c.npy", np.array([[1, 2, 3, 0, 1, 0]], np.int32))
    p, n = load_points(tmp_path / "c.npy", frame="RAS")
    assert p.tolist() == [[-1, -2, 3]] and n.tolist() == [[0, -1, 0]]


def test_points_errors_are_user_errors(tmp_path):
    cases = {
        "four.xyz": ("1 2 3 4\n", "3 columns .* or 6"),
        "ragged.txt": ("1 2 3\n4 5 6 7 8 9\n1 2\n", "line 2: 6 columns, expected 3"),
        "word.xyz": ("1 2 3\n1 two 3\n", "line 2: non-numeric"),
        "empty.csv": ("x,y,z\n", "no points"),
        "header.csv": ("x,y,z\n1,2,3,4\n", "header has 3 names"),
        "nan.txt": ("1 2 3\nnan 0 0\n", "NaN"),
    }
    for name, (text, match) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(VesselfieldError, match=match):
            load_points(tmp_path / name)
    np.save(tmp_path / "four.npy", np.zeros((5, 4)))
    np.save(tmp_path / "str.npy", np.array([["a", "b", "c"]]))
    for name, match in (("four.npy", "3 columns"), ("str.npy", "non-numeric")):
        with pytest.raises(VesselfieldError, match=match):
            load_points(tmp_path / name)
    with pytest.raises(VesselfieldError, match="does not exist"):
        load_points(tmp_path / "none.xyz")
    (tmp_path / "p.las").write_text("1 2 3\n")
    with pytest.raises(VesselfieldError, match="unknown point file type"):
        load_points(tmp_path / "p.las")
    with pytest.raises(VesselfieldError, match=r"shape \(N, 3\)"):
        save_points(tmp_path / "p.xyz", np.zeros((4, 2)))
    with pytest.raises(VesselfieldError, match="normals have shape"):
        save_points(tmp_path / "p.xyz", np.zeros((4, 3)), np.zeros((3, 3)))


# ------------------------------------------------------------------------------ package
def test_sample_path_finds_the_repository_data(tmp_path, monkeypatch):
    path = sample_path("vmtk_aorta", "aorta.mha")
    assert path.is_file() and path.parent.parent.name == "samples"
    with pytest.raises(VesselfieldError, match="not in"):
        sample_path("vmtk_aorta", "no-such-file.mha")
    # As from an installed wheel: no data/samples above the package.
    monkeypatch.setattr(vio, "__file__", str(tmp_path / "site-packages" / "vesselfield" / "io" / "__init__.py"))
    with pytest.raises(VesselfieldError, match="data/samples was not found"):
        sample_path()


def test_importing_io_loads_no_heavy_modules():
    assert modules_loaded_by("import vesselfield, vesselfield.io", ["torch", "nibabel", "SimpleITK", "trimesh"]) == []
