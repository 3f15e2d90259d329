"""The run folder every method writes: config, resume check, strict JSON, reproducing command, summary.

One run of any method (``reconstruct xray``, ``fit points``, ``blend``, a dataset training, ...)
writes into one output folder::

    DIR/config.yaml     the command that reproduces the run, its inputs, and every config field
    DIR/summary.json    files written, metrics, warnings and the method's own details
    DIR/checkpoint.pt   (methods that optimise) what ``--resume`` continues from
    DIR/log.csv         (methods that optimise) one row per iteration or epoch

This module is the one place that decides how those files look:

- :func:`write_config_yaml` / :func:`read_config_yaml`: safe YAML of ``asdict(config)`` (plain
  types only, read with ``yaml.safe_load``: never pickled objects);
- :func:`prepare_run_folder`: refuses to overwrite an earlier run without ``--resume``, refuses
  to resume a run with another configuration (the config's ``free_on_resume`` fields, such as
  iteration counts and time limits, may change) or other inputs, creates the folder and writes
  ``config.yaml``;
- :func:`strict_json`: the one JSON rule: NaN and infinities are written as ``null`` (strict
  JSON has no such numbers; every JSON reader maps ``null`` to a missing value);
- :func:`reproducing_command`: the command line, from the verb, its input options and the
  config's ``--set`` words (:func:`vesselfield.config.config_arguments`), never typed by hand;
- :class:`RunSummary`: what every pipeline returns and the command line prints the same way.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from vesselfield.errors import VesselfieldError
from vesselfield.io.atomic import write_text_atomic

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "LOG_NAME",
    "SUMMARY_NAME",
    "RunSummary",
    "array_digest",
    "check_out_dir",
    "prepare_run_folder",
    "read_config_yaml",
    "reproducing_command",
    "strict_json",
    "to_plain",
    "write_config_yaml",
    "write_json",
]

CONFIG_NAME = "config.yaml"
SUMMARY_NAME = "summary.json"
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"


# ------------------------------------------------------------------------------------ JSON
def to_plain(value):
    """``value`` with NumPy scalars and arrays, paths and tuples made plain; non-finite floats -> None."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, Path):
        return str(value)
    return value


def strict_json(data) -> str:
    """Strict JSON text of ``data`` (indent 2, newline at the end): NaN and ±inf become ``null``."""
    return json.dumps(to_plain(data), indent=2, allow_nan=False) + "\n"


def write_json(path, data) -> Path:
    """Write :func:`strict_json` of ``data`` to ``path`` atomically; returns the path."""
    write_text_atomic(path, strict_json(data))
    return Path(path)


# ------------------------------------------------------------------------------------ config.yaml
def write_config_yaml(path, *, verb: str, config, inputs: Mapping[str, Any], command: str) -> Path:
    """``config.yaml``: ``command``, ``inputs`` and ``config`` (every field of the config dataclass).

    ``config`` may also be a plain dict (settings of a job without a dataclass of its own).
    """
    import yaml

    from vesselfield.config import config_to_dict

    settings = dict(config) if isinstance(config, Mapping) else config_to_dict(config)
    text = yaml.safe_dump({"command": command, "inputs": to_plain(dict(inputs)), "config": to_plain(settings)},
                          sort_keys=False)
    write_text_atomic(path, f"# vesselfield {verb}: everything needed to rerun this result\n" + text)
    return Path(path)


def read_config_yaml(path) -> dict:
    """The dict written by :func:`write_config_yaml` (``command``, ``inputs``, ``config``)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise VesselfieldError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise VesselfieldError(f"{path} is not a vesselfield config.yaml (no 'config' section)")
    return data


def reproducing_command(words: Sequence[str], config=None) -> str:
    """``vesselfield <words> --set ...``: the shell command that reruns a job with ``config``.

    ``words``: the verb and the options that name inputs and outputs (``["reconstruct", "xray",
    "--geometry", "g.json", ...]``); the config's fields are appended as ``--set FIELD=VALUE``
    (:func:`vesselfield.config.config_arguments`), so nothing about them is typed twice.
    """
    from vesselfield.config import config_arguments

    out = ["vesselfield", *[str(w) for w in words]]
    if config is not None:
        out += config_arguments(config)
    return shlex.join(out)


def array_digest(*arrays) -> str:
    """A short hex digest of arrays' values (little-endian float64 bytes; None entries skipped):
    what ``config.yaml`` records of in-memory inputs, so that ``--resume`` can refuse other inputs."""
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            h.update(np.ascontiguousarray(a, dtype="<f8").tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------ folders
def check_out_dir(out_dir) -> Path:
    """``Path(out_dir)``; an existing file there is an error."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise VesselfieldError(f"--out {out} exists and is not a folder")
    return out


