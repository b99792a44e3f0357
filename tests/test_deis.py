"""DEIS (tAB, as ComfyUI's sample_deis runs it): the rule, the k-diffusion face, the native
algorithm='deis', its convergence order and its refusals.

The reference below is written from the method's definition, not from ComfyUI's code: in
the k-diffusion frame (x, sigma) the ODE is dx/dsigma = d = (x - D(x, sigma)) / sigma; a
step from sigma_i to sigma_{i+1} adds sum_j c_j d_{i-j}, with c_j the integral over the
step of the j-th Lagrange basis polynomial, in the time tau of EDM's VP fit (sigma(tau)^2 =
exp(beta_d tau^2 / 2 + beta_min tau) - 1 through sigma(1e-3) = 0.002 and sigma(1) = 80),
against dsigma. The order warms up (Euler first) and a step to sigma = 0 is Euler.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from numpy.polynomial import Polynomial
from test_convergence import fitted_order
from test_k_diffusion_sde import GMM, start, ve_model
from torch import Tensor

import dpmsolver as dpm
import dpmsolver.k_diffusion as K  # noqa: N812 (k-diffusion's own convention)
from dpmsolver.core import SolverOptions
from dpmsolver.core.coefficients import deis_update, ipndm_update

# EDM's VP fit, solved here from its two conditions (a linear system in beta_d, beta_min).
EPS_S, SIGMA_LO, SIGMA_HI = 1e-3, 0.002, 80.0
BETA_D, BETA_MIN = np.linalg.solve(
    np.array([[0.5 * EPS_S**2, EPS_S], [0.5, 1.0]]),
    [math.log1p(SIGMA_LO**2), math.log1p(SIGMA_HI**2)],
)


def exponent(tau: float | np.ndarray) -> Any:
    return 0.5 * BETA_D * tau**2 + BETA_MIN * tau


def tau_of(sigma: float) -> float:
    """The positive root tau of exponent(tau) = log(1 + sigma^2)."""
    roots = Polynomial([-math.log1p(sigma**2), BETA_MIN, 0.5 * BETA_D]).roots()
    return float(max(r.real for r in roots))


def dsigma_dtau(tau: float | np.ndarray) -> Any:
    e = np.expm1(exponent(tau))
    return (BETA_D * tau + BETA_MIN) * (e + 1.0) / (2.0 * np.sqrt(e))


def basis(taus: list[float], j: int) -> Polynomial:
    """The j-th Lagrange basis polynomial through `taus`."""
    others = [t for m, t in enumerate(taus) if m != j]
    if not others:
        return Polynomial([1.0])
    return Polynomial.fromroots(others) / float(np.prod([taus[j] - t for t in others]))


def exact_weights(taus: list[float], t0: float, t1: float) -> list[float]:
    """Int_{t0}^{t1} L_j(tau) sigma'(tau) dtau by adaptive quadrature (scipy)."""
    from scipy.integrate import quad

    def weight(p: Polynomial) -> float:
        return quad(lambda u: p(u) * dsigma_dtau(u), t0, t1, epsabs=0, epsrel=1e-13)[0]

    return [weight(basis(taus, j)) for j in range(len(taus))]


def comfyui_sum_weights(taus: list[float], t0: float, t1: float, n: int = 10_000) -> list[float]:
    """The same integrals as ComfyUI approximates them: the integrand summed at n points
    evenly spaced over [t0, t1], both ends included, times (t1 - t0) / n."""
    grid = np.linspace(t0, t1, n)
    f = dsigma_dtau(grid)
    return [float(np.sum(f * basis(taus, j)(grid)) * (t1 - t0) / n) for j in range(len(taus))]


def reference_deis(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    max_order: int = 3,
    weights: Callable[[list[float], float, float], list[float]] = exact_weights,
) -> Tensor:
    s = [float(v) for v in sigmas]
    taus = [tau_of(v) for v in s]
    history: list[Tensor] = []  # d of earlier steps, newest first
    for i in range(len(s) - 1):
        denoised = model(x, torch.full((x.shape[0],), s[i], dtype=x.dtype))
        d = (x - denoised) / s[i]
        order = min(max_order, i + 1)
        if order == 1 or s[i + 1] == 0:
            x = x + (s[i + 1] - s[i]) * d
        else:
            c = weights([taus[i - j] for j in range(order)], taus[i], taus[i + 1])
            x = x + sum(cj * dj for cj, dj in zip(c, [d, *history], strict=False))
        history = [d, *history][: max_order - 1]
    return x


