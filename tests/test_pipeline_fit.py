"""``vesselfield fit points|mesh|nested`` and ``vesselfield blend`` (vesselfield.pipelines.fit / .blend):
files in, models, SDFs and meshes out.

Analytic shapes (a sphere point cloud, capsule meshes) with tiny configurations so that the whole
file runs in well under a minute on 2 CPU cores. Only the CLI contract test uses the real
``fast`` preset; the others shrink it to a small plain MLP (:data:`TINY`, on the command line
:data:`TINY_SET`).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import expect_user_error, sphere_points

from vesselfield.cli import main
from vesselfield.errors import VesselfieldError
from vesselfield.io import load_volume, save_points
from vesselfield.methods import implicit_vessel as inr
from vesselfield.methods.implicit_vessel import BlendConfig, ImplicitVesselModel, config_from_dict, inr_config
from vesselfield.metrics import dice
from vesselfield.pipelines.blend import blend_files
from vesselfield.pipelines.fit import fit_mesh_files, fit_nested_files, fit_points_files

trimesh = pytest.importorskip("trimesh")

#: A small plain MLP: ~5 ms per iteration on one CPU thread (the hash grid costs ~40 ms).
TINY = dict(encoding="none", hidden_dim=32, n_layers=3, skip_layer=-1, n_domain_samples=256)
TINY_SET = ["--set", *(f"{k}={v}" for k, v in TINY.items())]
SPHERE_CENTER = np.array([3.0, -2.0, 5.0])
SPHERE_RADIUS = 10.0


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # These networks are far too small to gain from intra-op threads, and on a loaded 2-core
    # machine two OpenMP threads were measured 10-100x slower than one (spinning on barriers).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def capsule(start, end, radius=3.0):
    """Closed capsule mesh between two cap centres (mm)."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    axis = end - start
    length = float(np.linalg.norm(axis))
    mesh = trimesh.creation.capsule(height=length, radius=radius, count=[24, 24])
    align = trimesh.geometry.align_vectors([0, 0, 1], axis / length)
    mesh.apply_transform(align)
    mesh.apply_translation((start + end) / 2)
    return mesh


