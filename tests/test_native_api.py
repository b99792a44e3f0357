"""The native API through its public entry points: built-in model, guidance, thresholding."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from problems import GoldenNet, golden, golden_schedule

import dpmsolver as dpm
from dpmsolver.models import ExactModel, ddpm_linear_schedule, load, load_digits_gmm

CASES, ARRAYS = golden()


def test_builtin_model_counts_calls_and_samples_digits() -> None:
    model = load("digits-exact")
    x_T = model.sample_noise(32, torch.Generator().manual_seed(0))
    x0 = dpm.sample(model, x_T, steps=10, skip_type="logSNR")
    assert model.calls == 10
    assert x0.shape == (32, 1, 8, 8) and x0.dtype == torch.float32
    # Samples look like the data: pixel mean and spread close to the mixture's.
    gmm = load_digits_gmm()
    assert float(x0.mean()) == pytest.approx(float(gmm.mean().mean()), abs=0.1)
    spread = float((x0.double().reshape(32, 64) - gmm.mean()).pow(2).mean().sqrt())
    assert spread / float(gmm.covariance().diagonal().mean().sqrt()) == pytest.approx(1.0, abs=0.25)
    with pytest.raises(ValueError, match="name must be one of"):
        load("digits-unknown")


def test_exact_model_noise_and_data_targets_agree() -> None:
    schedule = ddpm_linear_schedule()
    model = ExactModel(load_digits_gmm(), schedule)
    level = schedule.levels([0.3])[0]
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    eps = model(x, level, "noise")
    x0 = model(x, level, "data")
    torch.testing.assert_close(level.alpha * x0 + level.sigma * eps, x, rtol=0, atol=1e-12)


def golden_native(guidance: str, scale: float) -> tuple[dpm.Denoiser, GoldenNet]:
    ns = golden_schedule("discrete_betas_linear", torch.float64)
    net = GoldenNet(ns, "noise")
    cond = torch.tensor(ARRAYS["condition"])
    g: dpm.ClassifierFree | dpm.ClassifierGuidance | None = None
    if guidance == "classifier-free":
        g = dpm.ClassifierFree(scale=scale, cond=cond, uncond=torch.full_like(cond, -1))
    elif guidance == "classifier":
        g = dpm.ClassifierGuidance(net.classifier, scale=scale, cond=cond)
    return dpm.Denoiser(net, ns.native, prediction="noise", guidance=g), net


@pytest.mark.parametrize(("guidance", "scale"), [("classifier-free", 3.0), ("classifier", 2.0)])
def test_native_guidance_matches_reference_golden(guidance: str, scale: float) -> None:
    # The compat face keeps the reference's shortened-table spacing; the linear-beta table
    # has no clipped tail, so the native discrete schedule gives the same grid and times.
    case = next(
        c
        for c in CASES
        if c["guidance"] == guidance
        and c["method"] == "multistep"
        and c["schedule"] == "discrete_betas_linear"
        and c["order"] == 2
        and c["algorithm_type"] == "dpmsolver++"
    )
    model, net = golden_native(guidance, scale)
    x_T = torch.tensor(ARRAYS["x_T"]).double()
    out = dpm.sample(
        model,
        x_T,
        steps=case["steps"],
        order=2,
        skip_type=case["skip_type"],
        lower_order_final_below=10,
    )
    assert net.calls == case["model_fn_calls_float64"]
    torch.testing.assert_close(out, torch.tensor(ARRAYS[f"out64_{case['id']}"]), rtol=0, atol=1e-7)


def test_classifier_free_guidance_is_one_batched_call_per_step() -> None:
    model, _ = golden_native("classifier-free", 3.0)
    batches: list[int] = []
    inner = model.net
    model.net = lambda x, t, c: (batches.append(x.shape[0]), inner(x, t, c))[1]
    dpm.sample(model, torch.tensor(ARRAYS["x_T"]).double(), steps=6)
    assert batches == [8] * 6


def test_dynamic_thresholding_clips_per_sample_quantile() -> None:
    x0 = torch.linspace(-3, 3, 2 * 1000).reshape(2, 1000)
    x0[1] *= 0.1  # within [-1, 1]: s = max(quantile, 1) = 1, left unchanged
    out = dpm.DynamicThresholding(ratio=0.9, max_val=1.0)(x0)
    s0 = torch.quantile(x0[0].abs(), 0.9)
    torch.testing.assert_close(out[0], x0[0].clamp(-s0, s0) / s0)
    torch.testing.assert_close(out[1], x0[1])
    assert float(out.abs().max()) <= 1.0


def test_thresholding_needs_the_data_form() -> None:
    model = dpm.Denoiser(
        lambda x, t: x, ddpm_linear_schedule(), x0_correction=dpm.DynamicThresholding()
    )
    with pytest.raises(ValueError, match="algorithm='dpmsolver\\+\\+'"):
        dpm.sample(model, torch.zeros(1, 4), algorithm="dpmsolver")


def test_classifier_free_conditions_must_be_tensors() -> None:
    schedule = ddpm_linear_schedule()
    with pytest.raises(TypeError, match="cond and uncond must be tensors"):
        dpm.Denoiser(
            lambda x, t, c: x,
            schedule,
            guidance=dpm.ClassifierFree(scale=2.0, cond=[1, 2], uncond=[0, 0]),
        )


@pytest.mark.parametrize("method", ["multistep", "singlestep_fixed"])
def test_user_timesteps_equal_the_same_grid_by_name(method: str) -> None:
    model = load("digits-exact")
    schedule = model.schedule
    x_T = model.sample_noise(4, torch.Generator().manual_seed(1), torch.float64)
    order = 2
    steps = 12
    by_name = dpm.sample(model, x_T, steps=steps, order=order, method=method, skip_type="logSNR")
    n = steps if method == "multistep" else steps // order
    grid = dpm.time_grid(schedule, "logSNR", schedule.t_max, schedule.t_min, n)
    given = dpm.sample(model, x_T, timesteps=grid.tolist(), order=order, method=method)
    torch.testing.assert_close(given, by_name, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("timesteps", "match"),
    [
        ([0.5], "at least 2 entries"),
        ([0.5, 0.6, 0.4], "strictly decreasing"),
        ([2.0, 0.5], "outside the schedule's time range"),
        ([0.5, float("nan")], "finite"),
    ],
)
def test_bad_timesteps(timesteps: list[float], match: str) -> None:
    model = load("digits-exact")
    with pytest.raises(ValueError, match=match):
        dpm.sample(model, torch.zeros(1, 1, 8, 8), timesteps=timesteps)


def test_dynamic_thresholding_with_a_ceiling_is_diffusers_rule() -> None:
    """s = clamp(quantile(|x0|, ratio), max_val, ceiling): with max_val = 1 and ceiling =
    sample_max_value it is diffusers' _threshold_sample; ratio 0 takes the minimum |x0|."""
    x0 = torch.tensor([[0.5, -3.0, 2.0, 1.5], [0.2, 0.1, -0.3, 0.05]], dtype=torch.float64)
    rule = dpm.DynamicThresholding(0.75, 1.0, ceiling=1.8)
    q = torch.quantile(x0.abs(), 0.75, dim=1)
    s = q.clamp(min=1.0, max=1.8)[:, None]
    torch.testing.assert_close(rule(x0), x0.clamp(-s, s) / s, rtol=0, atol=0)
    assert float(rule(x0)[0].abs().max()) == 1.0 and torch.equal(rule(x0)[1], x0[1])
    # Without a ceiling s is not bounded above: the authors' rule.
    s_free = q.clamp(min=1.0)[:, None]
    torch.testing.assert_close(
        dpm.DynamicThresholding(0.75, 1.0)(x0), x0.clamp(-s_free, s_free) / s_free
    )
    lowest = dpm.DynamicThresholding(0.0, 0.01)(x0)  # s = max(min |x0|, 0.01) per sample
    torch.testing.assert_close(lowest[1], x0[1].clamp(-0.05, 0.05) / 0.05)
    with pytest.raises(ValueError, match="ceiling must be > 0"):
        dpm.DynamicThresholding(0.9, 1.0, ceiling=0.0)


