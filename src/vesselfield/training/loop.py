"""The per-case optimisation loop (SDF-CAR, implicit vessel models): progress, time limit, checkpoints, resume.

A method supplies ``step(iteration) -> {"loss": float, <term>: float, ...}`` that performs one
optimiser step, and the objects whose state makes up a checkpoint (modules, optimisers,
schedulers: anything with ``state_dict``/``load_state_dict``). :func:`run_loop` then

- shows a progress bar (iteration, loss terms, ETA) with tqdm;
- stops at ``iterations`` or after ``time_limit_s`` seconds, whichever comes first;
- writes ``checkpoint.pt`` every ``checkpoint_every`` iterations and when it stops (atomically),
  with the RNG states of Python, NumPy and torch and the log rows so far, so that a killed run
  resumed with ``resume=True`` continues exactly where the checkpoint left off (on the CPU
  bit-for-bit) and returns every row of the run;
- appends one row per iteration to ``log.csv`` as it goes (and to TensorBoard when installed);
- stops with a one-line :class:`VesselfieldError` when a loss term becomes NaN or infinite.

Methods that train networks on datasets use :func:`vesselfield.training.trainer.train` instead,
on the same checkpoint, log and RNG machinery.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from vesselfield.errors import VesselfieldError
from vesselfield.io.run_folder import CHECKPOINT_NAME, LOG_NAME
from vesselfield.training.checkpoint import check_plain, load_checkpoint, save_checkpoint
from vesselfield.training.log import CsvLog, open_tensorboard, pack_rows, unpack_rows

__all__ = ["LoopResult", "run_loop"]


@dataclass
class LoopResult:
    """How a run ended.

    Attributes:
        iterations_done: the number of completed iterations (including those before a resume).
        stopped_by: ``"iterations"`` or ``"time_limit"``.
        elapsed_s: wall time of this call, seconds.
        last: the loss terms of the last iteration (empty when this call ran none).
        rows: one dict per completed iteration of the whole run, including those before a resume:
            ``iteration`` (int, from 0), ``time_s`` (seconds since the run started, summed over
            resumed calls) and the step's terms; the same rows as ``log.csv``.
    """

    iterations_done: int
    stopped_by: str
    elapsed_s: float
    last: dict
    rows: list = field(default_factory=list)


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
        resume: continue from ``out_dir/checkpoint.pt`` (its rows replace ``log.csv``).
        progress: show a tqdm progress bar (to stderr).
        description: the progress bar's label.
        extra: small dict of plain values stored in checkpoints (e.g. the config).

    Returns:
        :class:`LoopResult` with every row of the run.

    Raises:
        VesselfieldError: bad arguments, ``resume`` without a readable checkpoint, or a loss
            term that became NaN or infinite (the last checkpoint is kept).
    """
    if iterations < 0:
        raise VesselfieldError(f"iterations must be >= 0, got {iterations}")
    if time_limit_s is not None and not time_limit_s >= 0:
        raise VesselfieldError(f"--time-limit must be >= 0 seconds, got {time_limit_s}")
    check_plain(extra or {}, "extra", "checkpoint")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT_NAME
    start, rows, elapsed_before = 0, [], 0.0
    if resume:
        if not ckpt.is_file():
            raise VesselfieldError(f"cannot resume: no checkpoint at {ckpt}")
        payload = load_checkpoint(ckpt, objects)
        start = payload["iteration"]
        loop_state = payload["loop"]
        # Rows after the checkpoint were lost with the process: the resumed run redoes them.
        rows = [r for r in unpack_rows(loop_state["rows"]) if r["iteration"] < start] if "rows" in loop_state else []
        elapsed_before = float(loop_state.get("elapsed_s", 0.0))

    log = CsvLog(out / LOG_NAME, rows)
    writer = open_tensorboard(out / "tensorboard", purge_step=start)
    from tqdm.auto import tqdm

    bar = tqdm(total=iterations, initial=min(start, iterations), desc=description, disable=not progress,
               dynamic_ncols=True, leave=True)
    t0 = time.perf_counter()

    def checkpoint(i: int) -> None:
        save_checkpoint(ckpt, i, objects, extra, loop_state={
            "rows": pack_rows(log.rows), "elapsed_s": elapsed_before + time.perf_counter() - t0})

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
            log.append({"iteration": i, "time_s": round(elapsed_before + time.perf_counter() - t0, 4), **terms})
            if writer is not None:
                for k, v in terms.items():
                    writer.add_scalar(k, v, i)
            i += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(terms.items())[:4]}, refresh=False)
            if checkpoint_every and i % checkpoint_every == 0 and i < iterations:
                checkpoint(i)
    finally:
        bar.close()
        log.close()
        if writer is not None:
            writer.close()
    checkpoint(i)
    return LoopResult(i, stopped_by, time.perf_counter() - t0, last, list(log.rows))
