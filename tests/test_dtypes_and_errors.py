"""Half-precision sampling, and one clear error for every bad argument.

Half precision: the exact digits model (whose posterior_mean returns x's dtype) sampled in
float16 / bfloat16 stays within 10 * eps(dtype) of the float32 result of the same call.
The digits' probability-flow map is itself ill-conditioned for some starting points
(a relative input perturbation of eps(dtype) moves a few samples by up to ~100 eps at 10
steps), so the comparison uses one fixed batch and 15-20 steps, where that amplification
is small; the measured errors are ~1-4 eps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

import dpmsolver as dpm
from dpmsolver import (
    ClassifierFree,
    ClassifierGuidance,
    Denoiser,
    DPM_Solver,
    DynamicThresholding,
    ModelOutputError,
    NoiseScheduleVP,
    VPSchedule,
    model_wrapper,
    sample,
)
from dpmsolver.models import load_digits_gmm

F64 = torch.float64
N = 1000
BETAS = torch.linspace(1e-4, 0.02, N, dtype=F64)
SCHEDULE = VPSchedule.discrete(betas=BETAS)
DIGITS = load_digits_gmm()
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


def exact_net(x: Tensor, t_in: Tensor) -> Tensor:
    """E[x0 | x_t] of the digits mixture for SCHEDULE (time input n = N t - 1), x's dtype."""
    t = (t_in.to(F64) + 1.0) / N
    return DIGITS.posterior_mean(x, SCHEDULE.alpha(t), SCHEDULE.sigma(t))


MODEL = Denoiser(exact_net, SCHEDULE, prediction="x0")


def x_T(batch: int = 8, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 8, 8, generator=g)


# ---------------------------------------------------------------------- half precision


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("method", "order", "steps"),
    [("multistep", 2, 20), ("singlestep", 3, 15), ("singlestep", 3, 20)],
)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_close_to_float32(
    dtype: torch.dtype, method: str, order: int, steps: int, device: str
) -> None:
    x = x_T().to(device=device, dtype=dtype)
    out = sample(MODEL, x, steps=steps, order=order, method=method)
    assert out.dtype == dtype
    assert out.device == x.device
    assert out.shape == x.shape
    assert bool(torch.isfinite(out).all())
    ref = sample(MODEL, x.float(), steps=steps, order=order, method=method)
    assert ref.dtype == torch.float32
    data_scale = 1.0  # the digits lie in [-1, 1]
    err = (out.float() - ref).abs().max().item()
    assert err <= 10 * torch.finfo(dtype).eps * data_scale
    assert err > 0  # it did run in the low precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_with_thresholding_and_denoise(dtype: torch.dtype) -> None:
    model = Denoiser(exact_net, SCHEDULE, "x0", x0_correction=DynamicThresholding(0.995, 1.0))
    x = x_T(4).to(dtype)
    out = sample(model, x, steps=10, order=2, denoise_to_zero=True)
    assert out.dtype == dtype
    assert bool(torch.isfinite(out).all())
    # the last step returns a thresholded x0 prediction: inside [-1, 1]
    assert out.abs().max().item() <= 1.0


# ---------------------------------------------------------------------- bad inputs


def good_net(x: Tensor, t_in: Tensor) -> Tensor:
    return torch.zeros_like(x)


def nan_net(x: Tensor, t_in: Tensor) -> Tensor:
    return torch.full_like(x, float("nan"))


def wrong_shape_net(x: Tensor, t_in: Tensor) -> Tensor:
    return torch.zeros(x.shape[0], 3)


def classifier(x: Tensor, t_in: Tensor, cond: Tensor) -> Tensor:
    return -(x**2).flatten(1).sum(1)


X = torch.randn(2, 1, 8, 8)
COND = torch.tensor([0, 1])
NS = NoiseScheduleVP("discrete", betas=BETAS)
CONT = VPSchedule.linear()


def run(**kw: Any) -> Callable[[], Any]:
    """sample(MODEL, X, **kw) with a net that never fails, unless `model` / `x` are given."""
    model = kw.pop("model", Denoiser(good_net, SCHEDULE, "noise"))
    x = kw.pop("x", X)
    return lambda: sample(model, x, **kw)


