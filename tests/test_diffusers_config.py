"""diffusers configs in DPMSolverScheduler: every key of every scheduler class is taken with
diffusers' meaning or refused by name; where the grid is the same, the run is diffusers'."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

import diffusers
from diffusers import (
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

import dpmsolver as dpm
from dpmsolver.diffusers import DPMSolverScheduler

CLASSES = (
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
    "DDIMScheduler",
    "DDPMScheduler",
    "PNDMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "LMSDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "FlowMatchEulerDiscreteScheduler",
)
OURS = set(inspect.signature(DPMSolverScheduler.__init__).parameters) - {"self"}


def init_keys(name: str) -> dict[str, Any]:
    params = inspect.signature(getattr(diffusers, name).__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self"}


def linear_model(x: torch.Tensor, t: Any) -> torch.Tensor:
    """A network whose output does not depend on its time input (so diffusers' rounding of
    timesteps cannot matter): the comparisons below then test the update rules alone."""
    return 0.3 * x - 0.1 * x.flip(-1)


def run(scheduler: Any, steps: int = 8, seed: int = 0, **kw: Any) -> torch.Tensor:
    scheduler.set_timesteps(steps, **kw)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for t in scheduler.timesteps:
        x = scheduler.step(linear_model(x, t), t, x).prev_sample
    return x


def run_with_noise(scheduler: Any, steps: int = 10) -> torch.Tensor:
    """`run` for an SDE scheduler, each step's noise given as `variance_noise` (seed 1), so
    two schedulers see the same noise."""
    scheduler.set_timesteps(steps)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noises = torch.randn(steps, *x.shape, generator=torch.Generator().manual_seed(1))
    for t, z in zip(scheduler.timesteps, noises, strict=True):
        x = scheduler.step(linear_model(x, t), t, x, variance_noise=z.double()).prev_sample
    return x


# -- every key of every class --------------------------------------------------------------


@pytest.mark.parametrize("name", CLASSES)
def test_every_key_of_every_class_is_a_key_of_ours(name: str) -> None:
    assert set(init_keys(name)) <= OURS, set(init_keys(name)) - OURS


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("saved", [False, True])
def test_every_class_config_loads_and_runs(name: str, saved: bool, tmp_path: Path) -> None:
    """Both an in-memory config (keys at their defaults are dropped by from_config) and a
    saved one (every key present) load; the run is finite and makes 8 calls."""
    source = getattr(diffusers, name)()
    if saved:
        source.save_config(tmp_path)
        scheduler = DPMSolverScheduler.from_pretrained(tmp_path)
    else:
        scheduler = DPMSolverScheduler.from_config(source.config)
    x = run(scheduler)
    assert len(scheduler.timesteps) == 8 and bool(torch.isfinite(x).all())
    flow = name.startswith("FlowMatch")
    config = source.config
    to_zero = flow or (
        saved and (config.get("final_sigmas_type") == "zero" or config.get("set_alpha_to_one"))
    )
    assert scheduler.config.prediction_type == ("flow_prediction" if flow else "epsilon")
    assert (float(scheduler.sigmas[-1]) == 0.0) == bool(to_zero)


@pytest.mark.parametrize(
    ("name", "method", "corrector", "flow"),
    [
        ("DPMSolverMultistepScheduler", "multistep", "off", False),
        ("DPMSolverSinglestepScheduler", "singlestep", "off", False),
        ("UniPCMultistepScheduler", "multistep", "all", False),
        ("FlowMatchEulerDiscreteScheduler", "multistep", "all", True),  # the flow default
    ],
)
def test_a_config_means_its_class(name: str, method: str, corrector: str, flow: bool) -> None:
    """What a config's class says without a key: DPMSolverSinglestep is singlestep, UniPC
    runs its corrector, FlowMatch is flow matching (also for configs at their defaults)."""
    scheduler = DPMSolverScheduler.from_config(getattr(diffusers, name)().config)
    assert (scheduler.config.method, scheduler.config.corrector) == (method, corrector)
    assert (scheduler.config.prediction_type == "flow_prediction") == flow


# Each key with a value other than its default (in a context where diffusers gives it a
# meaning): the run changes, or the value is refused with a ValueError naming the key.
# Keys that no diffusers scheduler reads when it runs DPM-Solver are listed apart.
NO_EFFECT_ON_THE_RUN = {
    "skip_prk_steps": "PNDM's Runge-Kutta warm-up: no meaning for DPM-Solver",
    "base_shift": "read by Flux-like pipelines to compute mu (set_timesteps(mu=...))",
    "max_shift": "read by Flux-like pipelines to compute mu",
    "base_image_seq_len": "read by Flux-like pipelines to compute mu",
    "max_image_seq_len": "read by Flux-like pipelines to compute mu",
}
VP = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
LEADING = dict(VP, timestep_spacing="leading")
KARRAS = dict(VP, use_karras_sigmas=True)
FLOW = {"shift": 3.0}


def tuned_record(config: dict[str, Any], steps: int = 6) -> dict[str, Any]:
    """A tuned solver's JSON record (from_tuned's tuned_solver key) on `config`'s schedule:
    a logSNR grid of `steps` steps, analytic rules."""
    ns = DPMSolverScheduler(**config).noise_schedule
    times = dpm.time_grid(ns, "logSNR", ns.t_max, ns.t_min, steps).tolist()
    sigmas = [lv.sigma / lv.alpha for lv in ns.levels(times)]
    return dict(times=times, sigmas=sigmas, options={}, coefficients=None)


VARIATIONS: list[tuple[str, Any, dict[str, Any]]] = [
    ("num_train_timesteps", 500, VP),
    ("beta_start", 0.0002, VP),
    ("beta_end", 0.02, VP),
    ("beta_schedule", "linear", VP),
    ("beta_schedule", "squaredcos_cap_v2", VP),
    ("trained_betas", torch.linspace(1e-4, 0.03, 1000).tolist(), VP),
    ("rescale_betas_zero_snr", True, VP),
    ("prediction_type", "v_prediction", VP),
    ("prediction_type", "sample", VP),
    ("algorithm_type", "dpmsolver", VP),
    ("algorithm_type", "sde-dpmsolver++", VP),
    ("algorithm_type", "sde-dpmsolver", VP),
    ("predict_x0", False, VP),
    ("solver_order", 3, VP),
    ("solver_type", "heun", VP),
    ("solver_type", "bh1", VP),
    ("solver_type", "bh2", VP),
    ("method", "singlestep", VP),
    ("lower_order_final", False, VP),
    ("final_step_first_order", True, dict(VP, lower_order_final=False)),
    ("euler_at_final", True, dict(VP, lower_order_final=False)),
    ("skip_type", "logSNR", VP),
    ("timestep_spacing", "linspace", VP),
    ("timestep_spacing", "trailing", VP),
    ("steps_offset", 1, LEADING),
    ("use_karras_sigmas", True, VP),
    ("use_exponential_sigmas", True, VP),
    ("use_beta_sigmas", True, VP),
    ("use_lu_lambdas", True, VP),
    ("sigma_min", 0.1, KARRAS),
    ("sigma_max", 5.0, KARRAS),
    ("lambda_min_clipped", -2.0, dict(VP, timestep_spacing="linspace")),
    ("final_noise_level", "zero", VP),
    ("final_sigmas_type", "zero", VP),
    ("set_alpha_to_one", True, VP),
    ("denoise_to_zero", True, VP),
    ("thresholding", True, VP),
    ("dynamic_thresholding_ratio", 0.5, dict(VP, thresholding=True, sample_max_value=2.0)),
    ("sample_max_value", 1.2, dict(VP, thresholding=True)),
    ("clip_sample", True, VP),
    ("clip_sample_range", 0.5, dict(VP, clip_sample=True)),
    ("variance_type", "fixed_small", VP),
    ("corrector", "all", VP),
    ("corrector_variant", "bh1", dict(VP, corrector="all", solver_order=1)),
    ("disable_corrector", [1, 2], dict(VP, corrector="all")),
    ("solver_p", "UniPC", VP),
    ("use_flow_sigmas", True, VP),
    ("use_diffusers_grid", True, FLOW),
    ("flow_shift", 3.0, dict(VP, use_flow_sigmas=True, prediction_type="flow_prediction")),
    ("shift", 2.0, FLOW),
    ("use_dynamic_shifting", True, FLOW),
    ("time_shift_type", "linear", dict(FLOW, use_dynamic_shifting=True)),
    ("shift_terminal", 0.1, FLOW),
    ("invert_sigmas", True, FLOW),
    ("stochastic_sampling", True, FLOW),
    ("timestep_type", "continuous", VP),
    ("timestep_type", "continuous", dict(VP, prediction_type="v_prediction")),
    ("interpolation_type", "log_linear", VP),
    ("tuned_solver", tuned_record(VP), VP),
]


def outcome(config: dict[str, Any]) -> tuple[list[float], torch.Tensor] | str:
    try:
        scheduler = DPMSolverScheduler(**config)
        mu = 0.8 if config.get("use_dynamic_shifting") else None
        x = run(scheduler, 6, mu=mu)
        if config.get("variance_type") == "fixed_small":
            # a fixed variance: an output of twice the channels is not split
            scheduler.set_timesteps(6)
            y = torch.zeros(2, 3, 4, 4)
            scheduler.step(torch.zeros(2, 6, 4, 4), scheduler.timesteps[0], y)
    except ValueError as error:
        return str(error)
    return scheduler.timesteps.tolist(), x


def test_the_variations_cover_every_key() -> None:
    assert {key for key, _, _ in VARIATIONS} | set(NO_EFFECT_ON_THE_RUN) == OURS


@pytest.mark.parametrize(("key", "value", "context"), VARIATIONS, ids=lambda v: str(v)[:20])
def test_each_key_changes_the_run_or_is_refused_by_name(
    key: str, value: Any, context: dict[str, Any]
) -> None:
    base = outcome(dict(context))
    assert not isinstance(base, str), base
    got = outcome(dict(context, **{key: value}))
    if isinstance(got, str):
        assert key in got, got
        return
    same_grid = got[0] == base[0]
    same_run = got[1].shape == base[1].shape and bool(torch.equal(got[1], base[1]))
    assert not (same_grid and same_run), f"{key}={value!r} changed nothing"


# -- where the grid is diffusers', the run is diffusers' -----------------------------------

PARITY = [
    dict(timestep_spacing=s, final_sigmas_type=f)
    for s in ("linspace", "leading", "trailing")
    for f in ("zero", "sigma_min")
] + [
    dict(timestep_spacing="linspace", solver_order=3),
    dict(timestep_spacing="linspace", solver_order=1),
    dict(timestep_spacing="linspace", solver_type="heun"),
    dict(timestep_spacing="linspace", algorithm_type="dpmsolver", final_sigmas_type="sigma_min"),
    dict(timestep_spacing="linspace", prediction_type="v_prediction"),
    dict(timestep_spacing="linspace", lower_order_final=False),
    dict(timestep_spacing="linspace", euler_at_final=True, final_sigmas_type="sigma_min"),
    dict(timestep_spacing="linspace", thresholding=True, sample_max_value=1.2),
    dict(timestep_spacing="leading", steps_offset=1),
    dict(timestep_spacing="linspace", beta_schedule="squaredcos_cap_v2", lambda_min_clipped=-5.1),
    dict(use_karras_sigmas=True),
    dict(use_karras_sigmas=True, final_sigmas_type="sigma_min"),
    dict(use_exponential_sigmas=True),
    dict(use_beta_sigmas=True),
    dict(use_lu_lambdas=True),
    dict(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction"),
]


def test_a_last_call_at_sigma_min_ends_with_a_step_of_length_0_as_in_diffusers() -> None:
    """Karras levels ending at sigma_min: diffusers repeats sigma_min, and its last call
    only corrects the step before it (UniPC); the sample returned is the one at sigma_min."""
    config = dict(VP, use_karras_sigmas=True, final_sigmas_type="sigma_min")
    ours, theirs = DPMSolverScheduler(**config), DPMSolverMultistepScheduler(**config)
    ours.set_timesteps(8)
    theirs.set_timesteps(8)
    assert len(ours.timesteps) == 8 and float(ours.sigmas[-1]) == float(ours.sigmas[-2])
    torch.testing.assert_close(ours.sigmas.float(), theirs.sigmas, rtol=3e-5, atol=0)
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    last = ours.timesteps[-1]
    for t in ours.timesteps[:-1]:
        x = ours.step(linear_model(x, t), t, x).prev_sample
    assert torch.equal(ours.step(linear_model(x, last), last, x).prev_sample, x)


@pytest.mark.parametrize("config", PARITY, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_same_run_as_diffusers_dpmsolver_multistep(config: dict[str, Any]) -> None:
    full = (
        dict(VP, final_sigmas_type="zero", **config)
        if "final_sigmas_type" not in config
        else dict(VP, **config)
    )
    # On flow configs, diffusers' grid is asked for by name (the flow default is ours).
    grid = dict(use_diffusers_grid=True) if full.get("use_flow_sigmas") else {}
    ours = run(DPMSolverScheduler(**full, **grid), 12)
    theirs = run(DPMSolverMultistepScheduler(**full), 12)
    # diffusers keeps its sigmas in float32: agreement to float32 precision.
    torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("algorithm", ["sde-dpmsolver++", "sde-dpmsolver"])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
def test_sde_same_run_as_diffusers_given_the_same_noise(
    order: int, algorithm: str, solver_type: str
) -> None:
    config = dict(
        VP,
        timestep_spacing="linspace",
        final_sigmas_type="zero" if algorithm == "sde-dpmsolver++" else "sigma_min",
        algorithm_type=algorithm,
        solver_order=order,
        solver_type=solver_type,
    )
    out = [
        run_with_noise(cls(**config)) for cls in (DPMSolverScheduler, DPMSolverMultistepScheduler)
    ]
    # float32 sigmas in diffusers, and the noise form's 1 / alpha near t = 0: 1e-5
    torch.testing.assert_close(out[0], out[1], rtol=1e-4, atol=1e-5)


class ThirdOrderSDEFixed(DPMSolverMultistepScheduler):
    """diffusers' DPMSolverMultistep with its sde-dpmsolver++ third-order step changed in
    one term: the second difference D2 is weighed by alpha_t ((1 - e^{-2h} - 2h) / (2h)^2
    + 1/2), the exponential integral of DPM-Solver++(3M) SDE (k-diffusion's phi_3 at
    h_eta = 2h), where diffusers has - 1/2. The fixed step is diffusers' plus alpha_t D2."""

    def multistep_dpm_solver_third_order_update(self, model_output_list, *args, **kwargs):  # type: ignore[no-untyped-def]
        x_t = super().multistep_dpm_solver_third_order_update(model_output_list, *args, **kwargs)
        if self.config.algorithm_type != "sde-dpmsolver++":
            return x_t
        i = self.step_index
        alpha, sigma = zip(
            *(self._sigma_to_alpha_sigma_t(self.sigmas[j]) for j in (i + 1, i, i - 1, i - 2)),
            strict=True,
        )
        lam = [torch.log(a) - torch.log(s) for a, s in zip(alpha, sigma, strict=True)]
        h, h_0, h_1 = lam[0] - lam[1], lam[1] - lam[2], lam[2] - lam[3]
        m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
        d1_0, d1_1 = (m0 - m1) / (h_0 / h), (m1 - m2) / (h_1 / h)
        d2 = (d1_0 - d1_1) / ((h_0 + h_1) / h)
        return x_t + alpha[0] * d2


