"""k-diffusion-style samplers: drop-in functions for code that calls `k_diffusion.sampling`.

Every sampler has the signature `(model, x, sigmas, extra_args=None, callback=None,
disable=None, ..., model_sampling=None)`:
    model(x, sigma, **extra_args) -> denoised, a denoiser D(x, sigma) in VE scaling
        (x = x0 + sigma eps; `sigma` has shape (batch,)), or, with model_sampling='flow',
        on a flow-matching model as ComfyUI passes them (x = (1 - sigma) x0 + sigma eps,
        sigma in (0, 1], the denoiser still returning x0);
    sigmas: descending noise levels, normally ending in 0 (then the last step returns the
        model's denoised prediction, as k-diffusion does);
    callback: called once per sigma with {'x', 'i', 'sigma', 'sigma_hat', 'denoised'};
    disable: True hides the progress bar (shown with tqdm, when installed).
    model_sampling: 've' or 'flow'; None (default) reads it from a ComfyUI model wrapper
        (`model.inner_model.inner_model.model_sampling`, as ComfyUI's KSamplerX0Inpaint
        around its CFGGuider has it, or `model.inner_model.model_sampling`; of class
        CONST: flow) and is 've' otherwise.
They run the core sampler (`dpmsolver.sample`) on a `VESchedule` or a `FlowSchedule`, so
the update rules are the same as everywhere else in dpmsolver.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ..checks import check_bool, check_choice, check_device, check_float, check_int
from ..core import (
    MAX_STEPS,
    Evaluator,
    FlowSchedule,
    Level,
    ModelOutputError,
    NoiseSchedule,
    SolverOptions,
    StepNoise,
    Target,
    VESchedule,
    check_grid,
    sample,
)
from ..core.kernel import tensor_version
from ..core.sampler import check_state
from ..noise.brownian import BrownianTreeNoiseSampler
from ..tools.progress import Progress

__all__ = [
    "BrownianTreeNoiseSampler",
    "CFGDenoiser",
    "get_sigmas_exponential",
    "get_sigmas_karras",
    "get_sigmas_logsnr",
    "sample_deis",
    "sample_dpm_adaptive",
    "sample_dpm_solver",
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
    "tuned_sigmas",
]

KCallback = Callable[[dict[str, Any]], None]
# k-diffusion's noise_sampler(sigma, sigma_next) -> standard normal noise of x's shape.
KNoiseSampler = Callable[[Tensor, Tensor], Tensor]


def _extra(extra_args: Any) -> dict[str, Any]:
    """extra_args as a dict of keyword arguments for the model (None: none)."""
    if extra_args is None:
        return {}
    if not isinstance(extra_args, Mapping) or not all(isinstance(k, str) for k in extra_args):
        raise TypeError(
            f"extra_args must be a dict of keyword arguments for the model (str keys); got "
            f"{type(extra_args).__name__} {extra_args!r:.60}"
        )
    return dict(extra_args)


def _check_callback(callback: object) -> None:
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None; got {type(callback).__name__}")


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def _check_range(n: int, sigma_min: float, sigma_max: float) -> None:
    check_int("n", n, 1)
    check_float("sigma_min", sigma_min, positive=True)
    check_float("sigma_max", sigma_max, positive=True)
    if not sigma_min < sigma_max:
        raise ValueError(f"need sigma_min < sigma_max; got {sigma_min!r} and {sigma_max!r}")


def get_sigmas_karras(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: Any = "cpu"
) -> Tensor:
    """n sigmas spaced uniformly in sigma^(1/rho) (Karras et al. 2022), then a final 0."""
    _check_range(n, sigma_min, sigma_max)
    check_float("rho", rho, positive=True)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    sigmas[0], sigmas[-1] = sigma_max, sigma_min if n > 1 else sigma_max
    device = check_device("device", device)
    return _append_zero(sigmas).to(device=device, dtype=torch.get_default_dtype())


def get_sigmas_exponential(
    n: int, sigma_min: float, sigma_max: float, device: Any = "cpu"
) -> Tensor:
    """n sigmas spaced uniformly in log sigma, then a final 0."""
    _check_range(n, sigma_min, sigma_max)
    sigmas = torch.exp(
        torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64)
    )
    device = check_device("device", device)
    return _append_zero(sigmas).to(device=device, dtype=torch.get_default_dtype())


def get_sigmas_logsnr(n: int, sigma_min: float, sigma_max: float, device: Any = "cpu") -> Tensor:
    """n sigmas uniform in lambda = -log sigma (DPM-Solver's logSNR grid), then a final 0.

    In VE scaling lambda = -log sigma, so this is the same grid as `get_sigmas_exponential`.
    """
    return get_sigmas_exponential(n, sigma_min, sigma_max, device)


class _KDenoiser:
    """A k-diffusion denoiser seen as a dpmsolver DiffusionModel on a VE or flow schedule
    whose time is the caller's sigma (errors name it so)."""

    time_name = "sigma"

    def __init__(
        self,
        model: Callable[..., Tensor],
        schedule: NoiseSchedule,
        extra_args: dict[str, Any],
        index: dict[float, int],
        callback: KCallback | None,
        progress: Progress,
    ) -> None:
        self.model = model
        self.schedule: NoiseSchedule = schedule
        self.extra_args = extra_args
        self.index = index
        self.callback = callback
        self.progress = progress
        self.last: tuple[float, Tensor] | None = None
        # CFG++ runs: where the unconditional prediction of the last call is read from.
        self.uncond: Callable[[], Any] | None = None

    @property
    def gives_pair(self) -> bool:
        return self.uncond is not None

    def predict_pair(self, x: Tensor, level: Level) -> tuple[Tensor, Tensor]:
        """(guided, unconditional) denoised predictions of one model call (CFG++)."""
        guided = self(x, level, "data")
        uncond = self.uncond() if self.uncond is not None else None
        if not isinstance(uncond, Tensor):
            raise ModelOutputError(
                f"a CFG++ sampler found no unconditional prediction after the model call at "
                f"sigma={level.t:.6g} (got {type(uncond).__name__}): with ComfyUI's "
                "extra_args['model_options'] the post-CFG hook gives it; otherwise use "
                "dpmsolver.k_diffusion.CFGDenoiser (or a model that sets .uncond_denoised)"
            )
        return guided, uncond

    def __call__(self, x: Tensor, level: Level, target: Target) -> Tensor:
        # The grid's times are the sigmas the caller gave (VE: sigma; flow: the flow sigma),
        # in x's dtype, or float32 for half-precision x (whose range stops at 65504).
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        sigma_in = torch.full((x.shape[0],), level.t, dtype=dtype, device=x.device)
        denoised = self.model(x, sigma_in, **self.extra_args)
        if not isinstance(denoised, Tensor) or denoised.shape != x.shape:
            return denoised  # the sampler reports it with the step and time
        self.last = (level.t, denoised)
        i = self.index.get(level.t)
        if i is not None:
            self.progress.update()
            if self.callback is not None:
                sigma = x.new_tensor(level.t)
                versions = [tensor_version(x), tensor_version(denoised)]
                self.callback(
                    {"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised}
                )
                for name, v, value in (("x", versions[0], x), ("denoised", versions[1], denoised)):
                    if v is not None and value._version != v:
                        raise ValueError(
                            f"callback changed {name} in place at step {i} (sigma={level.t:.6g}); "
                            "the sampler still needs it: read it, or change a copy"
                        )
        if target == "data":
            return denoised
        return (x - level.alpha * denoised) / level.sigma


@functools.lru_cache(maxsize=16)
def _ve_schedule(sigma_min: float, sigma_max: float) -> VESchedule:
    """One schedule per sigma range, so repeated runs on the same grid reuse their plan
    (plans are cached per schedule object)."""
    return VESchedule(sigma_min, sigma_max)


@functools.lru_cache(maxsize=16)
def _flow_schedule(sigma_min: float, sigma_max: float) -> FlowSchedule:
    """The flow schedule whose time is the flow sigma (alpha = 1 - sigma), on this range."""
    return FlowSchedule(shift=1.0, t_min=sigma_min, t_max=sigma_max)


MODEL_SAMPLINGS = ("ve", "flow")
# Where the SDE samplers start a flow grid that starts at sigma = 1 (ComfyUI's
# offset_first_sigma_for_snr: its percent_to_sigma(1e-4) for flow models).
FLOW_SDE_START = 1.0 - 1e-4


def _sampling(model: Any, model_sampling: str | None) -> str:
    """'ve' or 'flow': as given, else read from a ComfyUI model wrapper (its inner model's
    model_sampling of class CONST, ComfyUI's flow matching), else 've'."""
    if model_sampling is not None:
        if model_sampling not in MODEL_SAMPLINGS:
            raise ValueError(
                f"model_sampling must be one of 've', 'flow' or None; got {model_sampling!r}"
            )
        return model_sampling
    # ComfyUI hands samplers KSamplerX0Inpaint(CFGGuider(...)): the model sampling is on
    # the guider's inner model; simpler wrappers hold it one level up.
    inner = getattr(model, "inner_model", None)
    for holder in (getattr(inner, "inner_model", None), inner):
        found = getattr(holder, "model_sampling", None)
        if found is not None:
            names = {c.__name__ for c in type(found).__mro__}
            return "flow" if "CONST" in names else "ve"
    return "ve"


def _schedule(sampling: str, sigma_min: float, sigma_max: float) -> NoiseSchedule:
    """The schedule of a sigma range: VE (any sigma > 0) or flow (sigmas in (0, 1])."""
    if sampling == "ve":
        return _ve_schedule(sigma_min, sigma_max)
    if sigma_max > 1.0:
        raise ValueError(
            f"sigmas must lie in (0, 1] for a flow model (model_sampling='flow'); the grid "
            f"reaches {sigma_max!r}"
        )
    return _flow_schedule(sigma_min, sigma_max)


def sample_dpm_solver(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: KCallback | None = None,
    disable: bool | None = None,
    order: int = 2,
    method: str = "multistep",
    algorithm: str = "dpmsolver++",
    solver_type: str = "dpmsolver",
    lower_order_final: bool = True,
    multistep3: str = "damped",
    corrector: str = "off",
    corrector_variant: str = "bh2",
    model_sampling: str | None = None,
    eta: float = 0.0,
    noise_sampler: KNoiseSampler | None = None,
    ancestral: bool = False,
    s_noise: float = 1.0,
    cfg_pp: bool = False,
    solver: Any = None,
) -> Tensor:
    """DPM-Solver(++) of any order and method on a k-diffusion sigma grid.

    method 'multistep' takes one model call per sigma; 'singlestep' takes a step of order
    `order` (that many calls) per interval, with intermediate points uniform in lambda.
    A final sigma of 0 is reached by returning the denoised prediction at the last
    positive sigma. algorithm='ipndm' or 'deis' and the UniC `corrector` ('all' or 'low_noise',
    multistep; no extra calls) are as in `dpmsolver.sample`. `eta` > 0 runs the SDE
    solvers of `dpmsolver.sample` (multistep orders 1-3; singlestep orders 1-2, with
    `ancestral`), their noise scaled by `s_noise` and drawn from
    `noise_sampler(sigma, sigma_next)` (default: standard normal per step, from a generator
    seeded with extra_args['seed'] when given, as ComfyUI passes it, else torch's global
    one). `cfg_pp` runs the multistep CFG++ rules (see `sample_dpmpp_2m_cfg_pp`).
    `solver`: a tuned solver (`dpmsolver.optimize_solver`; see `sample_tuned`) instead of
    the solver arguments, which must keep their defaults.
    """
    values = check_grid("sigmas", sigmas, positive=True, final_zero=True).tolist()
    _check_callback(callback)
    if len(values) > MAX_STEPS + 2:  # MAX_STEPS steps and the jump to zero
        raise ValueError(
            f"sigmas has {len(values)} entries; at most {MAX_STEPS + 2} ({MAX_STEPS} steps and "
            "a final 0): planning costs host time and memory per step before the first call"
        )
    extra = _extra(extra_args)
    uncond = _uncond_source(model, extra) if check_bool("cfg_pp", cfg_pp) else None
    to_zero = values[-1] == 0.0
    grid = values[:-1] if to_zero else values
    sampling = _sampling(model, model_sampling)
    if sampling == "flow" and grid[0] >= 1.0 and len(grid) > 1 and check_float("eta", eta) > 0:
        # An SDE step from pure noise spans an infinite lambda interval and would forget x
        # for any eta > 0; ComfyUI starts its SDE samplers at sigma = 1 - 1e-4 instead.
        grid = [FLOW_SDE_START, *grid[1:]]
    index = {s: i for i, s in enumerate(grid)}
    progress = Progress(len(grid), disable)
    # The schedule's range only sets defaults: the grid is given.
    top = grid[0] if len(grid) > 1 or sampling == "flow" else 2 * grid[0]
    low = grid[-1] if len(grid) > 1 else 0.5 * grid[0]
    schedule = _schedule(sampling, low, top)
    denoiser = _KDenoiser(model, schedule, extra, index, callback, progress)
    denoiser.uncond = uncond
    try:
        if len(grid) == 1:  # one jump to sigma = 0: the denoised prediction, checked
            check_state(x, None)
            ev = Evaluator(denoiser, "data", True)
            out = ev(x, schedule.levels(grid)[0], 0)
            ev.raise_if_nonfinite()
            return out
        args: dict[str, Any] = dict(
            order=order,
            method=method,
            algorithm=algorithm,
            solver_type=solver_type,
            lower_order_final=lower_order_final,
            multistep3=multistep3,
            corrector=corrector,
            corrector_variant=corrector_variant,
            eta=eta,
            ancestral=ancestral,
            cfg_pp=cfg_pp,
        )
        if solver is not None:
            given = dict(args, noise_sampler=noise_sampler, s_noise=s_noise)
            return sample(denoiser, x, _tuned(solver, grid, to_zero, sampling, given))
        if method == "multistep":
            # As in k-diffusion, a grid shorter than the order is run at the order it has
            # room for (multistep warms up one order per step); the order given is checked
            # first, with the options' own bounds.
            SolverOptions.of(**args)
            args["order"] = min(order, len(grid) - 1)
        options = SolverOptions.of(timesteps=tuple(grid), denoise_to_zero=to_zero, **args)
        noise = _noise(x, noise_sampler, s_noise, options.eta, extra)
        return sample(denoiser, x, options, noise_sampler=noise)
    finally:
        progress.close()


def tuned_sigmas(
    solver: Any, model_sampling: str = "ve", *, final_zero: bool = False, device: Any = "cpu"
) -> Tensor:
    """The k-diffusion sigmas of a tuned solver (`dpmsolver.optimize_solver`): its noise
    levels sigma_t / alpha_t ('ve'), or the flow sigmas sigma_t ('flow'), float64.
    `final_zero` appends 0: the run then ends with the denoised prediction at the last
    sigma, one model call more."""
    check_choice("model_sampling", model_sampling, MODEL_SAMPLINGS)
    final_zero, device = check_bool("final_zero", final_zero), check_device("device", device)
    if not hasattr(solver, "sigmas") or not callable(getattr(solver, "solver", None)):
        raise TypeError(
            f"solver must be a TunedSolver (optimize_solver); got {type(solver).__name__}"
        )
    values = [float(v) for v in solver.sigmas]
    if model_sampling == "flow":
        values = [v / (1.0 + v) if math.isfinite(v) else 1.0 for v in values]
    if final_zero:
        values.append(0.0)
    return torch.tensor(values, dtype=torch.float64, device=device)


def _tuned(
    solver: Any, grid: list[float], to_zero: bool, sampling: str, args: dict[str, Any]
) -> SolverOptions:
    """The tuned solver's options on the face's grid, which must be its sigmas."""
    if not hasattr(solver, "sigmas") or not callable(getattr(solver, "solver", None)):
        raise TypeError(
            f"solver must be a TunedSolver (optimize_solver); got {type(solver).__name__}"
        )
    # sample_dpm_solver's own defaults: a tuned solver sets every solver argument.
    defaults = inspect.signature(sample_dpm_solver).parameters
    changed = [k for k, value in args.items() if value != defaults[k].default]
    if changed:
        raise ValueError(
            f"solver (a tuned solver) sets the solver; {', '.join(changed)} must keep their "
            "defaults with it"
        )
    options = SolverOptions.of(solver)  # a TunedSolver's solver(), checked
    want = tuned_sigmas(solver, sampling).tolist()
    if len(want) != len(grid) or not all(
        math.isclose(a, b, rel_tol=1e-6) for a, b in zip(want, grid, strict=False)
    ):
        raise ValueError(
            f"sigmas must be the tuned solver's own (tuned_sigmas(solver, {sampling!r}), "
            f"{len(want)} values from {want[0]:.6g} to {want[-1]:.6g}, optionally with a final "
            f"0); got {len(grid)} values from {grid[0]:.6g} to {grid[-1]:.6g}"
        )
    return SolverOptions.of(
        options, timesteps=tuple(grid), denoise_to_zero=to_zero or options.denoise_to_zero
    )


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


def _noise(
    x: Tensor, noise_sampler: KNoiseSampler | None, s_noise: float, eta: float, extra: dict
) -> Callable[[float, float], Tensor] | None:
    """The core's noise sampler (float times -> noise) for an SDE run: the caller's
    `noise_sampler(sigma, sigma_next)` on tensors, or a fresh normal draw per step (from a
    generator seeded with extra_args['seed'] when given), times s_noise; None for the ODE."""
    scale = check_float("s_noise", s_noise)
    if scale < 0:
        raise ValueError(f"s_noise must be >= 0; got {s_noise!r}")
    if noise_sampler is not None and not callable(noise_sampler):
        raise TypeError(f"noise_sampler must be callable; got {type(noise_sampler).__name__}")
    if eta == 0.0:
        return None  # the ODE: no noise to draw
    if noise_sampler is not None:
        caller = noise_sampler

        def draw(s: float, t: float) -> Tensor:
            # k-diffusion passes 0-d tensors; host ones here, so the loop reads nothing
            # back from the device (a Brownian tree wants host floats anyway).
            z = caller(torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64))
            return z * scale if scale != 1.0 and isinstance(z, Tensor) else z

        return draw
    seed = extra.get("seed")
    gen = None
    if seed is not None:
        seed = check_int("extra_args['seed']", seed, 0, 2**64 - 1)
        gen = torch.Generator(device=x.device).manual_seed(seed)
    # A fresh normal per step in x's dtype (as ComfyUI draws it), Brownian within a step.
    steps = StepNoise(x, gen, dtype=x.dtype)
    if scale == 1.0:
        return steps
    return lambda s, t: steps(s, t) * scale


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


def _uncond_source(model: Any, extra: dict[str, Any]) -> Callable[[], Any]:
    """Where a CFG++ run reads each call's unconditional prediction: ComfyUI's post-CFG
    hook when extra_args has 'model_options' (installed in a copy, with ComfyUI's cfg1
    shortcut off so the unconditional branch always runs), else the model's
    .uncond_denoised (`CFGDenoiser`)."""
    if "model_options" in extra:
        options = extra["model_options"]
        if not isinstance(options, Mapping):
            raise TypeError(
                f"extra_args['model_options'] must be a dict; got {type(options).__name__}"
            )
        seen: dict[str, Any] = {}

        def hook(args: dict[str, Any]) -> Any:
            seen["uncond"] = args["uncond_denoised"]
            return args["denoised"]

        options = dict(options)
        options["sampler_post_cfg_function"] = [
            *options.get("sampler_post_cfg_function", []),
            hook,
        ]
        options["disable_cfg1_optimization"] = True
        extra["model_options"] = options
        return lambda: seen.pop("uncond", None)
    return lambda: getattr(model, "uncond_denoised", None)


class CFGDenoiser:
    """Classifier-free guidance of a k-diffusion denoiser, one call on the doubled batch:
        D(x, sigma) = D_u + cond_scale (D_c - D_u),
    with D_u, D_c = inner_model([x, x], [sigma, sigma], cond=[uncond, cond], **kwargs).
    Called as model(x, sigma, cond=..., uncond=..., cond_scale=...), i.e. with
    extra_args={'cond': c, 'uncond': u, 'cond_scale': w}; cond and uncond are tensors with
    x's batch (concatenated on dim 0). After each call `uncond_denoised` holds D_u, which
    the CFG++ samplers read.
    """

    def __init__(self, inner_model: Callable[..., Tensor]) -> None:
        if not callable(inner_model):
            raise TypeError(f"inner_model must be callable; got {type(inner_model).__name__}")
        self.inner_model = inner_model
        self.uncond_denoised: Tensor | None = None

    def __call__(
        self,
        x: Tensor,
        sigma: Tensor,
        cond: Tensor,
        uncond: Tensor,
        cond_scale: float,
        **kwargs: Any,
    ) -> Tensor:
        scale = check_float("cond_scale", cond_scale)
        for name, c in (("cond", cond), ("uncond", uncond)):
            if not isinstance(c, Tensor) or c.dim() == 0 or c.shape[0] != x.shape[0]:
                got = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
                raise ValueError(
                    f"{name} must be a tensor with x's batch {x.shape[0]} on dim 0; got {got}"
                )
        out = self.inner_model(
            torch.cat([x, x]), torch.cat([sigma, sigma]), cond=torch.cat([uncond, cond]), **kwargs
        )
        if not isinstance(out, Tensor) or out.shape[0] != 2 * x.shape[0]:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ModelOutputError(
                f"inner_model returned {got} for the doubled batch of {2 * x.shape[0]}"
            )
        d_uncond, d_cond = out.chunk(2)
        self.uncond_denoised = d_uncond
        return d_uncond + scale * (d_cond - d_uncond)


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
    check_float("sigma_min", sigma_min, positive=True)
    check_float("sigma_max", sigma_max, positive=True)
    if not sigma_min < sigma_max:
        raise ValueError(f"need sigma_min < sigma_max; got {sigma_min!r} and {sigma_max!r}")
    _check_callback(callback)
    schedule = _schedule(_sampling(model, model_sampling), sigma_min, sigma_max)
    progress = Progress(0, disable)
    denoiser = _KDenoiser(model, schedule, _extra(extra_args), {}, None, progress)

    def on_step(step: int, t: float, x_t: Tensor) -> None:
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
        options = SolverOptions.of(
            order=order,
            method="adaptive",
            algorithm=algorithm,
            t_start=sigma_max,
            t_end=sigma_min,
            atol=atol,
            rtol=rtol,
        )
        return sample(denoiser, x, options, callback=on_step)
    finally:
        progress.close()
