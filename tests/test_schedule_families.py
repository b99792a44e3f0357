"""Every solver on every schedule family: VP, EDM/VE, flow matching, user-defined.

The probability-flow ODE written in lambda is the same for all schedules once x is divided
by alpha_t (x / alpha_t = x0 + e^{-lambda} eps), so the same start mapped between schedules
must give the same sample; and each solver converges at its order on each of them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from problems import digits_mixture, reference_solution

import dpmsolver as dpm
from dpmsolver.models import ExactModel

LAM_START, LAM_END = -4.5, 4.5
SCHEDULES = {
    "vp-linear": lambda: dpm.VPSchedule.linear(),
    "vp-discrete": lambda: dpm.VPSchedule.discrete(
        betas=torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ),
    "edm": lambda: dpm.EDMSchedule(),
    "flow": lambda: dpm.FlowSchedule(),
    "flow-shift3": lambda: dpm.FlowSchedule(shift=3.0),
    "custom-cosine": lambda: dpm.CustomSchedule(
        lambda t: torch.cos(t * math.pi / 2), lambda t: torch.sin(t * math.pi / 2), 1e-4, 0.9999
    ),
}
SOLVERS = {
    "2M": dict(order=2),
    "3M-exact": dict(order=3, multistep3="exact"),
    "3S": dict(order=3, method="singlestep"),
    "DPM-Solver-2M": dict(order=2, algorithm="dpmsolver"),
}


def span(schedule: dpm.NoiseSchedule) -> tuple[float, float]:
    t = schedule.inverse_lambda(torch.tensor([LAM_START, LAM_END], dtype=torch.float64))
    return float(t[0]), float(t[1])


def start_ve(n: int = 4) -> torch.Tensor:
    """x / alpha at lambda = LAM_START: x0 + e^{-lambda} eps, roughly e^{4.5} N(0, I)."""
    g = torch.Generator().manual_seed(0)
    return math.exp(-LAM_START) * torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)


def solve(name: str, steps: int, **opts: object) -> torch.Tensor:
    schedule = SCHEDULES[name]()
    model = ExactModel(digits_mixture(), schedule)
    t_s, t_e = span(schedule)
    alpha_s, alpha_e = (float(schedule.alpha(t)) for t in (t_s, t_e))
    x = dpm.sample(
        model, alpha_s * start_ve(), steps=steps, t_start=t_s, t_end=t_e, skip_type="logSNR", **opts
    )  # type: ignore[arg-type]
    return x / alpha_e


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", [n for n in SCHEDULES if n != "vp-linear"])
def test_same_start_gives_the_same_sample_on_every_schedule(name: str, solver: str) -> None:
    reference = solve("vp-linear", 12, **SOLVERS[solver])
    torch.testing.assert_close(solve(name, 12, **SOLVERS[solver]), reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["edm", "flow-shift3", "custom-cosine"])
@pytest.mark.parametrize(
    ("method", "order", "nfe"),
    [
        ("multistep", 2, [40, 80, 160]),
        ("multistep", 3, [40, 80, 160, 320]),
        ("singlestep_fixed", 3, [192, 384, 768]),
    ],
)
def test_converges_at_its_order_on_every_schedule(
    name: str, method: str, order: int, nfe: list[int]
) -> None:
    schedule = SCHEDULES[name]()
    t_s, t_e = span(schedule)
    x_T = float(schedule.alpha(t_s)) * start_ve()
    ref = reference_solution(digits_mixture(), schedule, x_T, t_s, t_e)
    model = ExactModel(digits_mixture(), schedule)
    errors = [
        float(
            (
                dpm.sample(
                    model,
                    x_T,
                    steps=n,
                    order=order,
                    method=method,
                    t_start=t_s,
                    t_end=t_e,
                    skip_type="logSNR",
                    **({"multistep3": "exact"} if method == "multistep" and order == 3 else {}),
                )
                - ref
            )
            .abs()
            .max()
        )
        for n in nfe
    ]
    slope = -float(np.polyfit(np.log(nfe), np.log(errors), 1)[0])
    assert slope == pytest.approx(order, abs=0.3)


def test_flow_prediction_on_a_flow_schedule_is_the_exact_model() -> None:
    schedule = dpm.FlowSchedule(shift=3.0, time_scale=1000.0)
    gmm = digits_mixture()

    def velocity_net(x: torch.Tensor, t_in: torch.Tensor) -> torch.Tensor:
        sigma = (t_in.double() / 1000.0).reshape(-1, 1, 1, 1)  # the net sees 1000 sigma_t
        x0 = gmm.posterior_mean(x, 1 - sigma.reshape(-1), sigma.reshape(-1))
        eps = (x - (1 - sigma) * x0) / sigma
        return eps - x0

    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    flow = dpm.sample(dpm.Denoiser(velocity_net, schedule, prediction="flow"), x_T, steps=10)
    exact = dpm.sample(ExactModel(gmm, schedule), x_T, steps=10)
    torch.testing.assert_close(flow, exact, rtol=0, atol=1e-10)


def test_inversion_round_trip_with_3m_at_50_steps() -> None:
    # Data -> noise -> data on the exact digits model, DDPM's discrete schedule.
    model = dpm.models.load("digits-exact")
    schedule = model.schedule
    x0 = digits_mixture().sample(64, torch.Generator().manual_seed(0))
    opts = dict(steps=50, order=3, skip_type="time_quadratic")
    noise = dpm.sample(model, x0, t_start=schedule.t_min, t_end=schedule.t_max, **opts)
    back = dpm.sample(model, noise, **opts)  # type: ignore[arg-type]
    assert float((back - x0).pow(2).mean().sqrt()) < 1e-3  # measured 7.3e-4


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (
            lambda: dpm.CustomSchedule(lambda t: 1 + 0 * t, lambda t: 1 + (t - 0.5) ** 2, 0.1, 0.9),
            ValueError,
            "strictly decreasing",
        ),
        (
            lambda: dpm.CustomSchedule(torch.cos, lambda t: torch.sin(t) * float("nan"), 0.1, 0.9),
            ValueError,
            "NaN or Inf at t=0.1",
        ),
        (lambda: dpm.CustomSchedule(torch.cos, torch.sin, 0.9, 0.1), ValueError, "t_min < t_max"),
        (lambda: dpm.EDMSchedule(80.0, 0.002), ValueError, "sigma_min < sigma_max"),
        (lambda: dpm.VESchedule(0.0, 1.0), ValueError, "sigma_min < sigma_max"),
        (lambda: dpm.FlowSchedule(shift=0.0), ValueError, "shift must be"),
        (lambda: dpm.FlowSchedule(t_max=1.5), ValueError, "t_max <= 1"),
        (
            lambda: dpm.CustomSchedule.from_table([0.1, 0.05], [0.9, 0.8], [0.1, 0.2]),
            ValueError,
            "strictly increasing",
        ),
        (
            lambda: dpm.sample(
                ExactModel(digits_mixture(), dpm.FlowSchedule()),
                torch.zeros(1, 1, 8, 8),
                t_start=1.0,
            ),
            ValueError,
            "outside the schedule's time range",
        ),
        (
            lambda: dpm.sample(
                ExactModel(digits_mixture(), dpm.EDMSchedule()), torch.zeros(1, 1, 8, 8), t_end=-1.0
            ),
            ValueError,
            "outside the schedule's time range",
        ),
    ],
)
def test_bad_schedules(make, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make()


def test_table_schedule_matches_its_source() -> None:
    source = dpm.VPSchedule.linear()
    t = torch.linspace(1e-3, 1.0, 2001, dtype=torch.float64)
    table = dpm.CustomSchedule.from_table(t, source.alpha(t), source.sigma(t))
    probe = torch.linspace(2e-3, 0.99, 97, dtype=torch.float64)
    # log alpha and log sigma are interpolated linearly between 2001 samples.
    torch.testing.assert_close(table.lambda_(probe), source.lambda_(probe), rtol=1e-4, atol=0)
    torch.testing.assert_close(table.inverse_lambda(table.lambda_(probe)), probe, rtol=0, atol=1e-9)


def test_sigmas_are_timesteps_in_ve_units() -> None:
    schedule = dpm.VPSchedule.linear()
    model = ExactModel(digits_mixture(), schedule)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grid = dpm.time_grid(schedule, "karras", 1.0, 1e-3, 8)
    sigmas = torch.exp(-schedule.lambda_(grid))
    by_sigma = dpm.sample(model, x_T, sigmas=sigmas)
    torch.testing.assert_close(by_sigma, dpm.sample(model, x_T, timesteps=grid), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        dpm.time_grid(schedule, "exponential", 1.0, 1e-3, 8),
        dpm.time_grid(schedule, "logSNR", 1.0, 1e-3, 8),
        rtol=0,
        atol=0,
    )
    with pytest.raises(ValueError, match="sigmas must be > 0"):
        dpm.sample(model, x_T, sigmas=[1.0, 0.0])


def test_flow_from_pure_noise() -> None:
    """FlowSchedule(t_max=1): alpha = 0 at the start. The data form's first step is its
    exact limit x_1 = sigma_1 x + alpha_1 x0_pred(x); grids in t work, grids in lambda, the
    noise form and iPNDM from there are refused by name, and so is singlestep with `steps`
    (its intermediate points would lie at lambda = -inf too); with a given grid singlestep
    takes its first step at order 1 and approaches the runs from just below pure noise."""
    schedule = dpm.FlowSchedule(shift=3.0, t_max=1.0)
    model = ExactModel(digits_mixture(), schedule)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    first = dpm.sample(model, x, steps=1, order=1)
    end = schedule.levels([schedule.t_min])[0]
    x0 = model(x, schedule.levels([1.0])[0], "data")
    torch.testing.assert_close(first, end.sigma * x + end.alpha * x0, rtol=1e-12, atol=1e-12)
    # The limit is continuous: starts just below pure noise approach the run from it. From
    # alpha = eps the second step's finite difference reaches lambda = log(eps), with a weight
    # ~ h / |log eps| that falls slowly (1e-5 at eps = 1e-9, measured), not as eps.
    for kw in (
        dict(order=2),
        dict(order=3),
        dict(order=2, corrector="all"),
    ):
        out = dpm.sample(model, x, steps=20, **kw)  # type: ignore[arg-type]
        assert bool(torch.isfinite(out).all())
        gaps = [
            float((dpm.sample(model, x, steps=20, t_start=1 - eps / 3, **kw) - out).abs().max())  # type: ignore[arg-type]
            for eps in (1e-9, 1e-15)
        ]
        assert gaps[1] < gaps[0] < 1e-4, (kw, gaps)
    grid = dpm.time_grid(schedule, "time_uniform", 1.0, schedule.t_min, 10).tolist()
    for order in (2, 3):
        kw = dict(method="singlestep_fixed", order=order)
        out = dpm.sample(model, x, timesteps=grid, **kw)  # type: ignore[arg-type]
        gaps = [
            float(
                (dpm.sample(model, x, timesteps=[1 - eps / 3, *grid[1:]], **kw) - out).abs().max()
            )  # type: ignore[arg-type]
            for eps in (1e-9, 1e-15)
        ]
        # Its stages from alpha = eps sit at lambda ~ log(eps) / 2; the gap at eps = 1e-15
        # is float rounding (measured 4.5e-4 / 5.0e-3 at 1e-9 with 20 steps).
        assert gaps[1] < 1e-12 and gaps[1] < gaps[0] < 1e-2, (order, gaps)
    bh1 = dpm.sample(model, x, steps=20, corrector="all", corrector_variant="bh1")
    assert bool(torch.isfinite(bh1).all())
    for kw, message in [
        (dict(skip_type="logSNR"), "spaces the grid in lambda"),
        (dict(algorithm="dpmsolver"), "cannot start at alpha_t = 0"),
        (dict(algorithm="ipndm"), "cannot start at alpha_t = 0"),
        (dict(method="singlestep"), "cannot start at alpha_t = 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            dpm.sample(model, x, steps=6, **kw)  # type: ignore[arg-type]
