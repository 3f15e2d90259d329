"""The offline 3D view, Python side: MZ3 bytes, the page (no web address, inlined library), size
limits and folder mode, the scene's geometry (frames, error layer, tubes, C-arm), and the view
command. The same pages in a real browser: tests/test_viewer_browser.py."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import struct

import numpy as np
import pytest
import trimesh

from conftest import expect_user_error
from vesselfield.errors import VesselfieldError
from vesselfield.geometry import ConeBeamView, Geometry
from vesselfield.grid import VolumeGrid
from vesselfield.report.html import ReportPage
from vesselfield.report.viewer import ViewerLimits, ViewerScene, read_mz3_bytes, write_mz3_bytes
from vesselfield.report.viewer.page import (VENDOR_DIR, data_folder, library_scripts, niivue_info, nifti_bytes,
                                            safe_script_text, viewer_payload)
from vesselfield.report.viewer.scene import carm_glyphs, downsampled, surface_distance_mm, tube_mesh
from vesselfield.tree import VesselTree

WEB_ADDRESS = re.compile(r"https?://", re.IGNORECASE)


def tetrahedron():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3]], dtype=np.float64)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return v, f


def line_tree(n: int = 21, length_mm: float = 20.0) -> VesselTree:
    z = np.linspace(0.0, length_mm, n)
    return VesselTree(points_mm=np.c_[np.zeros(n), np.zeros(n), z], radius_mm=np.linspace(1.0, 2.0, n),
                      parent=np.r_[-1, np.arange(n - 1)])


def small_scene(**limits) -> ViewerScene:
    scene = ViewerScene(limits=ViewerLimits(**limits))
    surface = trimesh.creation.icosphere(subdivisions=3, radius=5.0)
    reference = trimesh.creation.icosphere(subdivisions=4, radius=5.5)
    scene.add_surface(surface, reference=reference)
    scene.add_centerlines(line_tree())
    return scene


def payload_mesh(payload: dict, name: str) -> dict:
    entry = next(m for m in payload["meshes"] if m["name"] == name)
    return read_mz3_bytes(base64.b64decode(entry["mz3"]))


# ------------------------------------------------------------------------------------- MZ3
@pytest.mark.parametrize("compress", [False, True])
def test_mz3_bytes_hold_header_faces_vertices_colours_and_scalar_layers(compress):
    v, f = tetrahedron()
    rgba = np.array([[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255], [9, 8, 7, 6]], dtype=np.uint8)
    scalars = np.array([[0.5, -1.25, 2.0, 3.5], [10.0, 20.0, 30.0, 40.0]], dtype=np.float32)
    data = write_mz3_bytes(v, f, scalars=scalars, rgba=rgba, compress=compress)
    raw = gzip.decompress(data) if compress else data
    assert (raw[:2] == b"\x1f\x8b") is False and (data[:2] == b"\x1f\x8b") is compress
    # Header: magic 23117, attributes faces|vertices|RGBA|scalars = 1+2+4+8, F, V, skip 0.
    assert struct.unpack_from("<HHIII", raw) == (23117, 15, 4, 4, 0)
    # Body, byte for byte: int32 faces, float32 vertices, uint8 RGBA, float32 layers one after the other.
    body = raw[16:]
    assert body == (f.astype("<i4").tobytes() + v.astype("<f4").tobytes() + rgba.tobytes()
                    + scalars.astype("<f4").tobytes())
    assert len(raw) == 16 + 12 * 4 + 12 * 4 + 4 * 4 + 2 * 4 * 4
    back = read_mz3_bytes(data)
    np.testing.assert_array_equal(back["faces"], f)
    np.testing.assert_array_equal(back["vertices"], v.astype(np.float32))
    np.testing.assert_array_equal(back["rgba"], rgba)
    np.testing.assert_array_equal(back["scalars"], scalars)


def test_mz3_is_reproducible_and_checks_its_input():
    v, f = tetrahedron()
    assert write_mz3_bytes(v, f, scalars=np.arange(4.0)) == write_mz3_bytes(v, f, scalars=np.arange(4.0))
    assert read_mz3_bytes(write_mz3_bytes(v, f, compress=False))["scalars"] is None
    with pytest.raises(VesselfieldError, match="faces index vertices 0..3"):
        write_mz3_bytes(v, f + 1)
    with pytest.raises(VesselfieldError, match="scalars must be"):
        write_mz3_bytes(v, f, scalars=np.arange(5.0))
    with pytest.raises(VesselfieldError, match="finite"):
        write_mz3_bytes(v * np.nan, f)
    with pytest.raises(VesselfieldError, match="not an MZ3 file"):
        read_mz3_bytes(b"\x00" * 20)


# ------------------------------------------------------------------------- vendored NiiVue
def test_vendored_niivue_matches_its_sha256_and_carries_its_licences():
    meta = niivue_info()
    data = (VENDOR_DIR / meta["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["sha256"] and len(data) == meta["bytes"]
    assert meta["package"] == "@niivue/niivue" and meta["license"] == "BSD-2-Clause"
    licences = (VENDOR_DIR / meta["licenses_file"]).read_text(encoding="utf-8")
    assert "BSD 2-Clause License" in licences and "Copyright (c) 2021, Niivue" in licences
    for lib in meta["bundled"]:  # every library bundled inside the UMD build, with its licence text
        assert f"{lib['name']} {lib['version']} ({lib['license']})" in licences
    for asset in meta["assets"]:  # and the font atlas
        assert f"{asset['name']} ({asset['license']})" in licences


def test_inlined_scripts_cannot_end_early_and_name_no_web_address():
    text = library_scripts()
    assert not WEB_ADDRESS.search(text)
    # Exactly the two closing tags we wrote: nothing inside the library ends the element early.
    assert text.count("</script>") == 2
    assert safe_script_text('a="</script>";b="https://x.org"') == 'a="<\\/script>";b="https:\\/\\/x.org"'
    starter = (VENDOR_DIR.parent / "viewer.js").read_text(encoding="utf-8")
    assert "fetch(" not in starter and "import(" not in starter  # file:// pages may use neither


# ------------------------------------------------------------------------------------- page
def test_report_page_is_self_contained_with_no_web_address(tmp_path):
    page = ReportPage("a <view>")
    page.add_viewer(small_scene())
    path = page.write(tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert not WEB_ADDRESS.search(text)
    # Outside the scripts' bodies: every script element is a plain inline classic script.
    tags = re.findall(r"<script[^>]*>", re.sub(r"(?s)<script>.*?</script>", "<script></script>", text))
    assert tags == ["<script>"] * 3  # data, NiiVue, starter
    assert text.count('data-vf-viewer="vf-view-1"') == 1 and "window.__vfViewerData" in text
    assert niivue_info()["sha256"] in text  # the library is inlined with its notice
    assert not data_folder(path).exists() and page.data_path is None


def test_folder_mode_above_the_page_limit_and_back(tmp_path):
    scene = small_scene(max_page_mb=1.0)  # the library alone is 2.3 MB: folder mode
    page = ReportPage("big")
    page.add_viewer(scene)
    path = page.write(tmp_path / "report.html")
    data = tmp_path / "report_files" / "data.js"
    assert page.data_path == data and data.is_file()
    text = path.read_text(encoding="utf-8")
    assert '<script src="report_files/data.js"></script>' in text and "__vfViewerData[\"vf-view-1\"]" not in text
    script = data.read_text(encoding="utf-8")
    assert script.startswith("window.__vfViewerData=window.__vfViewerData||{};")
    payload = json.loads(script.split('window.__vfViewerData["vf-view-1"]=', 1)[1].rstrip(";\n"))
    assert [m["name"] for m in payload["meshes"]] == ["surface", "reference", "centerlines"]
    assert not WEB_ADDRESS.search(text) and not WEB_ADDRESS.search(script)
    # Written again under the limit: inline, and the stale data folder is gone.
    small = ReportPage("small")
    small.add_viewer(small_scene())
    small.write(path)
    assert not data.exists() and "__vfViewerData[\"vf-view-1\"]=" in path.read_text(encoding="utf-8")


def test_display_budgets_simplify_meshes_and_coarsen_volumes():
    big = trimesh.creation.icosphere(subdivisions=5, radius=10.0)  # 20480 faces
    scene = ViewerScene(limits=ViewerLimits(max_faces=3000, max_voxels=20 ** 3))
    shown = scene.add_surface(big)
    assert len(shown.faces) <= 3000 and any("20480 faces shown as" in n for n in scene.notes)
    grid = VolumeGrid(shape=(40, 40, 40), spacing_mm=(0.5, 0.5, 0.5), origin_mm=(1.0, 2.0, 3.0))
    values = np.arange(40 ** 3, dtype=np.float32).reshape(40, 40, 40)
    vol = scene.add_volume(values, grid)
    assert vol.array.shape == (20, 20, 20) and vol.grid.spacing_mm == (1.0, 1.0, 1.0)
    # Block means: voxel (0,0,0) averages indices {0,1}^3 of a linear ramp = value at index (0.5,0.5,0.5).
    assert vol.array[0, 0, 0] == pytest.approx(values[:2, :2, :2].mean())
    # The world box is kept: first block centre = centre of the first two voxels.
    assert vol.grid.origin_mm == pytest.approx((1.25, 2.25, 3.25))
    lo, hi = grid.bounds_mm
    lo2, hi2 = vol.grid.bounds_mm
    np.testing.assert_allclose(lo2, lo)
    np.testing.assert_allclose(hi2, hi)
    a, g, factor = downsampled(np.zeros((41, 10, 10)), grid.__class__((41, 10, 10), (1, 1, 1)), 21 * 10 * 10)
    assert factor == 2 and a.shape == (21, 5, 5)


def test_meshes_go_to_niivue_in_ras_with_their_layers():
    scene = small_scene()
    payload = viewer_payload(scene)
    surface = next(m for m in scene.meshes if m.name == "surface")
    got = payload_mesh(payload, "surface")
    # LPS -> RAS: x and y negated (float32 on both sides: exact).
    np.testing.assert_array_equal(got["vertices"], surface.vertices * np.array([-1, -1, 1], dtype=np.float32))
    np.testing.assert_array_equal(got["faces"], surface.faces)
    np.testing.assert_array_equal(got["scalars"][0], surface.layer.values)
    entry = next(m for m in payload["meshes"] if m["name"] == "surface")
    assert entry["layer"]["name"] == "error_mm" and entry["layer"]["colormap"] == "vf_error"
    assert entry["layer"]["range"][0] == -entry["layer"]["range"][1]  # symmetric about 0


def test_volume_goes_to_niivue_as_nifti_with_the_ras_affine_and_quantised_values():
    import nibabel as nib

    grid = VolumeGrid(shape=(12, 10, 8), spacing_mm=(0.5, 0.7, 1.2), origin_mm=(-3.0, 4.0, 5.0))
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 300.0, grid.shape).astype(np.float32)
    img = nib.Nifti1Image.from_bytes(gzip.decompress(nifti_bytes(image, grid, overlay=False)))
    np.testing.assert_allclose(img.affine, grid.affine_ras, atol=1e-5)
    # int16 with slope (max - min) / 65535 at most: rounding costs at most half a step.
    step = float(image.max() - image.min()) / 65535.0
    assert np.abs(img.get_fdata() - image).max() <= 0.5 * step * 1.001 + 1e-6
    occupancy = rng.uniform(0.0, 1.0, grid.shape).astype(np.float32)
    ov = nib.Nifti1Image.from_bytes(gzip.decompress(nifti_bytes(occupancy, grid, overlay=True)))
    assert ov.get_data_dtype() == np.uint8
    assert np.abs(ov.get_fdata() - occupancy).max() <= 0.5 * float(occupancy.max() - occupancy.min()) / 255 + 1e-6


# --------------------------------------------------------------------------- scene geometry
def test_error_layer_is_the_signed_distance_to_the_reference():
    # A sphere of radius 10 against a reference polyhedron inscribed in radius 10.5: every vertex lies
    # inside, 0.5 mm from the sphere of 10.5, minus at most the polyhedron's sag (its faces lie
    # between their inradius and 10.5 from the centre).
    surface = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    reference = trimesh.creation.icosphere(subdivisions=5, radius=10.5)
    tri = reference.triangles
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    inradius = np.abs(np.einsum("ij,ij->i", normal / np.linalg.norm(normal, axis=1, keepdims=True), tri[:, 0]))
    sag = 10.5 - inradius.min()
    d = surface_distance_mm(surface.vertices, reference)
    assert np.all(d < 0)  # inside
    assert np.all(np.abs(d + 0.5) <= sag + 1e-6)
    d_out = surface_distance_mm(surface.vertices * 1.1, reference)  # radius 11: 0.5 mm outside
    assert np.all(np.abs(d_out - 0.5) <= sag + 1e-6)


def test_centreline_tubes_follow_the_tree_and_carry_its_radius():
    tree = line_tree()
    scene = ViewerScene()
    tubes = scene.add_centerlines(tree)
    thick = 0.25 * float(np.median(tree.radius_mm))
    # Every tube vertex lies at the tube's thickness from the z axis, between the tree's ends.
    np.testing.assert_allclose(np.hypot(tubes.vertices[:, 0], tubes.vertices[:, 1]), thick, rtol=1e-6)
    assert tubes.vertices[:, 2].min() >= -1e-6 and tubes.vertices[:, 2].max() <= 20.0 + 1e-5
    # The layer is the radius of the node each ring sits on: radius is linear in z here.
    np.testing.assert_allclose(tubes.layer.values, 1.0 + tubes.vertices[:, 2] / 20.0, atol=1e-5)
    assert tubes.layer.range == pytest.approx((1.0, 2.0))
    v, f, _ = tube_mesh([[0, 0, 0]], [[0, 0, 1.0]], 0.5, sides=6)
    assert v.shape == (12, 3) and f.shape == (12, 3)
    assert trimesh.Trimesh(v, f).is_winding_consistent


def test_carm_glyphs_keep_the_view_direction_and_cone():
    view = ConeBeamView(30.0, -20.0, 1100.0, 750.0, (100, 120), (0.3, 0.3))
    center = np.asarray(view.isocenter_mm)
    scale = 0.05
    v, f = carm_glyphs(view, center, scale)
    source = v[-10:-4].mean(axis=0)  # the octahedron's centre
    det = v[-4:].mean(axis=0)  # the detector's corners
    np.testing.assert_allclose(source, center + scale * (view.source_mm - center), atol=1e-9)
    np.testing.assert_allclose(det, center + scale * (view.detector_center_mm - center), atol=1e-9)
    # The detector's diagonal over the source-detector distance: the cone is the real one.
    diag = np.linalg.norm(v[-4] - v[-2])
    true = np.hypot(100 * 0.3, 120 * 0.3) / 1100.0
    assert diag / np.linalg.norm(det - source) == pytest.approx(true, rel=1e-9)
    geometry = Geometry(VolumeGrid.centered((16, 16, 16), 1.0), [view, view.moved(primary_deg=90.0)])
    scene = ViewerScene()
    items = scene.add_carm(geometry)
    assert [m.name for m in items] == ["view1", "view2"] and "smaller about the isocentre" in scene.notes[-1]


# ------------------------------------------------------------------------------- the command
def test_view_command_writes_one_page_of_meshes_trees_and_volumes(tmp_path):
    from vesselfield.cli import main
    from vesselfield.io.meshes import save_mesh
    from vesselfield.io.swc import save_swc
    from vesselfield.io.volumes import save_volume

    save_mesh(tmp_path / "a.stl", trimesh.creation.icosphere(subdivisions=2, radius=4.0))
    save_mesh(tmp_path / "ref.ply", trimesh.creation.icosphere(subdivisions=3, radius=4.5))
    save_swc(tmp_path / "t.swc", line_tree())
    grid = VolumeGrid.centered((16, 16, 16), 1.0)
    save_volume(tmp_path / "ct.nii.gz", np.random.default_rng(1).normal(0, 1, grid.shape).astype(np.float32), grid)
    save_volume(tmp_path / "mask.nii.gz", (np.arange(16 ** 3).reshape(16, 16, 16) % 2).astype(np.float32), grid)
    out = tmp_path / "page" / "v.html"
    assert main(["view", str(tmp_path / "a.stl"), str(tmp_path / "t.swc"), str(tmp_path / "ct.nii.gz"),
                 str(tmp_path / "mask.nii.gz"), "--reference", str(tmp_path / "ref.ply"), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert not WEB_ADDRESS.search(text)
    payload = json.loads(text.split('window.__vfViewerData["vf-view-1"]=', 1)[1].split(";\n", 1)[0])
    assert [m["name"] for m in payload["meshes"]] == ["surface1", "reference", "tree1"]
    assert [(v["name"], v["overlay"]) for v in payload["volumes"]] == [("volume1", False), ("overlay1", True)]
    assert payload["meshes"][0]["layer"]["name"] == "error_mm"


def test_view_of_a_run_folder_shows_its_surface_tree_views_and_truth(tmp_path):
    from vesselfield.geometry import save_geometry
    from vesselfield.io.meshes import save_mesh
    from vesselfield.io.swc import save_swc
    from vesselfield.io.volumes import save_volume
    from vesselfield.pipelines.view import view_files

    grid = VolumeGrid.centered((24, 24, 24), 1.0)
    views = [ConeBeamView(0.0, 0.0, 1000.0, 750.0, (64, 64), (0.8, 0.8)),
             ConeBeamView(90.0, 0.0, 1000.0, 750.0, (64, 64), (0.8, 0.8))]
    save_geometry(tmp_path / "geometry.json", Geometry(grid, views))
    x = grid.voxel_centers_mm().reshape(24, 24, 24, 3)
    save_volume(tmp_path / "truth.nii.gz", (np.linalg.norm(x, axis=-1) < 6.0).astype(np.float32), grid)
    run = tmp_path / "run"
    (run / "analysis").mkdir(parents=True)
    save_mesh(run / "mesh.stl", trimesh.creation.icosphere(subdivisions=3, radius=5.0))
    save_swc(run / "analysis" / "tree.swc", line_tree())
    (run / "config.yaml").write_text(f"inputs:\n  geometry: {tmp_path / 'geometry.json'}\n"
                                     f"  gt: {tmp_path / 'truth.nii.gz'}\n")
    page, lines = view_files([run], tmp_path / "v.html")
    text = page.read_text(encoding="utf-8")
    payload = json.loads(text.split('window.__vfViewerData["vf-view-1"]=', 1)[1].split(";\n", 1)[0])
    assert [m["name"] for m in payload["meshes"]] == ["surface1", "reference", "tree1", "view1", "view2"]
    # The sphere of radius 5 lies inside the truth's 0.5 level (a voxelised ball of radius about 6).
    errors = payload_mesh(payload, "surface1")["scalars"][0]
    assert errors.max() < 0 and "wrote" in lines[0]


def test_view_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    expect_user_error(capsys, ["view", tmp_path / "missing.stl"], "does not exist")
    expect_user_error(capsys, ["view", tmp_path / "notes.txt"], "not a mesh")
    (tmp_path / "empty_run").mkdir()
    expect_user_error(capsys, ["view", tmp_path / "empty_run"], "holds no mesh.stl")
    from vesselfield.io.meshes import save_mesh

    save_mesh(tmp_path / "a.stl", trimesh.creation.icosphere(subdivisions=1))
    expect_user_error(capsys, ["view", tmp_path / "a.stl", "--out", tmp_path / "page.txt"], "must end in .html")
    assert not (tmp_path / "page.txt").exists()
