"""The X-ray benchmark harness (vesselfield.bench.xray) with fake reconstructions.

The fakes below stand in for vesselfield.methods.sdf_car: they are module-level so that spawned
workers can unpickle them. "sdf-car" returns the ground truth, "neca" the truth shifted along x
by 1 or 2 voxels (odd or even case number), "crash" raises, "die" kills its process. Every case
lives on a 32³ x 3 mm grid seen by the papers' two views on 64² detectors: a job on a volume file
takes a fraction of a second, a coronary phantom a few seconds (its exact partial-volume SDF).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import ball, tube

from vesselfield.bench.harness import format_mean_std
from vesselfield.bench.xray import CSV_COLUMNS, METRIC_COLUMNS, Case, resolve_cases, run_xray_benchmark
from vesselfield.errors import VesselfieldError
from vesselfield.geometry import ConeBeamView, Geometry, default_geometry, save_geometry
from vesselfield.grid import VolumeGrid
from vesselfield.io import load_volume, save_volume


# ----------------------------------------------------------------------------------- fakes
@dataclass
class FakeConfig:
    method: str
    preset: str = "cpu"
    iterations: int = 10
    seed: int = 0
    time_limit_s: float | None = None


def fake_config(method: str = "sdf-car", preset: str | None = None, **overrides) -> FakeConfig:
    """As xray_config: preset None is the config's default (cpu). Checks no value."""
    return FakeConfig(method=method, preset=preset or "cpu", **overrides)


@dataclass
class NoTimeLimitConfig:
    method: str
    preset: str = "cpu"
    seed: int = 0


def no_time_limit_config(method, preset=None, **overrides):
    return NoTimeLimitConfig(method=method, preset=preset or "cpu", **overrides)


def case_number(case_name: str) -> int:
    """The last number in a case name: the seed of phantom_left_2, 3 for 0003_left."""
    return int(re.findall(r"\d+", case_name)[-1])


def fake_reconstruct(geometry, views, *, kind, config, device, out_dir, progress):
    out_dir = Path(out_dir)
    with open(out_dir.parent.parent / "calls.log", "a") as log:
        log.write(f"{out_dir.parent.name} {config.method}\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "seen.json").write_text(json.dumps({
        "kind": kind, "shapes": [list(v.shape) for v in views], "values": np.unique(views[0])[:3].tolist(),
        "max": [float(v.max()) for v in views], "progress": progress, "config": dataclasses.asdict(config)}))
    if config.method == "crash":
        raise RuntimeError("boom\nsecond line")
    # The harness writes the case's ground truth before it calls the method.
    truth, _ = load_volume(out_dir.parent / "ground_truth.nii.gz", geometry.volume)
    truth = truth.astype(np.float32)
    number = case_number(out_dir.parent.name)
    if config.method == "neca":
        truth = np.roll(truth, 1 + number % 2, axis=0)
    return SimpleNamespace(occupancy=truth, seconds=0.25 * (number + 1), sdf=None, rendered=[], log=[], config=config)


def dying_reconstruct(geometry, views, *, kind, config, device, out_dir, progress):
    """Kills its process for method "die" (as a segfault or the OOM killer would)."""
    if config.method == "die":
        os._exit(3)
    return fake_reconstruct(geometry, views, kind=kind, config=config, device=device, out_dir=out_dir,
                            progress=progress)


# --------------------------------------------------------------------------------- helpers
def tiny_geometry() -> Geometry:
    """The papers' two views with 64² detectors (pixels 8x larger), a 32³ x 3 mm volume."""
    views = [ConeBeamView(v.primary_angle_deg, v.secondary_angle_deg, v.source_to_detector_mm,
                          v.source_to_isocenter_mm, (64, 64), (2.224, 2.224)) for v in default_geometry().views]
    return Geometry(VolumeGrid.centered((32, 32, 32), 3.0), views)


def write_file_cases(folder: Path, empty: bool = True) -> Path:
    """0003_left (tube), 0004_right (tube), 0005_empty (nothing, when asked) on the tiny grid."""
    grid = tiny_geometry().volume
    folder.mkdir(parents=True, exist_ok=True)
    save_volume(folder / "0003_left.nii.gz", tube(grid, (5.0, -4.0), 4.5, partial_volume=True), grid)
    save_volume(folder / "0004_right.mha", tube(grid, (-9.0, 7.0), 3.5, partial_volume=True), grid)
    if empty:
        save_volume(folder / "0005_empty.nrrd", np.zeros(grid.shape, np.uint8), grid)
    return folder


