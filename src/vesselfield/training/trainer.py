"""The dataset trainer: epochs over a DataLoader, validation, best/last checkpoints, exact resume, AMP, DDP.

Methods that learn from many cases (VesselSDF: 3D U-Nets on CT patches; NUDF: an image encoder
and a point decoder) supply three things and call :func:`train`:

- the model, a plain ``torch.nn.Module``;
- an objective ``objective(model, batch) -> (loss, {term: float})``: ``loss`` is the scalar
  tensor that is minimised (the mean over the batch's samples), the terms are what the log
  shows (a bare loss tensor is accepted too);
- optionally validation metrics ``metrics(model, batch) -> {name: float}`` (batch means);
- optionally a whole-model evaluation ``evaluate(model) -> {name: float}``, called once per epoch
  (volume-level metrics that batch means cannot give, e.g. the Dice of whole validation volumes
  segmented by a sliding window, which can then choose ``best.pt``).

and the data: a map-style dataset (``__len__`` and ``__getitem__``; a ``Subset``, a list, ...)
and either a validation dataset or :attr:`TrainerConfig.val_fraction`, which holds out a seeded
part of the training data (:func:`split_indices`). :func:`train` then, for each epoch:

1. trains over a ``DataLoader`` whose order depends only on ``(seed, epoch)``
   (``DistributedSampler(seed=seed).set_epoch(epoch)``; one process is ``num_replicas=1``),
   with ``torch.autocast`` + ``GradScaler`` on CUDA when ``amp`` is on;
2. evaluates the objective and the metrics on the validation data (``model.eval()``,
   ``torch.no_grad()``), means over samples; then calls ``evaluate(model)`` when given, on
   rank 0 only, also under ``model.eval()`` and ``torch.no_grad()`` (its values are sent to the
   other processes, so every process sees the same row and monitored value);
3. appends one row to ``log.csv``: ``epoch`` (from 0), ``step`` (optimiser steps so far),
   ``train_loss`` and ``train_<term>`` (sample means over the epoch), ``val_loss``,
   ``val_<term>`` and ``val_<metric>``, ``val_<name>`` of ``evaluate``, ``lr`` (the first
   parameter group's learning rate during the epoch) and ``time_s`` (seconds since the run
   started, summed over resumed calls);
4. writes ``best.pt`` when the monitored column improved and ``last.pt`` every
   ``checkpoint_every`` epochs and whenever it stops.

Resume (``resume=True``) continues from ``last.pt`` exactly: model, optimiser, scheduler,
gradient scaler, RNG states, the epoch and the batch within it, the partial sums of the epoch's
training loss, the rows, and the best value. On the CPU the resumed run ends with bit-for-bit
the weights of an uninterrupted one, also after a time limit in the middle of an epoch (the
epoch's order is recomputed from ``(seed, epoch)`` and its first batches skipped). Exactness
in the middle of an epoch holds for ``num_workers=0`` or datasets whose items draw no random
numbers (workers draw from per-epoch seeds, but which worker loads which batch shifts).

Under ``torchrun`` (see :mod:`vesselfield.training.distributed`) the model is wrapped in
``DistributedDataParallel``: each process trains on its ``1/WORLD_SIZE`` share of every epoch
(gradients are averaged, so the effective batch is ``batch_size x WORLD_SIZE``), validates its
share of the validation data, the sums are added across processes, and rank 0 alone writes
checkpoints and the log.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Mapping

import numpy as np

from vesselfield.config import check_numbers
from vesselfield.errors import VesselfieldError
from vesselfield.io.run_folder import LOG_NAME
from vesselfield.training.checkpoint import (check_plain, derived_seed, load_checkpoint, rng_state,
                                             save_checkpoint, seed_everything, set_rng_state)
from vesselfield.training.distributed import DistributedContext, torchrun_environment
from vesselfield.training.log import CsvLog, open_tensorboard, pack_rows, unpack_rows

__all__ = ["BEST_NAME", "LAST_NAME", "TrainResult", "TrainerConfig", "split_indices", "train"]

LAST_NAME = "last.pt"
BEST_NAME = "best.pt"

# The clock the time limit reads (seconds). A module attribute so that tests can drive the time
# limit without depending on timing.
_clock = time.perf_counter


@dataclass
class TrainerConfig:
    """Settings of a dataset training (the method's own settings live in the method's config)."""

    epochs: int = 10
    """Passes over the training data: the total of the run, not "more epochs" (may grow on --resume)."""
    batch_size: int = 8
    """Samples per optimiser step in each process (under torchrun the effective batch is batch_size x processes)."""
    learning_rate: float = 1e-3
    """Learning rate of the default optimiser, AdamW (unused when the method passes its own optimiser)."""
    weight_decay: float = 0.0
    """Decoupled weight decay of the default AdamW optimiser (Loshchilov & Hutter, ICLR 2019)."""
    grad_clip_norm: float | None = None
    """Clip the global L2 norm of the gradients to this value before each step (none: no clipping)."""
    val_fraction: float = 0.2
    """Fraction of the data held out for validation when no validation set is given (0: no validation)."""
    seed: int = 0
    """Seeds the train/validation split, each epoch's order (with the epoch number) and the loader workers."""
    num_workers: int = 0
    """DataLoader worker processes per training process (0: load in the training process)."""
    drop_last: bool = False
    """Drop each epoch's last, smaller batch (e.g. for batch normalisation)."""
    amp: bool = True
    """Automatic mixed precision on CUDA (torch.autocast and a GradScaler); always off on the CPU."""
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    """Autocast dtype on CUDA: float16 scales the loss with a GradScaler, bfloat16 needs none."""
    time_limit_s: float | None = None
    """Stop after this many seconds of this call, with a checkpoint to resume from (none: no limit)."""
    checkpoint_every: int = 1
    """Epochs between last.pt checkpoints (0: only when the run stops); best.pt follows every improvement."""
    monitor: str = "val_loss"
    """The column of the epoch rows that chooses best.pt (val_loss, val_<metric>, or train_loss without validation)."""
    monitor_mode: Literal["min", "max"] = "min"
    """Whether a smaller (min) or a larger (max) monitored value is better."""
    patience: int | None = None
    """Stop early after this many epochs without an improvement of the monitored value (none: never)."""

    config_name: ClassVar[str] = "trainer"
    key_fields: ClassVar[tuple[str, ...]] = ()
    free_on_resume: ClassVar[tuple[str, ...]] = ("epochs", "time_limit_s")

    def __post_init__(self):
        check_numbers(self, positive=("learning_rate", "grad_clip_norm"),
                      non_negative=("epochs", "seed", "weight_decay", "num_workers", "time_limit_s", "checkpoint_every"),
                      at_least_one=("batch_size", "patience"), flags={"time_limit_s": "--time-limit"})
        if not 0 <= self.val_fraction < 1:
            raise VesselfieldError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.amp_dtype not in ("float16", "bfloat16"):
            raise VesselfieldError(f"amp_dtype must be float16 or bfloat16, got {self.amp_dtype!r}")
        if not self.monitor:
            raise VesselfieldError("monitor must name a column of the epoch rows (e.g. val_loss)")
        if self.monitor_mode not in ("min", "max"):
            raise VesselfieldError(f"monitor_mode must be min or max, got {self.monitor_mode!r}")


