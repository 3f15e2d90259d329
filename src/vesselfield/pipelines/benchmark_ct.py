"""`vesselfield benchmark ct`: train each method on a dataset's training cases, evaluate it on the held-out cases.

The protocol (docs/benchmarks.md):

1. the dataset's cases are split **by case** into training and test cases
   (:func:`vesselfield.bench.ct.split_cases`: a seeded third by default, or ``--test-cases``), so
   no test volume is ever seen in training, not even as validation;
2. each method (a :class:`~vesselfield.methods.vessel_sdf.VesselSdfConfig` variant) is trained with
   :func:`vesselfield.pipelines.train_ct.train_ct_run` on the training cases only (which holds
   out its own validation cases among them, ``trainer.val_fraction``) into ``OUT/runs/<method>``;
3. every test case is predicted by every trained method and evaluated
   (:func:`vesselfield.bench.ct.predict_and_evaluate`): on a sparsified dataset against the dense
   label, the predicted field upsampled trilinearly; otherwise against the label on the image grid;
4. ``OUT/cases.csv`` (one row per method x test case), ``OUT/tables.md`` (the paper's Table 1 and
   Table 2 layouts), ``OUT/summary.json`` and ``OUT/figures/`` are written.

Layout of ``OUT``::

    cases.csv  tables.md  summary.json
    runs/<method>/                 the training run folder (config.yaml, log.csv, last.pt, best.pt,
                                   model.pt, summary.json) and benchmark_training.json (the
                                   settings it was trained with, epochs done, how it stopped, time)
    eval/<method>/<case>/metrics.json   the job's row and settings fingerprint (the harness)
    figures/<case>.png             one axial slice of the first test case: every method's contour
                                   over the CT, and a mesh view; figures/<case>_<method>_mesh.png

Resuming: a method whose ``model.pt`` was trained with the same settings (config except the
epochs and time limit, training cases, dataset, label) and for the same number of epochs is not
trained again; one stopped by ``--time-limit`` is used as it is, unless ``--resume`` continues
it; an interrupted one (``last.pt`` without a finished training) needs ``--resume``. A run folder
trained with other settings is an error (choose another ``--out``). Evaluations are redone when
the model file changed (its SHA-256 is in the job's fingerprint).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vesselfield.errors import VesselfieldError

__all__ = ["BENCHMARK_VERB", "TRAINING_RECORD", "CtBenchmarkResult", "run_ct_benchmark"]

BENCHMARK_VERB = "benchmark ct"
TRAINING_RECORD = "benchmark_training.json"
"""Per method, in its run folder: what the benchmark trained it with and how the training ended."""
DEFAULT_TEST_FRACTION = 1 / 3
MESH_PREFERENCE = ("vessel-sdf", "vessel-sdf-no-gauss", "direct-sdf")
"""The method whose mesh the figure shows: the first of these that ran, else the first method."""


@dataclass
class CtBenchmarkResult:
    """What :func:`run_ct_benchmark` returns (nothing is read back from the files it wrote).

    Attributes:
        rows: one dict per method x test case with the keys of :data:`vesselfield.bench.ct.CSV_COLUMNS`.
        tables: the text of ``tables.md``.
        summary: the dict of ``summary.json``.
        files: name -> path of every file written (cases, tables, summary, figures).
        lines: what the run says besides its tables (label, split, which models were reused).
        warnings: things to look at (failed trainings, figures not drawn, ...).
    """

    rows: list
    tables: str
    summary: dict
    files: dict = field(default_factory=dict)
    lines: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


# ======================================================================================= methods
def _methods_list(methods) -> list[str]:
    import re

    from vesselfield.methods.vessel_sdf import VARIANTS

    if isinstance(methods, str):
        methods = re.split(r"[,\s]+", methods.strip())
    names = [str(m).strip().lower() for one in (methods or []) for m in re.split(r"[,\s]+", str(one)) if m.strip()]
    if "all" in names:
        names = [m for m in names if m != "all"] + list(VARIANTS)
    names = list(dict.fromkeys(names))
    if not names:
        raise VesselfieldError("no methods given: name one or more of " + ", ".join(VARIANTS))
    unknown = [m for m in names if m not in VARIANTS]
    if unknown:
        raise VesselfieldError(f"unknown method {unknown[0]!r}: choose from {', '.join(VARIANTS)} (or all)")
    return names


def _configs(methods: Sequence[str], epochs, time_limit_s, assignments) -> dict:
    from vesselfield.config import build_config, parse_assignments
    from vesselfield.methods.vessel_sdf import VesselSdfConfig

    if "variant" in parse_assignments(assignments):
        raise VesselfieldError("--set variant=... is not for a benchmark: name the variants with --methods")
    return {m: build_config(VesselSdfConfig, {"variant": m, "trainer.epochs": epochs,
                                              "trainer.time_limit_s": time_limit_s}, assignments)
            for m in methods}


# ====================================================================================== training
def _identity(config, data_dir: Path, label_values, train_cases) -> dict:
    """What decides a trained model, as plain JSON: the config without the fields a resumed run may
    change (epochs, time limit, sliding-window settings), the dataset, the label, the training cases."""
    from vesselfield.bench.ct import config_fingerprint
    from vesselfield.bench.harness import settings_fingerprint
    from vesselfield.config import free_on_resume

    plain = config_fingerprint(config)
    for name in free_on_resume(config):
        plain.pop(name, None)
    for name in free_on_resume(config.trainer):
        plain.get("trainer", {}).pop(name, None)
    return settings_fingerprint({"data": str(data_dir), "label_values": list(label_values),
                                 "train_cases": list(train_cases), "config": plain})


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _differences(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(dict.fromkeys([*old, *new])):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')} {old!r} -> {new!r}"]


def _plan(run: Path, identity: dict, epochs: int, resume: bool) -> tuple[str, dict | None]:
    """``("train" | "resume" | "reuse", record)`` for one method's run folder; errors before any work."""
    from vesselfield.methods.vessel_sdf import MODEL_FILE
    from vesselfield.training.trainer import LAST_NAME

    record = _read_json(run / TRAINING_RECORD)
    has_model, has_last = (run / MODEL_FILE).exists(), (run / LAST_NAME).exists()
    if record is not None and record.get("fingerprint") != identity:
        changed = _differences(record.get("fingerprint"), identity)
        raise VesselfieldError(f"{run} was trained with other settings ({'; '.join(changed[:3])}): choose another "
                               "--out, or delete that run folder to retrain it")
    if record is None or not has_model:
        if has_last or has_model:
            if resume and has_last:
                return "resume", record
            raise VesselfieldError(f"{run} holds an interrupted training: pass --resume to continue it, or choose "
                                   "another --out")
        return "train", None
    if int(record.get("epochs", -1)) != int(epochs):
        if resume and has_last:
            return "resume", record
        raise VesselfieldError(f"{run} was trained for {record.get('epochs')} epochs, not {epochs}: pass --resume to "
                               f"continue it to {epochs} epochs, or choose another --out")
    if record.get("stopped_by") == "time_limit" and resume and has_last:
        return "resume", record
    return "reuse", record