def test_sde_third_order_is_dpmsolver_plus_plus_3m_sde() -> None:
    """sde-dpmsolver++ at solver_order=3 runs DPM-Solver++(3M) SDE as k-diffusion defines it
    (the same rule as the native API's order 3 with eta = 1): diffusers' run with its one
    different term fixed, given the same noise; diffusers' own run differs."""
    config = dict(
        VP,
        timestep_spacing="linspace",
        final_sigmas_type="zero",
        algorithm_type="sde-dpmsolver++",
        solver_order=3,
    )
    classes = (DPMSolverScheduler, ThirdOrderSDEFixed, DPMSolverMultistepScheduler)
    out = [run_with_noise(cls(**config)) for cls in classes]
    torch.testing.assert_close(out[0], out[1], rtol=1e-4, atol=1e-5)
    assert float((out[0] - out[2]).abs().max()) > 1e-3


def test_sde_draws_from_the_generator() -> None:
    config = dict(VP, algorithm_type="sde-dpmsolver++")
    results = []
    for seed in (0, 0, 1):
        scheduler = DPMSolverScheduler(**config)
        scheduler.set_timesteps(6)
        gen = torch.Generator().manual_seed(seed)
        x = torch.ones(1, 3, 4, 4)
        for t in scheduler.timesteps:
            x = scheduler.step(linear_model(x, t), t, x, generator=gen).prev_sample
        results.append(x)
    assert torch.equal(results[0], results[1]) and not torch.equal(results[0], results[2])
    scheduler.set_timesteps(6)
    with pytest.raises(ValueError, match="variance_noise has shape"):
        scheduler.step(x, scheduler.timesteps[0], x, variance_noise=torch.zeros(3))


