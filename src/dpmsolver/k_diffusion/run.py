"""`sample_dpm_solver`: the k-diffusion face's one bridge to the core, which every named
sampler calls (see the package's docstring for the samplers' common signature)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..checks import check_bool, check_float, check_int
from ..core import MAX_STEPS, Evaluator, SolverOptions, StepNoise, check_grid, sample
from ..core.sampler import check_state
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
from .guidance import uncond_source
from .tuned import tuned_options

__all__ = ["SOLVER_DEFAULTS", "KNoiseSampler", "sample_dpm_solver"]

# k-diffusion's noise_sampler(sigma, sigma_next) -> standard normal noise of x's shape.
KNoiseSampler = Callable[[Tensor, Tensor], Tensor]
# sample_dpm_solver's solver arguments with their defaults (its signature's): a tuned
# solver sets them all, so it refuses any given otherwise.
SOLVER_DEFAULTS: dict[str, Any] = dict(
    order=2,
    method="multistep",
    algorithm="dpmsolver++",
    solver_type="dpmsolver",
    lower_order_final=True,
    multistep3="damped",
    corrector="off",
    corrector_variant="bh2",
    eta=0.0,
    noise_sampler=None,
    ancestral=False,
    s_noise=1.0,
    cfg_pp=False,
    analytic_first_step=False,
)


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
    analytic_first_step: bool = False,
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
    `analytic_first_step` takes the first multistep step without a model call (x0_pred = 0
    near pure noise), one call fewer.
    `solver`: a tuned solver (`dpmsolver.optimize_solver`; see `sample_tuned`) instead of
    the solver arguments, which must keep their defaults.
    """
    values = check_grid("sigmas", sigmas, positive=True, final_zero=True).tolist()
    check_callback(callback)
    if len(values) > MAX_STEPS + 2:  # MAX_STEPS steps and the jump to zero
        raise ValueError(
            f"sigmas has {len(values)} entries; at most {MAX_STEPS + 2} ({MAX_STEPS} steps and "
            "a final 0): planning costs host time and memory per step before the first call"
        )
    extra = extra_kwargs(extra_args)
    uncond = uncond_source(model, extra) if check_bool("cfg_pp", cfg_pp) else None
    to_zero = values[-1] == 0.0
    grid = values[:-1] if to_zero else values
    kind = sampling(model, model_sampling)
    grid = _flow_start(grid, kind, check_float("eta", eta), algorithm)
    index = {s: i for i, s in enumerate(grid)}
    # The schedule's range only sets defaults: the grid is given.
    top = grid[0] if len(grid) > 1 or kind == "flow" else 2 * grid[0]
    low = grid[-1] if len(grid) > 1 else 0.5 * grid[0]
    schedule = schedule_for(kind, low, top)
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
        analytic_first_step=analytic_first_step,
    )
    given = dict(args, noise_sampler=noise_sampler, s_noise=s_noise)
    options = _run_options(grid, to_zero, kind, solver, args, given)
    # The bar counts the calls at the grid's sigmas (each step's first, and the final
    # denoising one), as the step callback does; the analytic first step makes none.
    at_grid = 1 if options is None else len(grid) - 1 + to_zero - options.analytic_first_step
    progress = Progress(at_grid, disable)
    denoiser = KDenoiser(model, schedule, extra, index, callback, progress)
    denoiser.uncond = uncond
    try:
        if options is None:
            check_state(x, None)
            ev = Evaluator(denoiser, "data", True)
            out = ev(x, schedule.levels(grid)[0], 0)
            ev.raise_if_nonfinite()
            return out
        if solver is not None:
            return sample(denoiser, x, options)
        noise = _noise(x, noise_sampler, s_noise, options.eta, extra)
        return sample(denoiser, x, options, noise_sampler=noise)
    finally:
        progress.close()


def _run_options(
    grid: list[float],
    to_zero: bool,
    kind: str,
    solver: Any,
    args: dict[str, Any],
    given: dict[str, Any],
) -> SolverOptions | None:
    """The run's options on `grid`: the tuned solver's (refusing `given` options that
    differ from the defaults) or `args`'; None for a one-jump grid (the denoised
    prediction at its one sigma)."""
    if len(grid) == 1:
        return None
    if solver is not None:
        changed = [k for k, value in given.items() if value != SOLVER_DEFAULTS[k]]
        return tuned_options(solver, grid, to_zero, kind, changed)
    if args["method"] == "multistep":
        # As in k-diffusion, a grid shorter than the order is run at the order it has
        # room for (multistep warms up one order per step); the order given is checked
        # first, with the options' own bounds.
        SolverOptions.of(**args)
        args = dict(args, order=min(args["order"], len(grid) - 1))
    return SolverOptions.of(timesteps=tuple(grid), denoise_to_zero=to_zero, **args)


def _flow_start(grid: list[float], kind: str, eta: float, algorithm: str) -> list[float]:
    """The grid, starting at sigma = 1 - 1e-4 instead of 1 on a flow model where the run
    cannot start from pure noise: an SDE step from there spans an infinite lambda interval
    and would forget x for any eta > 0, and iPNDM, DEIS and the noise form divide by
    alpha = 0. ComfyUI starts its SDE samplers there too."""
    cannot = eta > 0 or algorithm in ("ipndm", "deis", "dpmsolver")
    if kind == "flow" and grid[0] >= 1.0 and len(grid) > 1 and cannot:
        return [FLOW_SDE_START, *grid[1:]]
    return grid


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
