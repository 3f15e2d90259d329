"""vesselfield.io.run_folder: config.yaml, the resume check, strict JSON, the reproducing command, summaries."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from vesselfield.errors import VesselfieldError
from vesselfield.io.run_folder import (
    RunSummary,
    prepare_run_folder,
    read_config_yaml,
    reproducing_command,
    strict_json,
)
from vesselfield.methods.sdf_car import SdfCarConfig, config_from_dict


def test_strict_json_has_one_rule_for_nan_and_infinity():
    data = {"a": math.inf, "b": -math.inf, "c": math.nan, "d": np.float32(0.5), "e": np.int64(3),
            "f": np.array([1.0, np.inf]), "g": (Path("x"), np.bool_(True)), "h": {"i": [np.nan]}}
    text = strict_json(data)
    assert json.loads(text) == {"a": None, "b": None, "c": None, "d": 0.5, "e": 3, "f": [1.0, None],
                                "g": ["x", True], "h": {"i": [None]}}
    assert "NaN" not in text and "Infinity" not in text


def test_prepare_run_folder_writes_config_and_guards_resume(tmp_path):
    out = tmp_path / "run"
    config = SdfCarConfig(method="neca", iterations=10)
    command = reproducing_command(["reconstruct", "xray", "--out", out], config)
    inputs = {"points_sha256": ["abc"], "views": [Path("a.png")]}
    prepare_run_folder(out, verb="reconstruct xray", config=config, inputs=inputs, command=command, resume=False,
                       identity_inputs=("points_sha256",))
    stored = read_config_yaml(out / "config.yaml")
    assert config_from_dict(stored["config"]) == config and stored["command"] == command
    assert stored["inputs"] == {"points_sha256": ["abc"], "views": ["a.png"]}
    assert (out / "config.yaml").read_text().startswith("# vesselfield reconstruct xray")
    assert "!!python" not in (out / "config.yaml").read_text()  # safe YAML: plain types only

    (out / "checkpoint.pt").write_bytes(b"")
    kwargs = dict(verb="reconstruct xray", inputs=inputs, command=command, identity_inputs=("points_sha256",))
    with pytest.raises(VesselfieldError, match="pass --resume"):
        prepare_run_folder(out, config=config, resume=False, **kwargs)
    # Free fields (iterations, time limit) may change on resume; the method may not; nor the points.
    prepare_run_folder(out, config=SdfCarConfig(method="neca", iterations=20, time_limit_s=5.0), resume=True,
                       **kwargs)
    with pytest.raises(VesselfieldError, match="different configuration.*method 'neca' -> 'sdf-car'"):
        prepare_run_folder(out, config=SdfCarConfig(iterations=20), resume=True, **kwargs)
    with pytest.raises(VesselfieldError, match="points_sha256"):
        prepare_run_folder(out, config=config, resume=True, **{**kwargs, "inputs": {"points_sha256": ["xyz"]}})
    (out / "config.yaml").unlink()
    with pytest.raises(VesselfieldError, match="no config.yaml, so it cannot be checked"):
        prepare_run_folder(out, config=config, resume=True, **kwargs)
    with pytest.raises(VesselfieldError, match="nothing to resume"):
        prepare_run_folder(tmp_path / "empty", config=config, resume=True, **kwargs)
    (tmp_path / "file").write_text("")
    with pytest.raises(VesselfieldError, match="not a folder"):
        prepare_run_folder(tmp_path / "file", config=config, resume=False, **kwargs)


def test_reproducing_command_quotes_paths_and_appends_the_config():
    command = reproducing_command(["fit", "points", "--points", Path("my points.npy")],
                                  SdfCarConfig(method="neca", seed=4))
    assert command.startswith("vesselfield fit points --points 'my points.npy' --set method=neca --set preset=cpu")
    assert command.endswith("--set seed=4")


def test_run_summary_writes_one_shape_for_every_method(tmp_path):
    summary = RunSummary(verb="fit points", out_dir=tmp_path, files={"mesh": tmp_path / "mesh.stl"},
                         metrics={"dice": 0.9, "chamfer_mm": math.inf}, warnings=["not watertight"],
                         details={"iterations": 3}, objects={"model": object()})
    path = summary.write()
    data = json.loads(path.read_text())
    assert data == {"command": "fit points", "iterations": 3, "metrics": {"dice": 0.9, "chamfer_mm": None},
                    "warnings": ["not watertight"],
                    "files": {"mesh": str(tmp_path / "mesh.stl"), "summary": str(tmp_path / "summary.json")}}
    assert yaml.safe_load(path.read_text()) == data  # plain JSON is plain YAML too