@dataclass
class TrainResult:
    """How a dataset training ended (the same on every process of a distributed run).

    Attributes:
        rows: one dict per completed epoch of the whole run (including those before a resume),
            the rows of ``log.csv`` (see the module docstring for the columns).
        epochs_done: completed epochs.
        steps_done: optimiser steps so far (including a stopped epoch's).
        stopped_by: ``"epochs"``, ``"time_limit"`` (a checkpoint was written; resume continues
            it) or ``"early_stop"`` (``patience`` epochs without improvement).
        best_epoch: the epoch (from 0) of ``best.pt``; None when no epoch was completed.
        best_value: the monitored value of that epoch.
        monitor: the monitored column.
        elapsed_s: wall time of this call, seconds.
        last_checkpoint: ``out_dir/last.pt``.
        best_checkpoint: ``out_dir/best.pt``, or None when no epoch was completed.
        log_path: ``out_dir/log.csv``.
        world_size: processes that trained together.
    """

    rows: list
    epochs_done: int
    steps_done: int
    stopped_by: str
    best_epoch: int | None
    best_value: float | None
    monitor: str
    elapsed_s: float
    last_checkpoint: Path
    best_checkpoint: Path | None
    log_path: Path
    world_size: int = 1


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded train/validation split of ``range(n)``: ``(train, validation)``, each sorted.

    ``round(n * val_fraction)`` indices (at least 1 when ``val_fraction > 0``) are drawn for
    validation by a permutation of NumPy's ``default_rng(seed)``; the same ``(n, val_fraction,
    seed)`` give the same split on every machine and in every process.

    Raises:
        VesselfieldError: ``val_fraction`` outside [0, 1), or too few samples to keep one for
            training.
    """
    if not 0 <= val_fraction < 1:
        raise VesselfieldError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = 0 if val_fraction == 0 else max(1, round(n * val_fraction))
    if n - n_val < 1:
        raise VesselfieldError(f"{n} samples cannot be split into training and validation (val_fraction "
                               f"{val_fraction})")
    order = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in order[n_val:]), sorted(int(i) for i in order[:n_val])


# ---------------------------------------------------------------------------------------- the run
@dataclass
class _Progress:
    """Where a run is: what a checkpoint stores so that a resume continues exactly."""

    epoch: int = 0
    """The epoch under way (== the epochs completed when ``batch`` is 0)."""
    batch: int = 0
    """Batches of that epoch already trained (in this process)."""
    partial: dict = field(default_factory=dict)
    """``{term: (sum over samples, samples)}`` of those batches (all processes' on rank 0)."""
    step: int = 0
    """Optimiser steps so far."""
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    """Epochs since the monitored value last improved."""
    elapsed_s: float = 0.0
    """Seconds spent by the earlier calls of the run."""

    def to_plain(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step,
                "partial": {k: [float(s), float(w)] for k, (s, w) in self.partial.items()},
                "best_value": self.best_value, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "elapsed_s": float(self.elapsed_s)}

    @classmethod
    def from_plain(cls, d: Mapping) -> "_Progress":
        return cls(int(d["epoch"]), int(d["batch"]), {k: (float(s), float(w)) for k, (s, w) in d["partial"].items()},
                   int(d["step"]), d["best_value"], d["best_epoch"], int(d["bad_epochs"]), float(d["elapsed_s"]))


def _objective_module(model, objective):
    """The model and the objective as one module, so that DistributedDataParallel wraps the objective.

    DDP synchronises gradients for what runs inside its ``forward``; wrapping the objective
    (not only ``model.forward``) lets the objective call any submodule of the plain model.
    """
    import torch

    class ObjectiveModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, batch):
            return objective(self.model, batch)

    return ObjectiveModule()


