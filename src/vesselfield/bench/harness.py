"""The benchmark harness: cases x methods -> jobs -> inline, local processes or Ray -> CSV and tables.

A benchmark (``benchmark xray`` in :mod:`vesselfield.bench.xray`; the robustness study in
:mod:`vesselfield.bench.robustness`) brings only what is its own:

- its **cases** (ground-truth volumes, shapes, ...) and **methods**, crossed into :class:`Job`\\ s:
  each names its output folder, its identifying columns (``case``, ``method``, ...), a
  **settings fingerprint** (everything that decides its result: case, method, config, geometry,
  ...) and a picklable **task** for the job function;
- its **job function** ``job_fn(task, *, device, out_dir) -> dict``: a module-level function
  (it travels to spawned processes and Ray tasks by pickle) that does the work and returns the
  job's values (metrics, seconds, ...); raising marks the job failed;
- its **columns** (the CSV header) and **tables** (:func:`mean_std_table` per group of
  :func:`groups_then_all`, or :func:`format_median_iqr` cells).

The harness does the rest, the same way for every benchmark:

- :func:`run_jobs`: each job whose ``out_dir/metrics.json`` says ``ok`` with the same fingerprint
  is not run again (an interrupted benchmark resumes; failed jobs are retried); the others run
  inline (``workers=1``), in spawned local processes (``workers > 1``; a worker that dies fails
  only its job) or as tasks on a Ray cluster (``ray_address``). Each job writes its
  ``metrics.json``: the row, the fingerprint, the traceback if it failed, its wall time;
- :func:`run_tasks`: the executor underneath, for studies that keep no per-job record;
- :func:`write_csv` / :func:`read_csv_rows`: results CSV (floats in full precision);
- :func:`format_mean_std`, :func:`format_median_iqr`, :func:`mean_std_table`,
  :func:`groups_then_all`: the papers' table cells and layout;
- :func:`machine_description`, :func:`assign_devices`, :func:`settings_fingerprint`.

JSON follows the one rule of :func:`vesselfield.io.run_folder.strict_json`: NaN and infinities are
written as ``null``; reading a record back, a ``null`` metric is NaN. The rows a run returns are
already in that form, so a resumed benchmark writes the same CSV as an uninterrupted one (an
infinite distance, such as the Chamfer distance of an empty prediction, is NaN in both).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import platform
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from vesselfield.errors import VesselfieldError

__all__ = [
    "FAILED",
    "OK",
    "RECORD_NAME",
    "WORKER_DIED",
    "Job",
    "TaskResult",
    "assign_devices",
    "csv_text",
    "format_mean_std",
    "format_median_iqr",
    "groups_then_all",
    "machine_description",
    "mean_std_table",
    "one_line_error",
    "read_csv_rows",
    "read_record",
    "run_jobs",
    "run_tasks",
    "settings_fingerprint",
    "write_csv",
]

OK = "ok"
FAILED = "failed"
RECORD_NAME = "metrics.json"
"""Per job, in its ``out_dir``: ``{"row", "fingerprint", "job_seconds", "traceback"?}``."""
WORKER_DIED = "the worker process died (crash or out of memory)"


# ========================================================================================== jobs
@dataclass
class Job:
    """One unit of a benchmark (typically a case x method); picklable.

    Attributes:
        out_dir: the job's folder (created); its :data:`RECORD_NAME` decides whether it runs again.
        row: the identifying columns of its results row (``{"case": ..., "method": ...}``).
        fingerprint: plain JSON of every setting its result depends on
            (:func:`settings_fingerprint`); a stored result with another fingerprint is redone.
        task: what the benchmark's job function needs (picklable).
        device: torch device string passed to the job function (``auto``, ``cpu``, ``cuda:1``).
        num_threads: torch threads in the process that runs it (None: unchanged).
    """

    out_dir: str
    row: dict
    fingerprint: Any
    task: Any
    device: str = "cpu"
    num_threads: int | None = None


@dataclass
class TaskResult:
    """What :func:`run_tasks` reports per task: the function's return value, or a one-line error
    (the function raised, its process died, or the task could not be sent) and the traceback."""

    value: Any = None
    error: str = ""
    traceback: str = ""


def one_line_error(exc: BaseException) -> str:
    """``"Type: message"`` on one line (a :class:`VesselfieldError` without its type), <= 300 chars."""
    text = " ".join(str(exc).split())
    text = text if isinstance(exc, VesselfieldError) else f"{type(exc).__name__}: {text}".rstrip(": ")
    return text if len(text) <= 300 else text[:297] + "..."


def settings_fingerprint(value) -> Any:
    """Plain JSON of ``value`` as it reads back from a record: dataclasses (configs, cases) as
    dicts, tuples as lists, paths and other objects as strings, NaN/inf as None."""
    from vesselfield.io.run_folder import strict_json

    def plain(obj):
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return plain(dataclasses.asdict(obj))
        if isinstance(obj, Mapping):
            return {str(k): plain(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [plain(v) for v in obj]
        if obj is None or isinstance(obj, (bool, int, float, str, np.generic, np.ndarray)):
            return obj
        return str(obj)

    return json.loads(strict_json(plain(value)))


# ======================================================================================= records
def _as_recorded(row: dict, numeric: Iterable[str]) -> dict:
    """``row`` as it reads back from its record: NaN for a numeric value that is None (ok rows),
    NaN or infinite; NumPy scalars as Python numbers."""
    out = {}
    numeric = set(numeric)
    for key, value in row.items():
        if isinstance(value, np.generic):
            value = value.item()
        if key in numeric and row.get("status") == OK and (value is None or
                                                           (isinstance(value, float) and not math.isfinite(value))):
            value = math.nan
        out[key] = value
    return out


def _write_record(job: Job, row: dict, **extra) -> None:
    from vesselfield.io.run_folder import write_json

    write_json(Path(job.out_dir) / RECORD_NAME, {"row": row, "fingerprint": job.fingerprint, **extra})


def read_record(path, columns: Sequence[str], numeric: Iterable[str] = ()) -> dict | None:
    """``{"row", "fingerprint"}`` of a job's :data:`RECORD_NAME`, the row restricted to ``columns``
    (``null`` -> NaN in the ``numeric`` ones when the job was ok); None when missing or unreadable
    (the job then runs again)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        row = {key: record["row"].get(key) for key in columns}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return {"row": _as_recorded(row, numeric), "fingerprint": record.get("fingerprint")}


