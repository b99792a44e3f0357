"""Exact identities of the samplers through the public API, in float64 on exact models.

- first order is DDIM (implemented here), for every method and both algorithms;
- model-call counts of every method, denoise_to_zero and classifier-free guidance;
- the four parameterisations are consistent (to_noise / to_data) and give the same sample;
- callback, correcting_xt_fn, dtype and device of the result;
- inversion followed by sampling returns to the data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from problems import golden, golden_mixture
from torch import Tensor

import dpmsolver as dpm
from dpmsolver import ClassifierFree, Denoiser, VPSchedule, sample, to_data, to_noise
from dpmsolver.models import GaussianMixture, load_digits_gmm

F64 = torch.float64
N = 1000
SCHEDULE = VPSchedule.discrete(betas=torch.linspace(1e-4, 0.02, N, dtype=F64))
DIGITS = load_digits_gmm()
METHODS_FIXED = ["multistep", "singlestep", "singlestep_fixed"]
ALGORITHMS = ["dpmsolver++", "dpmsolver"]
SKIP_TYPES = ["time_uniform", "logSNR", "time_quadratic"]
PREDICTIONS = ["noise", "x0", "v", "score"]
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


class ExactNet:
    """The exact posterior mean of a mixture as a network of the given kind, for SCHEDULE
    (time input n = N t - 1). Records every call's batch size, time input and condition."""

    def __init__(self, gmm: GaussianMixture = DIGITS, kind: str = "x0") -> None:
        self.gmm = gmm
        self.kind = kind
        self.calls = 0
        self.batches: list[int] = []
        self.t_inputs: list[Tensor] = []
        self.conds: list[Any] = []

    def __call__(self, x: Tensor, t_in: Tensor, cond: Tensor | None = None) -> Tensor:
        self.calls += 1
        self.batches.append(x.shape[0])
        self.t_inputs.append(t_in.clone())
        self.conds.append(cond)
        t = (t_in.to(F64) + 1.0) / N
        alpha = SCHEDULE.alpha(t).to(x.device)
        sigma = SCHEDULE.sigma(t).to(x.device)
        x0 = self.gmm.posterior_mean(x, alpha, sigma, component=cond).to(F64)
        shape = (-1,) + (1,) * (x.dim() - 1)
        a, s = alpha.reshape(shape), sigma.reshape(shape)
        eps = (x.to(F64) - a * x0) / s
        out = {
            "noise": eps,
            "x0": x0,
            "v": a * eps - s * x0,
            "score": -eps / s,
        }[self.kind]
        return out.to(x.dtype)


def noise(batch: int = 4, seed: int = 0, shape: tuple[int, ...] = (1, 8, 8)) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *shape), generator=g, dtype=F64)


def ddim(gmm: GaussianMixture, x: Tensor, grid: Tensor) -> Tensor:
    """DDIM written out: x_t = alpha_t x0 + sigma_t eps with eps = (x_s - alpha_s x0)/sigma_s."""
    for s, t in zip(grid[:-1].tolist(), grid[1:].tolist(), strict=True):
        a_s, s_s = float(SCHEDULE.alpha(s)), float(SCHEDULE.sigma(s))
        a_t, s_t = float(SCHEDULE.alpha(t)), float(SCHEDULE.sigma(t))
        x0 = gmm.posterior_mean(x, a_s, s_s)
        eps = (x - a_s * x0) / s_s
        x = a_t * x0 + s_t * eps
    return x


# ---------------------------------------------------------------------- first order = DDIM


