"""The generic benchmark harness (vesselfield.bench.harness) on toy jobs with known answers.

The job function below is module-level so that spawned workers can unpickle it. Each job squares
its number; ``"raise"`` jobs raise, ``"die"`` jobs kill their process (as a segfault or the OOM
killer would); every call appends its name to ``calls.log`` so that tests can count what ran.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from vesselfield.bench import harness
from vesselfield.bench.harness import Job
from vesselfield.errors import VesselfieldError

COLUMNS = ("name", "status", "error", "square", "inverse", "device")
NUMERIC = ("square", "inverse")


def square_job(task, *, device, out_dir):
    with open(Path(out_dir).parent / "calls.log", "a") as log:
        log.write(f"{task['name']}\n")
    if task.get("mode") == "raise":
        raise RuntimeError("boom\nsecond line")
    if task.get("mode") == "die":
        os._exit(3)
    x = float(task["x"])
    # 1/0 is infinite: strict JSON has no infinity, so it must come back as NaN.
    return {"square": x * x, "inverse": math.inf if x == 0 else 1.0 / x, "device": f"{device}!"}


def threads_task(_task) -> int:
    import torch

    return torch.get_num_threads()


def make_jobs(out: Path, specs, version: int = 1) -> list[Job]:
    return [Job(out_dir=str(out / name), row={"name": name}, fingerprint=harness.settings_fingerprint(
                {"x": spec.get("x"), "mode": spec.get("mode"), "version": version}),
                task={"name": name, **spec}) for name, spec in specs.items()]


def calls(out: Path) -> list[str]:
    log = out / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def same_rows(a: list[dict], b: list[dict]) -> bool:
    """Row lists equal, NaN equal to NaN."""
    def key(rows):
        return [{k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    return key(a) == key(b)


SPECS = {"a": {"x": 3.0}, "b": {"x": -0.5}, "zero": {"x": 0.0}, "bad": {"mode": "raise"}, "c": {"x": 2.0}}


def test_inline_and_two_processes_give_the_same_rows(tmp_path):
    inline = harness.run_jobs(make_jobs(tmp_path / "one", SPECS), square_job, columns=COLUMNS, numeric=NUMERIC)
    spawned = harness.run_jobs(make_jobs(tmp_path / "two", SPECS), square_job, columns=COLUMNS, numeric=NUMERIC,
                               workers=2)
    assert same_rows(inline, spawned)
    assert harness.csv_text(inline, COLUMNS) == harness.csv_text(spawned, COLUMNS)
    assert [r["name"] for r in inline] == list(SPECS)
    by = {r["name"]: r for r in inline}
    assert by["a"] == {"name": "a", "status": "ok", "error": "", "square": 9.0, "inverse": 1 / 3.0, "device": "cpu!"}
    assert by["b"]["square"] == 0.25 and by["b"]["inverse"] == -2.0
    assert by["bad"]["status"] == "failed" and by["bad"]["error"] == "RuntimeError: boom second line"
    assert by["bad"]["square"] is None and by["bad"]["device"] == "cpu"
    assert sorted(calls(tmp_path / "two")) == sorted(SPECS)


def test_a_job_that_kills_its_process_fails_alone(tmp_path):
    specs = {"a": {"x": 1.0}, "die": {"mode": "die"}, "b": {"x": 4.0}, "c": {"x": 5.0}}
    rows = harness.run_jobs(make_jobs(tmp_path, specs), square_job, columns=COLUMNS, numeric=NUMERIC, workers=2)
    assert [(r["name"], r["status"], r["error"], r["square"]) for r in rows] == [
        ("a", "ok", "", 1.0), ("die", "failed", harness.WORKER_DIED, None), ("b", "ok", "", 16.0),
        ("c", "ok", "", 25.0)]
    record = json.loads((tmp_path / "die" / harness.RECORD_NAME).read_text())
    assert record["row"]["status"] == "failed" and record["row"]["error"] == harness.WORKER_DIED


def test_resume_skips_finished_jobs_and_retries_failed_and_changed_ones(tmp_path):
    first = harness.run_jobs(make_jobs(tmp_path, SPECS), square_job, columns=COLUMNS, numeric=NUMERIC)
    assert calls(tmp_path) == list(SPECS)
    again = harness.run_jobs(make_jobs(tmp_path, SPECS), square_job, columns=COLUMNS, numeric=NUMERIC)
    # Only the failed job ran again; the others came back from their records, NaN included.
    assert calls(tmp_path)[len(SPECS):] == ["bad"]
    assert same_rows(again, first)
    assert harness.csv_text(again, COLUMNS) == harness.csv_text(first, COLUMNS)
    # Other settings (another fingerprint) are another job; an unreadable record is no record.
    (tmp_path / "a" / harness.RECORD_NAME).write_text("{not json")
    harness.run_jobs(make_jobs(tmp_path, {**SPECS, "c": {"x": 7.0}}), square_job, columns=COLUMNS, numeric=NUMERIC)
    assert sorted(calls(tmp_path)[len(SPECS) + 1:]) == ["a", "bad", "c"]


def test_records_are_strict_json_and_null_reads_back_as_nan(tmp_path):
    rows = harness.run_jobs(make_jobs(tmp_path, {"zero": {"x": 0.0}}), square_job, columns=COLUMNS, numeric=NUMERIC)
    # In memory already as it reads back: infinity -> null -> NaN.
    assert rows[0]["status"] == "ok" and math.isnan(rows[0]["inverse"]) and rows[0]["square"] == 0.0
    text = (tmp_path / "zero" / harness.RECORD_NAME).read_text()
    record = json.loads(text, parse_constant=lambda word: pytest.fail(f"not strict JSON: {word}"))
    assert record["row"]["inverse"] is None and record["fingerprint"] == {"x": 0.0, "mode": None, "version": 1}
    assert record["job_seconds"] >= 0 and "traceback" not in record
    back = harness.read_record(tmp_path / "zero" / harness.RECORD_NAME, COLUMNS, NUMERIC)
    assert math.isnan(back["row"]["inverse"]) and back["row"]["square"] == 0.0
    assert harness.csv_text(rows, COLUMNS).splitlines()[1] == "zero,ok,,0.0,nan,cpu!"
    # A failed job keeps None (no value was computed), also when read back.
    failed = harness.run_jobs(make_jobs(tmp_path, {"bad": {"mode": "raise"}}), square_job, columns=COLUMNS,
                              numeric=NUMERIC)
    assert failed[0]["square"] is None
    assert harness.read_record(tmp_path / "bad" / harness.RECORD_NAME, COLUMNS, NUMERIC)["row"]["square"] is None


def test_run_tasks_sets_torch_threads_in_each_worker():
    results = {}
    harness.run_tasks(threads_task, [0, 1, 2], workers=2, threads_per_worker=1,
                      on_done=lambda i, result: results.update({i: result}))
    assert {i: (r.value, r.error) for i, r in results.items()} == {0: (1, ""), 1: (1, ""), 2: (1, "")}
    # Inline, an exception becomes the task's error; it does not propagate.
    def refuse(task):
        raise ValueError(f"bad task {task}")

    harness.run_tasks(refuse, [0], on_done=lambda i, result: results.update(inline=result))
    assert results["inline"].error == "ValueError: bad task 0" and "refuse" in results["inline"].traceback


def test_columns_and_workers_are_checked(tmp_path):
    with pytest.raises(VesselfieldError, match="must include status, error"):
        harness.run_jobs([], square_job, columns=("name",))
    with pytest.raises(VesselfieldError, match="workers must be a positive integer"):
        harness.run_jobs([], square_job, columns=COLUMNS, workers=0)


def test_table_cells_and_groups():
    assert harness.format_mean_std([0.90, 0.92, 0.94]) == "0.920 ± 0.016"
    assert harness.format_mean_std([300.0, 345.0, 390.0]) == "345 ± 37"
    assert harness.format_mean_std([1.0, 1.0]) == "1 ± 0"
    assert harness.format_mean_std([]) == "–"
    assert harness.format_mean_std([1.0, math.inf]) == "inf"
    # np.percentile (linear) of 1..5: Q1 2, median 3, Q3 4; NaN left out.
    assert harness.format_median_iqr([5.0, 1.0, math.nan, 3.0, 2.0, 4.0], 1) == "3.0 [2.0, 4.0]"
    assert harness.format_median_iqr([math.nan], 2) == "n/a"
    rows = [{"method": "m", "side": "left", "status": "ok", "x": 1.0},
            {"method": "m", "side": "right", "status": "ok", "x": 3.0},
            {"method": "m", "side": "right", "status": "failed", "x": None},
            {"method": "k", "side": "", "status": "ok", "x": 2.0}]
    groups = harness.groups_then_all(rows, "side", ("left", "right", "up"), "{} tree")
    assert [(title, len(members)) for title, members in groups] == [("left tree", 1), ("right tree", 2), ("all", 4)]
    table = harness.mean_std_table(rows, columns=[("x", "x (mm)")], order=["k", "m"])
    assert table == ["| method | n | failed | x (mm) |", "|---|---:|---:|---:|",
                     "| k | 1 | 0 | 2 ± 0 |", "| m | 2 | 1 | 2.0 ± 1.0 |"]


def test_settings_fingerprint_is_plain_json():
    from dataclasses import dataclass

    @dataclass
    class Settings:
        steps: int
        size: tuple
        limit: float

    fingerprint = harness.settings_fingerprint({"config": Settings(3, (1, 2), math.inf), "path": Path("a/b"),
                                                "value": np.float32(0.5)})
    assert fingerprint == {"config": {"steps": 3, "size": [1, 2], "limit": None}, "path": "a/b", "value": 0.5}


def test_machine_description_names_torch_and_the_threads():
    text = harness.machine_description("cpu")
    assert "CPUs" in text and "torch" in text and "torch thread(s)" in text
    assert harness.machine_description("cpu", ray_address="10.0.0.1:6379").endswith("Ray cluster at 10.0.0.1:6379")