def _base_row(job: Job, columns: Sequence[str]) -> dict:
    row = dict.fromkeys(columns)
    row.update(job.row)
    row.update(status=FAILED, error="")
    if "device" in row:
        row["device"] = job.device
    return row


def _run_recorded(job_fn: Callable, columns: Sequence[str], numeric: Sequence[str], job: Job) -> dict:
    """Run one job in the current process, write its record, return its row; never raises for
    the job's own errors (a failing job is a result of the benchmark, not the end of it)."""
    started = time.perf_counter()
    row = _base_row(job, columns)
    extra: dict = {}
    try:
        Path(job.out_dir).mkdir(parents=True, exist_ok=True)
        values = job_fn(job.task, device=job.device, out_dir=Path(job.out_dir))
        row.update({k: v for k, v in dict(values).items() if k in row})
        row["status"] = OK
    except Exception as exc:
        row["error"] = one_line_error(exc)
        extra["traceback"] = traceback.format_exc()
    row = _as_recorded(row, numeric)
    extra["job_seconds"] = time.perf_counter() - started
    _write_record(job, row, **extra)
    return row


def _failed(job: Job, columns: Sequence[str], message: str) -> dict:
    row = _base_row(job, columns)
    row["error"] = message
    try:
        _write_record(job, row)
    except OSError:
        pass  # the row still reaches the results CSV
    return row