def _split_output(out, where: str):
    """``(loss tensor, {term: float})`` from what an objective returned."""
    import torch

    if isinstance(out, torch.Tensor):
        loss, terms = out, {}
    elif isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[0], torch.Tensor):
        loss, terms = out
    else:
        raise VesselfieldError(f"the {where} objective must return (loss tensor, {{term: float}}), got "
                               f"{type(out).__name__}")
    if loss.numel() != 1:
        raise VesselfieldError(f"the {where} objective's loss must be a scalar, got shape {tuple(loss.shape)}")
    return loss.reshape(()), {str(k): float(v) for k, v in dict(terms).items()}


def _float_values(values, where: str) -> dict[str, float]:
    """``{str(name): float(value)}`` of what a metrics function returned (one-line errors)."""
    if not isinstance(values, Mapping):
        raise VesselfieldError(f"{where} must return {{name: float}}, got {type(values).__name__}")
    out = {}
    for k, v in values.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise VesselfieldError(f"{where} must return {{name: float}}: {k!r} is {type(v).__name__}") from None
    return out


def _to_device(batch, device):
    """``batch`` (tensors, possibly in dicts, lists and tuples) on ``device``."""
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _batch_length(batch) -> int:
    """Samples in a batch: the first dimension of its first tensor (1 when it holds none)."""
    import torch

    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        if isinstance(item, (torch.Tensor, Mapping, list, tuple)):
            return _batch_length(item)
    return 1


def _add(sums: dict, values: Mapping[str, float], n: int) -> None:
    for k, v in values.items():
        s, w = sums.get(k, (0.0, 0.0))
        sums[k] = (s + float(v) * n, w + n)


def _generator(seed: int, *words: int):
    """A ``torch.Generator`` seeded from ``(seed, *words)`` (a DataLoader draws its workers' seeds from it)."""
    import torch

    return torch.Generator().manual_seed(derived_seed(seed, *words, bits=63))


def _process_device(device, world_size: int, local_rank: int):
    import torch

    from vesselfield.device import resolve_device

    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    if world_size > 1 and dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise VesselfieldError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices")
        dev = torch.device("cuda", local_rank)
    return dev


