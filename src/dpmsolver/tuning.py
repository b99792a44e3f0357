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
2. The proposal and the standard grids (logSNR, time-uniform, time-quadratic, karras) are
   scored by the solver's own end-point error on the pilots; the best one is kept. (Local
   costs ignore how a learned network's errors propagate, so the DP grid alone can lose
   to a standard grid on an imperfect network; this stage makes the result never worse
   than the best standard grid on the pilots.)
3. Coordinate descent of its inner points in lambda, moving each by a fraction of the
   neighbouring gap (0.3, then 0.15, then 0.07), `sweeps` sweeps per fraction at most.

Every model call is counted and reported (`TunedGrid.model_calls`); the total is at most
3 * candidates * substeps + candidates (reference) + 5 * nfe (scoring)
+ 3 * sweeps * 2 * (steps - 1) * nfe (descent).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._checks import check_int
from .bench import _rms, counting, steps_for_calls
from .coefficients import multistep_update
from .grids import SKIP_TYPES, time_grid
from .model import DiffusionModel
from .sampler import Sampler, _resolve_times
from .schedules import NoiseSchedule

__all__ = ["TunedGrid", "optimize_time_grid"]

_FORBIDDEN = ("steps", "timesteps", "sigmas", "skip_type", "t_start", "t_end", "method")


