"""The k-diffusion-style face: samplers on sigma grids, callbacks, progress, sigma grids."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from problems import digits_mixture
from torch import Tensor

import dpmsolver.k_diffusion as K  # noqa: N812 (k-diffusion's own convention)


def denoiser(calls: list[int] | None = None) -> Callable[..., Tensor]:
    """The digits mixture's exact denoiser in VE scaling: D(x, sigma) = E[x0 | x0 + sigma eps]."""
    gmm = digits_mixture()

    def model(x: Tensor, sigma: Tensor, scale: float = 1.0) -> Tensor:
        assert sigma.shape == (x.shape[0],)
        if calls is not None:
            calls.append(1)
        return scale * gmm.posterior_mean(x, 1.0, sigma)

    return model


def start(n: int = 6, sigma: float = 80.0) -> Tensor:
    g = torch.Generator().manual_seed(0)
    return sigma * torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)


def reference_2m(model: Callable[..., Tensor], x: Tensor, sigmas: Tensor) -> Tensor:
    """DPM-Solver++(2M) re-derived: data form in lambda = -log sigma, one call per sigma.

    x_next = (sigma_next / sigma) x - expm1(-h) D, with D = denoised for the first step and the
    last one (to sigma = 0), else D = (1 + 1/(2r)) denoised - 1/(2r) previous, r = h_prev / h.
    """
    s = sigmas.tolist()
    previous, h_prev = None, None
    for i in range(len(s) - 1):
        denoised = model(x, torch.full((x.shape[0],), s[i], dtype=x.dtype))
        if s[i + 1] == 0:
            x = denoised
            break
        h = math.log(s[i] / s[i + 1])
        d = denoised
        if previous is not None and h_prev is not None:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * previous
        x = (s[i + 1] / s[i]) * x - math.expm1(-h) * d
        previous, h_prev = denoised, h
    return x


def reference_2s(model: Callable[..., Tensor], x: Tensor, sigmas: Tensor) -> Tensor:
    """DPM-Solver++(2S) re-derived: a midpoint in lambda, the step taken with its denoised."""
    s = sigmas.tolist()
    for i in range(len(s) - 1):
        denoised = model(x, torch.full((x.shape[0],), s[i], dtype=x.dtype))
        if s[i + 1] == 0:
            return denoised
        h = math.log(s[i] / s[i + 1])
        s_mid = s[i] * math.exp(-h / 2)
        x_mid = (s_mid / s[i]) * x - math.expm1(-h / 2) * denoised
        denoised_mid = model(x_mid, torch.full((x.shape[0],), s_mid, dtype=x.dtype))
        x = (s[i + 1] / s[i]) * x - math.expm1(-h) * denoised_mid
    return x


@pytest.mark.parametrize("grid", ["karras", "exponential"])
def test_dpmpp_2m_matches_independent_derivation(grid: str) -> None:
    sigmas = getattr(K, f"get_sigmas_{grid}")(10, 0.002, 80.0).double()
    model = denoiser()
    ours = K.sample_dpmpp_2m(model, start(), sigmas, disable=True)
    torch.testing.assert_close(ours, reference_2m(model, start(), sigmas), rtol=0, atol=1e-6)


def test_dpmpp_2s_matches_independent_derivation() -> None:
    sigmas = K.get_sigmas_karras(8, 0.002, 80.0).double()
    model = denoiser()
    ours = K.sample_dpmpp_2s(model, start(), sigmas, disable=True)
    torch.testing.assert_close(ours, reference_2s(model, start(), sigmas), rtol=0, atol=1e-6)


SAMPLERS: dict[str, tuple[Callable[..., Tensor], int]] = {
    # name: (function, model calls for n sigmas before the final zero)
    "2m": (K.sample_dpmpp_2m, 1),
    "3m": (K.sample_dpmpp_3m, 1),
    "2s": (K.sample_dpmpp_2s, 2),
    "dpm_solver": (K.sample_dpm_solver, 1),
}


@pytest.mark.parametrize("name", SAMPLERS)
def test_callback_sees_every_sigma_and_extra_args_reach_the_model(name: str) -> None:
    fn, per_step = SAMPLERS[name]
    sigmas = K.get_sigmas_karras(7, 0.01, 50.0).double()
    seen: list[dict[str, Any]] = []
    calls: list[int] = []
    out = fn(
        denoiser(calls),
        start(),
        sigmas,
        extra_args={"scale": 1.0},
        callback=seen.append,
        disable=True,
    )
    assert [d["i"] for d in seen] == list(range(7))
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
    torch.testing.assert_close(torch.stack([d["sigma"] for d in seen]), sigmas[:-1])
    assert len(calls) == 6 * per_step + 1
    # The last step to sigma = 0 returns the last denoised prediction.
    torch.testing.assert_close(out, seen[-1]["denoised"])
    halved = fn(denoiser(), start(), sigmas, extra_args={"scale": 0.5}, disable=True)
    assert not torch.allclose(halved, out)