def run_jobs(
    jobs: Sequence[Job],
    job_fn: Callable,
    *,
    columns: Sequence[str],
    numeric: Sequence[str] = (),
    workers: int = 1,
    ray_address: str | None = None,
    threads_per_worker: int | None = None,
    progress: bool = False,
    description: str = "benchmark",
    describe: Callable[[dict], str] | None = None,
) -> list[dict]:
    """Run the jobs that have no valid record, resume the others; one row per job, in job order.

    Args:
        jobs: the benchmark's :class:`Job` s.
        job_fn: ``job_fn(task, *, device, out_dir) -> dict`` of the job's values (keys among
            ``columns``); module-level when jobs leave this process. It runs in the job's process
            after ``torch.set_num_threads(job.num_threads)`` when that is set.
        columns: the row's keys (the CSV header); must include ``status`` and ``error``; a
            ``device`` column starts as the job's device (the job function may refine it).
        numeric: columns whose ``null`` reads back as NaN (the metrics).
        workers: 1 runs the jobs here, one after another; N > 1 in N spawned processes (when more
            than one job is left), each job with ``threads_per_worker`` torch threads (default
            ``cpus // N``).
        ray_address: run each job as a task on this existing Ray cluster (``ray.init(address=...)``;
            one CPU per task and, when the cluster has GPUs and a job's device is not ``cpu``, one
            GPU, seen by the task as ``cuda``). The job folders should be on a file system every
            node sees: the tasks write the records there.
        progress: a progress bar on stderr, with one line per finished job (``describe(row)``).
        description: the bar's label.

    Returns:
        Rows with every key of ``columns``: ``status`` ``"ok"`` (values from the job function) or
        ``"failed"`` (``error`` one line; the other values None); non-finite numeric values NaN.
    """
    missing = [c for c in ("status", "error") if c not in columns]
    if missing:
        raise VesselfieldError(f"benchmark columns must include {', '.join(missing)}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise VesselfieldError(f"workers must be a positive integer, got {workers!r}")
    if ray_address:
        _import_ray()  # fail before any work when Ray is missing
    rows: list[dict | None] = [None] * len(jobs)
    todo: list[int] = []
    for i, job in enumerate(jobs):
        record = read_record(Path(job.out_dir) / RECORD_NAME, columns, numeric)
        if record and record["row"]["status"] == OK and record["fingerprint"] == job.fingerprint:
            rows[i] = record["row"]
        else:
            todo.append(i)
    pending = [jobs[i] for i in todo]
    in_processes = workers > 1 and len(pending) > 1 and not ray_address
    if in_processes:
        threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
        for job in pending:
            job.num_threads = threads
    gpus = False
    if ray_address and pending:
        gpus = _ray_connect(ray_address) and any(job.device != "cpu" for job in pending)
        if gpus:  # Ray gives a GPU task its own CUDA_VISIBLE_DEVICES: its GPU is cuda:0
            for job in pending:
                job.device = "cuda" if job.device.startswith("cuda") else job.device
    from functools import partial

    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc=description, unit="job",
               disable=not progress)

    def done(k: int, result: TaskResult) -> None:
        job = pending[k]
        row = result.value if not result.error else _failed(job, columns, result.error)
        rows[todo[k]] = row
        bar.update(1)
        if progress:
            state = (describe(row) if describe else "ok") if row["status"] == OK else f"FAILED: {row['error']}"
            bar.write(" / ".join(str(v) for v in job.row.values() if v not in (None, "")) + f": {state}")

    try:
        run_tasks(partial(_run_recorded, job_fn, tuple(columns), tuple(numeric)), pending,
                  workers=workers if in_processes else 1, ray_address=ray_address if pending else None,
                  ray_gpus=gpus, on_done=done)
    finally:
        bar.close()
    return [row for row in rows if row is not None]


# ===================================================================================== execution
def _call(fn: Callable, task, num_threads: int | None) -> TaskResult:
    """``fn(task)`` in this process, its exception turned into a :class:`TaskResult`."""
    before = None
    try:
        if num_threads:
            import torch

            before = torch.get_num_threads()
            torch.set_num_threads(int(num_threads))
        return TaskResult(value=fn(task))
    except Exception as exc:
        return TaskResult(error=one_line_error(exc), traceback=traceback.format_exc())
    finally:
        if before is not None:  # a job run in this process leaves the caller's thread count as it was
            import torch

            torch.set_num_threads(before)


def _threads_of(task, threads: int | None) -> int | None:
    return threads if threads is not None else getattr(task, "num_threads", None)