def test_unipc_config_is_unipc_at_order_2() -> None:
    config = dict(VP, solver_type="bh2", solver_order=2, final_sigmas_type="zero")
    ours = run(DPMSolverScheduler(**config, timestep_spacing="linspace"), 10)
    theirs = run(UniPCMultistepScheduler(**config), 10)
    torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=2e-6)
    disabled = run(DPMSolverScheduler(**config, disable_corrector=[2]), 10)
    assert not torch.equal(disabled, run(DPMSolverScheduler(**config), 10))


@pytest.mark.parametrize("begin", ["set_begin_index", "loop_from_k"])
def test_unipc_started_inside_the_grid_is_unipc(begin: str) -> None:
    """img2img: the first step (first order, no earlier outputs) is corrected at the next
    call, as UniPC does."""
    config = dict(VP, solver_type="bh2", solver_order=2, final_sigmas_type="zero")
    out = []
    for scheduler in (
        DPMSolverScheduler(**config, timestep_spacing="linspace"),
        UniPCMultistepScheduler(**config),
    ):
        scheduler.set_timesteps(10)
        timesteps = scheduler.timesteps[4:]
        if begin == "set_begin_index":
            scheduler.set_begin_index(4)
        x0 = torch.randn(
            2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64
        )
        noise = torch.randn(
            2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64
        )
        x = scheduler.add_noise(x0, noise, timesteps[:1])
        for t in timesteps:
            x = scheduler.step(linear_model(x, t), t, x).prev_sample
        out.append(x)
    torch.testing.assert_close(out[0], out[1], rtol=2e-5, atol=2e-6)


