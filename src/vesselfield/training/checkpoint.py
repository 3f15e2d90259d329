"""Checkpoints and random-number states: what ``--resume`` continues from.

A checkpoint is one file written and read by :mod:`vesselfield.io.torch_files` (``torch.save``
atomically, ``torch.load(..., weights_only=True)``): it holds only tensors and plain values (dicts,
lists, tuples, numbers, strings, None), never pickled objects, so loading one cannot run code
(:func:`check_plain`, re-exported here, refuses anything else before a file is written). Its
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

import random
from typing import Mapping

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.torch_files import check_plain, load_tensors, save_tensors

__all__ = ["CHECKPOINT_FORMAT", "check_plain", "derived_seed", "load_checkpoint", "read_checkpoint", "rng_state",
           "save_checkpoint", "seed_everything", "set_rng_state"]

CHECKPOINT_FORMAT = 1


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def derived_seed(*parts: int, bits: int = 31) -> int:
    """A seed in ``[0, 2**bits)`` that depends only on the integers ``parts``: independent streams per tuple.

    NumPy's ``SeedSequence`` hashes the parts (each a non-negative integer of any size) into
    well-mixed words, so tuples that differ in any part give unrelated seeds.

    - ``bits=31`` (a seed for anything that takes a signed 32-bit int): the first 32-bit word
      of ``SeedSequence(parts)`` with its top bit cleared. The robustness study's sample seeds
      (``derived_seed(seed, count, repeat)``, recorded in results.csv and the docs) are these.
    - ``bits=63`` (a ``torch.Generator`` seed): the first 64-bit word of
      ``SeedSequence([parts[0] % 2**32, *parts[1:]])`` modulo ``2**63``. The dataset trainer's
      loader and worker seeds (``derived_seed(seed, epoch, rank, stream, bits=63)``) are these.

    Raises:
        VesselfieldError: no parts, a negative part, or ``bits`` other than 31 and 63.
    """
    words = [int(p) for p in parts]
    if not words:
        raise VesselfieldError("derived_seed needs at least one integer")
    if min(words) < 0:
        raise VesselfieldError(f"derived_seed takes non-negative integers, got {min(words)}")
    if bits == 31:
        return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)
    if bits == 63:
        # The first part is reduced to 32 bits first: what the trainer has always done with its seed.
        words[0] %= 2**32
        return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] % 2**63)
    raise VesselfieldError(f"derived_seed gives 31- or 63-bit seeds, not {bits}-bit")


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
    payload = {
        "format": CHECKPOINT_FORMAT,
        "iteration": int(iteration),
        "states": {name: obj.state_dict() for name, obj in objects.items()},
        "rng": rng_state(),
        "extra": dict(extra or {}),
        "loop": dict(loop_state or {}),
    }
    save_tensors(path, payload, what="checkpoint")


def read_checkpoint(path) -> dict:
    """The payload of a checkpoint, read with ``weights_only=True`` onto the CPU; restores nothing.

    Raises:
        VesselfieldError: no file, not a torch file, it holds pickled objects, it is damaged
            (:func:`vesselfield.io.torch_files.load_tensors`), or it is not a vesselfield checkpoint.
    """
    payload = load_tensors(path, what="checkpoint")
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
