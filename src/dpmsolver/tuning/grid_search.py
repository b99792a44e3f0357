"""Training-free time-grid optimisation for a given model, solver and model-call budget.

    tuned = dpm.optimize_time_grid(model, nfe=6, shape=(4, 64, 64), algorithm="ipndm", order=3)
    x0 = dpm.sample(model, x_T, timesteps=tuned.times, algorithm="ipndm", order=3)

Three stages, all on a few pilot trajectories drawn from a seed:
1. GITS-style dynamic programme (Chen et al., 2024, "On the trajectory regularity of
   ODE-based diffusion sampling"): a fine reference trajectory is recorded at `candidates`
   times; a coarse step i -> j costs the RMS error of one first-order (DDIM) step from the
   reference state at i to the reference state at j (free: the model output at i is
   known). The cheapest path with exactly `steps` steps is one proposal (steps = nfe, or
   nfe + 1 with `analytic_first_step=True`, whose first step costs no call).
2. The proposal and the standard grids (every skip type but exponential, the logSNR grid
   under another name: logSNR, time-uniform, time-quadratic, karras, beta, kl_optimal) are
   scored by the solver's own end-point error on the pilots; the best one is kept. (Local
   costs ignore how a learned network's errors propagate, so the DP grid alone can lose
   to a standard grid on an imperfect network; this stage makes the result never worse
   than the best standard grid on the pilots.)
3. Coordinate descent of its inner points in lambda, moving each by a fraction of the
   neighbouring gap (0.3, then 0.15, then 0.07), `sweeps` sweeps per fraction at most.

Every model call is counted and reported (`TunedGrid.model_calls`); the total is at most
3 * candidates * substeps + candidates (reference) + 7 * nfe (scoring)
+ 3 * sweeps * 2 * (steps - 1) * nfe (descent).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..checks import check_int
from ..core import (
    SKIP_TYPES,
    DiffusionModel,
    NoiseSchedule,
    Sampler,
    SolverOptions,
    check_model,
    resolve_times,
    time_grid,
)
from ..noise.start import start_noise
from ..tools.measure import counting, rms
from .pilots import PilotReference, pilot_reference
from .values import TunedGrid

__all__ = ["optimize_time_grid"]

# Options the tuner sets itself: the grid it tunes, and the method it tunes it for.
_SET_HERE = ("steps", "timesteps", "sigmas", "skip_type", "t_start", "t_end", "method")


@torch.no_grad()
def optimize_time_grid(
    model: DiffusionModel,
    nfe: int,
    solver: SolverOptions | None = None,
    *,
    shape: Sequence[int] | None = None,
    x_T: Tensor | None = None,
    pilots: int = 16,
    seed: int = 0,
    candidates: int = 64,
    substeps: int = 3,
    sweeps: int = 2,
    t_start: float | None = None,
    t_end: float | None = None,
    reference: PilotReference | None = None,
    **solver_options: Any,
) -> TunedGrid:
    """The time grid with `nfe` model calls that minimises the solver's error on pilots.

    Args:
        model: any `DiffusionModel` (a `Denoiser` around a network, or a built-in model).
        nfe: the model-call budget (multistep: one call per step, none for the first
            with `analytic_first_step=True`), >= 2.
        shape: shape of one sample (without batch); pilots are sigma_T * N(0, I) from
            `seed`. Or give the pilot starting states as `x_T`.
        pilots: number of pilot trajectories.
        seed: the seed that draws them; the result is a deterministic function of
            (model, nfe, options, seed).
        candidates: fine candidate times (karras spacing) the dynamic programme picks from.
        substeps: DPM-Solver-3 steps per candidate interval of the reference trajectory.
        sweeps: coordinate-descent sweeps per step fraction (0: no descent).
        t_start: where the pilots start (default the schedule's t_max).
        t_end: where they end (default the schedule's t_min).
        reference: a shared `pilot_reference` (its pilots, times and end states are used
            instead of x_T / shape / pilots / seed / candidates / substeps / t_start /
            t_end, and its model calls are not counted again).
        solver: the multistep solver the grid is tuned for, as a `SolverOptions` value;
            its grid (steps, skip_type, times) is set here.
        **solver_options: the solver's options by name (algorithm, order, corrector,
            lower_order_final, ...), over `solver`.
    """
    model = check_model(model)
    nfe = check_int("nfe", nfe, 2)  # a 1-call grid has nothing to optimise
    check_int("pilots", pilots, 1)
    check_int("substeps", substeps, 1)
    check_int("sweeps", sweeps, 0)
    for name in _SET_HERE:
        if name in solver_options:
            raise ValueError(
                f"{name} is set by optimize_time_grid; pass the solver's other options only"
            )
    options = SolverOptions.of(solver, **solver_options)
    if options.method != "multistep" or options.has_grid:
        raise ValueError(
            "optimize_time_grid tunes a multistep grid; give a multistep solver without "
            f"timesteps or sigmas (got method={options.method!r})"
        )
    schedule: NoiseSchedule = model.schedule
    steps = options.steps_for_calls(nfe)  # nfe + 1 with the analytic first step
    reference, reference_calls, (t_s, t_e) = _reference_for(
        model, reference, nfe, steps, x_T, shape, pilots, seed, candidates, substeps, t_start, t_end
    )
    x_T = reference.x_start
    counted, calls = counting(model)
    # Solver options are checked once, here, with the sampler's own messages.
    Sampler(counted, options, steps=steps, t_start=t_s, t_end=t_e)

    proposals = _proposals(reference, schedule, nfe, steps, t_s, t_e)
    reference_end = reference.end

    # 3. Score the proposals by the solver's end-point error; descend from the best.
    def error(times: list[float]) -> float:
        out = Sampler(counted, options, timesteps=tuple(times))(x_T)
        e = rms(out, reference_end)
        return e if math.isfinite(e) else math.inf

    scores = {name: error(times) for name, times in proposals.items()}
    start = min(scores, key=lambda name: (scores[name], name))
    initial = scores[start]
    grid, best, trials = _descend(error, schedule, proposals[start], initial, steps, sweeps)
    return TunedGrid(
        times=grid,
        nfe=nfe,
        options={k: v for k, v in options.changed().items() if k not in _SET_HERE},
        pilot_error=best,
        initial_error=initial,
        model_calls=calls[0] + reference_calls,
        seed=seed if reference.seed is None else reference.seed,
        details=dict(
            pilots=int(x_T.shape[0]),
            candidates=len(reference.times) - 1,
            substeps=reference.substeps,
            reference_calls=reference_calls,
            sweeps=sweeps,
            trials=trials,
            start=start,
            start_errors=scores,
            dp_grid=proposals["dp"],
        ),
    )


def _reference_for(
    model: DiffusionModel,
    reference: PilotReference | None,
    nfe: int,
    steps: int,
    x_T: Tensor | None,
    shape: Sequence[int] | None,
    pilots: int,
    seed: int,
    candidates: int,
    substeps: int,
    t_start: float | None,
    t_end: float | None,
) -> tuple[PilotReference, int, tuple[float, float]]:
    """The caller's shared reference (its calls paid by whoever computed it: 0 here), or a
    new one from the pilot arguments; with the calls it cost and the times it spans."""
    if reference is not None:
        if x_T is not None or t_start is not None or t_end is not None:
            raise ValueError("give reference or x_T / t_start / t_end, not both")
        reference.check_model(model)
        return reference, 0, (reference.times[0], reference.times[-1])
    check_int("candidates", candidates, 2)
    if steps > candidates:
        raise ValueError(
            f"nfe={nfe} needs {steps} steps, more than candidates={candidates}: the grid's "
            "times are picked among the candidate times; raise candidates (each costs "
            f"{3 * substeps + 1} reference calls) or lower nfe"
        )
    t_s, t_e = resolve_times(model.schedule, t_start, t_end)
    if x_T is None:
        if shape is None:
            raise ValueError("give shape (one sample's shape) or the pilot states x_T")
        x_T = start_noise(model, pilots, seed, shape, t=t_s)
    reference = pilot_reference(
        model, x_T=x_T, seed=seed, candidates=candidates, substeps=substeps, t_start=t_s, t_end=t_e
    )
    return reference, reference.model_calls, (t_s, t_e)


def _descend(
    error: Callable[[list[float]], float],
    schedule: NoiseSchedule,
    grid: list[float],
    best: float,
    steps: int,
    sweeps: int,
) -> tuple[list[float], float, int]:
    """Stage 3: coordinate descent of the inner points in lambda, each moved by a fraction
    of the gap to its neighbour (0.3, 0.15, 0.07; `sweeps` sweeps per fraction at most,
    the first improving move taken). Returns the grid, its error and the trials run."""
    lam = schedule.lambda_(torch.tensor(grid, dtype=torch.float64)).tolist()
    trials = 0
    for frac in (0.3, 0.15, 0.07):
        for _ in range(sweeps):
            improved = False
            for k in range(1, steps):
                for sign in (1.0, -1.0):
                    gap = lam[k + 1] - lam[k] if sign > 0 else lam[k - 1] - lam[k]
                    trial = [*lam]
                    trial[k] = lam[k] + frac * gap
                    times = schedule.inverse_lambda(torch.tensor(trial, dtype=torch.float64))
                    times_list = [grid[0], *times[1:-1].tolist(), grid[-1]]
                    trials += 1
                    e = error(times_list)
                    if e < best:
                        best, lam, grid, improved = e, trial, times_list, True
                        break
            if not improved:
                break
    return grid, best, trials


def _proposals(
    reference: PilotReference, schedule: NoiseSchedule, nfe: int, steps: int, t_s: float, t_e: float
) -> dict[str, list[float]]:
    """Stages 1-2: the GITS grid (the cheapest path of first-order steps between the
    reference's candidate times) and the standard grids, each with `steps` steps."""
    n = len(reference.times)
    if steps > n - 1:
        raise ValueError(
            f"nfe={nfe} needs {steps} steps, more than the reference's {n - 1} candidate "
            "intervals; compute the reference with more candidates or lower nfe"
        )
    proposals = {"dp": reference.dp_grid(steps)}
    for skip in SKIP_TYPES:
        if skip != "exponential":  # the logSNR grid under another name
            proposals[skip] = time_grid(schedule, skip, t_s, t_e, steps).tolist()
    return proposals