SINGLESTEP_PARITY = [
    dict(solver_order=o, lower_order_final=lof, final_sigmas_type=f)
    for o in (1, 2, 3)
    for lof in (True, False)
    for f in ("zero", "sigma_min")
] + [
    dict(solver_order=2, solver_type="heun", final_sigmas_type="zero"),
    dict(solver_order=3, algorithm_type="dpmsolver", final_sigmas_type="sigma_min"),
]


@pytest.mark.parametrize("n", [6, 7, 8])
@pytest.mark.parametrize(
    "config", SINGLESTEP_PARITY, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
)
def test_same_run_as_diffusers_dpmsolver_singlestep(config: dict[str, Any], n: int) -> None:
    """A DPMSolverSinglestep config runs as diffusers' singlestep scheduler runs it, orders
    of the last calls (lower_order_final, which it forces below a whole number of steps or
    ending at sigma = 0) included."""
    theirs = DPMSolverSinglestepScheduler(**VP, **config)
    # (its calls are linspace-spaced; without a spacing key ours takes its own grid)
    ours = DPMSolverScheduler.from_config(theirs.config, timestep_spacing="linspace")
    assert ours.config.method == "singlestep"
    torch.testing.assert_close(run(ours, n), run(theirs, n), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("order", [1, 2])
def test_sde_singlestep_is_diffusers(order: int) -> None:
    """sde-dpmsolver++ singlestep: each call's rule from the step's start with fresh noise
    (the same draws from the same generator), as DPMSolverSinglestepScheduler takes it."""
    config = dict(
        VP,
        algorithm_type="sde-dpmsolver++",
        solver_order=order,
        final_sigmas_type="zero",
    )
    results = []
    for scheduler in (
        DPMSolverScheduler.from_config(
            DPMSolverSinglestepScheduler(**config).config, timestep_spacing="linspace"
        ),
        DPMSolverSinglestepScheduler(**config),
    ):
        scheduler.set_timesteps(7)
        x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(5)
        for t in scheduler.timesteps:
            x = scheduler.step(linear_model(x, t), t, x, generator=g).prev_sample
        results.append(x)
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-5)


def test_a_saved_multistep_config_runs_singlestep(tmp_path: Path) -> None:
    """Saved DPMSolverMultistep configs carry lower_order_final=True: with method='singlestep'
    they load and lower the final orders as the singlestep scheduler does."""
    DPMSolverMultistepScheduler(**VP).save_pretrained(tmp_path)
    config = DPMSolverScheduler.load_config(tmp_path)
    ours = DPMSolverScheduler.from_config(config, method="singlestep", solver_order=3)
    theirs = DPMSolverSinglestepScheduler.from_config(config, solver_order=3)
    assert ours.config.lower_order_final is True
    torch.testing.assert_close(run(ours, 9), run(theirs, 9), rtol=2e-5, atol=2e-6)


