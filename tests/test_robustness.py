"""The robustness-to-sparsity study (Alblas et al. 2022, Fig. 3) on a tiny analytic capsule.

One real study (counts 30 and 60, two repeats, 150 iterations of a small ``fast`` network) is
shared by the tests through a module fixture; resuming is checked with a counting fit function.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from vesselfield.bench import robustness as R
from vesselfield.cli import main
from vesselfield.errors import VesselfieldError
from vesselfield.methods.implicit_vessel import fit_implicit_sdf

torch = pytest.importorskip("torch")
trimesh = pytest.importorskip("trimesh")

RADIUS_MM, HEIGHT_MM = 8.0, 20.0
TINY = dict(hidden_dim=32, n_layers=3, hash_log2_size=12, n_domain_samples=256)


@pytest.fixture(scope="module")
def capsule():
    mesh = trimesh.creation.capsule(height=HEIGHT_MM, radius=RADIUS_MM, count=[24, 24])
    return R.shape_from_mesh("capsule", mesh, spacing_mm=1.0)


@pytest.fixture(scope="module")
def study(capsule, tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("robustness")
        rows = R.run_robustness_study([capsule], counts=(30, 60), repeats=2, iterations=150, n_held_out=500,
                                      out_dir=out, progress=False, config_overrides=TINY)
    finally:  # the later test files run with the thread count they started with
        torch.set_num_threads(before)
    return out, rows


def test_capsule_reference_volume_matches_the_mesh_volume(capsule):
    exact = math.pi * RADIUS_MM ** 2 * HEIGHT_MM + 4 / 3 * math.pi * RADIUS_MM ** 3
    # The 24-gon capsule holds ~1 % less than the round one; thresholding 1 mm voxels of a
    # 16 mm wide capsule at half occupancy loses another 2 % (measured).
    assert capsule.mesh.volume == pytest.approx(exact, rel=0.03)
    assert capsule.reference.sum() * np.prod(capsule.grid.spacing) == pytest.approx(capsule.mesh.volume, rel=0.03)


def test_study_writes_one_row_per_fit_with_plausible_metrics(study):
    out, rows = study
    with open(out / "results.csv", newline="") as fh:
        written = list(csv.DictReader(fh))
    assert len(written) == len(rows) == 4
    assert [(int(r["n_points"]), int(r["repeat"])) for r in written] == [(30, 0), (30, 1), (60, 0), (60, 1)]
    assert all(r["error"] == "" and int(r["iterations"]) == 150 for r in written)
    dice = np.array([float(r["dice"]) for r in written])
    asd = np.array([float(r["asd_mm"]) for r in written])
    # 150 steps of a tiny network on a 16 mm wide capsule: well short of converged, but inside
    # the right surface (a failed fit scores DSC < 0.5 or an ASD of several mm).
    assert np.all((dice > 0.75) & (dice <= 1.0)), dice
    assert np.all((asd > 0.0) & (asd < 2.5)), asd
    assert len({r["sample_seed"] for r in written}) == 4


def test_study_writes_summary_and_box_plots(study, capsys):
    import re
    import shlex

    out, _ = study
    summary = (out / "summary.md").read_text()
    assert "| capsule | 30 | 2 |" in summary and "| capsule | 60 | 2 |" in summary
    assert "torch" in summary and "command: `vesselfield study robustness" in summary
    # The recorded command is built from the CLI's own flags (config overrides as --set words).
    words = shlex.split(re.search(r"command: `(.*)`", summary).group(1))
    assert words[words.index("--iterations") + 1] == "150" and "--set" in words and "hidden_dim=32" in words
    assert main(["study", "robustness", "--help"]) == 0
    help_text = capsys.readouterr().out
    for flag in {w for w in words if w.startswith("--")} - {"--set"}:
        assert flag in help_text, flag
    for name in ("boxplot_dice.png", "boxplot_asd.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_skips_rows_already_in_the_csv(study, capsule, tmp_path):
    out, rows = study
    calls = []

    def counting_fit(points, **kwargs):
        calls.append(len(points))
        return fit_implicit_sdf(points, **kwargs)

    again = R.run_robustness_study([capsule], counts=(30, 60), repeats=2, iterations=150, n_held_out=500,
                                   out_dir=out, progress=False, config_overrides=TINY, fit=counting_fit)
    assert calls == []
    assert [r["dice"] for r in again] == [r["dice"] for r in rows]
    # Other settings would mix two studies in one table: refused before any fit, naming the first
    # differences (every setting but the counts, repeats and workers counts).
    with pytest.raises(VesselfieldError, match=r"holds a study run with other settings \(iterations 150 -> 20, "
                                               r"n_held_out 500 -> 100\): resume with the same settings") as info:
        R.run_robustness_study([capsule], counts=(30, 60), repeats=3, iterations=20, n_held_out=100,
                               out_dir=out, progress=False, config_overrides=TINY, fit=counting_fit)
    assert calls == [] and "\n" not in str(info.value)
    # One more repeat: only the two new fits run, and the old rows stay.
    again = R.run_robustness_study([capsule], counts=(30, 60), repeats=3, iterations=150, n_held_out=500,
                                   out_dir=out, progress=False, config_overrides=TINY, fit=counting_fit, workers=1)
    assert calls == [30, 60]
    assert len(again) == 6 and [r["dice"] for r in again if int(r["repeat"]) < 2] == [r["dice"] for r in rows]
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["counts"], settings["repeats"], settings["n_held_out"]) == ([30, 60], 3, 500)
    assert settings["config"]["iterations"] == 150 and settings["config"]["hidden_dim"] == 32


def test_bad_arguments_raise_one_line_errors(capsule, tmp_path):
    with pytest.raises(VesselfieldError, match="at least 10"):
        R.run_robustness_study([capsule], counts=(5,), repeats=1, out_dir=tmp_path)
    with pytest.raises(VesselfieldError, match="repeats"):
        R.run_robustness_study([capsule], counts=(30,), repeats=0, out_dir=tmp_path)
    with pytest.raises(VesselfieldError, match="unknown shape"):
        R.check_shape_specs(["liver"])


@pytest.mark.parametrize("args, message", [
    (["--shapes", "liver"], "unknown shape 'liver'"),
    (["--shapes", "aaa:x"], "bad AAA shape"),
    (["--shapes", "aaa:0", "--counts", "100", "5"], "at least 10, got 5"),
    (["--shapes", "aaa:0", "--repeats", "0"], "repeats must be at least 1"),
    (["--shapes", "vmtk-aorta", "missing.stl"], "does not exist"),
    (["--shapes", "aaa:0", "--iterations", "-1"], "iterations (--iterations) must be a non-negative"),
    (["--shapes", "aaa:0", "--iterations", "5", "--set", "hidden_dim=0"], "hidden_dim must be an integer >= 1"),
    (["--shapes", "aaa:0", "--set", "widht=3"], "has no field 'widht'"),
])
def test_cli_rejects_bad_input_with_exit_2(capsys, tmp_path, args, message):
    code = main(["study", "robustness", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_normals_option_passes_outward_mesh_normals_and_settings_cannot_mix(study, capsule, tmp_path):
    seen = []

    def recording_fit(points, normals=None, **kwargs):
        seen.append((points, normals))
        return fit_implicit_sdf(points, normals, **kwargs)

    rows = R.run_robustness_study([capsule], counts=(30,), repeats=1, iterations=20, n_held_out=50,
                                  out_dir=tmp_path / "n", progress=False, config_overrides=TINY,
                                  fit=recording_fit, normals=True)
    points, normals = seen[0]
    assert normals.shape == points.shape
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    # Outward on the capsule (axis z through the origin): the normal points away from the axis
    # segment's nearest point.
    axis_point = np.stack([0 * points[:, 0], 0 * points[:, 1],
                           np.clip(points[:, 2], -HEIGHT_MM / 2, HEIGHT_MM / 2)], axis=1)
    assert np.all(np.sum((points - axis_point) * normals, axis=1) > 0.9 * RADIUS_MM)
    assert rows[0]["normals"] == "yes" and "with the mesh normals" in (tmp_path / "n" / "summary.md").read_text()
    # The module's study was run without normals: resuming it with normals is refused.
    out, _ = study
    with pytest.raises(VesselfieldError, match=r"other settings \(normals False -> True\)"):
        R.run_robustness_study([capsule], counts=(30, 60), repeats=2, iterations=150, n_held_out=500, out_dir=out,
                               progress=False, config_overrides=TINY, normals=True)


def test_a_study_extended_with_a_new_shape_keeps_the_earlier_rows_first(study, capsule, tmp_path):
    import shutil

    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)  # the module's study, with whatever earlier tests added to it
    before = R.read_results(copy / "results.csv")
    other = capsule._replace(name="capsule-b")
    # The new shape is named first on the command line; the table keeps the old shape first.
    again = R.run_robustness_study([other, capsule], counts=(30,), repeats=1, iterations=150, n_held_out=500,
                                   out_dir=copy, progress=False, config_overrides=TINY)
    keys = [(r["shape"], int(r["n_points"]), int(r["repeat"])) for r in again]
    assert len(before) >= 4 and keys[-1] == ("capsule-b", 30, 0)
    assert keys[:-1] == sorted(keys[:-1]) and {k[0] for k in keys[:-1]} == {"capsule"}
    assert [r["dice"] for r in again[:-1]] == [r["dice"] for r in before]


def failing_fit(points, **kwargs):
    raise VesselfieldError("no fit today")


def test_failed_fits_are_retried_and_the_csv_is_read_once_per_run(capsule, tmp_path, monkeypatch):
    reads = []
    original = R.read_results
    monkeypatch.setattr(R, "read_results", lambda path: reads.append(path) or original(path))

    options = dict(counts=(30,), repeats=2, iterations=20, n_held_out=50, out_dir=tmp_path, progress=False,
                   config_overrides=TINY)
    failed = R.run_robustness_study([capsule], fit=failing_fit, **options)
    assert [(r["repeat"], r["error"]) for r in failed] == [(0, "no fit today"), (1, "no fit today")]
    assert all(math.isnan(r["dice"]) and r["iterations"] is None for r in failed)
    rows = R.run_robustness_study([capsule], **options)
    assert [(r["repeat"], r["error"], r["iterations"]) for r in rows] == [(0, "", 20), (1, "", 20)]
    # The rows of a run reach the summary and plots in memory: results.csv is read only to resume.
    assert len(reads) == 2
    assert R.read_results(tmp_path / "results.csv") == rows


def test_settings_json_records_the_study_and_refuses_other_settings(capsule, tmp_path):
    options = dict(iterations=20, n_held_out=50, out_dir=tmp_path, progress=False, config_overrides=TINY,
                   fit=failing_fit, seed=4)
    R.run_robustness_study([capsule], counts=(30,), repeats=1, spacing_mm=2.0, **options)
    from vesselfield.config import config_to_dict
    from vesselfield.methods.implicit_vessel import inr_config

    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings == {"config": config_to_dict(inr_config("fast", iterations=20, **TINY)), "seed": 4,
                        "n_held_out": 50, "spacing_mm": 2.0, "normals": False, "counts": [30], "repeats": 1,
                        "workers": 1}
    # Counts, repeats and workers may change: the folder keeps the union of the counts and the most repeats.
    rows = R.run_robustness_study([capsule], counts=(60,), repeats=2, spacing_mm=2.0, workers=2, **options)
    assert sorted({(r["n_points"], r["repeat"]) for r in rows}) == [(30, 0), (60, 0), (60, 1)]
    R.run_robustness_study([capsule], counts=(30,), repeats=1, spacing_mm=2.0, **options)
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert (settings["counts"], settings["repeats"], settings["workers"]) == ([30, 60], 2, 1)
    # Anything else is refused, naming the first differences (at most three, then "...").
    for changes, named in (
        (dict(spacing_mm=None), "spacing_mm 2.0 -> None"),
        (dict(spacing_mm=2.0, seed=5), "seed 4 -> 5"),
        (dict(spacing_mm=2.0, n_held_out=60), "n_held_out 50 -> 60"),
        (dict(spacing_mm=2.0, normals=True), "normals False -> True"),
        (dict(spacing_mm=2.0, config_overrides={**TINY, "eikonal_weight": 0.5}), "eikonal_weight 0.1 -> 0.5"),
        (dict(spacing_mm=2.0, config_overrides={**TINY, "seed": 1}), "config seed 0 -> 1"),
        # TINY's four fields back at the preset's values, in the config's field order.
        (dict(spacing_mm=2.0, config_overrides={}),
         "hidden_dim 32 -> 128, n_layers 3 -> 4, hash_log2_size 12 -> 15, ..."),
    ):
        with pytest.raises(VesselfieldError, match="other settings") as info:
            R.run_robustness_study([capsule], counts=(30,), repeats=1, **{**options, **changes})
        message = str(info.value)
        assert f"({named})" in message and "\n" not in message, message
    (tmp_path / "settings.json").write_text("{not json")
    with pytest.raises(VesselfieldError, match="settings.json is not readable JSON"):
        R.run_robustness_study([capsule], counts=(30,), repeats=1, spacing_mm=2.0, **options)


def test_cli_study_takes_iterations_and_set(tmp_path, capsys):
    """`study robustness --iterations N --set FIELD=VALUE`: both reach every fit's config."""
    out = tmp_path / "out"
    code = main(["study", "robustness", "--shapes", "aaa:0", "--counts", "10", "--repeats", "1", "--iterations", "5",
                 "--set", "hidden_dim=8", "n_layers=2", "skip_layer=-1", "--spacing", "2", "--n-held-out", "50", "--out", str(out),
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    with open(out / "results.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert int(row["iterations"]) == 5 and row["error"] == ""
    assert "--set hidden_dim=8 n_layers=2 skip_layer=-1" in (out / "summary.md").read_text()
    # A setting that no network can take is refused before any shape is loaded.
    code = main(["study", "robustness", "--shapes", "aaa:0", "--set", "n_layers=2", "skip_layer=2", "--out",
                 str(tmp_path / "bad")])
    assert code == 2 and "skip_layer must be -1 (none) or in [1, n_layers = 2)" in capsys.readouterr().err
