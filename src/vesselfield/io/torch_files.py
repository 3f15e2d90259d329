"""Torch files that are safe to load: tensors and plain values only, never pickled objects.

Every ``.pt`` file vesselfield writes (checkpoints, ``model.pt``) goes through :func:`save_tensors`
and every one it reads through :func:`load_tensors`:

- :func:`save_tensors` refuses, before anything is written, a payload holding anything that
  ``torch.load(weights_only=True)`` could not read back (:func:`check_plain` names where it is),
  then writes the file atomically (:mod:`vesselfield.io.atomic`);
- :func:`load_tensors` reads with ``weights_only=True`` onto the CPU, so loading a file cannot run
  code, and turns every failure into a one-line :class:`VesselfieldError`: no such file, not a file
  written by ``torch.save``, pickled objects (it names the class torch refused), or a damaged
  (e.g. truncated) file.

Importing this module does not import torch.
"""

from __future__ import annotations

import collections
import pickle
import re
from pathlib import Path
from typing import Any

from vesselfield.errors import VesselfieldError

__all__ = ["check_plain", "load_state", "load_tensors", "save_tensors"]

_PLAIN_SCALARS = (type(None), bool, int, float, complex, str, bytes, bytearray)

# torch.save writes a zip archive (PyTorch >= 1.6); its local file header starts with these bytes.
_ZIP_MAGIC = b"PK\x03\x04"


def check_plain(value, where: str = "the payload", what: str = "torch file") -> None:
    """Raise :class:`VesselfieldError` unless ``value`` is made of what ``weights_only`` loading reads.

    Allowed: None, bool, int, float, complex, str, bytes, tensors, ``torch.Size``/``dtype``/``device``,
    and dicts (also ``OrderedDict``/``Counter``), lists, tuples and sets of those.

    Args:
        value: the payload (or a part of it, e.g. the caller's ``extra`` dict, checked early).
        where: how the message names ``value``; nested items are named ``where['key'][0]...``.
        what: the kind of file, for the message ("checkpoint", "model file").
    """
    import torch

    if isinstance(value, _PLAIN_SCALARS + (torch.Tensor, torch.Size, torch.dtype, torch.device)):
        return
    if type(value) in (dict, collections.OrderedDict, collections.Counter):
        for k, v in value.items():
            check_plain(k, f"{where} key", what)
            check_plain(v, f"{where}[{k!r}]", what)
        return
    if type(value) in (list, tuple, set):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]", what)
        return
    raise VesselfieldError(f"a {what} cannot hold {where} of type {type(value).__name__}: only tensors and "
                           "plain values (dict, list, tuple, number, str, None) are loaded safely")


def save_tensors(path, payload, *, what: str = "torch file") -> Path:
    """Write ``payload`` with ``torch.save`` to ``path`` atomically; returns ``Path(path)``.

    Args:
        path: the file (its folder is created).
        payload: tensors and plain values (see :func:`check_plain`).
        what: the kind of file, for messages ("checkpoint", "model file").

    Raises:
        VesselfieldError: something in ``payload`` is not a tensor or a plain value (it could not
            be loaded with ``weights_only=True``); nothing is written then.
    """
    import torch

    from vesselfield.io.atomic import atomic_path

    check_plain(payload, f"the {what}", what)
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_tensors(path, *, what: str = "torch file") -> Any:
    """What :func:`save_tensors` wrote to ``path``, read with ``weights_only=True`` onto the CPU.

    Args:
        path: the file.
        what: the kind of file, for messages ("checkpoint", "model file").

    Raises:
        VesselfieldError (one line): no file at ``path``; not a file written by ``torch.save``;
            the file holds pickled objects (loading them could run code; the message names the
            class torch refused); a damaged or truncated file; a file that cannot be read.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise VesselfieldError(f"no {what} at {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_ZIP_MAGIC))
    except OSError as exc:
        raise VesselfieldError(f"cannot read the {what} {path} ({exc.strerror or type(exc).__name__})") from None
    if not head:
        raise VesselfieldError(f"{path} is not a readable {what} (the file is empty)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ValueError, ...
        text = str(exc)
        # torch names the class or function it refused ("GLOBAL pkg.Class was not an allowed global").
        if isinstance(exc, pickle.UnpicklingError) and "allowed global" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            named = f" ({found.group(1)})" if found else ""
            raise VesselfieldError(f"{path} holds objects other than tensors and plain values{named}: it is not "
                                   f"loaded, since that could run code (another program's {what}, or an older "
                                   "vesselfield's?)") from None
        if head != _ZIP_MAGIC:
            # Not the zip archive of torch.save: a text file, a bare pickle, another format.
            raise VesselfieldError(f"{path} is not a readable {what} (not a file written by torch.save)") from None
        first = (text.strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:120]
        raise VesselfieldError(f"{path} is not a readable {what} (damaged or cut short: {first})") from None


def load_state(model, state, path):
    """Load the weights ``state`` (a model file's) into ``model`` and put it in eval mode; weights that do
    not fit the network (another config, a damaged file) are a one-line error naming ``path``."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise VesselfieldError(f"{path}: the weights do not fit the network its config describes "
                               f"({str(exc).splitlines()[0]})") from None
    model.eval()
    return model