def test_continuous_timesteps_are_eulers_c_noise() -> None:
    """timestep_type='continuous' with v-prediction (EDM-style configs): the network gets
    c_noise = log(sigma) / 4 at each call, as EulerDiscreteScheduler gives it; step(),
    add_noise and a pipeline loop take those timesteps, and the run is the discrete one's
    (the same levels, only the network's time input differs)."""
    config = dict(VP, prediction_type="v_prediction", timestep_spacing="linspace")
    euler = EulerDiscreteScheduler(**config, timestep_type="continuous")
    ours = DPMSolverScheduler.from_config(euler.config, final_sigmas_type="zero")
    plain = DPMSolverScheduler(**config, final_sigmas_type="zero")
    for s in (euler, ours, plain):
        s.set_timesteps(8)
    # Both start at training step 999 (ours places the later calls as DPM-Solver does).
    assert float(ours.timesteps[0]) == pytest.approx(float(euler.timesteps[0]), rel=1e-5)
    torch.testing.assert_close(ours.timesteps, 0.25 * ours.sigmas[:-1].log(), rtol=1e-12, atol=0)
    assert torch.equal(run(ours, 8), run(plain, 8))
    x0 = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    noise = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    t = ours.timesteps[2:3]
    torch.testing.assert_close(
        ours.add_noise(x0, noise, t), plain.add_noise(x0, noise, plain.timesteps[2:3])
    )
    with pytest.raises(ValueError, match="custom timesteps cannot be given"):
        ours.set_timesteps(timesteps=[900, 500, 100])
    with pytest.raises(ValueError, match="timesteps must lie in"):
        ours.add_noise(x0, noise, torch.tensor([5.0]))


def test_singlestep_config_places_its_calls_as_diffusers() -> None:
    config = dict(VP, solver_order=2, final_sigmas_type="zero")
    theirs = DPMSolverSinglestepScheduler(**config)
    ours = DPMSolverScheduler.from_config(theirs.config, timestep_spacing="linspace")
    ours.set_timesteps(9)
    theirs.set_timesteps(9)
    assert ours.config.method == "singlestep"
    assert ours.timesteps.tolist() == pytest.approx(theirs.timesteps.tolist(), abs=1e-9)


# -- flow matching ---------------------------------------------------------------------------

FLOW_CONFIGS = [
    dict(shift=3.0),
    dict(shift=1.0),
    dict(shift=3.0, use_karras_sigmas=True),
    dict(shift=3.0, use_exponential_sigmas=True),
    dict(shift=3.0, use_beta_sigmas=True),
    dict(shift=3.0, shift_terminal=0.05),
    dict(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),
    dict(use_dynamic_shifting=True, time_shift_type="linear"),
]


def flow_reference(config: dict[str, Any], given: str) -> Any:
    """The diffusers scheduler whose grid a FlowMatch config gives this face: the
    FlowMatch scheduler itself for custom sigmas and sigma spacings; otherwise diffusers'
    DPM-Solver on flow models (use_flow_sigmas with flow_shift = shift; a linear time shift
    by mu is the static shift mu; shift_terminal stretches that grid)."""
    spaced = any(k.startswith("use_") and k != "use_dynamic_shifting" for k in config)
    if given == "sigmas" or spaced:
        return FlowMatchEulerDiscreteScheduler(**config)
    flow = dict(use_flow_sigmas=True, prediction_type="flow_prediction")
    if config.get("time_shift_type") == "linear":
        return DPMSolverMultistepScheduler(**flow, flow_shift=2.0)
    if config.get("use_dynamic_shifting"):
        return DPMSolverMultistepScheduler(**flow, use_dynamic_shifting=True)
    return DPMSolverMultistepScheduler(**flow, flow_shift=config["shift"])


@pytest.mark.parametrize(
    "config", FLOW_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
)
@pytest.mark.parametrize("given", ["steps", "sigmas"])
def test_flow_match_grid_is_diffusers(config: dict[str, Any], given: str) -> None:
    # A step count places the calls on diffusers' DPM-Solver grid when asked by name.
    spaced = any(k.startswith("use_") and k != "use_dynamic_shifting" for k in config)
    grid = dict(use_diffusers_grid=True) if given == "steps" and not spaced else {}
    ours = DPMSolverScheduler.from_config(FlowMatchEulerDiscreteScheduler(**config).config, **grid)
    theirs = flow_reference(config, given)
    mu = 0.9 if config.get("use_dynamic_shifting") else None
    if config.get("time_shift_type") == "linear":
        mu = 2.0
    kw: dict[str, Any] = {"mu": mu} if mu is not None else {}
    if given == "sigmas":
        kw["sigmas"] = np.linspace(1.0, 1 / 7, 7).tolist()  # what Flux passes
    else:
        kw["num_inference_steps"] = 7
    ours.set_timesteps(**kw)
    if isinstance(theirs, DPMSolverMultistepScheduler) and config.get("time_shift_type"):
        kw.pop("mu")  # diffusers' DPM-Solver takes only the exponential shift by mu
    theirs.set_timesteps(**kw)
    expected = theirs.sigmas.float()
    if "shift_terminal" in config and given == "steps":  # FlowMatch's stretch of that grid
        stretch = FlowMatchEulerDiscreteScheduler(**config).stretch_shift_to_terminal
        expected = torch.cat([stretch(expected[:-1]), expected[-1:]])
    torch.testing.assert_close(ours.sigmas.float(), expected, rtol=1e-5, atol=1e-6)
    # diffusers' DPM-Solver rounds flow timesteps down to integers; ours are N sigma.
    torch.testing.assert_close(ours.timesteps, 1000 * ours.sigmas[:-1], rtol=1e-12, atol=0)
    assert torch.all((ours.timesteps - 1000 * expected[:-1].double()).abs() < 1.0)
    assert float(ours.sigmas[-1]) == 0.0