S2 = 0.3  # the data variance of the toy Gaussian


def gaussian(x: Tensor, sigma: Tensor) -> Tensor:
    """The exact denoiser of N(0, S2 I) data: D(x, sigma) = x S2 / (S2 + sigma^2)."""
    return x * (S2 / (S2 + sigma.view(-1, *[1] * (x.ndim - 1)) ** 2))


def karras(n: int, lo: float, hi: float, zero: bool) -> Tensor:
    sigmas = K.get_sigmas_karras(n, lo, hi).double()
    return sigmas if zero else sigmas[:-1]


MODELS = {"gaussian": gaussian, "digits": ve_model}


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("max_order", [1, 2, 3])
@pytest.mark.parametrize(
    ("n", "lo", "hi", "zero"),
    [(10, 0.002, 80.0, True), (12, 0.03, 14.6, False), (3, 0.1, 20.0, True)],
)
def test_sample_deis_equals_the_tab_deis_reference(
    model: str, max_order: int, n: int, lo: float, hi: float, zero: bool
) -> None:
    sigmas = karras(n, lo, hi, zero)
    x = start(scale=hi)
    calls: list[float] = []

    def counted(x: Tensor, sigma: Tensor) -> Tensor:
        calls.append(float(sigma[0]))
        return MODELS[model](x, sigma)

    ours = K.sample_deis(counted, x, sigmas, disable=True, max_order=max_order)
    assert calls == sigmas[:-1].tolist()  # one call per sigma, none at the last one
    want = reference_deis(MODELS[model], x, sigmas, max_order)
    torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-10)


def test_comfyuis_summed_integrals_are_within_a_thousandth_of_the_error() -> None:
    """ComfyUI sums 10^4 points per integral (an O(1/n) bias); the exact integrals move the
    result by less than 1e-4 of its size at 10 steps, far below the solver's own error."""
    sigmas = karras(10, 0.002, 80.0, True)
    x = start(scale=80.0)
    ours = K.sample_deis(ve_model, x, sigmas, disable=True)
    summed = reference_deis(ve_model, x, sigmas, weights=comfyui_sum_weights)
    fine = K.sample_dpmpp_3m(ve_model, x, karras(400, 0.002, 80.0, True), disable=True)
    gap, error = float((ours - summed).abs().max()), float((ours - fine).abs().max())
    assert gap < 1e-3 * error and gap < 1e-4 * float(ours.abs().max())


def levels_of(sigmas: list[float]) -> list[dpm.Level]:
    """VP levels with sigma_t / alpha_t = the given noise levels."""
    alphas = [(1 + s * s) ** -0.5 for s in sigmas]
    return [
        dpm.Level(t=s, alpha=a, sigma=s * a, lambda_=-math.log(s))
        for s, a in zip(sigmas, alphas, strict=True)
    ]


@pytest.mark.parametrize("sig", [[2.0, 3.0, 5.0, 1.2], [0.05, 0.08, 0.03], [7.0, 9.0, 14.0, 2.0]])
def test_deis_rule_integrates_the_lagrange_polynomial(sig: list[float]) -> None:
    """cx = alpha_t / alpha_s and cm = alpha_t w: the weights are the reference's integrals;
    they sum to sigma~_t - sigma~_s (the basis sums to 1)."""
    levels = levels_of(sig)
    rule = deis_update(levels)
    *prev, t = levels
    assert rule.cx == pytest.approx(t.alpha / prev[0].alpha, rel=1e-15)
    taus = [tau_of(s) for s in sig]
    want = exact_weights(taus[:-1], taus[0], taus[-1])
    np.testing.assert_allclose(np.array(rule.cm) / t.alpha, want, rtol=1e-11, atol=1e-13)
    assert sum(rule.cm) / t.alpha == pytest.approx(sig[-1] - sig[0], rel=1e-13)