@dataclass
class TunedGrid:
    """An optimised time grid (`times`, a plain list of steps + 1 floats, t_start first) and
    how it was found: the solver options it was tuned for, the pilots' RMS error of the
    first (dynamic-programme) grid and of the final one, and the model calls spent."""

    times: list[float]
    nfe: int
    options: dict[str, Any]
    pilot_error: float
    initial_error: float
    model_calls: int
    seed: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self, path: str | Path | None = None) -> str:
        """The grid and its provenance as JSON (written to `path` if given)."""
        text = json.dumps(asdict(self), indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> TunedGrid:
        """Read what `to_json` wrote (a path or the JSON text)."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text()
        return cls(**json.loads(text))


@torch.no_grad()
def optimize_time_grid(
    model: DiffusionModel,
    nfe: int,
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
    **options: Any,
) -> TunedGrid:
    """The time grid with `nfe` model calls that minimises the solver's error on pilots.

    Args:
        model: any `DiffusionModel` (a `Denoiser` around a network, or a built-in model).
        nfe: the model-call budget (multistep: one call per step, none for the first
            with `analytic_first_step=True`), >= 2.
        shape: shape of one sample (without batch); pilots are sigma_T * N(0, I) from
            `seed`. Or give the pilot starting states as `x_T`.
        pilots, seed: number of pilot trajectories and the seed that draws them; the
            result is a deterministic function of (model, nfe, options, seed).
        candidates: fine candidate times (karras spacing) the dynamic programme picks from.
        substeps: DPM-Solver-3 steps per candidate interval of the reference trajectory.
        sweeps: coordinate-descent sweeps per step fraction (0: no descent).
        t_start, t_end: default the schedule's t_max and t_min.
        **options: the multistep solver the grid is tuned for, as `dpmsolver.sample`
            takes them (algorithm, order, corrector, lower_order_final, ...).
    """
    check_int("nfe", nfe, 2)  # a 1-call grid has nothing to optimise
    check_int("pilots", pilots, 1)
    check_int("substeps", substeps, 1)
    check_int("sweeps", sweeps, 0)
    for name in _FORBIDDEN:
        if name in options:
            raise ValueError(
                f"{name} is set by optimize_time_grid; pass the solver's other options only"
            )
    schedule: NoiseSchedule = model.schedule
    steps = steps_for_calls(nfe, options)  # nfe + 1 with the analytic first step
    check_int("candidates", candidates, steps)
    t_s, t_e = _resolve_times(schedule, t_start, t_end)
    if x_T is None:
        if shape is None:
            raise ValueError("give shape (one sample's shape) or the pilot states x_T")
        gen = torch.Generator().manual_seed(seed)
        sigma_T = float(schedule.sigma(torch.tensor(t_s, dtype=torch.float64)))
        x_T = sigma_T * torch.randn((pilots, *shape), generator=gen, dtype=torch.float64)
    counted, calls = counting(model)
    # Solver options are checked once, here, with the sampler's own messages.
    Sampler(counted, steps=steps, t_start=t_s, t_end=t_e, **options)

    # 1. Reference trajectory at the candidate times, and the model output there.
    cand = time_grid(schedule, "karras", t_s, t_e, candidates)
    fine = _refine(schedule, cand, substeps)
    states = [x_T]

    def keep(step: int, t: float, x: Tensor) -> None:
        if step > 0 and step % substeps == 0:
            states.append(x)

    Sampler(counted, timesteps=fine, order=3, method="singlestep_fixed", callback=keep)(x_T)
    levels = schedule.levels(cand)
    outputs = [counted(x, lvl, "data") for x, lvl in zip(states[:-1], levels[:-1], strict=True)]
    reference = states[-1]

    # 2. Cost of one first-order step between any two candidates; cheapest path.
    n = candidates + 1
    cost = np.full((n, n), np.inf)
    for i in range(n - 1):
        for j in range(i + 1, n):
            rule = multistep_update("data", "dpmsolver", [levels[i], levels[j]])
            guess = rule.cx * states[i] + rule.cm[0] * outputs[i]
            cost[i, j] = _rms(guess, states[j])
    path = _cheapest_path(cost, steps)
    proposals = {"dp": [float(cand[k]) for k in path]}
    for skip in SKIP_TYPES:
        if skip != "exponential":  # the logSNR grid under another name
            proposals[skip] = time_grid(schedule, skip, t_s, t_e, steps).tolist()

    # 3. Score the proposals by the solver's end-point error; descend from the best.
    def error(times: list[float]) -> float:
        out = Sampler(counted, timesteps=times, **options)(x_T)
        e = _rms(out, reference)
        return e if math.isfinite(e) else math.inf

    scores = {name: error(times) for name, times in proposals.items()}
    start = min(scores, key=lambda name: (scores[name], name))
    grid = proposals[start]
    best = initial = scores[start]
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
    return TunedGrid(
        times=grid,
        nfe=nfe,
        options=dict(options),
        pilot_error=best,
        initial_error=initial,
        model_calls=calls[0],
        seed=seed,
        details=dict(
            pilots=int(x_T.shape[0]),
            candidates=candidates,
            substeps=substeps,
            sweeps=sweeps,
            trials=trials,
            start=start,
            start_errors=scores,
            dp_grid=proposals["dp"],
        ),
    )


def _refine(schedule: NoiseSchedule, grid: Tensor, substeps: int) -> list[float]:
    """`grid` with each interval split into `substeps` parts uniform in lambda."""
    lam = schedule.lambda_(grid)
    w = torch.linspace(0.0, 1.0, substeps + 1, dtype=torch.float64)[:-1]
    inner = (lam[:-1, None] + w[None, :] * (lam[1:] - lam[:-1])[:, None]).reshape(-1)
    fine = schedule.inverse_lambda(inner)
    fine[::substeps] = grid[:-1]
    return [*fine.tolist(), float(grid[-1])]


def _cheapest_path(cost: np.ndarray, steps: int) -> list[int]:
    """Indices 0 = i_0 < ... < i_steps = n - 1 minimising sum cost[i_k, i_{k+1}]."""
    n = cost.shape[0]
    best = np.full((steps + 1, n), np.inf)
    prev = np.zeros((steps + 1, n), dtype=np.int64)
    best[0, 0] = 0.0
    for k in range(1, steps + 1):
        total = best[k - 1][:, None] + cost  # [i, j]: reach i in k-1 steps, then i -> j
        prev[k] = np.argmin(total, axis=0)
        best[k] = total[prev[k], np.arange(n)]
    path = [n - 1]
    for k in range(steps, 0, -1):
        path.append(int(prev[k, path[-1]]))
    return path[::-1]