@pytest.mark.parametrize("name", SAMPLERS)
def test_progress_bar_and_disable_give_the_same_result(name: str) -> None:
    fn, _ = SAMPLERS[name]
    sigmas = K.get_sigmas_exponential(5, 0.01, 50.0).double()
    quiet = fn(denoiser(), start(2), sigmas, disable=True)
    shown = fn(denoiser(), start(2), sigmas, disable=False)
    torch.testing.assert_close(quiet, shown, rtol=0, atol=0)


def test_more_sigmas_get_closer_to_the_ode_solution() -> None:
    fine = K.get_sigmas_exponential(400, 0.002, 80.0).double()[:-1]
    truth = K.sample_dpm_solver(
        denoiser(), start(), fine, order=3, multistep3="exact", disable=True
    )
    errors = [
        float(
            (
                K.sample_dpmpp_3m(
                    denoiser(),
                    start(),
                    K.get_sigmas_exponential(n, 0.002, 80.0).double()[:-1],
                    disable=True,
                )
                - truth
            )
            .abs()
            .max()
        )
        for n in (10, 20, 40, 80)
    ]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.05 * errors[0]


def test_adaptive_reaches_sigma_min_and_tightens_with_the_tolerances() -> None:
    fine = K.get_sigmas_exponential(400, 0.002, 80.0).double()[:-1]
    truth = K.sample_dpm_solver(
        denoiser(), start(), fine, order=3, multistep3="exact", disable=True
    )
    seen: list[dict[str, Any]] = []
    loose_calls: list[int] = []
    loose = K.sample_dpm_adaptive(
        denoiser(loose_calls), start(), 0.002, 80.0, callback=seen.append, disable=True
    )
    assert float(seen[-1]["sigma"]) == pytest.approx(0.002, rel=1e-12)
    assert [d["i"] for d in seen] == list(range(len(seen)))
    tight_calls: list[int] = []
    tight = K.sample_dpm_adaptive(
        denoiser(tight_calls), start(), 0.002, 80.0, atol=1e-3, rtol=1e-3, disable=True
    )
    rms = [float((v - truth).pow(2).mean().sqrt()) for v in (loose, tight)]
    # Measured: 12 calls, RMS 0.087 at the defaults; 78 calls, RMS 1.5e-4 at 1e-3.
    assert len(tight_calls) > len(loose_calls)
    assert rms[1] < 1e-3 and rms[1] < 0.01 * rms[0]


