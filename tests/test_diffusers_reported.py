"""What diffusers users report about its schedulers, each as a case that ours gets right.

Each test names the diffusers issue; the configs are the ones reported (or the smallest
that shows the problem), and the assertions are what a user expected.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import (
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from dpmsolver.diffusers import DPMSolverScheduler
from dpmsolver.diffusers.spacing import flow_default_calls

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
FLOW = dict(use_flow_sigmas=True, prediction_type="flow_prediction")
CONFIGS: dict[str, dict[str, Any]] = {
    "sd (DPMSolverMultistep)": dict(DPMSolverMultistepScheduler().config),
    "sd karras": dict(DPMSolverMultistepScheduler(use_karras_sigmas=True).config),
    "unipc": dict(UniPCMultistepScheduler().config),
    "euler": dict(EulerDiscreteScheduler().config),
    "sd3 (FlowMatchEuler)": dict(FlowMatchEulerDiscreteScheduler(shift=3.0).config),
    "flux": dict(FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True).config),
    "wan (UniPC flow)": dict(UniPCMultistepScheduler(**FLOW, flow_shift=3.0).config),
}


def model(x: torch.Tensor, t: Any) -> torch.Tensor:
    return 0.3 * x - 0.1 * x.flip(-1)


def loop(scheduler: Any, **kwargs: Any) -> torch.Tensor:
    if scheduler.config.get("use_dynamic_shifting"):
        kwargs.setdefault("mu", 0.8)
    scheduler.set_timesteps(**kwargs)
    x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x).prev_sample
    return x


@pytest.mark.parametrize("name", list(CONFIGS))
def test_custom_sigmas_and_timesteps_are_both_taken(name: str) -> None:
    """diffusers #9971 (Flux passes sigmas: DEIS and DPM-Solver take timesteps but not
    sigmas, UniPC the reverse) and #14442 (searched grids cannot be given): every config
    takes both, as pipelines' retrieve_timesteps looks for them in the signature."""
    parameters = inspect.signature(DPMSolverScheduler.set_timesteps).parameters
    assert {"timesteps", "sigmas", "mu"} <= set(parameters)
    config = CONFIGS[name]
    scheduler = DPMSolverScheduler.from_config(config)
    flow = scheduler.config.prediction_type == "flow_prediction"
    sigmas = [1.0, 0.7, 0.4, 0.15] if flow else [14.0, 3.0, 0.8, 0.1]
    for kwargs in (dict(timesteps=[900.0, 600.0, 300.0, 50.0]), dict(sigmas=sigmas)):
        x = loop(DPMSolverScheduler.from_config(config), **kwargs)
        assert bool(torch.isfinite(x).all())
        scheduler = DPMSolverScheduler.from_config(config)
        loop(scheduler, **kwargs)
        assert len(scheduler.timesteps) == 4


@pytest.mark.parametrize("steps", [10, 25, 50])
def test_karras_sigmas_on_a_cosine_schedule_are_distinct(steps: int) -> None:
    """diffusers #12771: Karras sigmas with a cosine schedule give duplicate integer timesteps
    (998 nine times) and an IndexError at step 21. Ours evaluates the network at the exact
    time of each level: distinct, descending, and the run takes every step."""
    config = dict(beta_schedule="squaredcos_cap_v2", use_karras_sigmas=True)
    scheduler = DPMSolverScheduler(**config)
    scheduler.set_timesteps(steps)
    t = scheduler.timesteps
    assert len(t) == steps and bool((t[1:] < t[:-1]).all())
    assert bool(torch.isfinite(loop(DPMSolverScheduler(**config), num_inference_steps=steps)).all())


@pytest.mark.parametrize("name", ["sd3 (FlowMatchEuler)", "flux", "wan (UniPC flow)"])
@pytest.mark.parametrize("steps", [1, 2, 3, 7, 50])
def test_flow_runs_take_their_last_step(name: str, steps: int) -> None:
    """diffusers #10266 (UniPC on flow models indexed past its sigmas at the last step) and
    #10738 (an index error at the last step): every step count runs to its end, with one
    sigma more than timesteps, the last 0."""
    config = CONFIGS[name]
    for grid in ({}, {"use_diffusers_grid": True}):
        scheduler = DPMSolverScheduler.from_config(config, **grid)
        x = loop(scheduler, num_inference_steps=steps)
        assert bool(torch.isfinite(x).all())
        assert len(scheduler.sigmas) == len(scheduler.timesteps) + 1 == steps + 1
        assert float(scheduler.sigmas[-1]) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_inference_steps=12),
        dict(timesteps=[800.0, 500.0, 200.0]),
        dict(sigmas=[1.0, 0.6, 0.3]),
    ],
    ids=["steps", "timesteps", "sigmas"],
)
def test_flow_timesteps_and_sigmas_agree_when_shifted(kwargs: dict[str, Any]) -> None:
    """diffusers #13243 (FlowMatch applies its shift twice: 1000 steps at shift 3 end at
    sigma 0.0089, not 0.0030) and #14013 (with custom timesteps and shift != 1, timesteps
    and sigmas disagree: 500 against 750): ours applies the shift once, and the network's
    timestep is always 1000 times the sigma the step uses."""
    scheduler = DPMSolverScheduler.from_config(CONFIGS["sd3 (FlowMatchEuler)"])
    scheduler.set_timesteps(**kwargs)
    np.testing.assert_allclose(
        scheduler.timesteps.numpy(), 1000 * scheduler.sigmas[:-1].numpy(), rtol=1e-12
    )
    given = kwargs.get("timesteps") or [1000 * v for v in kwargs.get("sigmas", [])]
    if given:
        u = np.array(given) / 1000
        np.testing.assert_allclose(scheduler.sigmas[:-1].numpy(), 3 * u / (1 + 2 * u), rtol=1e-12)
    full = DPMSolverScheduler.from_config(CONFIGS["sd3 (FlowMatchEuler)"])
    full.set_timesteps(1000)
    assert float(full.sigmas[-2]) == pytest.approx(3 * 0.001 / (1 + 2 * 0.001), rel=1e-12)


@pytest.mark.parametrize("shift", [5.0, 8.0])
def test_wans_shift_is_honoured(shift: float) -> None:
    """diffusers #12094: Wan's `sample_shift` is UniPC's flow_shift; given to from_config it
    moves the grid (the flow default at that shift)."""
    scheduler = DPMSolverScheduler.from_config(CONFIGS["wan (UniPC flow)"], flow_shift=shift)
    scheduler.set_timesteps(10)
    np.testing.assert_allclose(
        scheduler.sigmas[:-1].numpy(), flow_default_calls(1000, shift, 10), rtol=1e-12
    )
