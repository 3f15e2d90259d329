"""The optimisation loop every method shares: progress, time limit, checkpoints, resume, logs.

A method supplies ``step(iteration) -> {"loss": float, <term>: float, ...}`` that performs one
optimiser step, and the objects whose state makes up a checkpoint (modules, optimisers,
schedulers: anything with ``state_dict``/``load_state_dict``). :func:`run_loop` then

- shows a progress bar (iteration, loss terms, ETA) with tqdm;
- stops at ``iterations`` or after ``time_limit_s`` seconds, whichever comes first;
- writes ``checkpoint.pt`` every ``checkpoint_every`` iterations and at the end (atomically), with
  the RNG states of Python, NumPy and torch, so that a killed run resumed with ``resume=True``
  continues exactly where the checkpoint left off (on the CPU bit-for-bit);
- appends one row per iteration to ``log.csv`` (and to TensorBoard when it is installed);
- stops with a one-line :class:`VesselfieldError` when a loss term becomes NaN or infinite.
"""

from __future__ import annotations

import csv
import io
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.atomic import atomic_path, write_text_atomic

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"


@dataclass
class LoopResult:
    """How a run ended.

    Attributes:
        iterations_done: the number of completed iterations (including those before a resume).
        stopped_by: ``"iterations"`` or ``"time_limit"``.
        elapsed_s: wall time of this call, seconds.
        last: the loss terms of the last iteration.
    """

    iterations_done: int
    stopped_by: str
    elapsed_s: float
    last: dict


def _rng_state() -> dict:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for a reproducible run."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(path, iteration: int, objects: Mapping[str, object], extra: dict | None = None) -> None:
    """Write ``{iteration, states of objects, RNG states, extra}`` to ``path`` atomically."""
    import torch

    payload = {
        "iteration": int(iteration),
        "states": {name: obj.state_dict() for name, obj in objects.items()},
        "rng": _rng_state(),
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path, objects: Mapping[str, object]) -> dict:
    """Restore the objects' states and the RNG states from ``path``; returns the payload."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise VesselfieldError(f"cannot resume: no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise VesselfieldError(f"cannot resume: {path} is not a readable checkpoint ({exc})") from None
    missing = set(objects) - set(payload.get("states", {}))
    if missing:
        raise VesselfieldError(f"cannot resume: checkpoint {path} lacks {', '.join(sorted(missing))}")
    for name, obj in objects.items():
        obj.load_state_dict(payload["states"][name])
    _set_rng_state(payload["rng"])
    return payload


def _keep_log_rows(log_path: Path, up_to_iteration: int) -> list[dict]:
    """Rows of an existing log up to (and including) ``up_to_iteration``: a resumed run redoes the rest."""
    if not log_path.is_file():
        return []
    with open(log_path, newline="") as f:
        return [row for row in csv.DictReader(f) if int(row["iteration"]) <= up_to_iteration]


def _write_log(log_path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(rows[0].keys())
    for row in rows[1:]:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(log_path, buf.getvalue())


def run_loop(
    step: Callable[[int], Mapping[str, float]],
    objects: Mapping[str, object],
    out_dir,
    *,
    iterations: int,
    time_limit_s: float | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    progress: bool = True,
    description: str = "optimising",
    extra: dict | None = None,
) -> LoopResult:
    """Run ``step(i)`` for ``i = start .. iterations - 1`` with checkpoints, logs and a time limit.

    Args:
        step: performs iteration ``i`` and returns its loss terms (floats; ``"loss"`` is the total).
        objects: what a checkpoint holds (``state_dict``/``load_state_dict`` objects).
        out_dir: folder for ``checkpoint.pt`` and ``log.csv``.
        iterations: the total number of iterations of the run (not "more iterations").
        time_limit_s: stop after this many seconds of this call (a checkpoint is written).
        checkpoint_every: iterations between checkpoints (0: only at the end).
        resume: continue from ``out_dir/checkpoint.pt``.
        progress: show a tqdm progress bar (to stderr).
        extra: small JSON-able dict stored in checkpoints (e.g. the config).
    """
    if iterations < 0:
        raise VesselfieldError(f"iterations must be >= 0, got {iterations}")
    if time_limit_s is not None and not time_limit_s >= 0:
        raise VesselfieldError(f"--time-limit must be >= 0 seconds, got {time_limit_s}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT_NAME
    log_path = out / LOG_NAME
    start = 0
    if resume:
        start = load_checkpoint(ckpt, objects)["iteration"]
    rows = _keep_log_rows(log_path, start - 1) if resume else []

    writer = None
    try:  # TensorBoard is optional
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=start)
    except Exception:
        writer = None

    from tqdm.auto import tqdm

    bar = tqdm(total=iterations, initial=start, desc=description, disable=not progress, dynamic_ncols=True,
               leave=True)
    t0 = time.perf_counter()
    last: dict = {}
    stopped_by = "iterations"
    i = start
    try:
        while i < iterations:
            if time_limit_s is not None and time.perf_counter() - t0 >= time_limit_s:
                stopped_by = "time_limit"
                break
            terms = {k: float(v) for k, v in step(i).items()}
            bad = [k for k, v in terms.items() if not math.isfinite(v)]
            if bad:
                raise VesselfieldError(
                    f"the loss became {terms[bad[0]]} at iteration {i} ({', '.join(bad)}): the optimisation "
                    "diverged; lower the learning rate or check the inputs"
                    + (" (last checkpoint kept)" if ckpt.is_file() else "")
                )
            last = terms
            rows.append({"iteration": i, "time_s": round(time.perf_counter() - t0, 4), **terms})
            if writer is not None:
                for k, v in terms.items():
                    writer.add_scalar(k, v, i)
            i += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(terms.items())[:4]}, refresh=False)
            if checkpoint_every and i % checkpoint_every == 0 and i < iterations:
                save_checkpoint(ckpt, i, objects, extra)
                _write_log(log_path, rows)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        _write_log(log_path, rows)
    save_checkpoint(ckpt, i, objects, extra)
    return LoopResult(i, stopped_by, time.perf_counter() - t0, last)