def test_sigma_grids() -> None:
    karras = K.get_sigmas_karras(5, 0.1, 10.0, rho=7.0).double()
    ramp = torch.linspace(0, 1, 5, dtype=torch.float64)
    expected = (10.0 ** (1 / 7) + ramp * (0.1 ** (1 / 7) - 10.0 ** (1 / 7))) ** 7
    torch.testing.assert_close(karras[:-1], expected, rtol=1e-6, atol=0)
    assert karras[-1] == 0 and len(karras) == 6
    exp = K.get_sigmas_exponential(5, 0.1, 10.0).double()
    ratios = exp[1:-1] / exp[:-2]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 0.1**0.5), rtol=1e-6, atol=0)
    torch.testing.assert_close(
        K.get_sigmas_logsnr(5, 0.1, 10.0), K.get_sigmas_exponential(5, 0.1, 10.0)
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: K.get_sigmas_karras(0, 0.1, 10.0), "n must be"),
        (lambda: K.get_sigmas_karras(5, 10.0, 0.1), "sigma_min < sigma_max"),
        (lambda: K.get_sigmas_exponential(5, -1.0, 10.0), "sigma_min must be"),
        (
            lambda: K.sample_dpmpp_2m(denoiser(), start(), torch.tensor([1.0, 2.0, 0.0])),
            "strictly decreasing",
        ),
        (lambda: K.sample_dpmpp_2m(denoiser(), start(), torch.tensor([1.0])), "at least 2"),
        (
            lambda: K.sample_dpmpp_2m(denoiser(), start(), torch.tensor([1.0, 0.0, -1.0])),
            "strictly decreasing|positive",
        ),
        (
            lambda: K.sample_dpm_solver(
                denoiser(), start(), torch.tensor([2.0, 1.0, 0.0]), method="bogus"
            ),
            "method must be one of",
        ),
        (lambda: K.sample_dpm_adaptive(denoiser(), start(), 1.0, 0.5), "sigma_min < sigma_max"),
    ],
)
def test_bad_input(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# -- flow-matching models (ComfyUI's convention: sigma in (0, 1], x = (1-s) x0 + s eps) ----


def flow_denoiser() -> Callable[..., Tensor]:
    """The digits mixture as a flow model: D(x, s) = E[x0 | (1 - s) x0 + s eps]."""
    gmm = digits_mixture()

    def model(x: Tensor, sigma: Tensor) -> Tensor:
        s = float(sigma[0])
        return gmm.posterior_mean(x, max(1.0 - s, 1e-12), s)

    return model


def flow_sigmas(n: int, top: float = 1.0) -> Tensor:
    """n flow sigmas from `top` down to 0.02, uniform in lambda after the first, then 0."""
    lam = torch.linspace(math.log((1 - 0.98) / 0.98), math.log(0.98 / 0.02), n - 1)
    rest = torch.sigmoid(-lam.double())
    return torch.cat([torch.tensor([top], dtype=torch.float64), rest, torch.zeros(1)])


def flow_start(n: int = 6) -> Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize(
    ("sampler", "order", "method"),
    [(K.sample_dpmpp_2m, 2, "multistep"), (K.sample_dpmpp_3m, 3, "multistep")],
)
def test_flow_face_equals_the_native_sampler(sampler: Any, order: int, method: str) -> None:
    """Same grid from pure noise (sigma = 1), the same rules: the face on a flow model is
    dpmsolver.sample on a FlowSchedule whose time is the flow sigma, ending with x0_pred."""
    import dpmsolver as dpm

    model = flow_denoiser()
    sigmas = flow_sigmas(12)
    ours = sampler(model, flow_start(), sigmas, disable=True, model_sampling="flow")
    schedule = dpm.FlowSchedule(shift=1.0, t_min=float(sigmas[-2]), t_max=1.0)
    net = lambda x, t: model(x, t)  # noqa: E731  (the network's time input is the sigma)
    native = dpm.sample(
        dpm.Denoiser(net, schedule, prediction="x0"),
        flow_start(),
        timesteps=sigmas[:-1].tolist(),
        order=order,
        method=method,
        lower_order_final=False,
        denoise_to_zero=True,
    )
    torch.testing.assert_close(ours, native, rtol=0, atol=1e-6)


def test_flow_face_converges_at_second_order() -> None:
    model = flow_denoiser()
    x = flow_start()
    reference = K.sample_dpmpp_3m(
        model, x, flow_sigmas(400, 0.98), disable=True, model_sampling="flow"
    )
    errors = [
        float(
            (
                K.sample_dpmpp_2m(
                    model, x, flow_sigmas(n, 0.98), disable=True, model_sampling="flow"
                )
                - reference
            )
            .pow(2)
            .mean()
            .sqrt()
        )
        for n in (25, 50, 100)
    ]
    slopes = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(s > 1.6 for s in slopes), (errors, slopes)


def test_flow_is_read_from_a_comfyui_model_wrapper() -> None:
    class CONST:  # ComfyUI's flow-matching model sampling class
        pass

    class Inner:
        model_sampling = CONST()

    class Wrapped:
        inner_model = Inner()

        def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
            return flow_denoiser()(x, sigma)

    class BaseModel:  # ComfyUI: KSamplerX0Inpaint -> CFGGuider -> BaseModel.model_sampling
        model_sampling = CONST()

    class Guider:
        inner_model = BaseModel()

    class KSamplerX0Inpaint(Wrapped):
        inner_model = Guider()  # type: ignore[assignment]

    sigmas = flow_sigmas(8)
    auto = K.sample_dpmpp_2m(Wrapped(), flow_start(), sigmas, disable=True)
    nested = K.sample_dpmpp_2m(KSamplerX0Inpaint(), flow_start(), sigmas, disable=True)
    torch.testing.assert_close(nested, auto, rtol=0, atol=0)
    said = K.sample_dpmpp_2m(
        flow_denoiser(), flow_start(), sigmas, disable=True, model_sampling="flow"
    )
    torch.testing.assert_close(auto, said, rtol=0, atol=0)


def test_flow_face_errors() -> None:
    with pytest.raises(ValueError, match="model_sampling must be one of"):
        K.sample_dpmpp_2m(flow_denoiser(), flow_start(), flow_sigmas(5), model_sampling="eps")
    with pytest.raises(ValueError, match=r"sigmas must lie in \(0, 1\] for a flow model"):
        K.sample_dpmpp_2m(
            flow_denoiser(), flow_start(), torch.tensor([5.0, 1.0, 0.0]), model_sampling="flow"
        )
    # iPNDM cannot start at alpha_t = 0: from sigma = 1 it starts at 1 - 1e-4, as ComfyUI's
    # SDE samplers do, with the same calls.
    seen: list[float] = []
    model = flow_denoiser()

    def recording(x: Tensor, sigma: Tensor) -> Tensor:
        seen.append(float(sigma[0]))
        return model(x, sigma)

    out = K.sample_ipndm(recording, flow_start(), flow_sigmas(6), model_sampling="flow")
    assert seen[0] == pytest.approx(1.0 - 1e-4, abs=1e-9) and len(seen) == 6
    assert bool(torch.isfinite(out).all())


# -- DPM-Solver++(2M) SDE -------------------------------------------------------------------


def reference_2m_sde(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    noises: list[Tensor],
    eta: float,
    s_noise: float,
    solver_type: str,
) -> Tensor:
    """k-diffusion's DPM-Solver++(2M) SDE re-derived (VE): with h = log(s / s_next),
    x = (s_next / s) e^{-eta h} x + (1 - e^{-(1+eta) h}) D + s_next sqrt(1 - e^{-2 eta h}) z,
    D = denoised + c (denoised - previous) / r, r = h_prev / h, c = (1 - e^{-h_eta}) / 2
    (midpoint) or 1 - (1 - e^{-h_eta}) / h_eta (heun); the last step (to 0) is denoised."""
    s = sigmas.tolist()
    previous, h_prev = None, None
    for i in range(len(s) - 1):
        denoised = model(x, torch.full((x.shape[0],), s[i], dtype=x.dtype))
        if s[i + 1] == 0:
            return denoised
        h = math.log(s[i] / s[i + 1])
        h_eta = (1 + eta) * h
        decay = -math.expm1(-h_eta)
        x = (s[i + 1] / s[i]) * math.exp(-eta * h) * x + decay * denoised
        if previous is not None and h_prev is not None:
            r = h_prev / h
            c = 0.5 * decay if solver_type == "midpoint" else 1 - decay / h_eta
            x = x + c / r * (denoised - previous)
        if eta:
            x = x + noises[i] * s[i + 1] * math.sqrt(-math.expm1(-2 * eta * h)) * s_noise
        previous, h_prev = denoised, h
    return x


@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize(("eta", "s_noise"), [(1.0, 1.0), (0.5, 1.0), (1.0, 0.7)])
def test_dpmpp_2m_sde_matches_its_derivation_given_the_same_noise(
    solver_type: str, eta: float, s_noise: float
) -> None:
    sigmas = K.get_sigmas_karras(12, 0.002, 80.0).double()
    x = start()
    gen = torch.Generator().manual_seed(3)
    noises = [torch.randn(x.shape, generator=gen, dtype=x.dtype) for _ in range(len(sigmas))]
    table = {float(s): noises[i] for i, s in enumerate(sigmas[:-1])}
    calls: list[tuple[float, float]] = []

    def noise_sampler(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        calls.append((float(sigma), float(sigma_next)))
        return table[float(sigma)]

    model = denoiser()
    ours = K.sample_dpmpp_2m_sde(
        model,
        x,
        sigmas,
        disable=True,
        eta=eta,
        s_noise=s_noise,
        noise_sampler=noise_sampler,
        solver_type=solver_type,
    )
    expected = reference_2m_sde(model, x, sigmas, noises, eta, s_noise, solver_type)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    # One draw per step that does not end at 0, with k-diffusion's (sigma, sigma_next).
    steps = sigmas[:-1].tolist()
    assert calls == list(itertools.pairwise(steps))


def test_dpmpp_2m_sde_at_eta_0_is_2m_and_checks_its_noise() -> None:
    sigmas = K.get_sigmas_karras(8, 0.002, 80.0).double()
    model = denoiser()
    ode = K.sample_dpmpp_2m(model, start(), sigmas, disable=True)
    sde0 = K.sample_dpmpp_2m_sde(model, start(), sigmas, disable=True, eta=0.0)
    torch.testing.assert_close(sde0, ode, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="noise_sampler returned"):
        K.sample_dpmpp_2m_sde(
            model, start(), sigmas, disable=True, noise_sampler=lambda s, t: torch.zeros(3)
        )
    with pytest.raises(ValueError, match="solver_type must be one of 'midpoint', 'heun'"):
        K.sample_dpmpp_2m_sde(model, start(), sigmas, disable=True, solver_type="euler")
    torch.manual_seed(0)
    a = K.sample_dpmpp_2m_sde(model, start(), sigmas, disable=True)
    torch.manual_seed(0)
    b = K.sample_dpmpp_2m_sde(model, start(), sigmas, disable=True)
    assert torch.equal(a, b) and not torch.equal(a, ode)


def test_the_tuned_bridge_knows_sample_dpm_solvers_defaults() -> None:
    """A tuned solver refuses any solver argument given other than its default: the face
    keeps those defaults as data, which must be the function's own."""
    import inspect

    from dpmsolver.k_diffusion.run import SOLVER_DEFAULTS

    params = inspect.signature(K.sample_dpm_solver).parameters
    assert {k: params[k].default for k in SOLVER_DEFAULTS} == SOLVER_DEFAULTS


# -- the range samplers (dpm_fast, adaptive) -------------------------------------------------


def test_range_samplers_start_a_flow_range_from_pure_noise_just_below_it() -> None:
    """From sigma_max = 1 on a flow model (alpha = 0, where neither the noise form nor an
    adaptive step can start) dpm_fast and dpm_adaptive start at 1 - 1e-4, as the other
    samplers do, with dpm_fast's n calls."""
    for run in (
        lambda m: K.sample_dpm_fast(m, flow_start(), 0.02, 1.0, 10, model_sampling="flow"),
        lambda m: K.sample_dpm_adaptive(m, flow_start(), 0.02, 1.0, model_sampling="flow"),
    ):
        seen: list[float] = []
        model = flow_denoiser()

        def recording(
            x: Tensor, sigma: Tensor, model: Any = model, seen: list[float] = seen
        ) -> Tensor:
            seen.append(float(sigma[0]))
            return model(x, sigma)

        out = run(recording)
        assert seen[0] == pytest.approx(1.0 - 1e-4, abs=1e-9) and max(seen) < 1.0
        assert bool(torch.isfinite(out).all())
    fast = K.sample_dpm_fast(flow_denoiser(), flow_start(), 0.02, 1.0, 10, model_sampling="flow")
    assert fast.shape == flow_start().shape


def test_dpm_fast_refuses_every_sde_argument_by_name() -> None:
    for given, name in (
        (dict(eta=0.5), "eta=0.5"),
        (dict(s_noise=3.0), "s_noise=3.0"),
        (dict(noise_sampler=lambda s, t: s), "noise_sampler=<function"),
    ):
        with pytest.raises(ValueError, match=rf"runs the ODE only.*\(got {name}"):
            K.sample_dpm_fast(denoiser(), start(), 0.03, 14.6, 10, **given)


@pytest.mark.parametrize(
    ("sigmas", "options", "calls"),
    [
        ([80.0, 10.0, 2.0, 0.5, 0.1, 0.0], {}, 5),  # with the final denoising call
        ([80.0, 10.0, 2.0, 0.5, 0.1], {}, 4),  # no final 0: 4 steps
        ([80.0, 10.0, 2.0, 0.5, 0.1, 0.0], dict(analytic_first_step=True), 4),
        ([80.0, 10.0, 2.0, 0.5, 0.1], dict(method="singlestep", order=2), 8),  # 4 steps of 2
    ],
)
def test_sample_dpm_solver_progress_bar_ends_full(
    record_bars: Callable[[Any], list[Any]],
    sigmas: list[float],
    options: dict[str, Any],
    calls: int,
) -> None:
    """The bar counts the calls at the grid's sigmas, as the step callback does, and
    reaches its total whatever the grid's end and the first step."""
    import dpmsolver.k_diffusion.run as run

    bars, made = record_bars(run), []
    steps: list[int] = []
    K.sample_dpm_solver(
        denoiser(made), start(), torch.tensor(sigmas), callback=lambda d: steps.append(d["i"]),
        **options,
    )  # fmt: skip
    assert len(made) == calls and len(bars) == 1
    assert bars[0].total == bars[0].done == len(steps)


def test_dpm_fast_progress_bar_ends_full(record_bars: Callable[[Any], list[Any]]) -> None:
    """The bar counts dpm_fast's steps (of up to 3 calls each) and reaches its total."""
    import dpmsolver.k_diffusion.samplers as named

    bars = record_bars(named)
    calls: list[int] = []
    K.sample_dpm_fast(denoiser(calls), start(), 0.03, 14.6, 10)
    assert len(calls) == 10 and len(bars) == 1
    assert bars[0].total == 4 and bars[0].done == 4  # 4 steps for the 10 calls
