"""The command line: contract of every verb, and one-line errors for bad input.

A few tests run the real console script in a subprocess; the rest call ``main([...])`` in-process
(same code path, no interpreter start-up) to keep the suite fast.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ball, expect_user_error, modules_loaded_by, write_xa_dicom

from vesselfield.cli import main
from vesselfield.grid import VolumeGrid

SMALL_GEOMETRY = {
    "volume": {"shape": [32, 32, 32], "spacing_mm": [1.0, 1.0, 1.0], "origin_mm": [-15.5, -15.5, -15.5]},
    "views": [
        {"primary_angle_deg": 29.7, "secondary_angle_deg": 0.1, "source_to_detector_mm": 993.0,
         "source_to_isocenter_mm": 757.0605, "detector_shape": [48, 40], "pixel_spacing_mm": [1.2, 1.2]},
        {"primary_angle_deg": 2.0, "secondary_angle_deg": 29.0, "source_to_detector_mm": 1055.0,
         "source_to_isocenter_mm": 756.9934, "detector_shape": [48, 40], "pixel_spacing_mm": [1.2, 1.2]},
    ],
}


def run_cli(*args):
    """Run the real console script; returns (returncode, stdout, stderr).

    The timeout only guards against a hang (it is generous so a loaded CI machine never fails a
    correct run); no test asserts a duration.
    """
    exe = Path(sys.executable).with_name("vesselfield")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "vesselfield.cli"]
    p = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=1200)
    return p.returncode, p.stdout, p.stderr


def write_geometry(path, geometry=SMALL_GEOMETRY):
    path.write_text(json.dumps(geometry))
    return path


@pytest.fixture()
def small(tmp_path):
    geo = write_geometry(tmp_path / "geometry.json")
    grid = VolumeGrid.from_dict(SMALL_GEOMETRY["volume"])
    vol = ball(grid)
    np.save(tmp_path / "ball.npy", vol)
    return tmp_path, geo, grid, vol


# ----------------------------------------------------------------------------- start-up
def test_help_is_fast_and_imports_no_torch():
    heavy = ("torch", "monai", "vtk", "skimage", "trimesh", "nibabel", "scipy", "yaml")
    assert modules_loaded_by("from vesselfield.cli import main\nrc = main(['--help'])", heavy) == []
    # Nor does the help of a command: its options hold no default that needs the method's module.
    assert modules_loaded_by("from vesselfield.cli import main\nrc = main(['reconstruct', 'xray', '--help'])",
                             heavy) == []


def test_config_show_prints_every_field_with_its_documentation(capsys):
    from dataclasses import fields

    from vesselfield.methods.sdf_car import SdfCarConfig

    assert main(["config", "show", "neca", "--preset", "gpu"]) == 0
    out = capsys.readouterr().out
    assert all(f"{f.name} = " in out for f in fields(SdfCarConfig))
    # NeCA's own values under the gpu preset, and the field's documentation as its help.
    assert "method = neca" in out and "mlp_hidden = 256" in out and "learning_rate = 0.0001" in out
    assert "lambda_geo = 0.0" in out and "Weight of L_geo. None: the method's" in out
    assert main(["config", "list"]) == 0 and "implicit-vessel" in capsys.readouterr().out
    expect_user_error(capsys, ["config", "show", "nerf"], "unknown config 'nerf'")


def test_console_script_help_and_usage_error():
    rc, out, _ = run_cli("--help")
    assert rc == 0 and "phantom" in out and "project" in out and "evaluate" in out
    rc, _, err = run_cli("evaluate", "--pred", "x.nii.gz")
    assert rc == 2 and err.strip().startswith("error:") and "--gt" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ contract
def test_project_writes_float32_views_and_binary_masks(small, capsys):
    tmp, geo, grid, vol = small
    assert main(["project", "--volume", str(tmp / "ball.npy"), "--geometry", str(geo), "--out", str(tmp / "v")]) == 0
    from PIL import Image

    for i in (1, 2):
        img = np.load(tmp / "v" / f"view{i}.npy")
        assert img.dtype == np.float32 and img.shape == (48, 40)
        # The ball's chord through its centre is its diameter (12 mm); the brightest ray is close to it.
        assert img.max() == pytest.approx(12.0, abs=0.6)
        mask = np.asarray(Image.open(tmp / "v" / f"view{i}.png"))
        assert mask.shape == (48, 40) and set(np.unique(mask)) <= {0, 255}
        assert (mask > 0).sum() == ((img > 0) & (mask > 0)).sum() > 20
    # The same volume as NIfTI with its own header gives the same images.
    from vesselfield.io import save_volume

    save_volume(tmp / "ball.nii.gz", vol, grid)
    assert main(["project", "--volume", str(tmp / "ball.nii.gz"), "--geometry", str(geo), "--out", str(tmp / "w")]) == 0
    assert np.allclose(np.load(tmp / "w" / "view1.npy"), np.load(tmp / "v" / "view1.npy"), atol=1e-4)


def test_evaluate_prints_table_and_writes_json(small, capsys):
    tmp, geo, grid, vol = small
    shifted = np.roll(vol, 2, axis=0)
    np.save(tmp / "pred.npy", shifted)
    code = main(["evaluate", "--pred", str(tmp / "pred.npy"), "--gt", str(tmp / "ball.npy"),
                 "--geometry", str(geo), "--json", str(tmp / "m.json")])
    out = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((tmp / "m.json").read_text())
    for key in ("dice", "iou", "cldice", "chamfer_mm", "hausdorff_mm"):
        assert key in metrics and key in out.lower()
    expected = 2 * (vol * shifted).sum() / (vol.sum() + shifted.sum())
    assert metrics["dice"] == pytest.approx(expected, abs=1e-6)
    assert main(["evaluate", "--pred", str(tmp / "ball.npy"), "--gt", str(tmp / "ball.npy"), "--geometry", str(geo)]) == 0
    assert "1.0000" in capsys.readouterr().out


def test_mesh_command_writes_world_mm_surface(small, capsys):
    tmp, geo, grid, vol = small
    p = grid.voxel_centers_mm(np.float64)
    sdf = (np.linalg.norm(p - [2.0, -1.0, 3.0], axis=-1) - 5.0).astype(np.float32)
    np.save(tmp / "sdf.npy", sdf)
    assert main(["mesh", "--volume", str(tmp / "sdf.npy"), "--geometry", str(geo), "--out", str(tmp / "s.stl")]) == 0
    import trimesh

    m = trimesh.load(tmp / "s.stl")
    assert m.is_watertight
    assert np.linalg.norm(m.vertices - [2.0, -1.0, 3.0], axis=1) == pytest.approx(5.0, abs=0.05)


def test_geometry_default_and_show(tmp_path, capsys):
    assert main(["geometry", "default", "--out", str(tmp_path / "g.json")]) == 0
    g = json.loads((tmp_path / "g.json").read_text())
    assert g["volume"]["shape"] == [128, 128, 128] and g["volume"]["spacing_mm"] == [0.8, 0.8, 0.8]
    assert [v["primary_angle_deg"] for v in g["views"]] == [29.7, 2.0]
    assert main(["geometry", "show", str(tmp_path / "g.json")]) == 0
    assert "view 2: primary 2 deg, secondary 29 deg" in capsys.readouterr().out


def test_phantom_coronary_on_a_small_grid(tmp_path, capsys):
    geo = write_geometry(tmp_path / "geometry.json", {**SMALL_GEOMETRY, "volume": {
        "shape": [64, 64, 64], "spacing_mm": [1.6, 1.6, 1.6], "origin_mm": [-50.4, -50.4, -50.4]}})
    out = tmp_path / "ph"
    assert main(["phantom", "coronary", "--side", "right", "--seed", "2", "--geometry", str(geo), "--out", str(out)]) == 0
    from vesselfield.io import load_volume

    occ, grid = load_volume(out / "volume.nii.gz")
    sdf, grid2 = load_volume(out / "sdf.nii.gz")
    assert grid.shape == (64, 64, 64) and grid.spacing_mm == pytest.approx((1.6, 1.6, 1.6)) and grid.is_close(grid2)
    assert 0.0 <= occ.min() and occ.max() <= 1.0 and occ.sum() > 10
    # Occupied voxels sit inside the exact SDF's zero level.
    assert np.all(sdf[occ > 0.99] < 0.5 * 1.6 * np.sqrt(3))
    assert json.loads((out / "geometry.json").read_text())["volume"]["shape"] == [64, 64, 64]
    import trimesh

    assert trimesh.load(out / "mesh.stl").is_watertight


# ------------------------------------------------------------------------------ bad input
def test_missing_file(small, capsys):
    tmp, geo, _, _ = small
    expect_user_error(capsys, ["project", "--volume", tmp / "nope.nii.gz", "--geometry", geo, "--out", tmp / "o"],
                      "nope.nii.gz", tmp / "o")


def test_unreadable_file(small, capsys):
    tmp, geo, _, _ = small
    (tmp / "junk.nii.gz").write_bytes(b"this is not a nifti file")
    expect_user_error(capsys, ["project", "--volume", tmp / "junk.nii.gz", "--geometry", geo, "--out", tmp / "o"],
                      "junk.nii.gz", tmp / "o")


def test_wrong_shape(small, capsys):
    tmp, geo, _, _ = small
    np.save(tmp / "flat.npy", np.zeros((32, 32), np.float32))
    expect_user_error(capsys, ["project", "--volume", tmp / "flat.npy", "--geometry", geo, "--out", tmp / "o"],
                      "3D", tmp / "o")
    np.save(tmp / "small.npy", np.zeros((16, 16, 16), np.float32))
    expect_user_error(capsys, ["project", "--volume", tmp / "small.npy", "--geometry", geo, "--out", tmp / "o"],
                      "shape", tmp / "o")


def test_nan_values(small, capsys):
    tmp, geo, _, vol = small
    bad = vol.copy()
    bad[3, 3, 3] = np.nan
    np.save(tmp / "nan.npy", bad)
    expect_user_error(capsys, ["project", "--volume", tmp / "nan.npy", "--geometry", geo, "--out", tmp / "o"],
                      "NaN", tmp / "o")


def test_non_binary_ground_truth(small, capsys):
    tmp, geo, _, vol = small
    np.save(tmp / "soft.npy", vol * 0.7)
    expect_user_error(capsys, ["evaluate", "--pred", tmp / "ball.npy", "--gt", tmp / "soft.npy", "--geometry", geo,
                               "--json", tmp / "o" / "m.json"], "binary", tmp / "o")


def test_prediction_and_truth_on_different_grids(small, capsys):
    tmp, geo, grid, vol = small
    from vesselfield.io import save_volume

    save_volume(tmp / "a.nii.gz", vol, grid)
    save_volume(tmp / "b.nii.gz", vol, VolumeGrid(grid.shape, (1.0, 1.0, 1.2), grid.origin_mm))
    expect_user_error(capsys, ["evaluate", "--pred", tmp / "a.nii.gz", "--gt", tmp / "b.nii.gz",
                               "--json", tmp / "o" / "m.json"], "different grids", tmp / "o")


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda g: g["views"][1].pop("source_to_detector_mm"), "source_to_detector_mm"),
        (lambda g: g.pop("volume"), "volume"),
        (lambda g: g["views"][0].update(source_to_isocenter_mm=1000.0), "source_to_isocenter_mm"),
        (lambda g: g["volume"].update(spacing_mm=[1.0, 0.0, 1.0]), "spacing"),
        (lambda g: g["views"][0].update(detector_shape=[0, 40]), "detector_shape"),
    ],
)
def test_bad_geometry_files(small, capsys, mutate, pattern):
    tmp, _, _, _ = small
    g = json.loads(json.dumps(SMALL_GEOMETRY))
    mutate(g)
    geo = write_geometry(tmp / "bad.json", g)
    expect_user_error(capsys, ["project", "--volume", tmp / "ball.npy", "--geometry", geo, "--out", tmp / "o"],
                      pattern, tmp / "o")


def test_invalid_json_geometry(small, capsys):
    tmp, _, _, _ = small
    (tmp / "bad.json").write_text("{not json")
    expect_user_error(capsys, ["geometry", "show", tmp / "bad.json"], "json")


def test_failed_run_leaves_no_partial_file(small, capsys, monkeypatch):
    """A crash in the middle of writing leaves neither the target nor a temporary file."""
    tmp, geo, _, _ = small
    import vesselfield.io.images as images

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError):
        images.save_image_npy(tmp / "o" / "view1.npy", np.zeros((2, 2)))
    assert list((tmp / "o").iterdir()) == []


def test_phantom_aaa_writes_nested_surfaces_and_sparse_ct(tmp_path, capsys):
    out = tmp_path / "aaa"
    assert main(["phantom", "aaa", "--seed", "1", "--voxel-mm", "2.0", "--ct", "--sparse", "3", "--out", str(out)]) == 0
    from vesselfield.io import load_volume

    labels, grid = load_volume(out / "volume.nii.gz")
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3}
    sdf = {s: load_volume(out / f"sdf_{s}.nii.gz")[0] for s in ("lumen", "thrombus", "wall")}
    # Nesting: wall <= thrombus <= lumen everywhere, and the labels follow the signs.
    assert np.all(sdf["wall"] <= sdf["thrombus"] + 1e-4) and np.all(sdf["thrombus"] <= sdf["lumen"] + 1e-4)
    assert np.all(sdf["lumen"][labels == 1] <= 1e-4) and np.all(sdf["wall"][labels == 0] >= -1e-4)
    ct, ct_grid = load_volume(out / "ct.nii.gz")
    sparse, sparse_grid = load_volume(out / "ct_sparse.nii.gz")
    assert ct_grid.is_close(grid) and sparse.shape[2] == -(-grid.shape[2] // 3)
    assert sparse_grid.spacing_mm[2] == pytest.approx(3 * grid.spacing_mm[2])
    assert np.allclose(sparse, ct[:, :, ::3])
    assert ct[labels == 1].mean() > ct[labels == 0].mean() + 200  # contrast-filled lumen
    import trimesh

    assert all(trimesh.load(out / f"mesh_{s}.stl").is_watertight for s in ("lumen", "thrombus", "wall"))


def test_phantom_swc_tree(tmp_path, capsys):
    swc = tmp_path / "tree.swc"
    swc.write_text("# id type x y z radius parent\n1 1 0 0 0 2.0 -1\n2 3 0 0 10 1.5 1\n3 3 6 0 16 1.0 2\n4 3 -6 0 16 1.0 2\n")
    out = tmp_path / "t"
    assert main(["phantom", "swc", str(swc), "--voxel-mm", "0.5", "--out", str(out)]) == 0
    from vesselfield.io import load_volume

    sdf, grid = load_volume(out / "sdf.nii.gz")
    occ, _ = load_volume(out / "volume.nii.gz")
    # The root sits at the origin with radius 2 mm: its SDF is -2 there.
    ijk = np.round(grid.world_to_index([0.0, 0.0, 0.0])).astype(int)
    assert sdf[tuple(ijk)] == pytest.approx(-2.0 + np.linalg.norm(grid.index_to_world(ijk)), abs=1e-3)
    # Volume: between the volumes of its tubes taken alone and their sum (overlaps at the joints).
    vol = occ.sum() * grid.voxel_volume_mm3
    cone = lambda r1, r2, h: np.pi * h * (r1 * r1 + r1 * r2 + r2 * r2) / 3
    tubes = cone(2.0, 1.5, 10) + 2 * cone(1.5, 1.0, np.hypot(6, 6))
    assert tubes < vol < tubes + 4 / 3 * np.pi * (8 + 2 * 3.375 + 2)
    expect_user_error(capsys, ["phantom", "swc", str(tmp_path / "absent.swc"), "--out", str(tmp_path / "o")],
                      "absent.swc", tmp_path / "o")


def test_geometry_from_dicom_command(tmp_path, capsys):
    a = write_xa_dicom(tmp_path / "a.dcm")
    b = write_xa_dicom(tmp_path / "b.dcm", PositionerPrimaryAngle=2.0, PositionerSecondaryAngle=29.0,
                  DistanceSourceToDetector=1055.0, DistanceSourceToPatient=756.9934)
    assert main(["geometry", "from-dicom", str(a), str(b), "--out", str(tmp_path / "g.json")]) == 0
    g = json.loads((tmp_path / "g.json").read_text())
    assert [(v["primary_angle_deg"], v["secondary_angle_deg"]) for v in g["views"]] == [(29.7, 0.1), (2.0, 29.0)]
    assert g["views"][1]["source_to_isocenter_mm"] == pytest.approx(756.9934)
    assert g["views"][0]["detector_shape"] == [4, 6] and g["views"][0]["pixel_spacing_mm"] == [0.278, 0.31]
    (tmp_path / "x.dcm").write_text("plain text")
    expect_user_error(capsys, ["geometry", "from-dicom", str(tmp_path / "x.dcm"), "--out", str(tmp_path / "o" / "g.json")],
                      "x.dcm", tmp_path / "o")


def test_demo_end_to_end(tmp_path):
    """The README's main job, as a user runs it (shortened): outputs exist and the metrics are sensible."""
    rc, out, err = run_cli("demo", "--out", tmp_path / "demo", "--device", "cpu", "--iterations", "1000", "--quiet")
    assert rc == 0, err
    d = tmp_path / "demo"
    for name in ("phantom_occupancy.nii.gz", "phantom_sdf.nii.gz", "phantom_mesh.stl", "geometry.json",
                 "view1.npy", "view2.npy", "view1.png", "view2.png", "metrics.json"):
        assert (d / name).is_file(), name
    for name in ("occupancy.nii.gz", "sdf.nii.gz", "mesh.stl", "config.yaml", "log.csv", "metrics.json",
                 "report.html", "figure_views.png", "figure_error_overlay.png"):
        assert (d / "reconstruction" / name).is_file(), name
    assert str(d.resolve()) in out
    metrics = json.loads((d / "metrics.json").read_text())
    # 1000 of the preset's 3000 iterations: measured Dice 0.74, clDice 0.72 on this phantom (2 CPU
    # cores, torch 2.13; Dice was 0.80 before issue 13 joined the pieces into one tree and dropped
    # fragments); 300 iterations gave only 0.55 / 0.38 and the visual hull alone ~0.15.
    assert 0.7 < metrics["dice"] <= 1.0 and 0.6 < metrics["cldice"] <= 1.0
    assert 0.0 < metrics["chamfer_mm"] < 5.0
    assert len((d / "reconstruction" / "log.csv").read_text().splitlines()) == 1001
    v1 = np.load(d / "view1.npy")
    assert v1.shape == (512, 512) and v1.dtype == np.float32
    # Conservation: the detector integral of the line integrals equals the vessel volume times the
    # magnification squared (DSD/DSO)^2 for a vessel near the isocentre (depth spread: a few %).
    from vesselfield.io import load_volume

    occ, grid = load_volume(d / "phantom_occupancy.nii.gz")
    vessel_mm3 = occ.sum() * grid.voxel_volume_mm3
    detector_mm3 = v1.sum() * 0.278 * 0.278
    assert detector_mm3 / (vessel_mm3 * (993.0 / 757.0605) ** 2) == pytest.approx(1.0, abs=0.06)
    # No temporary files left behind by the atomic writers.
    assert not [p for p in d.iterdir() if p.name.startswith(".")]