def run_tasks(
    fn: Callable,
    tasks: Sequence,
    *,
    workers: int = 1,
    threads_per_worker: int | None = None,
    ray_address: str | None = None,
    ray_gpus: bool = False,
    on_done: Callable[[int, TaskResult], None],
) -> None:
    """``fn(task)`` for every task, inline, in spawned processes or on Ray; ``on_done(i, result)``
    here as each finishes (in finishing order; ``i`` is the task's index).

    Args:
        fn: picklable (module-level, or a ``functools.partial`` of one) unless inline.
        tasks: the tasks; a task with a ``num_threads`` attribute (a :class:`Job`) sets its
            process's torch threads unless ``threads_per_worker`` is given.
        workers: 1 inline; N > 1 in N spawned processes (torch and fork do not mix). A worker
            that dies (segfault, out of memory) takes the whole pool down, so the tasks left
            unfinished are then rerun each in a process of its own: only the task that kills its
            process fails (:data:`WORKER_DIED`).
        threads_per_worker: torch threads in each process (None: unchanged, or the task's).
        ray_address: run each task on this Ray cluster instead (one CPU, and one GPU when
            ``ray_gpus``); a task whose node or process dies fails alone.
        on_done: receives a :class:`TaskResult`: ``fn``'s exceptions never propagate.
    """
    tasks = list(tasks)
    if not tasks:
        return
    if ray_address:
        _run_ray(fn, tasks, ray_address, ray_gpus, threads_per_worker, on_done)
    elif workers > 1 and len(tasks) > 1:
        _run_processes(fn, tasks, workers, threads_per_worker, on_done)
    else:
        for i, task in enumerate(tasks):
            on_done(i, _call(fn, task, _threads_of(task, threads_per_worker)))


def _run_isolated(fn: Callable, task, threads: int | None, context) -> TaskResult:
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(_call, fn, task, threads).result()
    except BrokenProcessPool:
        return TaskResult(error=WORKER_DIED)
    except Exception as exc:  # e.g. the task could not be pickled
        return TaskResult(error=one_line_error(exc))


def _run_processes(fn: Callable, tasks: list, workers: int, threads: int | None,
                   on_done: Callable[[int, TaskResult], None]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    left = dict(enumerate(tasks))
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
            futures = {pool.submit(_call, fn, task, _threads_of(task, threads)): i for i, task in left.items()}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    result = future.result()
                except BrokenProcessPool:
                    continue  # rerun alone below
                except Exception as exc:  # e.g. the task could not be pickled
                    result = TaskResult(error=one_line_error(exc))
                del left[i]
                on_done(i, result)
    except BrokenProcessPool:
        pass
    if left:
        with ThreadPoolExecutor(max_workers=min(workers, len(left))) as pool:
            futures = {pool.submit(_run_isolated, fn, task, _threads_of(task, threads), context): i
                       for i, task in left.items()}
            for future in as_completed(futures):
                on_done(futures[future], future.result())


def _import_ray():
    try:
        import ray
    except ImportError:
        raise VesselfieldError(
            "--ray-address needs Ray, which is not installed: pip install 'vesselfield[ray]' (or pip install ray)"
        ) from None
    return ray


def _ray_connect(address: str) -> bool:
    """Connect to the Ray cluster at ``address``; whether it has a GPU."""
    ray = _import_ray()
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    return ray.cluster_resources().get("GPU", 0) >= 1


def _run_ray(fn: Callable, tasks: list, address: str, gpus: bool, threads: int | None,
             on_done: Callable[[int, TaskResult], None]) -> None:
    ray = _import_ray()
    _ray_connect(address)
    remote = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=0)(_call)
    pending = {remote.remote(fn, task, _threads_of(task, threads)): i for i, task in enumerate(tasks)}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except Exception as exc:  # the task's process died, or the node went away
            result = TaskResult(error=one_line_error(exc))
        on_done(i, result)


def assign_devices(device: str, workers: int, n_jobs: int) -> list[str]:
    """One torch device string per job: ``device`` for all, except that jobs run in several
    processes round-robin over ``cuda:0..k-1`` when ``device`` is auto/cuda and there are k > 1 GPUs."""
    if workers <= 1 or device not in ("auto", "cuda"):
        return [device] * n_jobs
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return [device] * n_jobs
    return [f"cuda:{i % count}" for i in range(n_jobs)]


