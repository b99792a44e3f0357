"""The official-compatible face beyond the parity vectors: add_noise, the schedule object
and the reference's older 'cosine' schedule."""

from __future__ import annotations

import math

import pytest
import torch

from dpmsolver import DPM_Solver, NoiseScheduleVP, model_wrapper


def solver(schedule: NoiseScheduleVP) -> DPM_Solver:
    return DPM_Solver(model_wrapper(lambda x, t: torch.zeros_like(x), schedule), schedule)


def test_add_noise_one_time_and_several() -> None:
    ns = NoiseScheduleVP("linear", dtype=torch.float64)
    x = torch.randn(3, 5, dtype=torch.float64)
    noise = torch.randn(1, 3, 5, dtype=torch.float64)
    t = torch.tensor([0.4], dtype=torch.float64)
    xt = solver(ns).add_noise(x, t, noise)
    expected = ns.marginal_alpha(t) * x + ns.marginal_std(t) * noise[0]
    assert xt.shape == (3, 5)
    torch.testing.assert_close(xt, expected, rtol=0, atol=1e-15)
    ts = torch.tensor([0.2, 0.9], dtype=torch.float64)
    noise2 = torch.randn(2, 3, 5, dtype=torch.float64)
    many = solver(ns).add_noise(x, ts, noise2)
    a, s = ns.marginal_alpha(ts)[:, None, None], ns.marginal_std(ts)[:, None, None]
    torch.testing.assert_close(many, a * x + s * noise2, rtol=0, atol=1e-15)
    torch.manual_seed(0)
    drawn = solver(ns).add_noise(x, ts)
    torch.manual_seed(0)
    torch.testing.assert_close(
        drawn,
        solver(ns).add_noise(x, ts, torch.randn(2, 3, 5, dtype=torch.float64)),
        rtol=0,
        atol=0,
    )


def test_cosine_schedule_keeps_the_reference_end_time() -> None:
    ns = NoiseScheduleVP("cosine", dtype=torch.float64)
    assert (ns.T, ns.total_N) == (0.9946, 1000)
    alpha = math.cos((ns.T + 0.008) / 1.008 * math.pi / 2) / math.cos(0.008 / 1.008 * math.pi / 2)
    lam = ns.marginal_lambda(torch.tensor([ns.T], dtype=torch.float64))
    assert float(lam) == pytest.approx(math.log(alpha / math.sqrt(1 - alpha**2)), abs=1e-12)
    t = torch.linspace(1e-3, ns.T, 50, dtype=torch.float64)
    torch.testing.assert_close(ns.inverse_lambda(ns.marginal_lambda(t)), t, rtol=0, atol=1e-9)


def test_inverse_runs_from_data_to_noise_and_back() -> None:
    # With the zero noise predictor the ODE is x / alpha_t = constant.
    ns = NoiseScheduleVP("linear", dtype=torch.float64)
    x0 = torch.randn(2, 4, dtype=torch.float64)
    xT = solver(ns).inverse(x0, steps=5, order=2)
    a0 = ns.marginal_alpha(torch.tensor([1e-3], dtype=torch.float64))
    a1 = ns.marginal_alpha(torch.tensor([1.0], dtype=torch.float64))
    torch.testing.assert_close(xT, x0 * a1 / a0, rtol=1e-12, atol=0)
    back = solver(ns).sample(xT, steps=5, order=2)
    torch.testing.assert_close(back, x0, rtol=1e-12, atol=1e-14)
