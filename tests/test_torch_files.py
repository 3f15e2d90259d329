"""Safe torch files (vesselfield.io.torch_files): round trip, refused payloads, one-line errors for
every kind of unreadable file; the checkpoint and model-file readers that use them."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from vesselfield.errors import VesselfieldError
from vesselfield.io.torch_files import check_plain, load_tensors, save_tensors


class Opaque:
    """Something only pickle can store."""


def one_line_error(call, match: str) -> str:
    with pytest.raises(VesselfieldError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_round_trip_keeps_tensors_and_plain_values_exactly(tmp_path):
    payload = {"w": torch.arange(6, dtype=torch.float64).reshape(2, 3) / 3, "n": 3, "x": 0.1, "name": "lumen",
               "none": None, "sizes": (1, 2), "list": [1.5, "a"], "ordered": OrderedDict(b=1, a=2),
               "dtype": torch.float16, "shape": torch.Size([4, 5]), "raw": b"\x00\xff"}
    path = save_tensors(tmp_path / "sub" / "f.pt", payload)
    assert path == tmp_path / "sub" / "f.pt" and sorted(p.name for p in path.parent.iterdir()) == ["f.pt"]
    back = load_tensors(path)
    assert torch.equal(back["w"], payload["w"]) and back["w"].dtype == torch.float64 and back["w"].device.type == "cpu"
    assert {k: v for k, v in back.items() if k != "w"} == {k: v for k, v in payload.items() if k != "w"}
    assert type(back["sizes"]) is tuple and type(back["ordered"]) is OrderedDict


def test_payloads_that_need_pickle_are_refused_before_writing_and_named(tmp_path):
    message = one_line_error(lambda: save_tensors(tmp_path / "m.pt", {"a": [1, {"b": Opaque()}]}, what="model file"),
                             r"a model file cannot hold the model file\['a'\]\[1\]\['b'\] of type Opaque")
    assert "loaded safely" in message
    one_line_error(lambda: save_tensors(tmp_path / "n.pt", {"p": Path("x")}),
                   rf"a torch file cannot hold the torch file\['p'\] of type {type(Path('x')).__name__}:")
    one_line_error(lambda: save_tensors(tmp_path / "k.pt", {np.float32: 1}), r"the torch file key of type type")
    one_line_error(lambda: check_plain({"arr": np.zeros(2)}, "extra", "checkpoint"),
                   r"a checkpoint cannot hold extra\['arr'\] of type ndarray")
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file left


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the bare pickle below
def test_unreadable_files_give_one_line_errors(tmp_path):
    one_line_error(lambda: load_tensors(tmp_path / "missing.pt", what="checkpoint"),
                   r"^no checkpoint at .*missing\.pt$")
    one_line_error(lambda: load_tensors(tmp_path, what="model file"), r"^no model file at ")
    (tmp_path / "empty.pt").write_bytes(b"")
    one_line_error(lambda: load_tensors(tmp_path / "empty.pt"), r"is not a readable torch file \(the file is empty\)")
    # Not written by torch.save: a text file and a bare pickle of plain values.
    (tmp_path / "text.pt").write_text("not a checkpoint")
    (tmp_path / "bare.pt").write_bytes(pickle.dumps({"a": 1}))
    for name in ("text.pt", "bare.pt"):
        one_line_error(lambda name=name: load_tensors(tmp_path / name, what="checkpoint"),
                       r"is not a readable checkpoint \(not a file written by torch.save\)")
    # torch.save of an object: refused (it could run code), naming the class torch refused.
    torch.save({"o": Opaque()}, tmp_path / "evil.pt")
    one_line_error(lambda: load_tensors(tmp_path / "evil.pt"),
                   r"holds objects other than tensors and plain values \(test_torch_files\.Opaque\): it is not loaded")
    # A torch.save file cut in half, and one with bytes flipped inside the archive.
    save_tensors(tmp_path / "good.pt", {"w": torch.ones(1000)})
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:len(data) // 2])
    flipped = bytearray(data)
    flipped[200:260] = bytes(b ^ 0xFF for b in flipped[200:260])
    (tmp_path / "flipped.pt").write_bytes(bytes(flipped))
    for name in ("cut.pt", "flipped.pt"):
        one_line_error(lambda name=name: load_tensors(tmp_path / name),
                       r"is not a readable torch file \(damaged or cut short: ")
    assert torch.equal(load_tensors(tmp_path / "good.pt")["w"], torch.ones(1000))


def test_checkpoints_and_model_files_are_read_through_it(tmp_path):
    from vesselfield.methods.implicit_vessel import ImplicitVesselModel, fit_implicit_sdf, inr_config
    from vesselfield.training import read_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "c.pt", 7, {"m": torch.nn.Linear(2, 1)}, extra={"config": {"n": 1}})
    assert read_checkpoint(tmp_path / "c.pt")["iteration"] == 7
    one_line_error(lambda: save_checkpoint(tmp_path / "d.pt", 1, {}, extra={"where": Path("x")}),
                   rf"a checkpoint cannot hold the checkpoint\['extra'\]\['where'\] of type {type(Path('x')).__name__}")
    one_line_error(lambda: read_checkpoint(tmp_path / "d.pt"), "^no checkpoint at ")
    # A readable torch file that is not a checkpoint is still told apart.
    save_tensors(tmp_path / "plain.pt", {"w": torch.ones(2)})
    one_line_error(lambda: read_checkpoint(tmp_path / "plain.pt"), "is not a vesselfield checkpoint")

    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 3))
    points = 5.0 * points / np.linalg.norm(points, axis=1, keepdims=True)
    model = fit_implicit_sdf(points, config=inr_config("fast", iterations=0, hidden_dim=8, n_layers=3),
                             device="cpu").model
    model.save(tmp_path / "run" / "model.pt")
    back = ImplicitVesselModel.load(tmp_path / "run")
    probe = np.array([[0.0, 0.0, 0.0], [6.0, 1.0, -2.0]])
    assert np.array_equal(back.sdf(probe), model.sdf(probe))
    one_line_error(lambda: ImplicitVesselModel.load(tmp_path / "nowhere"), "^no model file at ")
    (tmp_path / "run" / "model.pt").write_text("text")
    one_line_error(lambda: ImplicitVesselModel.load(tmp_path / "run"), r"is not a readable model file \(not a file")
    one_line_error(lambda: ImplicitVesselModel.load(tmp_path / "plain.pt"),
                   "is not a vesselfield implicit vessel model")
