"""Analytic problems with exact solutions, shared by the test modules.

- The parity problem of ../shared/golden (copied to tests/data): an isotropic 4-component
  mixture in 16 dimensions, its exact posterior mean wrapped as a network with the
  reference's time input, for every schedule and model type of the manifest.
- The exact digits mixture, with a high-accuracy solution of its probability-flow ODE
  (scipy's DOP853 in lambda at rtol = atol = 1e-12).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dpmsolver import NoiseScheduleVP
from dpmsolver.models import GaussianMixture

DATA = Path(__file__).parent / "data"


@functools.cache
def golden() -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    cases = json.loads((DATA / "official_parity.json").read_text())
    with np.load(DATA / "official_parity.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return cases, arrays


def golden_schedule(name: str, dtype: torch.dtype) -> NoiseScheduleVP:
    _, a = golden()
    if name == "discrete_betas_linear":
        return NoiseScheduleVP(
            "discrete", betas=torch.tensor(a["betas_linear"]).to(dtype), dtype=dtype
        )
    if name == "discrete_alphas_cumprod_sd":
        return NoiseScheduleVP(
            "discrete", alphas_cumprod=torch.tensor(a["alphas_cumprod_sd"]).to(dtype), dtype=dtype
        )
    if name == "discrete_betas_cosine":
        return NoiseScheduleVP(
            "discrete", betas=torch.tensor(a["betas_cosine"]).to(dtype), dtype=dtype
        )
    if name == "linear":
        return NoiseScheduleVP("linear", continuous_beta_0=0.1, continuous_beta_1=20.0, dtype=dtype)
    if name == "linear_beta1_10":
        return NoiseScheduleVP("linear", continuous_beta_0=0.1, continuous_beta_1=10.0, dtype=dtype)
    raise KeyError(name)


@functools.cache
def golden_mixture() -> GaussianMixture:
    _, a = golden()
    return GaussianMixture(
        a["gmm_means"], a["gmm_log_weights"], a["gmm_stds"] ** 2, sample_shape=(2, 2, 4)
    )


class GoldenNet:
    """The exact posterior mean as a network of the given model type; counts its calls."""

    def __init__(self, ns: NoiseScheduleVP, model_type: str) -> None:
        self.ns = ns
        self.model_type = model_type
        self.calls = 0

    def time(self, t_input: Tensor) -> Tensor:
        t_input = t_input.to(torch.float64)
        if self.ns.schedule == "discrete":
            return t_input / 1000.0 + 1.0 / self.ns.total_N
        return t_input

    def alpha_sigma(self, t_input: Tensor, dims: int) -> tuple[Tensor, Tensor]:
        t = self.time(t_input)
        shape = (-1,) + (1,) * (dims - 1)
        alpha = self.ns.native.alpha(t).reshape(shape)
        sigma = self.ns.native.sigma(t).reshape(shape)
        return alpha, sigma

    def __call__(self, x: Tensor, t_input: Tensor, cond: Tensor | None = None) -> Tensor:
        self.calls += 1
        xf = x.to(torch.float64)
        alpha, sigma = self.alpha_sigma(t_input, x.dim())
        x0 = golden_mixture().posterior_mean(
            xf, alpha.reshape(-1), sigma.reshape(-1), component=cond
        )
        eps = (xf - alpha * x0) / sigma
        out = {
            "noise": lambda: eps,
            "x_start": lambda: x0,
            "v": lambda: alpha * eps - sigma * x0,
            "score": lambda: -eps / sigma,
        }
        return out[self.model_type]().to(x.dtype)

    def classifier(self, x: Tensor, t_input: Tensor, cond: Tensor) -> Tensor:
        """log r_c(x_t) of the full mixture (differentiable in x)."""
        alpha, sigma = self.alpha_sigma(t_input, x.dim())
        log_r = golden_mixture().log_responsibilities(
            x.to(torch.float64), alpha.reshape(-1), sigma.reshape(-1)
        )
        return log_r[torch.arange(x.shape[0]), cond]


@functools.cache
def digits_mixture() -> GaussianMixture:
    from dpmsolver.models import load_digits_gmm

    return load_digits_gmm()


def exact_x0_net(gmm: GaussianMixture, schedule: Any) -> Any:
    """The exact posterior mean as an 'x0' network for a native schedule (float64 inside)."""

    def t_of_input(t_in: Tensor) -> Tensor:
        if hasattr(schedule, "time_input_scale"):
            return t_in.double() / schedule.time_input_scale + 1.0 / schedule.total_n
        return t_in.double()

    def net(x: Tensor, t_in: Tensor) -> Tensor:
        t = t_of_input(t_in)
        return gmm.posterior_mean(x, schedule.alpha(t), schedule.sigma(t))

    return net


def reference_solution(
    gmm: GaussianMixture,
    schedule: Any,
    x_T: Tensor,
    t_start: float,
    t_end: float,
    tol: float = 1e-12,
) -> Tensor:
    """High-accuracy solution of the probability-flow ODE from x_T at t_start to t_end.

    Integrates y = x / sigma_t in lambda, dy/dlambda = e^lambda x0(x, lambda), with scipy's
    DOP853 at rtol = atol = tol. This holds for every schedule; alpha and sigma come from the
    schedule at t(lambda).
    """
    from scipy.integrate import solve_ivp

    shape = x_T.shape
    lam_s, lam_e = schedule.lambda_(torch.tensor([t_start, t_end], dtype=torch.float64)).tolist()

    def alpha_sigma(lam: float) -> tuple[float, float]:
        t = schedule.inverse_lambda(torch.tensor(lam, dtype=torch.float64))
        return float(schedule.alpha(t)), float(schedule.sigma(t))

    def rhs(lam: float, y: np.ndarray) -> np.ndarray:
        alpha, sigma = alpha_sigma(lam)
        x = torch.from_numpy(y).reshape(shape) * sigma
        x0 = gmm.posterior_mean(x, alpha, sigma)
        return (np.exp(lam) * x0).reshape(-1).numpy()

    y0 = (x_T.double() / alpha_sigma(lam_s)[1]).reshape(-1).numpy()
    sol = solve_ivp(rhs, (lam_s, lam_e), y0, method="DOP853", rtol=tol, atol=tol)
    if not sol.success:
        raise RuntimeError(sol.message)
    return torch.from_numpy(sol.y[:, -1]).reshape(shape) * alpha_sigma(lam_e)[1]