@pytest.mark.parametrize("skip_type", SKIP_TYPES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("method", METHODS_FIXED)
def test_first_order_is_ddim(method: str, algorithm: str, skip_type: str) -> None:
    steps = 12
    x_T = noise()
    grid = dpm.time_grid(SCHEDULE, skip_type, SCHEDULE.t_max, SCHEDULE.t_min, steps)
    expected = ddim(DIGITS, x_T, grid)
    model = Denoiser(ExactNet(), SCHEDULE, prediction="x0")
    got = sample(
        model, x_T, steps=steps, order=1, method=method, algorithm=algorithm, skip_type=skip_type
    )
    assert (got - expected).abs().max().item() <= 1e-10


@pytest.mark.parametrize("direction", ["sample", "invert"])
def test_first_order_is_ddim_on_partial_interval(direction: str) -> None:
    t_a, t_b = 0.8, 0.05
    t_start, t_end = (t_a, t_b) if direction == "sample" else (t_b, t_a)
    x = noise(seed=1)
    grid = dpm.time_grid(SCHEDULE, "time_uniform", t_start, t_end, 9)
    expected = ddim(DIGITS, x, grid)
    model = Denoiser(ExactNet(), SCHEDULE, prediction="x0")
    got = sample(model, x, steps=9, order=1, t_start=t_start, t_end=t_end)
    assert (got - expected).abs().max().item() <= 1e-10


@pytest.mark.parametrize("method", METHODS_FIXED)
def test_first_order_algorithms_agree(method: str) -> None:
    x_T = noise(seed=2)
    model = Denoiser(ExactNet(), SCHEDULE, prediction="x0")
    a = sample(model, x_T, steps=15, order=1, method=method, algorithm="dpmsolver++")
    b = sample(model, x_T, steps=15, order=1, method=method, algorithm="dpmsolver")
    assert (a - b).abs().max().item() <= 1e-10


# ---------------------------------------------------------------------- model-call counts


def count_calls(method: str, steps: int, order: int, **kw: Any) -> int:
    net = ExactNet()
    model = Denoiser(net, SCHEDULE, prediction="x0")
    sample(model, noise(2), steps=steps, order=order, method=method, **kw)
    return net.calls


@pytest.mark.parametrize("steps", [3, 5, 10, 12])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_calls_multistep(order: int, steps: int) -> None:
    assert count_calls("multistep", steps, order) == steps


@pytest.mark.parametrize("steps", [1, 2, 4, 5, 10, 12])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_calls_singlestep(order: int, steps: int) -> None:
    assert count_calls("singlestep", steps, order) == steps


@pytest.mark.parametrize("steps", [3, 4, 5, 10, 11])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_calls_singlestep_fixed(order: int, steps: int) -> None:
    assert count_calls("singlestep_fixed", steps, order) == (steps // order) * order


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("method", METHODS_FIXED)
def test_denoise_to_zero_adds_one_call(method: str, algorithm: str) -> None:
    plain = count_calls(method, 10, 2, algorithm=algorithm)
    extra = count_calls(method, 10, 2, algorithm=algorithm, denoise_to_zero=True)
    assert extra == plain + 1


@pytest.mark.parametrize("method", METHODS_FIXED)
def test_denoise_to_zero_returns_x0_prediction(method: str) -> None:
    x_T = noise(seed=3)
    model = Denoiser(ExactNet(), SCHEDULE, prediction="x0")
    x_end = sample(model, x_T, steps=10, order=2, method=method)
    x0 = sample(model, x_T, steps=10, order=2, method=method, denoise_to_zero=True)
    t_end = SCHEDULE.t_min
    expected = DIGITS.posterior_mean(x_end, SCHEDULE.alpha(t_end), SCHEDULE.sigma(t_end))
    assert (x0 - expected).abs().max().item() <= 1e-12


def golden_inputs() -> tuple[GaussianMixture, Tensor, Tensor]:
    _, arrays = golden()
    x_T = torch.tensor(arrays["x_T"], dtype=F64)
    cond = torch.tensor(arrays["condition"])
    return golden_mixture(), x_T, cond


@pytest.mark.parametrize("method", METHODS_FIXED)
def test_classifier_free_guidance_one_call_per_step_on_doubled_batch(method: str) -> None:
    gmm, x_T, cond = golden_inputs()
    uncond = torch.full_like(cond, -1)
    net = ExactNet(gmm, kind="noise")
    model = Denoiser(net, SCHEDULE, "noise", guidance=ClassifierFree(3.0, cond, uncond))
    steps, order = 10, 2
    sample(model, x_T, steps=steps, order=order, method=method)
    expected_calls = (steps // order) * order if method == "singlestep_fixed" else steps
    assert net.calls == expected_calls
    assert net.batches == [2 * x_T.shape[0]] * expected_calls
    for c, t_in in zip(net.conds, net.t_inputs, strict=True):
        assert torch.equal(c, torch.cat([uncond, cond]))
        assert t_in.shape == (2 * x_T.shape[0],)
        assert bool((t_in == t_in[0]).all())


def test_classifier_free_guidance_value() -> None:
    gmm, x_T, cond = golden_inputs()
    uncond = torch.full_like(cond, -1)
    scale = 3.0
    guided = Denoiser(
        ExactNet(gmm, kind="noise"), SCHEDULE, "noise", guidance=ClassifierFree(scale, cond, uncond)
    )
    inner = ExactNet(gmm, kind="noise")

    def mixed(x: Tensor, t_in: Tensor) -> Tensor:
        out_u, out_c = inner(x, t_in, uncond), inner(x, t_in, cond)
        return out_u + scale * (out_c - out_u)

    manual = Denoiser(mixed, SCHEDULE, "noise")
    a = sample(guided, x_T, steps=10, order=2)
    b = sample(manual, x_T, steps=10, order=2)
    assert (a - b).abs().max().item() <= 1e-12


def test_classifier_free_guidance_scale_one_calls_conditional_only() -> None:
    gmm, x_T, cond = golden_inputs()
    net = ExactNet(gmm, kind="noise")
    model = Denoiser(net, SCHEDULE, "noise", guidance=ClassifierFree(1.0, cond, cond * 0 - 1))
    out = sample(model, x_T, steps=8, order=2)
    assert net.batches == [x_T.shape[0]] * 8
    assert all(c is cond for c in net.conds)
    conditional = Denoiser(lambda x, t: ExactNet(gmm, "noise")(x, t, cond), SCHEDULE, "noise")
    assert (out - sample(conditional, x_T, steps=8, order=2)).abs().max().item() <= 1e-13


def test_model_kwargs_are_passed() -> None:
    seen: list[float] = []
    inner = ExactNet()

    def net(x: Tensor, t_in: Tensor, *, temperature: float) -> Tensor:
        seen.append(temperature)
        return inner(x, t_in)

    model = Denoiser(net, SCHEDULE, "x0", model_kwargs={"temperature": 0.5})
    sample(model, noise(2), steps=5, order=2)
    assert seen == [0.5] * 5


# ---------------------------------------------------------------------- parameterisations


@settings(max_examples=60, deadline=None)
@given(
    theta=st.floats(0.01, np.pi / 2 - 0.01),
    seed=st.integers(0, 2**16),
    prediction=st.sampled_from(PREDICTIONS),
)
def test_to_noise_to_data_consistent(theta: float, seed: int, prediction: str) -> None:
    alpha, sigma = float(np.cos(theta)), float(np.sin(theta))
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(2, 3, 5, generator=g, dtype=F64)
    x = alpha * x0 + sigma * eps
    out = {
        "noise": eps,
        "x0": x0,
        "v": alpha * eps - sigma * x0,
        "score": -eps / sigma,
    }[prediction]
    tol = 1e-12 / min(alpha, sigma)
    assert (to_noise(out, x, alpha, sigma, prediction) - eps).abs().max().item() <= tol
    assert (to_data(out, x, alpha, sigma, prediction) - x0).abs().max().item() <= tol
    # for any output (not only the exact one): x = alpha x0_pred + sigma eps_pred
    junk = torch.randn(3, 5, generator=g, dtype=F64)
    rebuilt = alpha * to_data(junk, x, alpha, sigma, prediction) + sigma * to_noise(
        junk, x, alpha, sigma, prediction
    )
    assert (rebuilt - x).abs().max().item() <= tol


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), prediction=st.sampled_from(PREDICTIONS))
def test_to_noise_to_data_per_sample_levels(seed: int, prediction: str) -> None:
    g = torch.Generator().manual_seed(seed)
    theta = 0.05 + 1.4 * torch.rand(4, 1, 1, generator=g, dtype=F64)
    alpha, sigma = theta.cos(), theta.sin()
    x0, eps = torch.randn(2, 4, 3, 2, generator=g, dtype=F64)
    x = alpha * x0 + sigma * eps
    out = {"noise": eps, "x0": x0, "v": alpha * eps - sigma * x0, "score": -eps / sigma}
    got_eps = to_noise(out[prediction], x, alpha, sigma, prediction)
    got_x0 = to_data(out[prediction], x, alpha, sigma, prediction)
    np.testing.assert_allclose(got_eps.numpy(), eps.numpy(), atol=1e-11)
    np.testing.assert_allclose(got_x0.numpy(), x0.numpy(), atol=1e-11)


@pytest.mark.parametrize("prediction", ["noise", "v", "score"])
@pytest.mark.parametrize(
    ("method", "order", "algorithm"),
    [
        ("multistep", 2, "dpmsolver++"),
        ("multistep", 3, "dpmsolver"),
        ("singlestep", 3, "dpmsolver++"),
        ("singlestep_fixed", 2, "dpmsolver"),
    ],
)
def test_parameterisations_give_same_sample(
    prediction: str, method: str, order: int, algorithm: str
) -> None:
    x_T = noise(seed=4)
    kw: dict[str, Any] = dict(steps=12, order=order, method=method, algorithm=algorithm)
    ref = sample(Denoiser(ExactNet(kind="x0"), SCHEDULE, "x0"), x_T, **kw)
    got = sample(Denoiser(ExactNet(kind=prediction), SCHEDULE, prediction), x_T, **kw)  # type: ignore[arg-type]
    assert (got - ref).abs().max().item() <= 1e-10


# ---------------------------------------------------------------------- callback, correction


def test_callback_multistep() -> None:
    steps = 10
    x_T = noise(2)
    seen: list[tuple[int, float, Tensor]] = []
    model = Denoiser(ExactNet(), SCHEDULE, "x0")
    out = sample(
        model, x_T, steps=steps, order=2, callback=lambda i, t, x: seen.append((i, t, x.clone()))
    )
    grid = dpm.time_grid(SCHEDULE, "time_uniform", SCHEDULE.t_max, SCHEDULE.t_min, steps)
    assert [i for i, _, _ in seen] == list(range(steps + 1))
    assert [t for _, t, _ in seen] == grid.tolist()
    assert torch.equal(seen[0][2], x_T)
    assert torch.equal(seen[-1][2], out)


@pytest.mark.parametrize(("method", "order"), [("singlestep", 3), ("singlestep_fixed", 2)])
def test_callback_singlestep_outer_steps(method: str, order: int) -> None:
    steps = 10
    x_T = noise(2)
    seen: list[tuple[int, float, Tensor]] = []
    model = Denoiser(ExactNet(), SCHEDULE, "x0")
    out = sample(
        model,
        x_T,
        steps=steps,
        order=order,
        method=method,
        callback=lambda i, t, x: seen.append((i, t, x.clone())),
    )
    if method == "singlestep":
        orders = dpm.singlestep_orders(steps, order)  # [3, 3, 3, 1] on the 10-interval grid
        fine = dpm.time_grid(SCHEDULE, "time_uniform", SCHEDULE.t_max, SCHEDULE.t_min, steps)
        outer = fine[np.concatenate([[0], np.cumsum(orders)])].tolist()
    else:
        outer = dpm.time_grid(
            SCHEDULE, "time_uniform", SCHEDULE.t_max, SCHEDULE.t_min, steps // order
        ).tolist()
    assert [i for i, _, _ in seen] == list(range(len(outer)))
    assert [t for _, t, _ in seen] == outer
    assert torch.equal(seen[0][2], x_T)
    assert torch.equal(seen[-1][2], out)


@pytest.mark.parametrize("method", METHODS_FIXED)
def test_callback_with_denoise_to_zero_has_increasing_steps(method: str) -> None:
    seen: list[tuple[int, float]] = []
    model = Denoiser(ExactNet(), SCHEDULE, "x0")
    out = sample(
        model,
        noise(2),
        steps=10,
        order=2,
        method=method,
        denoise_to_zero=True,
        callback=lambda i, t, x: seen.append((i, t)),
    )
    steps_seen = [i for i, _ in seen]
    assert steps_seen == list(range(len(seen)))  # 0, 1, 2, ... without repeats
    assert seen[-1][1] == SCHEDULE.t_min
    assert out.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("method", METHODS_FIXED)
def test_correcting_xt_fn_applied(method: str) -> None:
    steps, order = 10, 2
    x_T = noise(3)
    model = Denoiser(ExactNet(), SCHEDULE, "x0")
    plain = sample(model, x_T, steps=steps, order=order, method=method)
    calls: list[tuple[int, float]] = []

    def record(x: Tensor, t: float, step: int) -> Tensor:
        calls.append((step, t))
        return x

    same = sample(model, x_T, steps=steps, order=order, method=method, correcting_xt_fn=record)
    assert torch.equal(same, plain)
    grid = dpm.time_grid(SCHEDULE, "time_uniform", SCHEDULE.t_max, SCHEDULE.t_min, steps)
    if method == "multistep":
        # after the first model call at step 0, then after every step
        assert calls == list(enumerate(grid.tolist()))
    else:
        # after every (outer) step, numbered from 0 as in the reference
        if method == "singlestep":  # orders [2] * 5: every other point of the fine grid
            outer = grid[::order].tolist()
        else:
            outer = dpm.time_grid(
                SCHEDULE, "time_uniform", SCHEDULE.t_max, SCHEDULE.t_min, steps // order
            ).tolist()
        assert calls == [(i, t) for i, t in enumerate(outer[1:])]
    last = calls[-1][0]

    def double_at_end(x: Tensor, t: float, step: int) -> Tensor:
        return 2.0 * x if step == last else x

    doubled = sample(
        model, x_T, steps=steps, order=order, method=method, correcting_xt_fn=double_at_end
    )
    assert torch.equal(doubled, 2.0 * plain)

    def shift_everywhere(x: Tensor, t: float, step: int) -> Tensor:
        return x + 0.01

    shifted = sample(
        model, x_T, steps=steps, order=order, method=method, correcting_xt_fn=shift_everywhere
    )
    assert (shifted - plain).abs().max().item() > 1e-3


@pytest.mark.parametrize(
    ("t_start", "t_end"),
    [(1.0, 1e-3), (0.5, 0.1), (0.00105, 0.001), (0.001, 0.00105)],
    ids=["full", "partial", "short", "short-inversion"],
)
def test_adaptive_stays_inside_the_interval(t_start: float, t_end: float) -> None:
    """The adaptive step is 'never past the end time' (adaptive.py): every model call and
    every accepted state lies between t_start and t_end."""
    schedule = VPSchedule.linear()
    times: list[float] = []

    def net(x: Tensor, t_in: Tensor) -> Tensor:
        t = t_in.to(F64)
        times.extend(t.tolist())
        return DIGITS.posterior_mean(x, schedule.alpha(t), schedule.sigma(t))

    seen: list[tuple[int, float]] = []
    x = noise(2) * float(schedule.sigma(t_start))
    sample(
        Denoiser(net, schedule, "x0"),
        x,
        method="adaptive",
        order=2,
        t_start=t_start,
        t_end=t_end,
        callback=lambda i, t, xx: seen.append((i, t)),
    )
    lo, hi = min(t_start, t_end), max(t_start, t_end)
    assert lo - 1e-12 <= min(times) and max(times) <= hi + 1e-12
    assert [i for i, _ in seen] == list(range(len(seen)))
    ts = [t for _, t in seen]
    assert ts[0] == t_start
    assert abs(ts[-1] - t_end) <= 1e-5
    assert all(lo - 1e-12 <= t <= hi + 1e-12 for t in ts)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize(
    ("t_start", "t_end"), [(1.0, 1e-3), (1.0, 1e-4), (0.5, 1e-6), (2e-5, 1e-6), (1e-4, 1e-7)]
)
def test_adaptive_reaches_t_end(t_start: float, t_end: float, order: int) -> None:
    """Continuous schedules accept any end time in (0, t_max]; the adaptive solver must stop
    at t_end (its last accepted state is reported through the callback), not near it."""
    schedule = VPSchedule.linear()

    def net(x: Tensor, t_in: Tensor) -> Tensor:
        t = t_in.to(F64)
        return DIGITS.posterior_mean(x, schedule.alpha(t), schedule.sigma(t))

    seen: list[float] = []
    sample(
        Denoiser(net, schedule, "x0"),
        noise(2, seed=3) * float(schedule.sigma(t_start)),
        method="adaptive",
        order=order,
        t_start=t_start,
        t_end=t_end,
        callback=lambda i, t, x: seen.append(t),
    )
    lam_last, lam_end = schedule.lambda_(torch.tensor([seen[-1], t_end], dtype=F64)).tolist()
    assert seen[-1] == pytest.approx(t_end, rel=1e-9)
    assert abs(lam_last - lam_end) <= 1e-8


# ---------------------------------------------------------------------- dtype, device, input


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
@pytest.mark.parametrize("method", [*METHODS_FIXED, "adaptive"])
def test_result_keeps_dtype_and_device(method: str, dtype: torch.dtype, device: str) -> None:
    x_T = noise(2).to(device=device, dtype=dtype)
    before = x_T.clone()
    model = Denoiser(ExactNet(), SCHEDULE, "x0")
    steps = {} if method == "adaptive" else {"steps": 10}  # adaptive chooses its own
    out = sample(model, x_T, order=2, method=method, **steps)
    assert out.dtype == dtype
    assert out.device == x_T.device
    assert out.shape == x_T.shape
    assert bool(torch.isfinite(out).all())
    assert torch.equal(x_T, before)  # the input is not modified in place
    if dtype == torch.float32:
        ref = sample(model, x_T.double().cpu(), order=2, method=method, **steps)
        tol = 1e-3 if method == "adaptive" else 1e-4
        assert (out.double().cpu() - ref).abs().max().item() <= tol


def test_time_input_dtype_follows_x() -> None:
    for dtype, t_dtype in [(F64, F64), (torch.float32, torch.float32)]:
        net = ExactNet()
        sample(Denoiser(net, SCHEDULE, "x0"), noise(2).to(dtype), steps=3, order=1)
        assert {t.dtype for t in net.t_inputs} == {t_dtype}
        assert net.t_inputs[0].tolist() == pytest.approx([N * SCHEDULE.t_max - 1.0] * 2)


# ---------------------------------------------------------------------- inversion


@pytest.mark.parametrize("skip_type", ["logSNR", "time_quadratic"])
def test_inversion_then_sampling_returns_to_data(skip_type: str) -> None:
    _, arrays = golden()
    x_data = torch.tensor(arrays["x_data"], dtype=F64)
    model = Denoiser(ExactNet(golden_mixture()), SCHEDULE, "x0")
    kw: dict[str, Any] = dict(steps=200, order=2, method="multistep", algorithm="dpmsolver++")
    latent = sample(
        model, x_data, t_start=SCHEDULE.t_min, t_end=SCHEDULE.t_max, skip_type=skip_type, **kw
    )
    assert (latent - x_data).abs().max().item() > 0.5  # it did move to noise
    back = sample(
        model, latent, t_start=SCHEDULE.t_max, t_end=SCHEDULE.t_min, skip_type=skip_type, **kw
    )
    assert (back - x_data).abs().max().item() <= 1e-4