# ------------------------------------------------------------------------------------ fit points
def test_cli_fit_points_contract_resume_and_refusals(tmp_path, capsys):
    points, normals = sphere_points(500, SPHERE_RADIUS, SPHERE_CENTER)
    save_points(tmp_path / "sphere.npy", points, normals)
    out = tmp_path / "fit"
    args = ["fit", "points", "--points", tmp_path / "sphere.npy", "--normals", "--out", out, "--iterations", "100",
            "--spacing", "0.5", "--device", "cpu", "--quiet"]
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "watertight=True" in stdout and "components=1" in stdout
    for name in ("model.pt", "sdf.nii.gz", "mesh.stl", "config.yaml", "log.csv", "summary.json", "checkpoint.pt"):
        assert (out / name).is_file(), name

    sdf, grid = load_volume(out / "sdf.nii.gz")
    assert grid.spacing_mm == (0.5, 0.5, 0.5)
    truth = np.linalg.norm(grid.voxel_centers_mm(np.float64) - SPHERE_CENTER, axis=-1) < SPHERE_RADIUS
    # Measured 0.991 (fast preset, 100 iterations, 500 points with normals, 0.5 mm grid).
    assert dice(sdf < 0, truth) > 0.97
    mesh = trimesh.load(out / "mesh.stl")
    assert mesh.is_watertight
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 100 and summary["normals"] and summary["mesh"]["watertight"]
    assert summary["cfd_ready"] and summary["mesh"]["components"] == 1
    assert summary["mesh"]["volume_mm3"] == pytest.approx(4 / 3 * np.pi * SPHERE_RADIUS ** 3, rel=0.05)
    assert set(summary["final_losses"]) >= {"loss", "loss_surface", "loss_eikonal", "loss_normal"}
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert config_from_dict(stored["config"]) == inr_config("fast", iterations=100)
    assert "fit points" in stored["command"] and stored["inputs"]["use_normals"]
    # The recorded command (--set words for the config, the job's own flags) reruns the fit exactly.
    import shlex

    words = shlex.split(stored["command"])
    words[words.index("--out") + 1] = str(tmp_path / "again")
    assert main(words[1:] + ["--quiet"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    np.testing.assert_array_equal(load_volume(tmp_path / "again" / "sdf.nii.gz")[0], sdf)
    assert len((out / "log.csv").read_text().splitlines()) == 101
    model = ImplicitVesselModel.load(out)
    # Near the surface the SDF is a distance in mm (deep inside, 100 iterations do not get there).
    probe = SPHERE_CENTER + np.array([[SPHERE_RADIUS - 1.0, 0.0, 0.0], [0.0, SPHERE_RADIUS + 2.0, 0.0]])
    assert model.sdf(probe) == pytest.approx([-1.0, 2.0], abs=0.3)
    assert "data:image/png;base64" in (out / "report.html").read_text()

    # An earlier run is there: refuse it without --resume, refuse a changed configuration on resume.
    expect_user_error(capsys, args, "--resume")
    expect_user_error(capsys, args + ["--resume", "--preset", "paper"], "different configuration")
    more = [a if a != "100" else "110" for a in args]
    assert main([str(a) for a in more + ["--resume"]]) == 0, capsys.readouterr().err
    assert len((out / "log.csv").read_text().splitlines()) == 111


def test_fit_points_without_normals_and_default_spacing(tmp_path):
    points, _ = sphere_points(400, SPHERE_RADIUS, SPHERE_CENTER, seed=1)
    save_points(tmp_path / "sphere.xyz", points)
    run = fit_points_files(tmp_path / "sphere.xyz", tmp_path / "fit", config=inr_config(iterations=150, **TINY),
                           device="cpu", progress=False, report=False)
    # Default spacing: largest extent (20 mm) / 128, to 2 significant digits.
    assert run.details["spacing_mm"] == 0.16
    sdf, grid = load_volume(tmp_path / "fit" / "sdf.nii.gz")
    truth = np.linalg.norm(grid.voxel_centers_mm(np.float64) - SPHERE_CENTER, axis=-1) < SPHERE_RADIUS
    assert dice(sdf < 0, truth) > 0.97  # measured 0.990
    assert not run.details["normals"] and run.details["mesh"]["watertight"]
    # A sphere has no centreline: the vessel analysis that runs after every fit says so and is skipped.
    assert run.files["summary"] == tmp_path / "fit" / "summary.json"
    assert run.warnings == ["vessel analysis skipped: no centreline found: the network's skeleton is 1 isolated "
                            "point(s), a blob rather than a vessel"]
    assert not (tmp_path / "fit" / "analysis").exists()
    # Bare points: the visibility sign prior ran; summary.json says how much it labelled and that
    # the mesh is one piece.
    saved = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert saved["components"] == 1 and saved["prior_steps"] == 300
    shares = saved["sign_prior"]["surface"]
    assert shares["outside"] > 0 and shares["inside"] > 0
    assert shares["outside"] + shares["inside"] + shares["unknown"] == pytest.approx(1, abs=2e-4)  # 4-digit rounding


# ------------------------------------------------------------------------------------ fit mesh
def test_cli_fit_mesh_samples_and_fits_a_capsule(tmp_path, capsys):
    cap = capsule([0, 0, 0], [0, 0, 20], radius=4.0)
    cap.export(tmp_path / "capsule.stl")
    out = tmp_path / "fit"
    code = main([str(a) for a in ["fit", "mesh", "--mesh", tmp_path / "capsule.stl", "--n-points", "600", "--out", out,
                                  "--iterations", "200", "--spacing", "0.5", "--seed", "3", "--device", "cpu",
                                  "--quiet", *TINY_SET]])
    assert code == 0, capsys.readouterr().err
    from vesselfield.io import load_points

    pts, nrm = load_points(out / "points.ply")
    assert pts.shape == (600, 3) and nrm.shape == (600, 3)
    # The sampled normals point outwards from the capsule's axis.
    radial = pts - np.c_[np.zeros((600, 2)), np.clip(pts[:, 2], 0, 20)]
    assert (np.einsum("ij,ij->i", radial, nrm) > 0).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mesh"]["watertight"] and summary["mesh"]["components"] == 1
    # Measured 0.5 % above the capsule mesh's volume (1,258 mm3).
    assert summary["mesh"]["volume_mm3"] == pytest.approx(cap.volume, rel=0.05)
    assert yaml.safe_load((out / "config.yaml").read_text())["inputs"]["n_points"] == 600


# ------------------------------------------------------------------------------------ nested
@pytest.fixture(scope="module")
def nested_inputs(tmp_path_factory):
    """Inner: sphere points (r = 5 mm) with normals; outer: a capsule mesh (r = 8 mm) around it."""
    root = tmp_path_factory.mktemp("nested")
    d = np.random.default_rng(2).normal(size=(400, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    save_points(root / "lumen.npy", 5.0 * d, d)
    capsule([0, 0, -4], [0, 0, 4], radius=8.0).export(root / "wall.stl")
    return root


@pytest.fixture(scope="module")
def nested_joint(nested_inputs):
    out = nested_inputs / "joint"
    fit_nested_files([nested_inputs / "lumen.npy", nested_inputs / "wall.stl"], out, n_points=600,
                     config=inr_config(nesting_weight=1.0, iterations=200, **TINY), spacing_mm=0.5, device="cpu",
                     progress=False, report=False)
    return out


def test_nested_joint_and_separate_write_nesting_reports(nested_inputs, nested_joint, tmp_path, capsys):
    joint = json.loads((nested_joint / "nesting.json").read_text())
    assert joint["mode"] == "joint" and joint["surfaces_innermost_first"] == ["lumen", "wall"]
    assert joint["uniform_samples"] == 200_000 and 0.0 <= joint["violation_fraction"] <= 1.0
    # Measured 0.0 (joint, nesting weight 1): the lumen stays inside the wall everywhere sampled.
    assert joint["violation_fraction"] < 0.01 and joint["violation_fraction_grid"] < 0.01
    assert joint["escaped_voxels"] == 0
    model = ImplicitVesselModel.load(nested_joint)
    assert model.surface_names == ["lumen", "wall"]
    assert (nested_joint / "points_wall.ply").is_file() and not (nested_joint / "points_lumen.ply").exists()

    out = tmp_path / "separate"
    code = main([str(a) for a in ["fit", "nested", "--surfaces", nested_inputs / "lumen.npy", nested_inputs / "wall.stl",
                                  "--names", "inner", "outer", "--separate", "--n-points", "600", "--out", out,
                                  "--iterations", "150", "--spacing", "0.5", "--device", "cpu", "--quiet",
                                  *TINY_SET]])
    assert code == 0, capsys.readouterr().err
    assert "nesting (separate)" in capsys.readouterr().out
    separate = json.loads((out / "nesting.json").read_text())
    assert separate["mode"] == "separate" and separate["surfaces_innermost_first"] == ["inner", "outer"]
    assert 0.0 <= separate["violation_fraction"] <= 1.0
    for name in ("inner", "outer"):
        assert ImplicitVesselModel.load(out / name).surface_names == [name]
        assert (out / name / "report.html").is_file()
    # Both modes put every surface on one common grid.
    a, grid_a = load_volume(out / "sdf_inner.nii.gz")
    b, grid_b = load_volume(out / "sdf_outer.nii.gz")
    assert grid_a == grid_b and a.shape == b.shape
    assert json.loads((out / "summary.json").read_text())["surfaces"]["outer"]["mesh"]["watertight"]


# ------------------------------------------------------------------------------------ blend
@pytest.fixture(scope="module")
def capsule_models(tmp_path_factory):
    """Fitted capsules: ``x`` and ``y`` meet at the origin (an L), ``far`` lies 40 mm away."""
    root = tmp_path_factory.mktemp("capsules")
    shapes = {"x": ([0, 0, 0], [20, 0, 0]), "y": ([0, 0, 0], [0, 20, 0]), "far": ([0, 0, 40], [20, 0, 40])}
    volumes = {}
    for name, (a, b) in shapes.items():
        capsule(a, b).export(root / f"{name}.stl")
        run = fit_mesh_files(root / f"{name}.stl", root / name, n_points=500, config=inr_config(iterations=200, **TINY),
                             spacing_mm=0.5, device="cpu", progress=False, report=False)
        volumes[name] = run.details["mesh"]["volume_mm3"]
    return root, volumes


def test_cli_blend_of_an_l_junction_is_one_watertight_piece(capsule_models, tmp_path, capsys):
    root, volumes = capsule_models
    out = tmp_path / "blend"
    code = main([str(a) for a in ["blend", "--models", root / "x", root / "y", "--k", "2", "--spacing", "0.5",
                                  "--out", out]])
    assert code == 0, capsys.readouterr().err
    assert "ready for CFD" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["watertight"] and summary["components"] == 1 and summary["cfd_ready"]
    mesh = trimesh.load(out / "mesh.stl")
    assert mesh.is_watertight and len(mesh.split(only_watertight=False)) == 1
    assert max(volumes["x"], volumes["y"]) < mesh.volume < volumes["x"] + volumes["y"]
    sdf, grid = load_volume(out / "sdf.nii.gz")
    assert sdf.min() < 0 < sdf.max() and grid.spacing_mm == (0.5, 0.5, 0.5)
    # The smooth union lies below the plain one: at the junction's crease it fills a fillet.
    plain = blend_files([root / "x", root / "y"], tmp_path / "plain", config=BlendConfig(k_mm=0.0, spacing_mm=0.5))
    assert plain.details["mesh"]["volume_mm3"] < mesh.volume
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert BlendConfig(**stored["config"]) == BlendConfig(k_mm=2.0, spacing_mm=0.5)
    # The recorded command reruns the blend exactly.
    import shlex

    words = shlex.split(stored["command"])
    words[words.index("--out") + 1] = str(tmp_path / "again")
    assert main(words[1:]) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(load_volume(tmp_path / "again" / "sdf.nii.gz")[0], sdf)


def test_cli_blend_of_disjoint_models_warns_not_cfd_ready(capsule_models, tmp_path, capsys):
    root, _ = capsule_models
    out = tmp_path / "blend"
    code = main([str(a) for a in ["blend", "--models", root / "x", root / "far", "--k", "1", "--spacing", "0.5",
                                  "--out", out]])
    assert code == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "warning: the mesh is not CFD-ready" in stdout and "2 separate components" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["components"] == 2 and not summary["cfd_ready"] and summary["warnings"]


# ------------------------------------------------------------------------------------ bad inputs
@pytest.fixture()
def bad_files(tmp_path):
    points, normals = sphere_points(50, SPHERE_RADIUS, SPHERE_CENTER)
    np.save(tmp_path / "few.npy", points[:5])
    nan = points.copy()
    nan[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "same.npy", np.repeat(points[:1], 40, axis=0))
    np.save(tmp_path / "five_columns.npy", np.c_[points, normals[:, :2]])
    np.save(tmp_path / "no_normals.npy", points)
    np.save(tmp_path / "zero_normals.npy", np.c_[points, np.zeros_like(points)])
    save_points(tmp_path / "cloud.ply", points)  # vertices only: not a surface
    (tmp_path / "not_a_model").mkdir()
    (tmp_path / "not_a_model" / "model.pt").write_bytes(b"junk")
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["fit", "points", "--points", "few.npy"], "5 distinct point(s); a fit needs at least 10"),
    (["fit", "points", "--points", "nan.npy"], "NaN"),
    (["fit", "points", "--points", "same.npy"], "1 distinct point(s)"),
    (["fit", "points", "--points", "five_columns.npy"], "3 columns (x y z) or 6"),
    (["fit", "points", "--points", "no_normals.npy", "--normals"], "has no normals"),
    (["fit", "points", "--points", "zero_normals.npy", "--normals"], "zero, NaN or infinite"),
    (["fit", "points", "--points", "missing.npy"], "does not exist"),
    (["fit", "points", "--points", "no_normals.npy", "--preset", "huge"], "unknown preset"),
    (["fit", "points", "--points", "no_normals.npy", "--frame", "XYZ"], "unknown frame"),
    (["fit", "points", "--points", "no_normals.npy", "--set", "nesting_weight=1"], "one surface has nothing to nest"),
    (["fit", "points", "--points", "no_normals.npy", "--set", "seed=-1"], "seed must be a non-negative integer"),
    (["fit", "mesh", "--mesh", "cloud.ply", "--n-points", "100", "--seed", "-1"], "--seed must be an integer"),
    (["fit", "mesh", "--mesh", "cloud.ply", "--n-points", "100"], "not a surface"),
    (["fit", "nested", "--surfaces", "no_normals.npy"], "at least two --surfaces"),
    (["fit", "nested", "--surfaces", "no_normals.npy", "no_normals.npy", "--names", "a", "a"], "distinct"),
    (["blend", "--models", "not_a_model", "--k", "1", "--spacing", "0.5"], "not a readable model file"),
    (["blend", "--models", "nowhere", "--k", "1", "--spacing", "0.5"], "no model file"),
])
def test_cli_bad_inputs_are_one_line_errors_and_write_nothing(bad_files, capsys, args, message):
    out = bad_files / "out"
    args = [bad_files / a if a.endswith((".npy", ".ply")) or a in ("not_a_model", "nowhere") else a for a in args]
    expect_user_error(capsys, args + ["--out", out], message, out_dir=out)


def test_cli_fit_refuses_bad_spacing_and_time_limit(bad_files, capsys):
    points, _ = sphere_points(50, SPHERE_RADIUS, SPHERE_CENTER)
    np.save(bad_files / "ok.npy", points)
    out = bad_files / "out"
    base = ["fit", "points", "--points", bad_files / "ok.npy", "--out", out]
    expect_user_error(capsys, base + ["--spacing", "0"], "--spacing must be a positive", out_dir=out)
    expect_user_error(capsys, base + ["--spacing", "0.001"], "use a coarser spacing", out_dir=out)
    expect_user_error(capsys, base + ["--time-limit", "-1"], "--time-limit", out_dir=out)


def test_cli_blend_refusals(capsule_models, nested_joint, tmp_path, capsys):
    root, _ = capsule_models
    out = tmp_path / "blend"
    expect_user_error(capsys, ["blend", "--models", nested_joint, root / "x", "--k", "1", "--spacing", "0.5",
                               "--out", out], "pass --surface NAME", out_dir=out)
    expect_user_error(capsys, ["blend", "--models", nested_joint, "--k", "1", "--spacing", "0.5", "--surface",
                               "media", "--out", out], "no surface 'media'", out_dir=out)
    expect_user_error(capsys, ["blend", "--models", root / "x", "--k", "-1", "--spacing", "0.5", "--out", out],
                      "k_mm (--k) must be", out_dir=out)
    expect_user_error(capsys, ["blend", "--models", root / "x", "--k", "1", "--spacing", "-0.5", "--out", out],
                      "spacing_mm (--spacing) must be a positive", out_dir=out)
    with pytest.raises(VesselfieldError, match="at least one model"):
        blend_files([], out, config=BlendConfig(k_mm=1.0, spacing_mm=0.5))
    assert not out.exists()
    # With --surface, a nested model blends like any other.
    run = blend_files([nested_joint, root / "x"], out, config=BlendConfig(k_mm=1.0, spacing_mm=0.5, surface="wall"))
    assert run.details["models"][0]["surface"] == "wall" and run.details["components"] == 1


def test_diverging_fit_is_a_one_line_error(tmp_path):
    points, _ = sphere_points(100, SPHERE_RADIUS, SPHERE_CENTER)
    np.save(tmp_path / "sphere.npy", points)
    with pytest.raises(VesselfieldError, match="diverged") as info:
        fit_points_files(tmp_path / "sphere.npy", tmp_path / "fit",
                         config=inr_config(iterations=20, **{**TINY, "learning_rate": 1e30}), device="cpu",
                         progress=False, report=False)
    assert "\n" not in str(info.value) and "nan" in str(info.value).lower()
    assert not (tmp_path / "fit" / "model.pt").exists()


def test_python_api_checks_normals_shape():
    points, normals = sphere_points(100, SPHERE_RADIUS, SPHERE_CENTER)
    with pytest.raises(VesselfieldError, match="shape of the points"):
        inr.fit_implicit_sdf(points, normals[:-1], config=inr_config(iterations=1, **TINY), device="cpu")


def test_an_inside_that_reaches_the_grid_border_is_flagged_not_cfd_ready():
    from vesselfield.grid import VolumeGrid
    from vesselfield.meshing import cfd_check, inside_at_border_fraction, mesh_from_volume

    k = np.arange(10, dtype=np.float32)
    grid = VolumeGrid((10, 10, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    # A closed sphere of radius 3 in the middle: nothing inside at the border.
    i, j, kk = np.meshgrid(k, k, k, indexing="ij")
    sphere = np.sqrt((i - 4.5) ** 2 + (j - 4.5) ** 2 + (kk - 4.5) ** 2) - 3.0
    assert inside_at_border_fraction(sphere) == 0.0
    info, warning = cfd_check(mesh_from_volume(sphere, grid, 0.0, inside="below"), sphere)
    assert warning is None and info["inside_at_grid_border"] == 0.0
    # A half-space z < 4.5 (a "leak"): the face z = 0 is inside (100 voxels), z = 9 outside, and
    # half of each of the four side faces (4 x 50): 300 of the 600 face voxels.
    leak = np.broadcast_to(kk - 4.5, (10, 10, 10)).astype(np.float32)
    assert inside_at_border_fraction(leak) == pytest.approx(0.5)
    info, warning = cfd_check(mesh_from_volume(leak, grid, 0.0, inside="below"), leak)
    assert info["inside_at_grid_border"] == pytest.approx(0.5)
    assert "inside reaches the edge of the grid (50.0 %" in warning