def mass_mm3(volume, grid) -> float:
    return float(np.sum(volume, dtype=np.float64) * grid.voxel_volume_mm3)


def centroid_mm(volume, grid) -> np.ndarray:
    w = np.asarray(volume, np.float64)
    return (w[..., None] * grid.voxel_centers_mm(np.float64)).sum((0, 1, 2)) / w.sum()


def read_csv(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


def read_calls(out: Path) -> list[str]:
    log = out / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def parse_summary(text: str) -> dict:
    """{group title: {method: {column title: cell}}} from summary.md."""
    tables, title, header = {}, None, None
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:].split(" (")[0]
            tables[title], header = {}, None
        elif line.startswith("|") and title is not None:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(cells[0]) <= {"-"}:
                tables[title][cells[0]] = dict(zip(header, cells))
    return tables


RUN = dict(geometry=tiny_geometry(), make_config=fake_config, reconstruct=fake_reconstruct, progress=False,
           device="cpu")


# ------------------------------------------------------------------------------ case specs
def test_phantom_spec_counts_sides_and_seeds():
    cases = resolve_cases("phantom:left:0-4,right:0-4")
    assert len(cases) == 10
    assert [c.side for c in cases] == ["left"] * 5 + ["right"] * 5
    assert [c.seed for c in cases] == [0, 1, 2, 3, 4] * 2
    assert cases[0] == Case("phantom_left_0", "phantom", "left", 0)
    assert {c.kind for c in cases} == {"phantom"}
    # Bare seeds continue the side before them; single seeds and ranges mix.
    cases = resolve_cases("phantom:Right:7,left:0,3,5-6")
    assert [(c.side, c.seed) for c in cases] == [("right", 7), ("left", 0), ("left", 3), ("left", 5), ("left", 6)]
    # A list of specs is concatenated; the XCAT tree has no side.
    cases = resolve_cases(["phantom:left:2", "xcat"], tiny_geometry())
    assert [(c.name, c.side) for c in cases] == [("phantom_left_2", "left"), ("xcat", None)]


@pytest.mark.parametrize("spec, says", [
    ("phantom:", "no trees"),
    ("phantom:up:0-2", "unknown side 'up'"),
    ("phantom:left:4-2", "runs backwards"),
    ("phantom:left:a", "'a'"),
    ("phantom:0-3", "before any side"),
    ("phantom:left:0-1,left:1", "duplicate case name(s): phantom_left_1"),
    ("no/such/folder", "neither a folder"),
])
def test_bad_case_spec_is_one_line_error(spec, says):
    with pytest.raises(VesselfieldError) as err:
        resolve_cases(spec)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_phantom_that_does_not_fit_the_geometry_is_refused():
    small = Geometry(VolumeGrid.centered((16, 16, 16), 3.0), tiny_geometry().views)
    with pytest.raises(VesselfieldError, match="phantom_left_0: the tree spans .* outside the geometry's volume box"):
        resolve_cases("phantom:left:0", small)