def test_flow_run_from_pure_noise_is_dpm_solver_plus_plus() -> None:
    """A FlowMatch grid starts at sigma = 1 (alpha = 0): the first step is DDIM's limit
    x_1 = sigma_1 x + alpha_1 x0_pred, the run is finite, and it matches the native sampler on
    the same grid."""
    import dpmsolver as dpm

    scheduler = DPMSolverScheduler.from_config(
        FlowMatchEulerDiscreteScheduler(shift=3.0).config,
        skip_type="time_uniform",  # from sigma = 1 exactly
        lower_order_final=False,
    )
    scheduler.set_timesteps(6)
    assert float(scheduler.sigmas[0]) == 1.0
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    flow = lambda x, t: (x - 0.5 * x.flip(-1)) * 0.7  # noqa: E731  (a velocity, time-free)
    first = scheduler.sigmas[1].item()
    expected_first = first * x + (1 - first) * (x - 1.0 * flow(x, 0))
    y = x
    for k, t in enumerate(scheduler.timesteps):
        y = scheduler.step(flow(y, t), t, y).prev_sample
        if k == 0:
            torch.testing.assert_close(y, expected_first, rtol=1e-12, atol=1e-12)
    assert bool(torch.isfinite(y).all())
    model = dpm.Denoiser(lambda x, t: flow(x, t), scheduler.noise_schedule, prediction="flow")
    # The native sampler on the calls' grid, ending with x0_pred at the last call: the same.
    native = dpm.sample(
        model,
        x,
        timesteps=scheduler.sigmas[:-1].tolist(),
        lower_order_final=False,
        denoise_to_zero=True,
    )
    torch.testing.assert_close(native, y, rtol=1e-10, atol=1e-10)


def flow_default_sigmas(shift: float, n: int, total: int = 1000) -> np.ndarray:
    """The flow default's call sigmas as its docs state them: u from 1 down to
    max(0.1 / n, 1 / N), u_i = u_end + (1 - u_end) (1 - i / (n - 1))^2.5, then shifted."""
    u_end = max(0.1 / n, 1 / total)
    u = np.array([u_end + (1 - u_end) * (1 - i / (n - 1)) ** 2.5 for i in range(n)])
    return shift * u / (1 + (shift - 1) * u)


@pytest.mark.parametrize("n", [2, 7, 20])
def test_flow_default_grid_and_solver(n: int) -> None:
    ours = DPMSolverScheduler.from_config(FlowMatchEulerDiscreteScheduler(shift=3.0).config)
    ours.set_timesteps(n)
    np.testing.assert_allclose(ours.sigmas[:-1].numpy(), flow_default_sigmas(3.0, n), rtol=1e-12)
    assert float(ours.sigmas[0]) == 1.0 and float(ours.sigmas[-1]) == 0.0
    assert (ours.config.corrector, ours.config.use_flow_sigmas) == ("all", True)
    # Wan's UniPC config (use_flow_sigmas, flow_shift) takes the same grid with its shift.
    wan = DPMSolverScheduler.from_config(
        UniPCMultistepScheduler(
            use_flow_sigmas=True, flow_shift=5.0, prediction_type="flow_prediction"
        ).config
    )
    wan.set_timesteps(n)
    np.testing.assert_allclose(wan.sigmas[:-1].numpy(), flow_default_sigmas(5.0, n), rtol=1e-12)
    # Flux (dynamic shifting): the shift e^mu.
    flux = DPMSolverScheduler.from_config(
        FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift=3.0).config
    )
    flux.set_timesteps(n, mu=0.9)
    np.testing.assert_allclose(
        flux.sigmas[:-1].numpy(), flow_default_sigmas(math.exp(0.9), n), rtol=1e-12
    )


def test_flow_default_keeps_what_a_config_asks_for() -> None:
    """The grid keys of a config keep diffusers' meaning; only the step-count grid changes."""
    config = FlowMatchEulerDiscreteScheduler(shift=3.0).config
    given = DPMSolverScheduler.from_config(config)
    given.set_timesteps(sigmas=[1.0, 0.6, 0.2])
    theirs = FlowMatchEulerDiscreteScheduler(shift=3.0)
    theirs.set_timesteps(sigmas=[1.0, 0.6, 0.2])
    torch.testing.assert_close(given.sigmas.float(), theirs.sigmas, rtol=1e-6, atol=0)
    beta = DPMSolverScheduler.from_config(config, use_beta_sigmas=True)
    assert beta.config.corrector == "off" and not beta.config.use_flow_sigmas
    for key in ("use_karras_sigmas", "use_beta_sigmas"):
        with pytest.raises(ValueError, match=f"{key} and use_diffusers_grid each choose"):
            DPMSolverScheduler.from_config(config, **{key: True, "use_diffusers_grid": True})
    with pytest.raises(ValueError, match="use_diffusers_grid=True applies to flow-matching"):
        DPMSolverScheduler(use_diffusers_grid=True)
    with pytest.raises(ValueError, match="give two shifts"):
        DPMSolverScheduler(shift=3.0, use_flow_sigmas=True, flow_shift=2.0)