def _train(method: str, config, run: Path, action: str, record: dict | None, identity: dict, *, data_dir: Path,
           label, train_cases, device, progress, command_words) -> dict:
    """Train (or continue) one method; returns its new :data:`TRAINING_RECORD` (also written)."""
    from vesselfield.io.run_folder import reproducing_command, write_json
    from vesselfield.pipelines.train_ct import train_ct_run

    words = ["train", method, "--data", str(data_dir), "--out", str(run)]
    words += ["--label", str(label)] if label is not None else []
    summary = train_ct_run(data_dir, run, config, label=label, cases=list(train_cases), device=device,
                           resume=action == "resume", progress=progress,
                           command=reproducing_command([*words, *command_words], config))
    details = summary.details
    new = {"fingerprint": identity, "method": method, "epochs": int(config.trainer.epochs),
           "epochs_done": details.get("epochs_done"), "stopped_by": details.get("stopped_by"),
           "best_epoch": details.get("best_epoch"), "val_cases": details.get("val_cases"),
           "train_seconds": float((record or {}).get("train_seconds") or 0.0) + float(details.get("elapsed_s") or 0.0),
           "warnings": list(summary.warnings)}
    write_json(run / TRAINING_RECORD, new)
    return new


# ========================================================================================== main
def run_ct_benchmark(
    data_dir,
    methods,
    out_dir,
    *,
    label=None,
    test_fraction: float | None = None,
    test_cases: Sequence[str] | None = None,
    split_seed: int = 0,
    epochs: int | None = None,
    time_limit_s: float | None = None,
    assignments: Sequence[str] | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    figures: bool = True,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> CtBenchmarkResult:
    """Train every method on the training cases, evaluate it on the test cases, write the tables.

    Args:
        data_dir: MSD / nnU-Net raw dataset folder (a sparsified one is evaluated on its dense labels).
        methods: variants (:data:`vesselfield.methods.vessel_sdf.VARIANTS`; a list, or one string
            separated by commas/spaces; ``all`` is all five).
        out_dir: the benchmark folder (module docstring); a rerun resumes in it.
        label: the vessel label, by name or number (default: the label named like "vessel").
        test_fraction: fraction of the cases held out for testing (default one third, at least one
            case); ``test_cases``: the test cases by name instead. ``split_seed`` seeds the split.
        epochs, time_limit_s: ``trainer.epochs`` and ``trainer.time_limit_s`` (seconds per method)
            of every method's config (None: the config's).
        assignments: ``--set FIELD=VALUE`` items applied to every method's config.
        device: ``auto | cpu | cuda | cuda:N`` for training and prediction.
        resume: continue interrupted (or time-limited) trainings in ``out_dir``.
        progress: progress bars (stderr). figures: draw ``figures/`` (matplotlib).
        command: the command line for the header; default, the equivalent CLI call.
        log: called with one line per step (training started, model reused, ...), or None.

    Raises:
        VesselfieldError: unknown method, bad ``--set``, fewer than two cases, a bad split, a run
            folder trained with other settings or interrupted without ``resume`` (all before any
            training). A method whose training fails is recorded (its rows ``failed``) and the
            others go on.
    """
    from vesselfield.bench import harness
    from vesselfield.bench.ct import (
        CSV_COLUMNS,
        METRIC_COLUMNS,
        NUMERIC_COLUMNS,
        CtTask,
        config_fingerprint,
        file_digest,
        method_means,
        ordered_methods,
        predict_and_evaluate,
        split_cases,
        tables_markdown,
    )
    from vesselfield.datasets.msd import read_msd_dataset
    from vesselfield.io.atomic import write_text_atomic
    from vesselfield.io.run_folder import check_out_dir, reproducing_command, write_json
    from vesselfield.methods.vessel_sdf import MODEL_FILE

    say = log or (lambda line: None)
    if test_cases and test_fraction is not None:
        raise VesselfieldError("give --test-fraction or --test-cases, not both")
    method_names = ordered_methods(_methods_list(methods))
    dataset = read_msd_dataset(data_dir, label=label)
    names = [c.name for c in dataset.cases]
    fraction = DEFAULT_TEST_FRACTION if test_fraction is None else float(test_fraction)
    train_cases, test_list = split_cases(names, fraction, split_seed, list(test_cases) if test_cases else None)
    configs = _configs(method_names, epochs, time_limit_s, assignments)
    machine = harness.machine_description(device)  # also refuses a CUDA device that is not there
    out = check_out_dir(out_dir)
    data_path = Path(data_dir).resolve()

    words = ["benchmark", "ct", "--data", str(data_dir), "--methods", *method_names, "--out", str(out_dir)]
    for flag, value in (("--label", label), ("--test-fraction", test_fraction), ("--split-seed", split_seed or None),
                        ("--epochs", epochs), ("--time-limit", time_limit_s),
                        ("--device", None if device == "auto" else device)):
        if value is not None:
            words += [flag, str(value)]
    if test_cases:
        words += ["--test-cases", ",".join(test_cases)]
    for item in assignments or ():
        words += ["--set", str(item)]
    command = command or reproducing_command(words)
    train_words = [w for flag, value in (("--device", None if device == "auto" else device),) if value
                   for w in (flag, value)]

    identities = {m: _identity(configs[m], data_path, dataset.label_values, train_cases) for m in method_names}
    plans = {m: _plan(out / "runs" / m, identities[m], configs[m].trainer.epochs, resume) for m in method_names}
    how = "--test-cases" if test_cases else f"seed {split_seed}"
    split = (f"split by case ({how}): {len(train_cases)} training case(s) {', '.join(train_cases)}; "
             f"{len(test_list)} test case(s) {', '.join(test_list)}")
    lines = [dataset.label_note, split]
    warnings: list[str] = []
    if dataset.sparsified_every is not None:
        dense = sum(dataset.case(n).dense_label is not None for n in test_list)
        lines.append(f"sparsified every {dataset.sparsified_every} slices: {dense} of {len(test_list)} test case(s) "
                     "evaluated on the dense label grid (prediction upsampled trilinearly)")
        if dense < len(test_list):
            warnings.append("some test cases of this sparsified dataset have no labelsDense/ volume: they are "
                            "evaluated on the sparse image grid")
    for line in lines:
        say(line)

    training: dict[str, dict] = {}
    train_errors: dict[str, str] = {}
    for m in method_names:
        run = out / "runs" / m
        action, record = plans[m]
        if action == "reuse":
            say(f"{m}: reusing {run / MODEL_FILE} ({record.get('epochs_done')} epochs, stopped by "
                f"{record.get('stopped_by')})")
            training[m] = record
            continue
        say(f"{m}: {'continuing' if action == 'resume' else 'training'} on {len(train_cases)} case(s) in {run}")
        try:
            training[m] = _train(m, configs[m], run, action, record, identities[m], data_dir=Path(data_dir),
                                 label=label, train_cases=train_cases, device=device, progress=progress,
                                 command_words=train_words)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001  (a failed training is a result; the other methods go on)
            train_errors[m] = harness.one_line_error(exc)
            warnings.append(f"{m}: training failed: {train_errors[m]}")
            say(f"{m}: training failed: {train_errors[m]}")
    for m, rec in training.items():
        rec["run_dir"] = str(out / "runs" / m)
        if rec.get("stopped_by") == "time_limit":
            lines.append(f"{m}: training stopped by the time limit after {rec.get('epochs_done')} epoch(s); "
                         "--resume continues it")
            say(lines[-1])

    jobs, placeholder = [], {}
    for m in method_names:
        run = out / "runs" / m
        digest = file_digest(run / MODEL_FILE) if m in training else None
        for case in test_list:
            row = {"method": m, "case": case}
            if m in train_errors:
                placeholder[(m, case)] = {**dict.fromkeys(CSV_COLUMNS), **row, "status": harness.FAILED,
                                          "error": f"training failed: {train_errors[m]}"}
                continue
            fingerprint = harness.settings_fingerprint({
                "case": case, "method": m, "data": str(data_path), "label_values": list(dataset.label_values),
                "model_sha256": digest, "config": config_fingerprint(configs[m]),
                "dense": dataset.case(case).dense_label is not None})
            jobs.append(harness.Job(out_dir=str(out / "eval" / m / case), row=row, fingerprint=fingerprint,
                                    task=CtTask(str(data_path), label, case, m, str(run)), device=device))
    done = harness.run_jobs(jobs, predict_and_evaluate, columns=CSV_COLUMNS, numeric=NUMERIC_COLUMNS,
                            progress=progress, description="ct benchmark",
                            describe=lambda row: f"dice {row['dice']:.3f}, CD×100 {row['cd_x100']:.3g}")
    by_key = {(r["method"], r["case"]): r for r in done}
    by_key.update(placeholder)
    rows = [by_key[(m, c)] for m in method_names for c in test_list]

    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    evals = sorted({r["eval_grid"] for r in rows if r.get("eval_grid")})
    header = (f"date {date}; machine {machine}; dataset {dataset.name} ({data_dir}); {dataset.label_note}; "
              f"training cases {', '.join(train_cases)}; test cases {', '.join(test_list)}; evaluated on the "
              f"{' / '.join(evals) or '–'} grid; command: `{command}`")
    tables = tables_markdown(rows, title=f"CT benchmark: {dataset.name}", header=header, methods=method_names,
                             training=training)
    files = {"cases": out / "cases.csv", "tables": out / "tables.md", "summary": out / "summary.json"}
    out.mkdir(parents=True, exist_ok=True)
    harness.write_csv(files["cases"], rows, CSV_COLUMNS)
    write_text_atomic(files["tables"], tables)

    if figures and test_list:
        try:
            files.update(_figures(out, test_list[0], [m for m in method_names if m in training], data_path, label,
                                  device))
        except Exception as exc:  # noqa: BLE001  (the results stand without their figure)
            warnings.append(f"figures not drawn: {harness.one_line_error(exc)}")
    summary = {
        "verb": BENCHMARK_VERB, "date": date, "machine": machine, "command": command,
        "data": str(data_dir), "dataset": dataset.name, "label": dataset.label_note,
        "label_values": list(dataset.label_values), "sparsified_every": dataset.sparsified_every,
        "split": {"seed": split_seed, "test_fraction": None if test_cases else fraction,
                  "given": bool(test_cases), "train": train_cases, "test": test_list},
        "evaluated_on": evals,
        "methods": {m: {"config": config_fingerprint(configs[m]), "training": training.get(m),
                        "training_error": train_errors.get(m)} for m in method_names},
        "means": method_means(rows, method_names),
        "metric_columns": list(METRIC_COLUMNS),
        "files": {k: str(v) for k, v in files.items()},
        "warnings": warnings,
    }
    write_json(files["summary"], summary)
    return CtBenchmarkResult(rows=rows, tables=tables, summary=summary, files=files, lines=lines, warnings=warnings)


def _figures(out: Path, case: str, methods: Sequence[str], data_path: Path, label, device) -> dict:
    """``figures/<case>.png`` (every method's contour on one slice, and a mesh view) and the mesh PNG."""
    from vesselfield.bench.ct import CtTask, figure_ct_case, predict_case
    from vesselfield.device import resolve_device
    from vesselfield.methods.vessel_sdf import default_mesh_spacing
    from vesselfield.pipelines.predict_ct import upsampled_surface
    from vesselfield.report.figures import figure_mesh

    if not methods:
        return {}
    resolved = resolve_device(device)
    cases = {m: predict_case(CtTask(str(data_path), label, case, m, str(out / "runs" / m)), resolved) for m in methods}
    first = cases[methods[0]]
    image_grid = first["loaded"].grid
    shown = next((m for m in MESH_PREFERENCE if m in cases), methods[0])
    files = {}
    mesh, iso = upsampled_surface(cases[shown]["prediction"], image_grid, default_mesh_spacing(image_grid.spacing))
    mesh_png = None
    if mesh is not None and len(mesh.faces):
        mesh_png = figure_mesh(out / "figures" / f"{case}_{shown}_mesh.png", mesh)
        files["mesh_figure"] = mesh_png
    spacing = f"{iso.spacing_mm[0]:.3g}"
    files["figure"] = figure_ct_case(out / "figures" / f"{case}.png", first["loaded"].image, image_grid,
                                     first["target"], first["eval_grid"],
                                     {m: c["prediction"] for m, c in cases.items()}, mesh_png=mesh_png,
                                     mesh_title=f"{shown}: mesh at {spacing} mm (upsampled)", title=case)
    return files