def solver_sample(**kw: Any) -> Callable[[], Any]:
    solver = DPM_Solver(model_wrapper(good_net, NS), NS)
    return lambda: solver.sample(X, **kw)


BAD_INPUTS = [
    # --- sample: choices
    pytest.param(run(method="euler"), ValueError, r"method must be one of", id="method"),
    pytest.param(run(algorithm="ddim"), ValueError, r"algorithm must be one of", id="algorithm"),
    pytest.param(run(skip_type="uniform"), ValueError, r"skip_type must be one of", id="skip"),
    pytest.param(run(solver_type="heun"), ValueError, r"solver_type must be one of", id="solver"),
    # --- sample: integers
    pytest.param(
        run(steps=0), ValueError, r"steps must be between 1 and 100000; got 0", id="steps=0"
    ),
    pytest.param(run(steps=2.5), TypeError, r"steps must be an int", id="steps=2.5"),
    pytest.param(run(steps=True), TypeError, r"steps must be an int", id="steps=True"),
    pytest.param(run(order=0), ValueError, r"order must be between 1 and 3", id="order=0"),
    pytest.param(run(order=4), ValueError, r"order must be between 1 and 3", id="order=4"),
    pytest.param(run(order=2.0), TypeError, r"order must be an int", id="order=2.0"),
    # --- sample: times
    pytest.param(run(t_start=1.5), ValueError, r"t_start=1\.5 is outside", id="t_start>t_max"),
    pytest.param(run(t_end=1e-4), ValueError, r"t_end=0\.0001 is outside", id="t_end<t_min"),
    pytest.param(
        run(model=Denoiser(good_net, CONT), t_end=0.0),
        ValueError,
        r"t_end=0\.0 is outside",
        id="t_end=0-continuous",
    ),
    pytest.param(run(t_start=float("nan")), ValueError, r"t_start must be a finite", id="nan"),
    pytest.param(run(t_end="0.1"), TypeError, r"t_end must be a float", id="t_end-str"),
    pytest.param(
        run(t_start=0.5, t_end=0.5), ValueError, r"t_start and t_end must differ", id="t_eq"
    ),
    # --- sample: method constraints
    pytest.param(
        run(steps=2, order=3), ValueError, r"multistep needs steps >= order", id="ms-steps<order"
    ),
    pytest.param(
        run(method="singlestep_fixed", steps=1, order=2),
        ValueError,
        r"singlestep_fixed needs steps >= order",
        id="ssf-steps<order",
    ),
    pytest.param(
        run(method="adaptive", order=1), ValueError, r"adaptive needs order 2 or 3", id="adapt-1"
    ),
    pytest.param(
        run(method="adaptive", atol=0.0),
        ValueError,
        r"atol must be a finite number > 0",
        id="adapt-atol",
    ),
    pytest.param(
        run(method="adaptive", correcting_xt_fn=lambda x, t, i: x),
        ValueError,
        r"correcting_xt_fn is not supported with method='adaptive'",
        id="adapt-xt-fn",
    ),
    # --- sample: x and model
    pytest.param(run(x=np.zeros((2, 1, 8, 8))), TypeError, r"x must be a torch\.Tensor", id="x-np"),
    pytest.param(
        run(x=torch.zeros(2, 1, 8, 8, dtype=torch.int64)),
        TypeError,
        r"x must have a floating dtype",
        id="x-int",
    ),
    pytest.param(run(x=torch.tensor(1.0)), ValueError, r"x must have a batch dim", id="x-0d"),
    pytest.param(
        run(model=good_net),
        TypeError,
        r"model must be a DiffusionModel: a dpmsolver.Denoiser",
        id="model-fn",
    ),
    pytest.param(
        run(model=Denoiser(wrong_shape_net, SCHEDULE)),
        ValueError,
        r"step 0: net returned shape \(2, 3\) at t=1; expected its input's shape",
        id="net-shape",
    ),
    pytest.param(
        run(model=Denoiser(lambda x, t: None, SCHEDULE)),
        ValueError,
        r"step 0: net returned NoneType at t=1",
        id="net-none",
    ),
    pytest.param(
        run(model=Denoiser(nan_net, SCHEDULE)),
        ValueError,
        r"NaN or Inf at step 0 \(t=1\)",
        id="net-nan",
    ),
    pytest.param(
        run(
            model=Denoiser(good_net, SCHEDULE, "x0", x0_correction=DynamicThresholding()),
            algorithm="dpmsolver",
        ),
        ValueError,
        r"x0_correction .* needs algorithm='dpmsolver\+\+'",
        id="x0-correction-dpmsolver",
    ),
    # --- Denoiser
    pytest.param(
        lambda: Denoiser(good_net, SCHEDULE, prediction="eps"),
        ValueError,
        r"prediction must be one of",
        id="prediction",
    ),
    pytest.param(lambda: Denoiser("net", SCHEDULE), TypeError, r"net must be callable", id="net"),
    pytest.param(
        lambda: Denoiser(good_net, NS), TypeError, r"schedule must be a NoiseSchedule", id="sched"
    ),
    pytest.param(
        lambda: Denoiser(good_net, SCHEDULE, guidance="cfg"),
        TypeError,
        r"guidance must be",
        id="guidance-type",
    ),
    pytest.param(
        lambda: Denoiser(good_net, SCHEDULE, guidance=ClassifierFree(3.0, None)),
        ValueError,
        r"ClassifierFree guidance needs cond",
        id="cfg-no-cond",
    ),
    pytest.param(
        lambda: Denoiser(good_net, SCHEDULE, guidance=ClassifierGuidance(None, 1.0, COND)),  # type: ignore[arg-type]
        TypeError,
        r"ClassifierGuidance\.classifier must be callable",
        id="cg-no-classifier",
    ),
    pytest.param(
        lambda: Denoiser(good_net, SCHEDULE, guidance=ClassifierGuidance(classifier, 1.0, None)),
        ValueError,
        r"ClassifierGuidance needs cond",
        id="cg-no-cond",
    ),
    pytest.param(
        lambda: Denoiser(good_net, SCHEDULE, x0_correction=0.995),
        TypeError,
        r"x0_correction must be callable",
        id="x0-correction-type",
    ),
    pytest.param(
        lambda: DynamicThresholding(ratio=1.5), ValueError, r"ratio must lie in", id="dt-ratio"
    ),
    # --- native schedules
    pytest.param(
        lambda: VPSchedule.discrete(betas=[0.0, 0.1, 0.2]),
        ValueError,
        r"betas must lie in \(0, 1\)",
        id="betas=0",
    ),
    pytest.param(
        lambda: VPSchedule.discrete(betas=[0.1, 0.5, 1.0]),
        ValueError,
        r"betas must lie in \(0, 1\)",
        id="betas=1",
    ),
    pytest.param(
        lambda: VPSchedule.discrete(betas=[0.1, float("nan")]),
        ValueError,
        r"betas must be finite",
        id="betas-nan",
    ),
    pytest.param(
        lambda: VPSchedule.discrete(betas=np.full((2, 3), 0.1)),
        ValueError,
        r"betas must be 1-D",
        id="betas-2d",
    ),
    pytest.param(
        lambda: VPSchedule.discrete(betas="linear"), TypeError, r"betas must be a 1-D", id="b-str"
    ),
    pytest.param(
        lambda: VPSchedule.discrete(betas=BETAS, alphas_cumprod=torch.cumprod(1 - BETAS, 0)),
        ValueError,
        r"exactly one of betas= or alphas_cumprod=",
        id="betas-and-alphas_cumprod",
    ),
    pytest.param(
        lambda: VPSchedule.discrete(),
        ValueError,
        r"exactly one of betas= or alphas_cumprod=",
        id="neither",
    ),
    pytest.param(
        lambda: VPSchedule.discrete(alphas_cumprod=[0.5, 0.9]),
        ValueError,
        r"alphas_cumprod must be strictly decreasing",
        id="alphas_cumprod-increasing",
    ),
    pytest.param(
        lambda: VPSchedule.discrete(alphas_cumprod=[1.0, 0.9]),
        ValueError,
        r"alphas_cumprod must lie in \(0, 1\)",
        id="alphas_cumprod=1",
    ),
    pytest.param(
        lambda: VPSchedule.linear(20.0, 0.1), ValueError, r"beta_0 < beta_1", id="linear-betas"
    ),
    pytest.param(lambda: VPSchedule.cosine(s=0.0), ValueError, r"s must lie in", id="cosine-s"),
    pytest.param(
        lambda: VPSchedule.cosine(t_max=1.0), ValueError, r"t_max must lie in", id="cosine-T"
    ),
    # --- NoiseScheduleVP
    pytest.param(
        lambda: NoiseScheduleVP("sigmoid"), ValueError, r"schedule must be one of", id="ns-name"
    ),
    pytest.param(
        lambda: NoiseScheduleVP("discrete"),
        ValueError,
        r"schedule='discrete' needs betas= or alphas_cumprod=",
        id="ns-no-table",
    ),
    pytest.param(
        lambda: NoiseScheduleVP("discrete", betas=torch.tensor([0.1, 1.5])),
        ValueError,
        r"betas must lie in \(0, 1\)",
        id="ns-betas",
    ),
    pytest.param(
        lambda: NoiseScheduleVP("linear", continuous_beta_0=5.0, continuous_beta_1=1.0),
        ValueError,
        r"beta_0 < beta_1",
        id="ns-linear",
    ),
    # --- model_wrapper
    pytest.param(
        lambda: model_wrapper(good_net, NS, model_type="eps"),
        ValueError,
        r"model_type must be one of",
        id="mw-model_type",
    ),
    pytest.param(
        lambda: model_wrapper(good_net, NS, guidance_type="cfg"),
        ValueError,
        r"guidance_type must be one of",
        id="mw-guidance_type",
    ),
    pytest.param(
        lambda: model_wrapper(good_net, NS, guidance_type="classifier", condition=COND),
        ValueError,
        r"guidance_type='classifier' needs classifier_fn",
        id="mw-no-classifier_fn",
    ),
    pytest.param(
        lambda: model_wrapper(good_net, NS, guidance_type="classifier", classifier_fn=classifier),
        ValueError,
        r"guidance_type='classifier' needs condition",
        id="mw-classifier-no-condition",
    ),
    pytest.param(
        lambda: model_wrapper(good_net, NS, guidance_type="classifier-free", guidance_scale=2.0),
        ValueError,
        r"guidance_type='classifier-free' needs condition",
        id="mw-cfg-no-condition",
    ),
    pytest.param(
        lambda: model_wrapper(good_net, SCHEDULE),
        TypeError,
        r"noise_schedule must be a NoiseScheduleVP",
        id="mw-native-schedule",
    ),
    # --- DPM_Solver
    pytest.param(
        lambda: DPM_Solver(model_wrapper(good_net, NS), NS, algorithm_type="ddim"),
        ValueError,
        r"algorithm_type must be one of",
        id="solver-algorithm_type",
    ),
    pytest.param(
        lambda: DPM_Solver(model_wrapper(good_net, NS), NS, correcting_x0_fn="clip"),
        ValueError,
        r"correcting_x0_fn must be one of",
        id="solver-correcting_x0_fn",
    ),
    pytest.param(
        lambda: DPM_Solver(model_wrapper(good_net, NS), SCHEDULE),
        TypeError,
        r"noise_schedule must be a NoiseScheduleVP",
        id="solver-native-schedule",
    ),
    pytest.param(
        lambda: DPM_Solver(None, NS), TypeError, r"model_fn must be callable", id="solver-model"
    ),
    # --- DPM_Solver.sample
    pytest.param(solver_sample(method="heun"), ValueError, r"method must be one of", id="s-meth"),
    pytest.param(
        solver_sample(steps=0),
        ValueError,
        r"steps must be between 1 and 100000; got 0",
        id="s-steps",
    ),
    pytest.param(solver_sample(order=4), ValueError, r"order must be between", id="s-order"),
    pytest.param(solver_sample(skip_type="quad"), ValueError, r"skip_type must be", id="s-skip"),
    pytest.param(
        solver_sample(solver_type="heun"), ValueError, r"solver_type must be", id="s-solver"
    ),
    pytest.param(solver_sample(t_end=1e-4), ValueError, r"t_end=0\.0001 is outside", id="s-t0"),
    pytest.param(solver_sample(t_start=2.0), ValueError, r"t_start=2\.0 is outside", id="s-tT"),
    pytest.param(
        solver_sample(method="adaptive", return_intermediate=True),
        ValueError,
        r"return_intermediate=True is not supported with method='adaptive'",
        id="s-adaptive-intermediate",
    ),
]