def train(
    model,
    objective: Callable[[Any, Any], Any],
    train_data,
    out_dir,
    config: TrainerConfig | None = None,
    *,
    val_data=None,
    metrics: Callable[[Any, Any], Mapping[str, float]] | None = None,
    evaluate: Callable[[Any], Mapping[str, float]] | None = None,
    optimizer=None,
    scheduler=None,
    scheduler_interval: Literal["epoch", "batch"] = "epoch",
    collate_fn: Callable | None = None,
    device="auto",
    resume: bool = False,
    progress: bool = True,
    description: str = "training",
    extra: dict | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
    find_unused_parameters: bool = False,
) -> TrainResult:
    """Train ``model`` on a dataset for ``config.epochs`` epochs (see the module docstring).

    Args:
        model: a ``torch.nn.Module``; moved to the device; its trained weights are in
            ``best.pt``/``last.pt`` under ``states["model"]`` and in the object itself.
        objective: ``objective(model, batch) -> (loss, {term: float})`` with ``loss`` a scalar
            tensor (the mean over the batch's samples); ``batch`` is what the DataLoader yields,
            on the device. Validation calls it under ``torch.no_grad()`` (an objective whose
            terms need autograd, such as an eikonal term, should skip them when
            ``torch.is_grad_enabled()`` is False).
        train_data: map-style dataset (``__len__``, ``__getitem__``).
        out_dir: the run folder: ``last.pt``, ``best.pt``, ``log.csv`` (and ``tensorboard/``
            when TensorBoard is installed). A fresh run replaces earlier ones there.
        config: :class:`TrainerConfig` (default: its defaults).
        val_data: validation dataset; None holds out ``config.val_fraction`` of ``train_data``
            (:func:`split_indices`) or, with ``val_fraction = 0``, validates nothing.
        metrics: ``metrics(model, batch) -> {name: float}`` batch means, logged as
            ``val_<name>`` (names must differ from the objective's terms).
        evaluate: ``evaluate(model) -> {name: float}``, called once per epoch after the batch
            validation (also without validation data), on rank 0 only, with the plain model
            under ``model.eval()`` and ``torch.no_grad()`` (not under autocast); for values that
            need the whole model rather than batch means (e.g. sliding-window Dice of whole
            volumes). Logged as ``val_<name>`` (names must differ from the other columns) and
            usable as ``config.monitor``; under torchrun the values are broadcast from rank 0.
        optimizer: built over ``model.parameters()`` by the caller; default
            ``AdamW(lr=config.learning_rate, weight_decay=config.weight_decay)``.
        scheduler: optional learning-rate scheduler, stepped after every epoch
            (``ReduceLROnPlateau`` gets the monitored value) or, with
            ``scheduler_interval="batch"``, after every optimiser step.
        collate_fn: the DataLoader's ``collate_fn`` (default: torch's stacking).
        device: ``"auto" | "cpu" | "cuda"``; under torchrun a CUDA run uses ``cuda:LOCAL_RANK``.
        resume: continue from ``out_dir/last.pt`` (same config except ``free_on_resume`` fields).
        progress: show a tqdm progress bar (rank 0 only).
        description: the progress bar's label.
        extra: small dict of plain values stored in the checkpoints (e.g. the method's config).
        on_epoch_end: ``on_epoch_end(row)``, called on every process after each epoch's
            checkpoints are written.
        find_unused_parameters: tell DistributedDataParallel that some parameters may get no
            gradient in a step (a model whose objective skips a branch); slower, so off by default.

    Returns:
        :class:`TrainResult`.

    Raises:
        VesselfieldError: bad settings or data, ``resume`` without a matching ``last.pt``, or a
            training loss that became NaN or infinite (the last checkpoint is kept).
    """
    config = config if config is not None else TrainerConfig()
    if not isinstance(config, TrainerConfig):
        raise VesselfieldError("config must be a TrainerConfig")
    if scheduler_interval not in ("epoch", "batch"):
        raise VesselfieldError(f"scheduler_interval must be epoch or batch, got {scheduler_interval!r}")
    check_plain(extra or {}, "extra", "checkpoint")
    world_size, _, local_rank = torchrun_environment()
    dev = _process_device(device, world_size, local_rank)
    ctx = DistributedContext.start(dev)
    try:
        result = _train(model, objective, train_data, Path(out_dir), config, val_data, metrics, evaluate, optimizer,
                        scheduler, scheduler_interval, collate_fn, dev, ctx, resume, progress, description, extra,
                        on_epoch_end, find_unused_parameters)
        ctx.barrier()  # every process returns once rank 0's files are written
        return result
    finally:
        ctx.stop()