def test_folder_spec_sides_labels_and_resampling(tmp_path):
    grid = tiny_geometry().volume
    on_grid = ball(grid, (4.0, -3.0, 6.0), 12.0, partial_volume=True)
    save_volume(tmp_path / "0001_left.nii.gz", on_grid, grid)
    # Finer (1.5 mm) and shifted grid: must be resampled onto the 3 mm geometry grid.
    fine = VolumeGrid.centered((48, 48, 48), 1.5, (5.25, 2.0, -4.1))
    fine_ball = ball(fine, (7.3, 1.1, -2.6), 9.5, partial_volume=True)
    save_volume(tmp_path / "0002_right.mha", fine_ball, fine)
    labels = np.zeros(grid.shape, np.uint8)
    labels[10:20, 12:15, 5:25] = 255
    save_volume(tmp_path / "0003.nrrd", labels, grid)
    (tmp_path / "notes.txt").write_text("not a volume")

    cases = resolve_cases(tmp_path)
    assert [(c.name, c.side, c.kind) for c in cases] == [
        ("0001_left", "left", "file"), ("0002_right", "right", "file"), ("0003", None, "file")]
    assert resolve_cases(tmp_path / "0002_right.mha") == [cases[1]]

    assert np.array_equal(cases[0].occupancy(grid), on_grid)
    moved = cases[1].occupancy(grid)
    assert moved.shape == grid.shape and moved.dtype == np.float32
    # Mass (vessel volume, mm³) and centre of mass (world mm) survive the resampling.
    # Box overlap conserves the volume inside the target box (all of it here) to float32 rounding
    # (measured 1.5e-8 relative); the centroid moves far less than its bound of half a target
    # voxel per axis, 1.5 mm (measured 0.0008 mm).
    assert mass_mm3(moved, grid) == pytest.approx(mass_mm3(fine_ball, fine), rel=1e-5)
    assert np.abs(centroid_mm(moved, grid) - centroid_mm(fine_ball, fine)).max() < 0.01
    binary = cases[2].occupancy(grid)
    assert np.array_equal(binary, (labels >= 0.5).astype(np.float32))


def test_xcat_case_is_the_voxelised_tree_centred_on_the_grid():
    grid = tiny_geometry().volume
    xcat = resolve_cases("xcat")[0].occupancy(grid)
    # The ten pieces enclose 706.6 mm³ in all; they overlap where branches join, so their union,
    # measured 676 mm³ on the 0.8 mm grid, is smaller. On 3 mm voxels: 669 mm³.
    assert 650 < mass_mm3(xcat, grid) < 690
    # Its box (72.9 x 65.5 x 75.8 mm) is centred on the grid's centre, the isocenter.
    occupied = grid.index_to_world(np.argwhere(xcat > 0))
    assert np.abs((occupied.min(0) + occupied.max(0)) / 2).max() <= 1.5
    extent = occupied.max(0) - occupied.min(0)  # between voxel centres: up to one voxel short each end
    assert np.all((extent <= (72.9, 65.5, 75.8)) & ((72.9, 65.5, 75.8) <= extent + 2 * 3.0))


# ------------------------------------------------------------------------------- the runs
@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    folder = write_file_cases(out.parent / (out.name + "_cases"))
    result = run_xray_benchmark(["phantom:left:0", folder], ["crash", "neca", "sdf-car"], out, **RUN)
    # The summary's text comes back with the rows: the file holds exactly that text.
    assert (out / "summary.md").read_text() == result.summary and result.summary_path == out / "summary.md"
    assert result.results_path == out / "results.csv"
    return out, result.rows


CASES = ("phantom_left_0", "0003_left", "0004_right")