def test_flow_default_round_trips_through_its_saved_config(tmp_path: Path) -> None:
    ours = DPMSolverScheduler.from_config(FlowMatchEulerDiscreteScheduler(shift=3.0).config)
    ours.save_pretrained(tmp_path)
    again = DPMSolverScheduler.from_pretrained(tmp_path)
    assert (again.config.shift, again.config.use_flow_sigmas) == (3.0, True)
    for s in (ours, again):
        s.set_timesteps(9)
    assert torch.equal(ours.sigmas, again.sigmas)
    # diffusers' own class loads it too, with its own grid.
    FlowMatchEulerDiscreteScheduler.from_pretrained(tmp_path).set_timesteps(9)


@pytest.fixture(scope="module")
def exact_flow() -> tuple[Any, torch.Tensor, torch.Tensor]:
    """A flow-matching "transformer" of the exact digits mixture (velocity at s = t / 1000),
    8 starting noises, and the exact answer (the ODE from s = 1 to 1e-6, then denoised)."""
    from problems import reference_solution

    from dpmsolver.models import load_digits_gmm

    gmm = load_digits_gmm()

    def velocity(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        s = float(torch.as_tensor(timestep).double()) / 1000.0
        x0 = gmm.posterior_mean(x, max(1.0 - s, 1e-12), s)
        return (x - (1.0 - s) * x0) / s - x0

    x_T = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    schedule = dpm.FlowSchedule(shift=1.0, t_min=1e-6, t_max=1.0)
    start = float(schedule.inverse_lambda(torch.tensor(-30.0)))
    end = schedule.levels([schedule.t_min])[0]
    ode = reference_solution(gmm, schedule, x_T, start, schedule.t_min, tol=1e-10)
    return velocity, x_T, gmm.posterior_mean(ode, end.alpha, end.sigma)


@pytest.mark.parametrize("n", [10, 20])
def test_flow_default_halves_the_best_diffusers_error_on_sd3(
    exact_flow: tuple[Any, torch.Tensor, torch.Tensor], n: int
) -> None:
    """From SD3's config as it is, on the exact flow model: at most half the error of the
    best of diffusers' flow schedulers (the measured ratios are in
    docs/benchmarks/diffusers_schedulers.txt)."""
    velocity, x_T, truth = exact_flow

    def error(scheduler: Any) -> float:
        scheduler.set_timesteps(n)
        x = x_T.clone()
        for t in scheduler.timesteps:
            x = scheduler.step(velocity(x, t), t, x).prev_sample
        return float((x - truth).pow(2).mean().sqrt())

    flow = dict(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction")
    best = min(
        error(FlowMatchEulerDiscreteScheduler(shift=3.0)),
        error(DPMSolverMultistepScheduler(**flow)),
        error(UniPCMultistepScheduler(**flow)),
    )
    ours = error(DPMSolverScheduler.from_config(FlowMatchEulerDiscreteScheduler(shift=3.0).config))
    assert ours <= 0.5 * best, (ours, best)


def test_mu_without_dynamic_shifting_is_ignored_as_diffusers_does() -> None:
    """FluxPipeline always passes mu; FlowMatchEuler ignores it without dynamic shifting
    (Flux-architecture models ship such configs), and so do we: the static shift holds."""
    config = FlowMatchEulerDiscreteScheduler(shift=3.0).config
    with_mu, without = (
        DPMSolverScheduler.from_config(config),
        DPMSolverScheduler.from_config(config),
    )
    with_mu.set_timesteps(6, mu=0.5)
    without.set_timesteps(6)
    assert torch.equal(with_mu.sigmas, without.sigmas)
    theirs = FlowMatchEulerDiscreteScheduler(shift=3.0)
    theirs.set_timesteps(sigmas=np.linspace(1.0, 1 / 6, 6), mu=0.5)
    ours = DPMSolverScheduler.from_config(config)
    ours.set_timesteps(sigmas=np.linspace(1.0, 1 / 6, 6).tolist(), mu=0.5)
    torch.testing.assert_close(ours.sigmas.float(), theirs.sigmas, rtol=1e-6, atol=0)


def test_flow_scale_noise_and_add_noise() -> None:
    scheduler = DPMSolverScheduler.from_config(FlowMatchEulerDiscreteScheduler(shift=3.0).config)
    scheduler.set_timesteps(10)
    x0, noise = torch.randn(2, 4), torch.randn(2, 4)
    t = scheduler.timesteps[3:4].repeat(2)
    sigma = float(scheduler.sigmas[3])
    expected = sigma * noise + (1 - sigma) * x0
    torch.testing.assert_close(scheduler.scale_noise(x0, t, noise), expected)
    torch.testing.assert_close(scheduler.add_noise(x0, noise, t), expected)


@pytest.mark.parametrize(
    ("config", "kw", "message"),
    [
        (dict(shift=3.0), {"num_inference_steps": 5, "mu": math.nan}, "mu must be"),
        (dict(use_dynamic_shifting=True), {"num_inference_steps": 5}, "needs mu"),
        (dict(shift=3.0), {"num_inference_steps": 5, "sigmas": [1.0, 0.5]}, "disagree"),
        (dict(shift=3.0), {"sigmas": [0.5, 0.9]}, "strictly decreasing"),
        (dict(shift=3.0), {"sigmas": [1.5, 0.5]}, "flow sigmas must lie in"),
    ],
)
def test_flow_set_timesteps_errors(
    config: dict[str, Any], kw: dict[str, Any], message: str
) -> None:
    scheduler = DPMSolverScheduler.from_config(FlowMatchEulerDiscreteScheduler(**config).config)
    with pytest.raises(ValueError, match=message):
        scheduler.set_timesteps(**kw)


# -- refused configs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(skip_type="logSNR", timestep_spacing="leading"), "skip_type and timestep_spacing"),
        (dict(use_karras_sigmas=True, use_beta_sigmas=True), "use_karras_sigmas and use_beta"),
        (dict(final_noise_level="zero", set_alpha_to_one=False), "say different things"),
        (dict(final_step_first_order=True, euler_at_final=False), "say different things"),
        (dict(algorithm_type="dpmsolver", predict_x0=True), "say different things"),
        (dict(prediction_type="flow_prediction"), "needs a flow grid"),
        (
            dict(use_flow_sigmas=True, prediction_type="epsilon"),
            "needs prediction_type='flow_prediction'",
        ),
        (dict(shift=3.0, skip_type="logSNR"), "skip_type must be one of 'time_uniform'"),
        (dict(shift=3.0, use_lu_lambdas=True), "use_lu_lambdas"),
        (dict(use_dynamic_shifting=True), "use_dynamic_shifting applies to flow"),
        (dict(flow_shift=2.0), "needs use_flow_sigmas"),
        (dict(solver_type="bh2", corrector_variant="bh1"), "say different things"),
        (dict(disable_corrector=[1]), "corrector that is off"),
        (dict(disable_corrector=[-1], corrector="all"), "disable_corrector must be"),
        (
            dict(method="singlestep", algorithm_type="sde-dpmsolver++", solver_order=3),
            "takes solver_order 1 or 2",
        ),
        (
            dict(method="singlestep", algorithm_type="sde-dpmsolver++", solver_type="heun"),
            "midpoint form only",
        ),
        (
            dict(method="singlestep", algorithm_type="sde-dpmsolver"),
            "only 'sde-dpmsolver\\+\\+' runs singlestep",
        ),
        (dict(denoise_to_zero=True, final_sigmas_type="zero"), "denoise_to_zero needs"),
        (dict(dynamic_thresholding_ratio=1.5, thresholding=True), "dynamic_thresholding_ratio"),
        (dict(sample_max_value=0.0, thresholding=True), "sample_max_value must be > 0"),
        (dict(clip_sample=True, clip_sample_range=0.0), "clip_sample_range must be > 0"),
        (dict(sigma_min=-1.0), "sigma_min must be > 0"),
        (dict(sigma_min=0.1), "sigma_min=0.1 is read by use_karras_sigmas"),
        (dict(sigma_max=5.0, timestep_spacing="leading"), "sigma_max=5.0 is read by"),
        (dict(shift=3.0, use_karras_sigmas=True, sigma_min=0.1), "sigma_min=0.1 is read by"),
        (dict(shift=3.0, lambda_min_clipped=-5.1), "lambda_min_clipped=-5.1 clips VP tables"),
        (dict(shift=3.0, shift_terminal=1.5), "shift_terminal must lie in"),
        (dict(trained_betas=[0.5]), "trained_betas must hold at least 2"),
        (dict(variance_type="big"), "variance_type must be one of"),
        (dict(algorithm_type="unipc"), "algorithm_type must be one of"),
        (dict(solver_type="rk4"), "solver_type must be one of"),
        (dict(timestep_spacing="uniform"), "timestep_spacing must be one of"),
        (dict(final_sigmas_type="last"), "final_sigmas_type must be one of"),
    ],
)
def test_refused_configs_name_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DPMSolverScheduler(**config)