def test_first_order_deis_is_ddim() -> None:
    levels = levels_of([3.0, 1.0])
    assert deis_update(levels) == ipndm_update(levels)
    model = dpm.models.load("digits-exact")
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = dpm.sample(model, x, steps=6, order=1, algorithm="deis")
    b = dpm.sample(model, x, steps=6, order=1, algorithm="dpmsolver")
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_deis_converges_at_its_order(order: int) -> None:
    """On the exact digits mixture (float64, 4 noises; logSNR grids of 40 to 320 steps),
    error against a DOP853 solution falls at the order: tAB-DEIS of order k uses k outputs."""
    assert fitted_order("multistep", order, "deis") == pytest.approx(order, abs=0.3)


@pytest.mark.parametrize("inputs", ["ve", "vp"])
def test_native_deis_equals_the_k_diffusion_face(inputs: str) -> None:
    """The same noise levels: the native algorithm='deis' on a VE or a VP model (x_vp =
    alpha x_ve, the same sigma / alpha) gives the face's result, ending with x0_pred."""
    from problems import exact_x0_net

    sigmas = K.get_sigmas_karras(9, 0.02, 60.0).double()
    x = start(scale=60.0)
    ours = K.sample_deis(ve_model, x, sigmas, disable=True)
    if inputs == "ve":
        schedule: dpm.NoiseSchedule = dpm.VESchedule(0.02, 60.0)
        model = dpm.Denoiser(ve_model, schedule, prediction="x0")
        x_native = x
    else:
        schedule = dpm.VPSchedule.linear()
        model = dpm.Denoiser(exact_x0_net(GMM, schedule), schedule, prediction="x0")
        x_native = x / math.sqrt(1.0 + float(sigmas[0]) ** 2)  # alpha_T x_T
    native = dpm.sample(
        model,
        x_native,
        sigmas=sigmas[:-1].tolist(),
        algorithm="deis",
        order=3,
        lower_order_final=False,
        denoise_to_zero=True,
    )
    torch.testing.assert_close(ours, native, rtol=0, atol=1e-8)
    same = K.sample_dpm_solver(
        ve_model, x, sigmas, order=3, algorithm="deis", lower_order_final=False, disable=True
    )
    torch.testing.assert_close(ours, same, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (dict(corrector="all"), ValueError, "corrector='all' needs .*algorithm='deis'"),
        (dict(method="singlestep"), ValueError, "algorithm='deis' needs method='multistep'"),
        (dict(method="adaptive"), ValueError, "algorithm='deis' needs method='multistep'"),
        (dict(order=4), ValueError, "order must be between 1 and 3; got 4"),
        (dict(eta=1.0), ValueError, "eta > 0"),
        (dict(cfg_pp=True), ValueError, "cfg_pp=True needs .*algorithm='deis'"),
    ],
)
def test_deis_refuses_what_it_cannot_do(options: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        SolverOptions(algorithm="deis", **options)


def test_deis_face_and_pure_noise_refusals() -> None:
    sigmas = karras(6, 0.03, 14.6, True)
    x = start(scale=14.6)
    with pytest.raises(ValueError, match="deis_mode must be one of 'tab'; got 'rhoab'"):
        K.sample_deis(ve_model, x, sigmas, deis_mode="rhoab")
    with pytest.raises(ValueError, match="max_order must be between 1 and 3; got 4"):
        K.sample_deis(ve_model, x, sigmas, max_order=4)
    with pytest.raises(TypeError, match="max_order must be an int"):
        K.sample_deis(ve_model, x, sigmas, max_order=2.0)  # type: ignore[arg-type]
    flow = dpm.FlowSchedule(shift=3.0, t_max=1.0)  # alpha = 0 at the start
    model = dpm.Denoiser(lambda x, t: 0 * x, flow, prediction="x0")
    with pytest.raises(ValueError, match="algorithm='deis' cannot start at alpha_t = 0"):
        dpm.sample(model, x, steps=4, algorithm="deis", order=3)