@pytest.mark.parametrize(("call", "exc", "match"), BAD_INPUTS)
def test_bad_input(call: Callable[[], Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_model_output_error_is_value_error() -> None:
    assert issubclass(ModelOutputError, ValueError)
    with pytest.raises(ModelOutputError, match="returned shape"):
        sample(Denoiser(wrong_shape_net, SCHEDULE), X, steps=3)


@pytest.mark.parametrize(
    "guidance",
    [
        ClassifierFree(2.0, COND, -torch.ones_like(COND)),
        ClassifierGuidance(classifier, 1.0, COND),
    ],
    ids=["cfg", "classifier"],
)
def test_nan_under_guidance_reports_step_and_time(guidance: Any) -> None:
    def net(x: Tensor, t_in: Tensor, *cond: Any) -> Tensor:
        return torch.full_like(x, float("nan"))

    with pytest.raises(ModelOutputError, match=r"step 0 \(t=1\)"):
        sample(Denoiser(net, SCHEDULE, "noise", guidance=guidance), X, steps=4)


def test_nan_not_checked_when_disabled() -> None:
    out = sample(Denoiser(nan_net, SCHEDULE), X, steps=3, check_finite=False)
    assert bool(torch.isnan(out).all())


# ---------------------------------------------------------------------- NaN at the third call


class NanAtCall:
    """The exact digits model, returning NaN from its `bad`-th call (1-based) on."""

    def __init__(self, bad: int) -> None:
        self.bad = bad
        self.calls = 0

    def __call__(self, x: Tensor, t_in: Tensor) -> Tensor:
        self.calls += 1
        out = exact_net(x, t_in)
        return torch.full_like(out, float("nan")) if self.calls == self.bad else out


@pytest.mark.parametrize(("method", "order"), [("multistep", 2), ("singlestep", 1)])
@pytest.mark.parametrize("skip_type", ["time_uniform", "logSNR"])
def test_nan_at_third_call_names_step_2_and_its_time(
    method: str, order: int, skip_type: str
) -> None:
    steps = 10
    net = NanAtCall(3)
    model = Denoiser(net, SCHEDULE, "x0")
    grid = dpm.time_grid(SCHEDULE, skip_type, SCHEDULE.t_max, SCHEDULE.t_min, steps)
    t2 = float(grid[2])
    with pytest.raises(ModelOutputError) as info:
        sample(
            model,
            x_T(2).double(),
            steps=steps,
            order=order,
            method=method,
            skip_type=skip_type,
        )
    msg = str(info.value)
    assert "step 2 " in msg
    assert f"(t={t2:.6g})" in msg
    assert "step 0" not in msg and "step 1 " not in msg
    assert net.calls == steps  # the run is completed; the error is reported at the end


def test_nan_at_third_call_compat_reports_step_and_time() -> None:
    ns = NoiseScheduleVP("discrete", betas=BETAS, dtype=F64)

    calls = {"n": 0}

    def net(x: Tensor, t_in: Tensor) -> Tensor:
        calls["n"] += 1
        t = t_in.to(F64) / 1000.0 + 1.0 / N
        out = DIGITS.posterior_mean(x, ns.native.alpha(t), ns.native.sigma(t))
        return torch.full_like(out, float("nan")) if calls["n"] == 3 else out

    solver = DPM_Solver(model_wrapper(net, ns, model_type="x_start"), ns)
    grid = solver.get_time_steps("time_uniform", 1.0, 1.0 / N, 10, "cpu")
    with pytest.raises(ModelOutputError, match=rf"step 2 \(t={float(grid[2]):.6g}\)"):
        solver.sample(x_T(2).double(), steps=10, order=2)
