"""The shared optimisation loop: resume gives the same result, NaN stops, time limit, logs."""

import csv

import numpy as np
import pytest
import torch

from vesselfield.errors import VesselfieldError
from vesselfield.training import run_loop, seed_everything


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
    for p, q in zip(model.parameters(), reference):
        assert torch.equal(p.detach(), q)
    with open(tmp_path / "b" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == list(range(40))
    with open(tmp_path / "a" / "log.csv") as f:
        ref_rows = list(csv.DictReader(f))
    assert np.allclose([float(r["loss"]) for r in rows], [float(r["loss"]) for r in ref_rows], rtol=0, atol=0)


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