# =========================================================================================== CSV
def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision: float(repr(x)) == x
    return str(value)


def csv_text(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    """The rows as CSV text with ``columns`` (None as an empty cell, floats in full precision)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(key)) for key in columns])
    return buffer.getvalue()


def write_csv(path, rows: Sequence[Mapping], columns: Sequence[str]) -> Path:
    """Write :func:`csv_text` to ``path`` atomically; returns the path."""
    from vesselfield.io.atomic import write_text_atomic

    write_text_atomic(path, csv_text(rows, columns))
    return Path(path)


def read_csv_rows(path, types: Mapping[str, Callable] | None = None) -> list[dict]:
    """Rows of a CSV written by :func:`write_csv` (``[]`` when there is no file): strings, except
    the columns in ``types`` converted with their function (an empty cell is None)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key, convert in (types or {}).items():
            if key in row:
                row[key] = None if row[key] in ("", None) else convert(row[key])
    return rows


# ======================================================================================== tables
def format_mean_std(values: Sequence[float]) -> str:
    """``"mean ± std"`` (NumPy's ``np.mean`` and ``np.std``, ddof 0) rounded so that the std keeps two
    significant digits (``0.912 ± 0.013``, ``345 ± 12``); ``"–"`` for no values, the mean alone
    (``inf``, ``nan``) when a value is not finite."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return "–"
    mean = float(np.mean(values))
    if not np.all(np.isfinite(values)):
        return f"{mean:g}"
    std = float(np.std(values))
    if std == 0:
        return f"{mean:.4g} ± 0"
    decimals = min(max(1 - math.floor(math.log10(std)), 0), 12)
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def format_median_iqr(values: Sequence[float], digits: int) -> str:
    """``"median [Q1, Q3]"`` (``np.percentile``, linear) with ``digits`` decimals, NaN left out;
    ``"n/a"`` when nothing is left."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return "n/a"
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return f"{med:.{digits}f} [{q1:.{digits}f}, {q3:.{digits}f}]"


def mean_std_table(rows: Sequence[Mapping], *, columns: Sequence[tuple[str, str]], by: str = "method",
                   order: Sequence[str] | None = None) -> list[str]:
    """A markdown table (list of lines): one line per value of ``by`` (in ``order``), with ``n``
    (rows whose status is ok), ``failed`` (the others) and :func:`format_mean_std` of each
    ``(key, title)`` of ``columns`` over the ok rows."""
    order = list(order) if order is not None else list(dict.fromkeys(r[by] for r in rows))
    header = [by, "n", "failed", *(title for _, title in columns)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name in order:
        mine = [r for r in rows if r[by] == name]
        ok = [r for r in mine if r["status"] == OK]
        cells = [str(name), str(len(ok)), str(len(mine) - len(ok))]
        cells += [format_mean_std([float(r[key]) for r in ok]) for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def groups_then_all(rows: Sequence[Mapping], column: str, order: Sequence[str],
                    title: str = "{}") -> list[tuple[str, list]]:
    """The papers' grouping: ``[(title.format(value), rows with that value), ...]`` for the values
    of ``order`` present in ``rows``, then ``("all", rows)``; e.g. left tree, right tree, all."""
    groups = [(title.format(v), [r for r in rows if r.get(column) == v]) for v in order
              if any(r.get(column) == v for r in rows)]
    return groups + [("all", list(rows))]


# ======================================================================================= machine
def machine_description(device: str = "cpu", ray_address: str | None = None) -> str:
    """One line for a summary: platform, CPUs, torch version and what the jobs run on
    (``"... on 2 x NVIDIA H200"``, ``"... on cpu, 1 torch thread(s)"``, or the Ray cluster)."""
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs"
    if ray_address:
        return f"{machine} (this machine); Ray cluster at {ray_address}"
    import torch

    from vesselfield.device import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda":
        where = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(resolved)}"
    else:
        where = f"cpu, {torch.get_num_threads()} torch thread(s)"
    return f"{machine}; torch {torch.__version__} on {where}"
