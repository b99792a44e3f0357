"""The named samplers of k-diffusion and ComfyUI (`sample_dpmpp_2m`, `sample_dpmpp_3m_sde`,
...): each one call of `sample_dpm_solver` with its own settings, under the name and
signature its callers know: `(model, x, sigmas, extra_args=None, callback=None,
disable=None, ...)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from ..checks import check_choice, check_float, check_int
from ..core import SolverOptions, sample
from ..tools.progress import Progress
from .denoiser import (
    FLOW_SDE_START,
    KCallback,
    KDenoiser,
    check_callback,
    extra_kwargs,
    sampling,
    schedule_for,
)
from .run import KNoiseSampler, sample_dpm_solver
from .sigmas import check_sigma_range

__all__ = [
    "sample_deis",
    "sample_dpm_adaptive",
    "sample_dpm_fast",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_cfg_pp",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_2m_sde_heun",
    "sample_dpmpp_2s",
    "sample_dpmpp_2s_ancestral",
    "sample_dpmpp_3m",
    "sample_dpmpp_3m_sde",
    "sample_dpmpp_sde",
    "sample_euler_cfg_pp",
    "sample_ipndm",
    "sample_tuned",
]


def sample_dpmpp_2m(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    model_sampling: str | None = None,
) -> Tensor:
    """DPM-Solver++(2M): second-order multistep, one model call per sigma."""
    return sample_dpm_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        order=2,
        lower_order_final=False,
        model_sampling=model_sampling,
    )


def sample_dpmpp_3m(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    model_sampling: str | None = None,
) -> Tensor:
    """DPM-Solver++(3M): third-order multistep, one model call per sigma."""
    return sample_dpm_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        order=3,
        lower_order_final=False,
        model_sampling=model_sampling,
    )


def sample_ipndm(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    order: int = 4,
    model_sampling: str | None = None,
) -> Tensor:
    """iPNDM: Adams-Bashforth in sigma with fixed weights (order 1-4), one call per sigma."""
    return sample_dpm_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        order=order,
        algorithm="ipndm",
        lower_order_final=False,
        model_sampling=model_sampling,
    )


def sample_deis(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    max_order: int = 3,
    deis_mode: str = "tab",
    model_sampling: str | None = None,
) -> Tensor:
    """DEIS (Zhang & Chen, 2023) as ComfyUI's sample_deis: tAB-DEIS of order up to
    `max_order` (1 to 3), one model call per sigma (`deis_update`).

    As there, the order warms up (1, 2, ... from the first sigma, the first step Euler)
    and is not lowered at the end, except that a final sigma of 0 returns the denoised
    prediction at the last positive sigma. Only deis_mode='tab' (ComfyUI's default) is
    implemented. Its integrals are exact here (ComfyUI sums 10^4 points; on the digits
    model the results differ by ~5e-5 of their size at 10 steps, ~1e-3 at 4, far below
    the solver's error). On a flow model it steps in the face's flow frame (x / alpha and
    sigma / (1 - sigma)), where ComfyUI's takes x and the flow sigma as they are.
    """
    check_choice("deis_mode", deis_mode, ("tab",))
    check_int("max_order", max_order, 1, 3)
    return sample_dpm_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        order=max_order,
        algorithm="deis",
        lower_order_final=False,
        model_sampling=model_sampling,
    )


def sample_dpmpp_2m_sde(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: KNoiseSampler | None = None,
    solver_type: str = "midpoint",
    model_sampling: str | None = None,
) -> Tensor:
    """DPM-Solver++(2M) SDE: the second-order multistep SDE rule, one call per sigma.

    With h = lambda_next - lambda and h_eta = (1 + eta) h, each step is
        x_next = (sigma_next / sigma) e^{-eta h} x + alpha_next (1 - e^{-h_eta}) D
                 + sigma_next sqrt(1 - e^{-2 eta h}) s_noise z,
    with D the denoised output plus the midpoint or Heun correction of k-diffusion's
    `solver_type` (the core's 'dpmsolver' / 'taylor' forms), and z from
    `noise_sampler(sigma, sigma_next)` (default: standard normal from torch's global
    generator; k-diffusion's default is a Brownian tree). eta = 0 is DPM-Solver++(2M).
    """
    forms = {"midpoint": "dpmsolver", "heun": "taylor"}
    if solver_type not in forms:
        raise ValueError(f"solver_type must be one of 'midpoint', 'heun'; got {solver_type!r}")
    return sample_dpm_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        order=2,
        solver_type=forms[solver_type],
        lower_order_final=False,
        model_sampling=model_sampling,
        eta=eta,
        noise_sampler=noise_sampler,
        s_noise=s_noise,
    )


def sample_dpmpp_2m_sde_heun(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: KNoiseSampler | None = None,
    solver_type: str = "heun",
    model_sampling: str | None = None,
) -> Tensor:
    """ComfyUI's name for DPM-Solver++(2M) SDE in its heun form (`sample_dpmpp_2m_sde`
    with solver_type='heun')."""
    return sample_dpmpp_2m_sde(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        eta,
        s_noise,
        noise_sampler,
        solver_type,
        model_sampling,
    )


def sample_dpmpp_3m_sde(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: KNoiseSampler | None = None,
    model_sampling: str | None = None,
) -> Tensor:
    """DPM-Solver++(3M) SDE: the third-order multistep SDE rule, one call per sigma.

    As `sample_dpmpp_2m_sde` with DPM-Solver++(3M)'s rule: the exponential integrals of
    x0_pred's Taylor terms (phi_2 on the first difference, phi_3 on the second, at
    h_eta = (1 + eta) h; the authors' damped second difference), warming up with the
    first-order and the heun-form second-order rule (`SolverOptions`: order=3,
    solver_type='taylor', multistep3='damped'). eta = 0 is the ODE.
    """
    return sample_dpm_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        order=3,
        solver_type="taylor",
        lower_order_final=False,
        model_sampling=model_sampling,
        eta=eta,
        noise_sampler=noise_sampler,
        s_noise=s_noise,
    )


def sample_dpmpp_2s_ancestral(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: KNoiseSampler | None = None,
    model_sampling: str | None = None,
) -> Tensor:
    """DPM-Solver++(2S) ancestral: two calls per step.

    Each step splits sigma -> sigma_next into a deterministic DPM-Solver++(2S) step to
    sigma_down (midpoint in lambda) and noise sigma_up * s_noise * z, sigma_down^2 +
    sigma_up^2 = sigma_next^2 (k-diffusion's get_ancestral_step, eta = 1: DDPM's variance).
    On VP and flow schedules the split is taken in x / alpha (the VE noise levels
    sigma / alpha). eta = 0 is DPM-Solver++(2S).
    """
    return sample_dpm_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        order=2,
        method="singlestep",
        model_sampling=model_sampling,
        eta=eta,
        ancestral=check_float("eta", eta) != 0.0,
        noise_sampler=noise_sampler,
        s_noise=s_noise,
    )


def sample_dpmpp_sde(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: KNoiseSampler | None = None,
    r: float = 0.5,
    model_sampling: str | None = None,
) -> Tensor:
    """DPM-Solver++ SDE (k-diffusion's stochastic DPM-Solver++): two calls per step.

    The stage is a first-order ancestral step to lambda_s + h/2 (noise from
    `noise_sampler(sigma, sigma_stage)`); the step an ancestral step to sigma_next on the
    midpoint combination of the two denoised predictions (noise from
    `noise_sampler(sigma, sigma_next)`). k-diffusion's default noise sampler here is a
    Brownian tree (`BrownianTreeNoiseSampler`), under which the two draws of a step are
    correlated; ours (unless one is given) draws a fresh normal per step and makes the
    step's draw extend the stage's as one Brownian increment, so the two are correlated
    as under a tree. Only r = 1/2.
    """
    if check_float("r", r) != 0.5:
        raise ValueError(f"r (the stage's place in the step) must be 0.5 here; got {r!r}")
    return sample_dpm_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        order=2,
        method="singlestep",
        model_sampling=model_sampling,
        eta=eta,
        noise_sampler=noise_sampler,
        s_noise=s_noise,
    )


def sample_dpmpp_2s(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    model_sampling: str | None = None,
) -> Tensor:
    """DPM-Solver++(2S): second-order singlestep (midpoint in lambda), two calls per step."""
    return sample_dpm_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        order=2,
        method="singlestep",
        model_sampling=model_sampling,
    )


def sample_dpmpp_2m_cfg_pp(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    model_sampling: str | None = None,
) -> Tensor:
    """DPM-Solver++(2M) with CFG++ (Chung et al., 2024; ComfyUI's dpmpp_2m_cfg_pp): one call
    per sigma. The step renoises with the unconditional prediction D_u instead of the
    guided D:
        x_next = D + e^{-h} (x - D_u) + (1 - e^{-h}) / (2r) (D - D_u_prev)
    (VE; `cfg_pp_update`). The model must give D_u too: ComfyUI's model wrapper with
    extra_args['model_options'] (read through its post-CFG hook), or `CFGDenoiser`.
    """
    return sample_dpm_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        order=2,
        lower_order_final=False,
        model_sampling=model_sampling,
        cfg_pp=True,
    )


def sample_euler_cfg_pp(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    model_sampling: str | None = None,
) -> Tensor:
    """First-order CFG++ (DDIM with CFG++; ComfyUI's euler_cfg_pp): x_next = D +
    (sigma_next / sigma) (x - D_u), one call per sigma. The model as for
    `sample_dpmpp_2m_cfg_pp`."""
    return sample_dpm_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        order=1,
        lower_order_final=False,
        model_sampling=model_sampling,
        cfg_pp=True,
    )


def sample_dpm_fast(
    model: Callable[..., Tensor],
    x: Tensor,
    sigma_min: float,
    sigma_max: float,
    n: int,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    eta: float = 0.0,
    s_noise: float = 1.0,
    noise_sampler: Any = None,
    model_sampling: str | None = None,
) -> Tensor:
    """DPM-Solver-fast (the authors' 'fast' method, k-diffusion's and ComfyUI's dpm_fast,
    A1111's "DPM fast"): `n` model calls from sigma_max to sigma_min (no final step to 0)
    in singlestep steps of order 3 (then 2 and 1 to use exactly n calls), uniform in
    log sigma, DPM-Solver's noise form. The ODE only: eta must be 0.
    """
    check_sigma_range(sigma_min, sigma_max)
    n = check_int("n", n, 1)
    sde = [
        f"{name}={value!r}"
        for name, value, ode in (
            ("eta", check_float("eta", eta), 0.0),
            ("s_noise", check_float("s_noise", s_noise), 1.0),
            ("noise_sampler", noise_sampler, None),
        )
        if value != ode
    ]
    if sde:
        raise ValueError(
            f"sample_dpm_fast runs the ODE only: eta must be 0, s_noise 1 and noise_sampler "
            f"None (got {', '.join(sde)}); for an SDE use sample_dpmpp_sde or "
            "sample_dpmpp_3m_sde"
        )
    options = dict(order=3, steps=n, method="singlestep", algorithm="dpmsolver", skip_type="logSNR")
    return _range_run(
        model, x, sigma_min, sigma_max, extra_args, callback, disable, model_sampling, options
    )


def sample_dpm_adaptive(
    model: Callable[..., Tensor],
    x: Tensor,
    sigma_min: float,
    sigma_max: float,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    algorithm: str = "dpmsolver++",
    model_sampling: str | None = None,
) -> Tensor:
    """Adaptive DPM-Solver-12 / -23 from sigma_max to sigma_min (no final step to 0).

    The callback gets one dict per accepted step: the new x and sigma, and the most recent
    denoised prediction (from the step's last model call).
    """
    check_sigma_range(sigma_min, sigma_max)
    options = dict(order=order, method="adaptive", algorithm=algorithm, atol=atol, rtol=rtol)
    return _range_run(
        model, x, sigma_min, sigma_max, extra_args, callback, disable, model_sampling, options
    )


def _range_run(
    model: Callable[..., Tensor],
    x: Tensor,
    sigma_min: float,
    sigma_max: float,
    extra_args: dict[str, Any] | None,
    callback: KCallback | None,
    disable: bool | None,
    model_sampling: str | None,
    options: dict[str, Any],
) -> Tensor:
    """A run of the samplers that plan their own steps over a sigma range (dpm_fast,
    adaptive): k-diffusion's callback dict after each step, with its last denoised
    prediction; a bar over the steps where their number is known (not adaptive's). On a
    flow model a range from sigma = 1 starts at 1 - 1e-4, as the other samplers' grids
    do."""
    check_callback(callback)
    kind = sampling(model, model_sampling)
    if kind == "flow" and sigma_max >= 1.0:
        # Pure noise (alpha = 0) is where neither the noise form nor a singlestep or
        # adaptive step can start; start where ComfyUI starts its SDE samplers.
        sigma_max = FLOW_SDE_START
    schedule = schedule_for(kind, sigma_min, sigma_max)
    run = SolverOptions.of(t_start=sigma_max, t_end=sigma_min, **options)
    # The bar counts steps (each of up to 3 calls for dpm_fast), as the step callback does.
    steps = run.num_steps()
    bar = Progress(steps or 0, disable)
    denoiser = KDenoiser(model, schedule, extra_kwargs(extra_args), {}, None, bar)

    def on_step(step: int, t: float, x_t: Tensor) -> None:
        if steps is not None and step > 0:
            bar.update()
        if step > 0 and callback is not None and denoiser.last is not None:
            sigma = x_t.new_tensor(t)
            callback(
                {
                    "x": x_t,
                    "i": step - 1,
                    "sigma": sigma,
                    "sigma_hat": sigma,
                    "denoised": denoiser.last[1],
                }
            )

    try:
        return sample(denoiser, x, run, callback=on_step)
    finally:
        bar.close()


def sample_tuned(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    *,
    solver: Any,
    model_sampling: str | None = None,
) -> Tensor:
    """A tuned solver (`dpmsolver.optimize_solver`) on its own sigmas (`tuned_sigmas`,
    optionally ending in 0): the grid, solver and per-step coefficients it was tuned with,
    one model call per step (none for an analytic first step). The result equals
    `dpmsolver.sample(model, x, solver=solver)` on the tuned model (x here in k-diffusion's
    scaling, x / alpha)."""
    if solver is None:
        raise TypeError("sample_tuned needs solver= (a TunedSolver from optimize_solver)")
    return sample_dpm_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        disable,
        model_sampling=model_sampling,
        solver=solver,
    )