def test_per_sample_guidance_scales_equal_one_run_per_scale() -> None:
    """ClassifierFree / ClassifierGuidance take a (batch,) tensor of scales: each sample is
    guided by its own, as a run with that number for the whole batch guides it."""
    schedule = ddpm_linear_schedule()

    def cond_net(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return 0.2 * x + 0.1 * c.reshape(-1, 1, 1, 1)

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.2 * x

    def log_p(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return -(x - c.reshape(-1, 1, 1, 1)).pow(2).flatten(1).sum(1)

    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cond, uncond, scales = torch.ones(3), torch.zeros(3), torch.tensor([0.5, 2.0, 7.5])

    def run(scale: float | torch.Tensor, kind: str) -> torch.Tensor:
        if kind == "classifier-free":
            model = dpm.Denoiser(
                cond_net, schedule, guidance=dpm.ClassifierFree(scale, cond, uncond)
            )
        else:
            model = dpm.Denoiser(net, schedule, guidance=dpm.ClassifierGuidance(log_p, scale, cond))
        return dpm.sample(model, x, steps=6)

    for kind in ("classifier-free", "classifier"):
        together = run(scales, kind)
        for i, scale in enumerate(scales.tolist()):
            torch.testing.assert_close(together[i], run(scale, kind)[i], rtol=0, atol=1e-12)


def test_schedules_of_scalar_functions_and_dataclasses_run() -> None:
    """A CustomSchedule of one-float functions (math.cos) runs as its torch twin does, and
    a schedule that is an unhashable dataclass is planned (and its plans cached) too."""
    torch_made = dpm.CustomSchedule(
        lambda t: torch.cos(t * 1.5), lambda t: torch.sin(t * 1.5), 0.01, 1.0
    )
    math_made = dpm.CustomSchedule(
        lambda t: math.cos(t * 1.5), lambda t: math.sin(t * 1.5), 0.01, 1.0
    )
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.3 * x

    runs = [dpm.sample(dpm.Denoiser(net, s), x, steps=5) for s in (torch_made, math_made)]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-12)

    @dataclasses.dataclass
    class Ramp(dpm.VESchedule):
        t_min: float = 0.01
        t_max: float = 10.0

    ramp = Ramp()
    with pytest.raises(TypeError):
        hash(ramp)
    model = dpm.Denoiser(net, ramp, prediction="x0")
    first = dpm.Sampler(model, steps=4)
    assert dpm.Sampler(model, steps=4).plan is first.plan  # cached by the object
    torch.testing.assert_close(
        first(x),
        dpm.sample(dpm.Denoiser(net, dpm.VESchedule(0.01, 10.0), prediction="x0"), x, steps=4),
    )