def test_truth_scores_one_and_failures_are_reported(bench_run):
    out, rows = bench_run
    assert [(r["case"], r["method"]) for r in rows[:3]] == [("phantom_left_0", m) for m in ("crash", "neca", "sdf-car")]
    assert [r["case"] for r in rows[::3]] == [*CASES, "0005_empty"]
    assert [r["side"] for r in rows[::3]] == ["left", "left", "right", ""]
    by = {(r["case"], r["method"]): r for r in rows}
    for case in CASES:
        truth = by[case, "sdf-car"]
        assert truth["status"] == "ok" and truth["error"] == ""
        assert truth["dice"] == 1.0 and truth["cldice"] == 1.0 and truth["iou"] == 1.0
        assert truth["re_error"] == 0.0 and truth["re_mse"] == 0.0 and truth["chamfer_voxel_mm"] == 0.0
        assert truth["chamfer_mm"] == 0.0 and truth["device"] == "cpu"
        assert truth["seconds"] == 0.25 * (case_number(case) + 1)
        shifted = by[case, "neca"]
        assert shifted["status"] == "ok" and shifted["dice"] < 0.95 and shifted["chamfer_voxel_mm"] > 1.0
        crash = by[case, "crash"]
        assert crash["status"] == "failed" and crash["error"] == "RuntimeError: boom second line"
        assert all(crash[key] is None for key in METRIC_COLUMNS)
        # Every job left its record, tracebacks included for the failed ones.
        record = json.loads((out / case / "crash" / "metrics.json").read_text())
        assert record["row"]["status"] == "failed" and "RuntimeError: boom" in record["traceback"]
    # The shifted tubes score exactly the Dice and IoU of their masks rolled by 2 (0003) and
    # 1 (0004) voxels along x.
    grid = tiny_geometry().volume
    for case, center, radius, shift in (("0003_left", (5.0, -4.0), 4.5, 2), ("0004_right", (-9.0, 7.0), 3.5, 1)):
        mask = tube(grid, center, radius, partial_volume=True) >= 0.5
        moved = np.roll(mask, shift, axis=0)
        both = np.count_nonzero(mask & moved)
        assert by[case, "neca"]["dice"] == pytest.approx(2 * both / (2 * np.count_nonzero(mask)), abs=1e-12)
        assert by[case, "neca"]["iou"] == pytest.approx(both / np.count_nonzero(mask | moved), abs=1e-12)
        assert by[case, "neca"]["re_error"] == pytest.approx(np.mean(mask != moved), abs=1e-12)
    # The empty ground truth fails every method of that case, before reconstruction.
    for method in ("crash", "neca", "sdf-car"):
        row = by["0005_empty", method]
        assert row["status"] == "failed" and "ground truth is empty" in row["error"]
    assert sorted(read_calls(out)) == sorted(f"{c} {m}" for c in CASES for m in ("crash", "neca", "sdf-car"))
    # The method saw the two simulated line-integral views, and the config of its method.
    seen = json.loads((out / "phantom_left_0" / "neca" / "seen.json").read_text())
    assert seen["kind"] == "line_integral" and seen["shapes"] == [[64, 64], [64, 64]] and seen["progress"] is False
    assert seen["config"] == {"method": "neca", "preset": "cpu", "iterations": 10, "seed": 0, "time_limit_s": None}
    assert min(seen["max"]) > 1.0  # mm of vessel along the densest ray
    # The longest chord through a z-tube of radius 4.5 mm in a view about 30° off the z axis (view 2)
    # is at least its diameter.
    seen = json.loads((out / "0003_left" / "sdf-car" / "seen.json").read_text())
    assert max(seen["max"]) >= 9.0


def test_csv_holds_the_rows_and_summary_is_numpy_mean_std(bench_run):
    out, rows = bench_run
    table = read_csv(out / "results.csv")
    assert list(table[0]) == list(CSV_COLUMNS)
    assert len(table) == len(rows)
    for written, row in zip(table, rows):
        for key in CSV_COLUMNS:
            value = row[key]
            assert written[key] == ("" if value is None else repr(value) if isinstance(value, float) else str(value))

    text = (out / "summary.md").read_text()
    assert "preset cpu" in text and "input line integrals (mm)" in text and "vesselfield benchmark xray" in text
    summary = parse_summary(text)
    assert list(summary) == ["left tree", "right tree", "all"]
    groups = {"left tree": "left", "right tree": "right", "all": None}
    for title, side in groups.items():
        # Paper order first (sdf-car, neca), then the other methods as given.
        assert list(summary[title]) == ["sdf-car", "neca", "crash"]
        members = [r for r in table if side is None or r["side"] == side]
        for method, cells in summary[title].items():
            mine = [r for r in members if r["method"] == method]
            ok = [r for r in mine if r["status"] == "ok"]
            assert int(cells["n"]) == len(ok) and int(cells["failed"]) == len(mine) - len(ok)
            for key, column in (("cldice", "clDice ↑"), ("dice", "Dice ↑"), ("iou", "IoU ↑"),
                                ("re_error", "reError ↓"), ("chamfer_voxel_mm", "Chamfer (mm) ↓"),
                                ("re_mse", "reMSE ↓"), ("seconds", "time (s)")):
                if not ok:
                    assert cells[column] == "–"
                    continue
                values = np.array([float(r[key]) for r in ok])
                mean_text, std_text = cells[column].split(" ± ")
                decimals = len(mean_text.split(".")[1]) if "." in mean_text else 0
                tolerance = 0.5 * 10.0 ** -decimals + 1e-12
                assert abs(float(mean_text) - np.mean(values)) <= tolerance
                assert abs(float(std_text) - np.std(values)) <= tolerance
    assert summary["left tree"]["neca"]["n"] == "2" and summary["all"]["crash"]["failed"] == "4"
    assert summary["all"]["sdf-car"]["n"] == "3" and summary["all"]["sdf-car"]["failed"] == "1"
    # 0.25 (number + 1) s: 0.25, 1.0, 1.25 -> mean 0.8333, std 0.4249.
    assert summary["all"]["sdf-car"]["time (s)"] == "0.83 ± 0.42"
    assert summary["left tree"]["sdf-car"]["Dice ↑"] == "1 ± 0"