def prepare_run_folder(
    out_dir,
    *,
    verb: str,
    config,
    inputs: Mapping[str, Any],
    command: str,
    resume: bool,
    identity_inputs: Iterable[str] = (),
    checkpoint_dirs: Iterable | None = None,
    checkpoint_name: str = CHECKPOINT_NAME,
    replace: bool = False,
) -> Path:
    """Check an output folder against ``--resume``, then create it and write ``config.yaml``.

    Call it after every input has been read and checked, and before anything is written.

    Args:
        out_dir: the run folder.
        verb: the command (``"reconstruct xray"``), for the config file's first line.
        config: the config dataclass (or a plain dict of settings).
        inputs: what the run reads (paths, digests of point sets, options), stored in config.yaml.
        command: :func:`reproducing_command` of the run.
        resume: the run continues an interrupted one in ``out_dir``.
        identity_inputs: keys of ``inputs`` that must not change on resume (e.g. a digest of the
            points); the config's fields must not change either, except its class's
            ``free_on_resume`` fields.
        checkpoint_dirs: folders whose checkpoint marks an earlier run (default: ``out_dir``).
        checkpoint_name: the checkpoint file that marks a run (``checkpoint.pt`` of
            :func:`~vesselfield.training.run_loop`; ``last.pt`` of the dataset trainer).
        replace: start afresh over an earlier run instead of refusing (a job that owns its
            folder, such as the demo's reconstruction); ignored with ``resume``.

    Raises:
        VesselfieldError: ``out_dir`` is a file; an earlier run is there and ``resume`` is off;
            ``resume`` is on and there is no checkpoint, or the stored configuration or identity
            inputs differ.
    """
    from vesselfield.config import changed_fields, free_on_resume

    out = check_out_dir(out_dir)
    dirs = [Path(d) for d in (checkpoint_dirs if checkpoint_dirs is not None else [out])]
    found = [d / checkpoint_name for d in dirs if (d / checkpoint_name).exists()]
    if not resume and found and not replace:
        raise VesselfieldError(f"{out} holds an earlier run ({found[0]}): pass --resume to continue it or "
                               "choose another --out")
    if resume:
        if not found:
            raise VesselfieldError(f"--resume: no checkpoint in {out} (nothing to resume)")
        path = out / CONFIG_NAME
        if not path.exists():
            raise VesselfieldError(f"--resume: {out} has a checkpoint but no {CONFIG_NAME}, so it cannot be checked "
                                   "to be the same run; start a new run in another --out")
        stored = read_config_yaml(path)
        if isinstance(config, Mapping):
            changed = [f"{k} {stored['config'][k]!r} -> {v!r}" for k, v in to_plain(dict(config)).items()
                       if k in stored["config"] and stored["config"][k] != v]
        else:
            changed = changed_fields(stored["config"], config, ignore=free_on_resume(config))
        old_inputs = stored.get("inputs") or {}
        now_inputs = to_plain(dict(inputs))
        changed += [f"{k} {old_inputs[k]!r} -> {now_inputs[k]!r}" for k in identity_inputs
                    if k in old_inputs and k in now_inputs and old_inputs[k] != now_inputs[k]]
        if changed:
            raise VesselfieldError("--resume with a different configuration than the interrupted run ("
                                   + ", ".join(changed[:3]) + ")")
    out.mkdir(parents=True, exist_ok=True)
    write_config_yaml(out / CONFIG_NAME, verb=verb, config=config, inputs=inputs, command=command)
    return out


# ------------------------------------------------------------------------------------ summary
@dataclass
class RunSummary:
    """What every pipeline returns, and what the command line prints the same way for every method.

    Attributes:
        verb: the command (``"reconstruct xray"``, ``"fit points"``, ...).
        out_dir: the run folder (or the folder of the files written).
        files: ``{name: path}`` of every file written, in the order written.
        metrics: ``{name: value}`` against a reference, when one was given; else None.
        warnings: one-line problems the user should know about (e.g. "the mesh is not CFD-ready").
        lines: short facts for the terminal (iterations, time, mesh checks), printed first.
        details: the method's own JSON-able facts (what ``summary.json`` holds besides the above).
        objects: in-memory results for Python callers (the fitted model, the reconstruction);
            never written.
    """

    verb: str
    out_dir: Path
    files: dict = field(default_factory=dict)
    metrics: dict | None = None
    warnings: list = field(default_factory=list)
    lines: list = field(default_factory=list)
    details: dict = field(default_factory=dict)
    objects: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON-able part: ``summary.json``'s content."""
        return {"command": self.verb, **self.details, "metrics": self.metrics, "warnings": list(self.warnings),
                "files": {k: str(v) for k, v in self.files.items()}}

    def write(self, name: str = SUMMARY_NAME) -> Path:
        """Write :meth:`to_dict` to ``out_dir/name`` (strict JSON, atomically) and record it in ``files``."""
        path = Path(self.out_dir) / name
        self.files["summary"] = path
        write_json(path, self.to_dict())
        return path