def _datasets(train_data, val_data, config: TrainerConfig):
    from torch.utils.data import Subset

    if val_data is not None:
        return train_data, val_data
    if config.val_fraction == 0:
        return train_data, None
    train_idx, val_idx = split_indices(len(train_data), config.val_fraction, config.seed)
    return Subset(train_data, train_idx), Subset(train_data, val_idx)


def _restore(path: Path, objects: dict, scaler, config: TrainerConfig, ctx: DistributedContext):
    """Load ``last.pt`` into the objects; returns ``(progress, rows)``."""
    from vesselfield.config import changed_fields, free_on_resume

    if not path.is_file():
        raise VesselfieldError(f"cannot resume: no checkpoint at {path}")
    payload = load_checkpoint(path, objects)
    loop = payload["loop"]
    if loop.get("kind") != "trainer":
        raise VesselfieldError(f"cannot resume: {path} was not written by the dataset trainer")
    changed = changed_fields(loop["config"], config, ignore=free_on_resume(config))
    if changed:
        raise VesselfieldError("cannot resume with a different configuration than the interrupted run ("
                               + ", ".join(changed[:3]) + ")")
    progress = _Progress.from_plain(loop["progress"])
    if progress.batch and int(loop["world_size"]) != ctx.world_size:
        raise VesselfieldError(f"cannot resume in the middle of epoch {progress.epoch} with {ctx.world_size} "
                               f"processes: it was run with {loop['world_size']}")
    by_rank = loop.get("rng_by_rank") or []
    if ctx.rank < len(by_rank) and int(loop["world_size"]) == ctx.world_size:
        set_rng_state(by_rank[ctx.rank])
    elif ctx.rank > 0:  # another number of processes: fresh, distinct streams (not an exact resume)
        seed_everything(derived_seed(config.seed, progress.epoch, ctx.rank, 2, bits=63) % 2**32)
    if not ctx.is_main:
        progress.partial = {}  # rank 0 holds the sums of every process
    if scaler.is_enabled() and loop.get("scaler"):
        scaler.load_state_dict(loop["scaler"])
    return progress, unpack_rows(loop["rows"])