def test_keyword_replaces_the_config_keys_that_say_the_same() -> None:
    sdxl = dict(VP, timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False)
    scheduler = DPMSolverScheduler.from_config(sdxl, skip_type="logSNR", final_sigmas_type="zero")
    assert scheduler.config.timestep_spacing is None and scheduler.config.set_alpha_to_one is None
    assert scheduler.config.skip_type == "logSNR"


# -- our configs in diffusers' classes ------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "DDIMScheduler"]
)
@pytest.mark.parametrize("saved", [False, True])
def test_our_config_loads_into_diffusers_classes(name: str, saved: bool, tmp_path: Path) -> None:
    ours = DPMSolverScheduler(**VP, solver_order=3, skip_type="logSNR")
    cls = getattr(diffusers, name)
    if saved:
        ours.save_config(tmp_path)
        theirs = cls.from_pretrained(tmp_path)
    else:
        theirs = cls.from_config(ours.config)
    x = run(theirs, 6)
    assert bool(torch.isfinite(x).all())
    back = DPMSolverScheduler.from_config(theirs.config)
    assert back.config.skip_type == "logSNR" and back.config.solver_type == "midpoint"
    assert back.config.corrector == "off" and back.config.method == "multistep"


def test_saved_config_round_trip_is_exact(tmp_path: Path) -> None:
    ours = DPMSolverScheduler(**VP, corrector="all", final_noise_level="zero")
    ours.save_config(tmp_path)
    loaded = DPMSolverScheduler.from_pretrained(tmp_path)
    config = {k: v for k, v in ours.config.items() if k != "_use_default_values"}
    assert dict(loaded.config) == config
    assert torch.equal(run(loaded), run(ours))


def test_zero_terminal_snr_with_linear_betas() -> None:
    scheduler = DPMSolverScheduler(rescale_betas_zero_snr=True)
    assert float(scheduler.alphas_cumprod[-1]) == 2.0**-24  # as diffusers exposes it
    x = run(scheduler, 10)
    assert bool(torch.isfinite(x).all())
    assert math.isclose(
        float(scheduler.alphas_cumprod[500]),
        float(DPMSolverMultistepScheduler(rescale_betas_zero_snr=True).alphas_cumprod[500]),
        rel_tol=1e-6,
    )
