"""SolverOptions through the public API: one value for every face, its checks and what it
implies (model calls, steps), and the plan cache keyed on it."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

import dpmsolver as dpm
from dpmsolver.models import load
from dpmsolver.tools.measure import counting

MODEL = load("digits-exact")
X = MODEL.sample_noise(3, torch.Generator().manual_seed(0), torch.float64)


def test_a_value_and_keywords_give_the_same_run() -> None:
    opts = dpm.SolverOptions(order=3, skip_type="logSNR", steps=8)
    by_value = dpm.sample(MODEL, X, opts)
    by_name = dpm.sample(MODEL, X, order=3, skip_type="logSNR", steps=8)
    assert torch.equal(by_value, by_name)
    # keywords override the value's fields
    five = dpm.sample(MODEL, X, order=3, skip_type="logSNR", steps=5)
    assert torch.equal(dpm.sample(MODEL, X, opts, steps=5), five)
    assert not torch.equal(dpm.sample(MODEL, X, opts, steps=5), by_value)


def test_the_plan_cache_keys_on_the_options() -> None:
    grid = dpm.time_grid(MODEL.schedule, "logSNR", MODEL.schedule.t_max, MODEL.schedule.t_min, 6)
    a = dpm.Sampler(MODEL, timesteps=grid.tolist(), order=2)
    b = dpm.Sampler(MODEL, dpm.SolverOptions(timesteps=grid, order=2))  # a tensor grid
    c = dpm.Sampler(MODEL, timesteps=grid.numpy(), order=2)
    assert a.options == b.options == c.options
    assert hash(a.options) == hash(b.options)
    assert a.plan is b.plan is c.plan
    assert a.options.timesteps == tuple(grid.tolist())
    assert dpm.Sampler(MODEL, timesteps=grid.tolist(), order=3).plan is not a.plan


@pytest.mark.parametrize(
    ("options", "calls", "steps"),
    [
        (dict(steps=7), 7, 7),
        (dict(steps=7, analytic_first_step=True), 6, 7),
        (dict(steps=7, denoise_to_zero=True), 8, 7),
        (dict(steps=7, order=3, method="singlestep"), 7, 3),
        (dict(steps=7, order=3, method="singlestep_fixed"), 6, 2),
        (dict(steps=8, order=2, method="singlestep"), 8, 4),
        (dict(timesteps=[0.9, 0.5, 0.2, 0.01], order=2, method="singlestep"), 6, 3),
        (dict(method="adaptive", order=3), None, None),
    ],
    ids=["2M", "2M-afs", "2M-denoise", "3S", "3S-fixed", "2S", "2S-grid", "adaptive"],
)
def test_model_calls_and_steps_are_what_the_run_does(
    options: dict[str, Any], calls: int | None, steps: int | None
) -> None:
    opts = dpm.SolverOptions.of(**options)
    assert opts.model_calls() == calls
    assert opts.num_steps() == steps
    counted, n = counting(MODEL)
    seen: list[int] = []
    dpm.sample(counted, X, opts, callback=lambda i, t, x: seen.append(i))
    if calls is not None:
        assert n[0] == calls
        # one callback at step 0, one per step (and one for denoise_to_zero's call)
        assert len(seen) == 1 + steps + int(opts.denoise_to_zero)


def test_steps_for_calls() -> None:
    assert dpm.SolverOptions().steps_for_calls(5) == 5
    assert dpm.SolverOptions(analytic_first_step=True).steps_for_calls(5) == 6


def test_changed_is_a_json_record_that_rebuilds_the_value() -> None:
    opts = dpm.SolverOptions(order=3, corrector="all", timesteps=(0.9, 0.4, 0.01), steps=20)
    record = opts.changed()
    assert record == {"order": 3, "corrector": "all", "timesteps": [0.9, 0.4, 0.01]}
    assert dpm.SolverOptions.of(**record) == opts
    assert dpm.SolverOptions().changed() == {}


def test_bad_options() -> None:
    with pytest.raises(TypeError, match="unknown solver option 'step'; the options are steps, "):
        dpm.sample(MODEL, X, step=10)
    with pytest.raises(TypeError, match="options must be a SolverOptions or None, got dict"):
        dpm.sample(MODEL, X, {"steps": 10})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="order must be between 1 and 3"):
        dpm.SolverOptions(order=4)
    with pytest.raises(ValueError, match="give timesteps or sigmas, not both"):
        dpm.SolverOptions(timesteps=(0.5, 0.1), sigmas=(2.0, 1.0))
    with pytest.raises(ValueError, match="sigmas must be > 0"):
        dpm.SolverOptions(sigmas=np.array([2.0, 0.0]))
    with pytest.raises(ValueError, match="timesteps must be 1-D with at least 2 entries"):
        dpm.SolverOptions(timesteps=[[0.5, 0.1]])
    with pytest.raises(dataclasses.FrozenInstanceError):
        dpm.SolverOptions().order = 3  # type: ignore[misc]


def test_an_increasing_grid_inverts() -> None:
    schedule = MODEL.schedule
    x0 = dpm.sample(MODEL, X, steps=10)
    grid = dpm.time_grid(schedule, "time_quadratic", schedule.t_min, schedule.t_max, 10)
    by_grid = dpm.sample(MODEL, x0, timesteps=grid.tolist(), order=3)
    by_name = dpm.sample(
        MODEL, x0, t_start=schedule.t_min, t_end=schedule.t_max, steps=10, order=3,
        skip_type="time_quadratic",
    )  # fmt: skip
    assert torch.equal(by_grid, by_name)
    with pytest.raises(ValueError, match="strictly monotone"):
        dpm.SolverOptions(timesteps=(0.1, 0.5, 0.3))
