"""The per-case loop and the machinery it shares with the trainer: resume gives the same result,
NaN stops, time limit, rows returned and appended to log.csv, checkpoints loaded with weights_only."""

import csv
import pickle
import random

import numpy as np
import pytest
import torch

from vesselfield.errors import VesselfieldError
from vesselfield.training import (CsvLog, derived_seed, load_checkpoint, read_checkpoint, run_loop, save_checkpoint,
                                  seed_everything)
from vesselfield.training.log import pack_rows, unpack_rows


def read_csv(path):
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def make_problem():
    """A noisy least-squares fit whose steps draw random minibatches (so RNG state matters)."""
    seed_everything(0)
    target = torch.linspace(-1, 1, 64)
    model = torch.nn.Linear(1, 64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def step(i):
        idx = torch.randint(0, 64, (16,))
        noise = torch.randn(16) * 0.01
        pred = model(torch.ones(1, 1))[0, idx]
        loss = ((pred - target[idx] - noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "noise": float(noise.abs().mean())}

    return model, opt, step


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    model, opt, step = make_problem()
    full = run_loop(step, {"model": model, "opt": opt}, tmp_path / "a", iterations=40, checkpoint_every=10,
                    progress=False)
    reference = [p.detach().clone() for p in model.parameters()]
    assert full.iterations_done == 40 and full.stopped_by == "iterations"

    # "Killed" after 25 iterations: the step raises, the last checkpoint is at 20.
    model, opt, step = make_problem()

    def dying(i):
        if i == 25:
            raise KeyboardInterrupt
        return step(i)

    with pytest.raises(KeyboardInterrupt):
        run_loop(dying, {"model": model, "opt": opt}, tmp_path / "b", iterations=40, checkpoint_every=10,
                 progress=False)
    model, opt, step = make_problem()  # a fresh process: new objects, state from the checkpoint
    resumed = run_loop(step, {"model": model, "opt": opt}, tmp_path / "b", iterations=40, checkpoint_every=10,
                       resume=True, progress=False)
    assert resumed.iterations_done == 40
    for p, q in zip(model.parameters(), reference, strict=True):
        assert torch.equal(p.detach(), q)
    # Every row of the run comes back (those before the resume from the checkpoint), the same as
    # the uninterrupted run's and as log.csv's.
    assert [r["iteration"] for r in resumed.rows] == list(range(40))
    assert [r["loss"] for r in resumed.rows] == [r["loss"] for r in full.rows]
    assert read_csv(tmp_path / "b" / "log.csv") == [{k: float(v) for k, v in r.items()} for r in resumed.rows]


def test_rows_are_returned_and_appended_to_the_csv(tmp_path):
    model, opt, step = make_problem()
    seen = []

    def watching(i):
        # log.csv holds the rows before this step already (appended as they arrive).
        seen.append(len(read_csv(tmp_path / "log.csv")) if i else 0)
        return step(i)

    result = run_loop(watching, {"model": model, "opt": opt}, tmp_path, iterations=12, checkpoint_every=5,
                      progress=False)
    assert seen == list(range(12))
    assert [r["iteration"] for r in result.rows] == list(range(12))
    assert list(result.rows[0]) == ["iteration", "time_s", "loss", "noise"]
    assert result.last == {k: v for k, v in result.rows[-1].items() if k not in ("iteration", "time_s")}
    # floats are written with repr, so the file holds exactly the returned numbers
    assert read_csv(tmp_path / "log.csv") == [{k: float(v) for k, v in r.items()} for r in result.rows]


def test_resume_restores_the_rows_from_the_checkpoint_not_the_csv(tmp_path):
    model, opt, step = make_problem()

    def dying(i):
        if i == 17:
            raise KeyboardInterrupt
        return step(i)

    with pytest.raises(KeyboardInterrupt):
        run_loop(dying, {"model": model, "opt": opt}, tmp_path, iterations=30, checkpoint_every=10, progress=False)
    assert len(read_csv(tmp_path / "log.csv")) == 17
    (tmp_path / "log.csv").unlink()  # nothing reads it back
    model, opt, step = make_problem()
    resumed = run_loop(step, {"model": model, "opt": opt}, tmp_path, iterations=30, checkpoint_every=10,
                       resume=True, progress=False)
    assert [r["iteration"] for r in resumed.rows] == list(range(30))
    assert [r["iteration"] for r in read_csv(tmp_path / "log.csv")] == list(range(30))
    # time_s counts the run's seconds over both calls: it never goes back
    times = [r["time_s"] for r in resumed.rows]
    assert times == sorted(times)


def test_checkpoints_load_with_weights_only(tmp_path):
    model, opt, step = make_problem()
    run_loop(step, {"model": model, "opt": opt}, tmp_path, iterations=3, progress=False,
             extra={"config": {"iterations": 3, "sizes": (1, 2), "name": "x", "limit": None}})
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert payload["iteration"] == 3 and payload["extra"]["config"]["sizes"] == (1, 2)
    assert set(payload["states"]) == {"model", "opt"} and set(payload["rng"]) >= {"python", "numpy", "torch"}
    assert [r["iteration"] for r in unpack_rows(payload["loop"]["rows"])] == [0, 1, 2]

    # Something that only pickle could store is refused when saving, not hours later on resume.
    with pytest.raises(VesselfieldError, match=r"cannot hold extra\['path'\] of type PosixPath"):
        run_loop(step, {"model": model}, tmp_path / "b", iterations=1, progress=False,
                 extra={"path": tmp_path})
    # A file with pickled objects is not loaded (that could run code), with a one-line error.
    torch.save({"iteration": 1, "states": {}, "rng": {}, "object": _Pickled()}, tmp_path / "evil.pt")
    with pytest.raises(VesselfieldError, match="objects other than tensors") as info:
        read_checkpoint(tmp_path / "evil.pt")
    assert "\n" not in str(info.value)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(VesselfieldError, match="not a readable checkpoint") as info:
        read_checkpoint(tmp_path / "broken.pt")
    assert "\n" not in str(info.value)
    with pytest.raises(VesselfieldError, match="lacks scheduler"):
        load_checkpoint(tmp_path / "checkpoint.pt", {"model": model, "scheduler": opt})


class _Pickled:
    pass


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    seed_everything(5)
    np.random.normal()  # a cached Gaussian is part of NumPy's state
    save_checkpoint(tmp_path / "c.pt", 0, {})
    first = (random.random(), np.random.normal(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    seed_everything(99)
    load_checkpoint(tmp_path / "c.pt", {})
    assert (random.random(), np.random.normal(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == first


def test_derived_seeds_are_the_ones_the_study_and_the_trainer_always_used():
    # The values below were computed with the two functions this one replaced (bench.robustness's
    # 31-bit derived_seed and the trainer's 63-bit _derived_seed) before they were removed: the
    # robustness study's sample seeds (results.csv, docs) and the trainer's loader seeds must not move.
    assert derived_seed(0, 100, 0) == 1505558374
    assert derived_seed(0, 100, 19) == 818819089
    assert derived_seed(0, 1000, 5, 1) == 920312535  # the held-out points' seed of a fit
    assert derived_seed(7, 30, 1) == 1382588484
    assert derived_seed(0) == 821328062
    assert derived_seed(0, 0, 0, 0, bits=63) == 6569863346532939966
    assert derived_seed(0, 3, 1, 1, bits=63) == 3969950139491936400
    assert derived_seed(123, 4, 0, 2, bits=63) == 1679359526078951903
    # The 63-bit variant reduces the first part modulo 2**32, as the trainer did with its seed.
    assert derived_seed(2**40 + 5, 2, 0, 0, bits=63) == derived_seed(5, 2, 0, 0, bits=63) == 4160164373342109173
    # Their definitions (NumPy SeedSequence), for any parts.
    for parts in [(1, 2, 3), (2**33, 0), (9,)]:
        assert derived_seed(*parts) == int(np.random.SeedSequence(parts).generate_state(1)[0]) & 0x7FFFFFFF
        words = [parts[0] % 2**32, *parts[1:]]
        state = np.random.SeedSequence(words).generate_state(1, np.uint64)
        assert derived_seed(*parts, bits=63) == int(state[0]) % 2**63
        assert 0 <= derived_seed(*parts) < 2**31 and 0 <= derived_seed(*parts, bits=63) < 2**63
    for bad, says in ((lambda: derived_seed(), "at least one"), (lambda: derived_seed(1, -2), "non-negative"),
                      (lambda: derived_seed(1, bits=32), "31- or 63-bit")):
        with pytest.raises(VesselfieldError, match=says):
            bad()


def test_csv_log_appends_and_rewrites_with_the_union_of_columns(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("old,run\n1,2\n")
    log = CsvLog(path)
    assert not path.exists()  # a new log replaces an earlier run's
    log.append({"iteration": 0, "loss": 1.5})
    log.append({"iteration": 1, "loss": 0.25})
    assert path.read_text().splitlines() == ["iteration,loss", "0,1.5", "1,0.25"]
    log.append({"iteration": 2, "loss": 0.125, "loss_geo": 3.0})  # a new column: the file is rewritten
    log.append({"iteration": 3, "loss": 0.0625, "loss_geo": 2.0})
    log.close()
    assert path.read_text().splitlines() == ["iteration,loss,loss_geo", "0,1.5,", "1,0.25,", "2,0.125,3.0",
                                             "3,0.0625,2.0"]
    assert log.rows[2] == {"iteration": 2, "loss": 0.125, "loss_geo": 3.0}
    memory = CsvLog(None, log.rows)
    memory.append({"iteration": 4})
    assert len(memory.rows) == 5 and len(path.read_text().splitlines()) == 5


def test_packed_rows_round_trip_exactly():
    rows = [{"epoch": 0, "loss": 0.1, "dice": float("nan")}, {"epoch": 1, "loss": 1e-300, "extra": 2.5},
            {"epoch": 2**53, "loss": -0.0}]
    back = unpack_rows(pickle.loads(pickle.dumps(pack_rows(rows))))
    assert [list(r) for r in back] == [list(r) for r in rows]
    assert back[0]["dice"] != back[0]["dice"] and isinstance(back[2]["epoch"], int) and back[2]["epoch"] == 2**53
    assert [r["loss"] for r in back] == [0.1, 1e-300, -0.0]
    with pytest.raises(VesselfieldError, match="not a number"):
        pack_rows([{"name": "x"}])


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    model, opt, step = make_problem()

    def diverging(i):
        terms = step(i)
        return {**terms, "loss": float("nan") if i == 3 else terms["loss"]}

    with pytest.raises(VesselfieldError, match="loss became nan at iteration 3"):
        run_loop(diverging, {"model": model, "opt": opt}, tmp_path, iterations=10, progress=False)


def test_time_limit_zero_stops_before_any_step_and_checkpoints(tmp_path):
    model, opt, step = make_problem()
    result = run_loop(step, {"model": model, "opt": opt}, tmp_path, iterations=10, time_limit_s=0.0,
                      progress=False)
    assert result.stopped_by == "time_limit" and result.iterations_done == 0
    assert (tmp_path / "checkpoint.pt").is_file()
    resumed = run_loop(step, {"model": model, "opt": opt}, tmp_path, iterations=5, resume=True, progress=False)
    assert resumed.iterations_done == 5


def test_resume_without_checkpoint_is_a_user_error(tmp_path):
    model, opt, step = make_problem()
    with pytest.raises(VesselfieldError, match="no checkpoint"):
        run_loop(step, {"model": model}, tmp_path, iterations=3, resume=True, progress=False)