def test_format_mean_std():
    assert format_mean_std([0.90, 0.92, 0.94]) == "0.920 ± 0.016"
    assert format_mean_std([300.0, 345.0, 390.0]) == "345 ± 37"
    assert format_mean_std([1.0, 1.0]) == "1 ± 0"
    assert format_mean_std([]) == "–"
    assert format_mean_std([1.0, math.inf]) == "inf"  # an empty prediction: Chamfer is infinite


def test_rerun_skips_finished_jobs_and_changed_settings_rerun(tmp_path):
    cases = write_file_cases(tmp_path / "cases", empty=False)
    out = tmp_path / "out"
    first = run_xray_benchmark(cases, ["sdf-car", "crash"], out, **RUN).rows
    assert len(read_calls(out)) == 4
    again = run_xray_benchmark(cases, ["sdf-car", "crash"], out, **RUN).rows
    # Only the failed jobs ran again; the finished ones came back from their metrics.json.
    assert read_calls(out)[4:] == ["0003_left crash", "0004_right crash"]
    assert again == first
    # Other settings (binary masks instead of line integrals; more iterations) are other jobs.
    masks = run_xray_benchmark(cases, ["sdf-car"], out, masks_only=True, **RUN).rows
    assert read_calls(out)[6:] == ["0003_left sdf-car", "0004_right sdf-car"]
    assert [r["dice"] for r in masks] == [1.0, 1.0]
    run_xray_benchmark(cases, ["sdf-car"], out, masks_only=True, iterations=20, **RUN)
    assert read_calls(out)[8:] == ["0003_left sdf-car", "0004_right sdf-car"]
    seen = json.loads((out / "0003_left" / "sdf-car" / "seen.json").read_text())
    assert seen["config"]["iterations"] == 20
    assert seen["kind"] == "mask" and seen["values"] == [0.0, 1.0] and seen["max"] == [1.0, 1.0]
    assert "input binary masks" in (out / "summary.md").read_text()


def test_two_workers_give_the_same_csv(tmp_path):
    cases = write_file_cases(tmp_path / "cases")
    run_xray_benchmark(cases, ["neca", "crash", "sdf-car"], tmp_path / "one", workers=1, **RUN)
    run_xray_benchmark(cases, ["neca", "crash", "sdf-car"], tmp_path / "two", workers=2, **RUN)
    one = (tmp_path / "one" / "results.csv").read_text()
    assert (tmp_path / "two" / "results.csv").read_text() == one
    assert len(one.splitlines()) == 1 + 9


def test_a_worker_that_dies_fails_only_its_job(tmp_path):
    cases = write_file_cases(tmp_path / "cases", empty=False) / "0004_right.mha"
    rows = run_xray_benchmark(cases, ["die", "sdf-car"], tmp_path / "out", workers=2,
                              **dict(RUN, reconstruct=dying_reconstruct)).rows
    assert [(r["method"], r["status"], r["error"], r["dice"]) for r in rows] == [
        ("die", "failed", "the worker process died (crash or out of memory)", None), ("sdf-car", "ok", "", 1.0)]