def _train(model, objective, train_data, out: Path, config: TrainerConfig, val_data, metrics, evaluate, optimizer,
           scheduler, scheduler_interval, collate_fn, dev, ctx: DistributedContext, resume, progress, description,
           extra, on_epoch_end, find_unused_parameters) -> TrainResult:
    import torch
    from torch.utils.data import DataLoader, DistributedSampler
    from tqdm.auto import tqdm

    from vesselfield.config import config_to_dict

    train_set, val_set = _datasets(train_data, val_data, config)
    if len(train_set) == 0:
        raise VesselfieldError("the training data is empty")
    if val_set is None and config.monitor.startswith("val_") and (evaluate is None or config.monitor == "val_loss"):
        raise VesselfieldError(f"monitor {config.monitor} needs validation data: pass val_data, set val_fraction > 0, "
                               "or monitor train_loss" + ("" if evaluate is None else " or a value of evaluate"))
    if val_set is not None and len(val_set) < ctx.world_size:
        raise VesselfieldError(f"{len(val_set)} validation samples for {ctx.world_size} processes: each needs one")
    samples_per_process = math.ceil(len(train_set) / ctx.world_size)  # DistributedSampler pads to this
    steps_per_epoch = (samples_per_process // config.batch_size if config.drop_last
                       else math.ceil(samples_per_process / config.batch_size))
    if steps_per_epoch == 0:
        raise VesselfieldError(f"batch_size {config.batch_size} with drop_last leaves no batch of the "
                               f"{samples_per_process} training samples per process")

    model.to(dev)
    if optimizer is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    amp_dtype = getattr(torch, config.amp_dtype) if config.amp and dev.type == "cuda" else None
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
    objects = {"model": model, "optimizer": optimizer}
    if scheduler is not None:
        objects["scheduler"] = scheduler
    last_path, best_path, log_path = out / LAST_NAME, out / BEST_NAME, out / LOG_NAME

    state, rows = _Progress(), []
    if resume:
        state, rows = _restore(last_path, objects, scaler, config, ctx)
    elif ctx.is_main:  # a fresh run: an earlier run's checkpoints would be resumed or taken as best
        out.mkdir(parents=True, exist_ok=True)
        last_path.unlink(missing_ok=True)
        best_path.unlink(missing_ok=True)
    ctx.barrier()  # no process reads or writes the folder before rank 0 has prepared it

    net = _objective_module(model, objective)
    if ctx.enabled:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                        find_unused_parameters=find_unused_parameters)
    log = CsvLog(log_path if ctx.is_main else None, rows)
    writer = open_tensorboard(out / "tensorboard", purge_step=state.epoch) if ctx.is_main else None
    total_steps = config.epochs * steps_per_epoch
    bar = tqdm(total=total_steps, initial=min(state.epoch * steps_per_epoch + state.batch, total_steps),
               desc=description, disable=not (progress and ctx.is_main), dynamic_ncols=True, leave=True)
    t0 = _clock()
    elapsed_before = state.elapsed_s

    def autocast():
        import contextlib

        return torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()

    def loader(dataset, indices, generator_words):
        return DataLoader(dataset, batch_size=config.batch_size, sampler=indices, drop_last=False,
                          num_workers=config.num_workers, collate_fn=collate_fn, pin_memory=dev.type == "cuda",
                          generator=_generator(config.seed, *generator_words))

    def save(path: Path) -> None:
        """Write a checkpoint of the current state (every process calls it: RNG states are gathered)."""
        state.elapsed_s = elapsed_before + _clock() - t0
        rng_by_rank = ctx.gather(rng_state()) if ctx.enabled else []
        if ctx.is_main:
            save_checkpoint(path, state.step, objects, extra, loop_state={
                "kind": "trainer", "progress": state.to_plain(), "rows": pack_rows(log.rows),
                "config": config_to_dict(config), "world_size": ctx.world_size,
                "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "rng_by_rank": rng_by_rank})

    def out_of_time() -> bool:
        if config.time_limit_s is None:  # the same on every process: no collective needed
            return False
        return ctx.decide(_clock() - t0 >= config.time_limit_s)

    def train_epoch() -> bool:
        """Train the rest of ``state.epoch``; False when the time limit stopped it."""
        sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                     seed=config.seed, drop_last=False)
        sampler.set_epoch(state.epoch)
        # A resumed epoch skips the batches already trained: batches are consecutive runs of the order.
        order = list(sampler)[state.batch * config.batch_size:]
        if config.drop_last:
            order = order[:(steps_per_epoch - state.batch) * config.batch_size]
        batches = iter(loader(train_set, order, (state.epoch, ctx.rank, 0)))
        net.train()
        while True:
            # Decide before loading the next batch: loading may draw random numbers (augmentation),
            # which the checkpoint's RNG state must not include.
            if out_of_time():
                return False
            try:
                batch = next(batches)
            except StopIteration:
                return True
            batch = _to_device(batch, dev)
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss, terms = _split_output(net(batch), "training")
            value = float(loss.detach())
            if not math.isfinite(value):
                raise VesselfieldError(
                    f"the training loss became {value} in epoch {state.epoch}, batch {state.batch}: the training "
                    "diverged; lower the learning rate or check the data"
                    + (" (last checkpoint kept)" if last_path.is_file() else ""))
            scaler.scale(loss).backward()
            if config.grad_clip_norm is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None and scheduler_interval == "batch":
                scheduler.step()
            _add(state.partial, {"loss": value, **terms}, _batch_length(batch))
            state.batch += 1
            state.step += 1
            bar.update(1)
            s, w = state.partial["loss"]
            bar.set_postfix({"epoch": f"{state.epoch + 1}/{config.epochs}", "loss": f"{s / w:.4g}", **shown},
                            refresh=False)

    def validate() -> dict:
        """``{val_<name>: sample mean}`` over the validation data, summed across processes."""
        shard = list(range(ctx.rank, len(val_set), ctx.world_size))
        sums: dict = {}
        model.eval()
        with torch.no_grad():
            for batch in loader(val_set, shard, (state.epoch, ctx.rank, 1)):
                batch = _to_device(batch, dev)
                with autocast():
                    loss, terms = _split_output(objective(model, batch), "validation")
                    values = {"loss": float(loss), **terms}
                    if metrics is not None:
                        extra_values = _float_values(metrics(model, batch), "metrics")
                        clash = sorted(set(extra_values) & set(values))
                        if clash:
                            raise VesselfieldError(f"validation metric {clash[0]} has the name of an objective term")
                        values.update(extra_values)
                _add(sums, values, _batch_length(batch))
        model.train()
        return {f"val_{k}": s / w for k, (s, w) in ctx.sum_values(sums).items()}

    def evaluate_model(row: dict) -> dict:
        """``{val_<name>: value}`` of ``evaluate(model)``, computed on rank 0 and the same on every process."""
        outcome, error = None, None
        if ctx.is_main:
            model.eval()
            try:
                with torch.no_grad():
                    outcome = {f"val_{k}": v for k, v in _float_values(evaluate(model), "evaluate").items()}
            except Exception as exc:  # the other processes wait for the values: tell them first
                error = exc
                outcome = f"{type(exc).__name__}: " + (str(exc).strip().splitlines() or [""])[0][:200]
            finally:
                model.train()
        outcome = ctx.share(outcome)
        if error is not None:
            raise error
        if isinstance(outcome, str):
            raise VesselfieldError(f"evaluate failed on rank 0 in epoch {state.epoch}: {outcome}")
        clash = sorted(set(outcome) & set(row))
        if clash:
            raise VesselfieldError(f"evaluate's value {clash[0][4:]} gives column {clash[0]}, which the epoch "
                                   "rows already have (an objective term or a metric)")
        return outcome

    stopped_by = "epochs"
    saved_at = (state.epoch, state.batch) if resume else None
    shown: dict = {}  # the last epoch's monitored value, on the progress bar
    try:
        while state.epoch < config.epochs:
            if config.patience is not None and state.bad_epochs >= config.patience:
                stopped_by = "early_stop"
                break
            if not train_epoch():
                stopped_by = "time_limit"
                break
            lr = float(optimizer.param_groups[0]["lr"])
            row = {"epoch": state.epoch, "step": state.step}
            train_sums = ctx.sum_values(state.partial)
            row.update({f"train_{k}": s / w for k, (s, w) in train_sums.items()})
            if val_set is not None:
                row.update(validate())
            if evaluate is not None:
                row.update(evaluate_model(row))
            row.update({"lr": lr, "time_s": round(ctx.from_main(elapsed_before + _clock() - t0), 4)})
            if config.monitor not in row:
                raise VesselfieldError(f"monitor {config.monitor} is not a column of the epoch rows ("
                                       + ", ".join(row) + ")")
            value = float(row[config.monitor])
            improved = math.isfinite(value) and (
                state.best_value is None
                or (value < state.best_value if config.monitor_mode == "min" else value > state.best_value))
            if improved:
                state.best_value, state.best_epoch, state.bad_epochs = value, state.epoch, 0
            else:
                state.bad_epochs += 1
            shown[config.monitor] = f"{value:.4g}"
            if scheduler is not None and scheduler_interval == "epoch":
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(value)
                else:
                    scheduler.step()
            state.epoch, state.batch, state.partial = state.epoch + 1, 0, {}
            log.append(row)
            if writer is not None:
                for k, v in row.items():
                    if k not in ("epoch", "step"):
                        writer.add_scalar(k, v, row["epoch"])
            if improved:
                save(best_path)
            if config.checkpoint_every and state.epoch % config.checkpoint_every == 0:
                save(last_path)
                saved_at = (state.epoch, state.batch)
            if on_epoch_end is not None:
                on_epoch_end(dict(row))
        if stopped_by == "time_limit" and ctx.enabled:
            state.partial = ctx.sum_values(state.partial)  # rank 0 stores every process's sums
        if saved_at != (state.epoch, state.batch) or stopped_by == "time_limit":
            save(last_path)
    finally:
        bar.close()
        log.close()
        if writer is not None:
            writer.close()
    return TrainResult(
        rows=list(log.rows), epochs_done=state.epoch, steps_done=state.step, stopped_by=stopped_by,
        best_epoch=state.best_epoch, best_value=state.best_value, monitor=config.monitor,
        elapsed_s=_clock() - t0, last_checkpoint=last_path,
        best_checkpoint=best_path if state.best_epoch is not None else None, log_path=log_path,
        world_size=ctx.world_size)
