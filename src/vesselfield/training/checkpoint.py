"""Checkpoints and random-number states: what ``--resume`` continues from.

A checkpoint is one file written with ``torch.save`` (atomically) and read with
``torch.load(..., weights_only=True)``: it holds only tensors and plain values (dicts, lists,
tuples, numbers, strings, None), never pickled objects, so loading one cannot run code. Its
payload is::

    {"format": 1,
     "iteration": int,                      # completed iterations (optimiser steps)
     "states": {name: obj.state_dict()},    # modules, optimisers, schedulers
     "rng": {"python": ..., "numpy": ..., "torch": ..., "cuda": ...},
     "extra": dict,                         # the caller's plain facts (e.g. its config)
     "loop": dict}                          # the loop's own state (log rows, epoch, best value, ...)

The RNG states are stored as plain values and tensors: Python's ``random.getstate()`` (a tuple
of ints), NumPy's MT19937 state (``np.random.get_state(legacy=False)`` with its key as an int64
tensor), torch's CPU state and, when CUDA is present, every device's state (uint8 tensors).
"""

from __future__ import annotations

import collections
import pickle
import random
from pathlib import Path
from typing import Mapping

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.atomic import atomic_path

__all__ = ["CHECKPOINT_FORMAT", "check_plain", "load_checkpoint", "read_checkpoint", "rng_state",
           "save_checkpoint", "seed_everything", "set_rng_state"]

CHECKPOINT_FORMAT = 1

_PLAIN_SCALARS = (type(None), bool, int, float, complex, str, bytes, bytearray)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict:
    """This process's RNG states as plain values and tensors (see the module docstring)."""
    import torch

    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": str(np_state["bit_generator"]),
            # uint32 words; int64 holds them exactly and every torch version stores it.
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"]).astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    """Restore the states returned by :func:`rng_state` (CUDA states only for the devices present)."""
    import torch

    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state({
        "bit_generator": np_state["bit_generator"],
        "state": {"key": np.asarray(np_state["key"], dtype=np.int64).astype(np.uint32), "pos": np_state["pos"]},
        "has_gauss": np_state["has_gauss"],
        "gauss": np_state["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for device, cuda_state in enumerate(list(state["cuda"])[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


def check_plain(value, where: str = "value") -> None:
    """Raise :class:`VesselfieldError` unless ``value`` is made of what ``weights_only`` loading reads.

    Allowed: None, bool, int, float, complex, str, bytes, tensors, ``torch.Size``/``dtype``/``device``,
    and dicts (also ``OrderedDict``/``Counter``), lists, tuples and sets of those.
    """
    import torch

    if isinstance(value, _PLAIN_SCALARS + (torch.Tensor, torch.Size, torch.dtype, torch.device)):
        return
    if type(value) in (dict, collections.OrderedDict, collections.Counter):
        for k, v in value.items():
            check_plain(k, f"{where} key")
            check_plain(v, f"{where}[{k!r}]")
        return
    if type(value) in (list, tuple, set):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]")
        return
    raise VesselfieldError(f"a checkpoint cannot hold {where} of type {type(value).__name__}: only tensors and "
                           "plain values (dict, list, tuple, number, str, None) are loaded safely")


def save_checkpoint(path, iteration: int, objects: Mapping[str, object], extra: dict | None = None, *,
                    loop_state: dict | None = None) -> None:
    """Write a checkpoint (see the module docstring) to ``path`` atomically.

    Args:
        path: the file (``checkpoint.pt``, ``last.pt``, ``best.pt``).
        iteration: completed iterations (optimiser steps) so far.
        objects: ``{name: obj}`` with ``state_dict()`` (modules, optimisers, schedulers, scalers).
        extra: the caller's plain facts (e.g. ``asdict(config)``).
        loop_state: the loop's own plain state (log rows, epoch, best value, ...).

    Raises:
        VesselfieldError: something in the payload is not a tensor or a plain value (it could
            not be loaded with ``weights_only=True``).
    """
    import torch

    payload = {
        "format": CHECKPOINT_FORMAT,
        "iteration": int(iteration),
        "states": {name: obj.state_dict() for name, obj in objects.items()},
        "rng": rng_state(),
        "extra": dict(extra or {}),
        "loop": dict(loop_state or {}),
    }
    check_plain(payload, "the checkpoint")
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path) -> dict:
    """The payload of a checkpoint, read with ``weights_only=True`` onto the CPU; restores nothing.

    Raises:
        VesselfieldError: no file, not a torch file, it holds pickled objects, or it is not a
            vesselfield checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise VesselfieldError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        # torch names the class or function it refused ("... was not an allowed global"); any
        # other failure (a truncated or foreign file) is just unreadable.
        if isinstance(exc, pickle.UnpicklingError) and "allowed global" in text:
            raise VesselfieldError(f"{path} holds objects other than tensors and plain values (another "
                                   "program's or an older vesselfield's checkpoint); it is not loaded, since "
                                   "that could run code") from None
        first = (text.strip().splitlines() or [type(exc).__name__])[0][:120]
        if first.startswith("Weights only load failed"):
            first = "damaged, or not written by torch.save"
        raise VesselfieldError(f"{path} is not a readable checkpoint ({first})") from None
    if not (isinstance(payload, dict) and isinstance(payload.get("states"), dict)
            and isinstance(payload.get("iteration"), int) and isinstance(payload.get("rng"), dict)):
        raise VesselfieldError(f"{path} is not a vesselfield checkpoint (no iteration, states and RNG states)")
    return payload


def load_checkpoint(path, objects: Mapping[str, object], *, restore_rng: bool = True) -> dict:
    """Restore the objects' states (and, by default, this process's RNG states) from ``path``.

    Args:
        path: a file written by :func:`save_checkpoint`.
        objects: ``{name: obj}`` with ``load_state_dict``; every name must be in the checkpoint.
        restore_rng: also restore the Python, NumPy and torch RNG states (what an exact resume
            needs; pass False to load weights for inference).

    Returns:
        The payload (``iteration``, ``states``, ``rng``, ``extra``, ``loop``).

    Raises:
        VesselfieldError: unreadable file or a checkpoint that lacks one of ``objects``.
    """
    payload = read_checkpoint(path)
    missing = sorted(set(objects) - set(payload["states"]))
    if missing:
        raise VesselfieldError(f"checkpoint {path} lacks {', '.join(missing)}")
    for name, obj in objects.items():
        try:
            obj.load_state_dict(payload["states"][name])
        except (RuntimeError, KeyError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise VesselfieldError(f"checkpoint {path}: {name} does not match ({first})") from None
    if restore_rng:
        set_rng_state(payload["rng"])
    payload.setdefault("extra", {})
    payload.setdefault("loop", {})
    return payload