def test_option_errors_are_one_line(tmp_path):
    geometry_path = tmp_path / "geometry.json"
    save_geometry(geometry_path, tiny_geometry())
    options = dict(RUN, geometry=geometry_path, make_config=no_time_limit_config)
    with pytest.raises(VesselfieldError, match="the sdf-car config has no field 'time_limit_s' to set"):
        run_xray_benchmark("phantom:left:0", "sdf-car", tmp_path, time_limit_s=60, **options)
    with pytest.raises(VesselfieldError, match="workers must be a positive integer"):
        run_xray_benchmark("phantom:left:0", "sdf-car", tmp_path, workers=0, **options)
    with pytest.raises(VesselfieldError, match="no methods given"):
        run_xray_benchmark("phantom:left:0", " ", tmp_path, **options)
    try:
        import ray  # noqa: F401
    except ImportError:
        with pytest.raises(VesselfieldError, match=r"needs Ray, which is not installed: pip install"):
            run_xray_benchmark("phantom:left:0", "sdf-car", tmp_path, ray_address="auto", **options)
    assert not (tmp_path / "results.csv").exists()
    # A geometry JSON path works like the Geometry; methods may come as one string.
    case = write_file_cases(tmp_path / "cases", empty=False) / "0003_left.nii.gz"
    rows = run_xray_benchmark(case, "sdf-car", tmp_path, **options).rows
    assert [(r["method"], r["dice"]) for r in rows] == [("sdf-car", 1.0)]


def test_overrides_reach_every_config_and_the_recorded_command_uses_the_cli_flags(tmp_path, capsys):
    import shlex

    from vesselfield.cli import main

    case = write_file_cases(tmp_path / "cases", empty=False) / "0003_left.nii.gz"
    out = tmp_path / "out"
    rows = run_xray_benchmark(case, ["sdf-car", "neca"], out, iterations=5, time_limit_s=60,
                              overrides={"seed": "3"}, **RUN).rows
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for method in ("sdf-car", "neca"):
        seen = json.loads((out / "0003_left" / method / "seen.json").read_text())
        # The benchmark passes the values on as given: the config (not the benchmark) parses them.
        assert seen["config"] == {"method": method, "preset": "cpu", "iterations": 5, "seed": "3", "time_limit_s": 60}
    command = re.search(r"command: `(.*)`", (out / "summary.md").read_text()).group(1)
    words = shlex.split(command)
    assert words[:3] == ["vesselfield", "benchmark", "xray"]
    assert "--time-limit" in words and "--time-limit-s" not in words and words[-2:] == ["--set", "seed=3"]
    # Every flag of the recorded command is one the CLI has (the lead wires --set).
    assert main(["benchmark", "xray", "--help"]) == 0
    help_text = capsys.readouterr().out
    for flag in {w for w in words if w.startswith("--")} - {"--set"}:
        assert flag in help_text, flag
    with pytest.raises(VesselfieldError, match="iterations is given twice"):
        run_xray_benchmark(case, "sdf-car", out, iterations=5, overrides={"iterations": 6}, **RUN)


def test_the_real_config_checks_the_values_and_gives_the_default_preset(tmp_path):
    # make_config left at its default (vesselfield.methods.sdf_car.xray_config): the config, not
    # the benchmark, refuses bad values, before any job runs or any file is written.
    options = dict(RUN, make_config=None)
    for given, says in ((dict(iterations=-1), r"iterations \(--iterations\) must be a non-negative"),
                        (dict(time_limit_s=-5.0), r"time_limit_s \(--time-limit\) must be a non-negative"),
                        (dict(seed=-2), "seed must be a non-negative"),
                        (dict(overrides={"lambda_geo": "x"}), "lambda_geo"),
                        (dict(preset="tpu"), "unknown preset 'tpu'")):
        with pytest.raises(VesselfieldError, match=says) as info:
            run_xray_benchmark("phantom:left:0", "sdf-car", tmp_path / "bad", **options, **given)
        assert "\n" not in str(info.value)
    assert not (tmp_path / "bad").exists()
    # preset None: each config's own default (cpu), in the summary and in the job's config.
    case = write_file_cases(tmp_path / "cases", empty=False) / "0004_right.mha"
    result = run_xray_benchmark(case, "sdf-car", tmp_path / "out", iterations=7, **options)
    seen = json.loads((tmp_path / "out" / "0004_right" / "sdf-car" / "seen.json").read_text())
    assert seen["config"]["preset"] == "cpu" and seen["config"]["iterations"] == 7
    assert [r["dice"] for r in result.rows] == [1.0] and "; preset cpu; " in result.summary
    assert "--preset" not in re.search(r"command: `(.*)`", result.summary).group(1)
