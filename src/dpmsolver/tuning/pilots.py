"""Pilot trajectories: the fine reference solution that the tuners share.

`pilot_reference(model, ...)` draws `pilots` starting states from a seed and solves the
ODE from each with DPM-Solver-3 on a fine grid (`candidates` karras-spaced times, each
interval split into `substeps` parts uniform in lambda), keeping the state and the model's
x0_pred at every candidate time and the end state. `optimize_time_grid` prices its
coarse steps on those states; `optimize_solver` scores every setting against the end
states. It is computed once per (model, pilots, seed) and passed as `reference=` to every
budget and setting, so its model calls are paid once (`PilotReference.model_calls`).

With `held_out_noises=N` it also draws N more states and solves each to its end only (the
same fine solver on half the candidate times: no trajectory is kept), for the tuner's
held-out choice: a choice on a few pilots is decided by whichever of them happens to pass
near a boundary between modes, and these end states cost about half a pilot's.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..checks import check_int
from ..core import (
    DiffusionModel,
    Level,
    NoiseSchedule,
    Sampler,
    SolverOptions,
    check_model,
    resolve_times,
    time_grid,
)
from ..core.coefficients import multistep_update
from ..noise.start import start_noise
from ..tools.measure import counting, rms

__all__ = ["PilotReference", "pilot_reference"]


@dataclass(frozen=True)
class PilotReference:
    """The pilots' fine reference: starting states `x_start` (x_T), the candidate times (descending,
    t_start first), the states and data-form model outputs at them (`states[-1]` is the
    end state, `outputs` has one entry fewer), and the model calls it cost."""

    x_start: Tensor
    times: list[float]
    levels: list[Level]
    states: list[Tensor]
    outputs: list[Tensor]
    model_calls: int
    seed: int | None
    substeps: int
    # The extra held-out states and their reference end states (None without them), and
    # the model calls that solved them (each on the whole extra batch).
    held_x: Tensor | None = None
    held_end: Tensor | None = None
    held_calls: int = 0

    @property
    def end(self) -> Tensor:
        """The reference state at t_end of every pilot."""
        return self.states[-1]

    @property
    def pilots(self) -> int:
        return int(self.x_start.shape[0])

    @property
    def held_out_noises(self) -> int:
        """The extra held-out states (end states only), beside the pilots."""
        return 0 if self.held_x is None else int(self.held_x.shape[0])

    @property
    def evaluations(self) -> int:
        """The model evaluations the reference cost: calls times the states each was on."""
        return self.model_calls * self.pilots + self.held_calls * self.held_out_noises

    @functools.cached_property
    def step_costs(self) -> np.ndarray:
        """cost[i, j]: the RMS error of one first-order (DDIM) step from the reference
        state at candidate i to candidate j > i (free: the model output at i is known);
        inf elsewhere. Computed once per reference."""
        levels, states, outputs = self.levels, self.states, self.outputs
        n = len(levels)
        cost = np.full((n, n), np.inf)
        for i in range(n - 1):
            for j in range(i + 1, n):
                rule = multistep_update("data", "dpmsolver", [levels[i], levels[j]])
                cost[i, j] = rms(rule.cx * states[i] + rule.cm[0] * outputs[i], states[j])
        return cost

    def dp_grid(self, steps: int) -> list[float]:
        """The GITS grid (Chen et al., 2024): the candidate times of the path with exactly
        `steps` steps whose summed `step_costs` is the least (a dynamic programme)."""
        cost = self.step_costs
        n = cost.shape[0]
        check_int("steps", steps, 1, n - 1)
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
        return [self.times[k] for k in reversed(path)]

    def check_model(self, model: DiffusionModel, name: str = "reference") -> None:
        """ValueError unless `model`'s schedule spans this reference's times."""
        schedule = model.schedule
        for t in (self.times[0], self.times[-1]):
            if not schedule.contains(t):
                raise ValueError(
                    f"{name} was computed on times {self.times[0]:.6g} .. {self.times[-1]:.6g}, "
                    f"outside this model's schedule range {schedule.time_range()}"
                )


@torch.no_grad()
def pilot_reference(
    model: DiffusionModel,
    *,
    shape: Sequence[int] | None = None,
    x_T: Tensor | None = None,
    pilots: int = 64,
    seed: int = 0,
    candidates: int = 64,
    substeps: int = 4,
    t_start: float | None = None,
    t_end: float | None = None,
    held_out_noises: int = 0,
) -> PilotReference:
    """The fine reference trajectory of `pilots` starting states x_T = sigma_T N(0, I)
    (from `seed`, one sample of `shape`, default the model's sample shape), or of the given
    `x_T`, at `candidates` + 1 karras-spaced times from t_start to t_end (default the
    schedule's ends; quadratic in t from pure noise). Costs 3 * candidates * substeps +
    candidates model calls, each on the whole pilot batch. `seed` is recorded as the
    reference's (None for a given x_T).

    `held_out_noises` more states x_T = sigma_T N(0, I) (rows n.. of what `seed` draws,
    n the pilots, also beside a given x_T) get their end state only, by
    the same fine solver on m = max(2, candidates // 2) times: 3 * m * substeps calls
    on that batch (`held_x`, `held_end`, `held_calls`)."""
    model = check_model(model)
    check_int("candidates", candidates, 2)
    check_int("substeps", substeps, 1)
    check_int("held_out_noises", held_out_noises, 0)
    schedule = model.schedule
    t_s, t_e = resolve_times(schedule, t_start, t_end)
    if x_T is None:
        check_int("pilots", pilots, 1)
        x_T = start_noise(model, pilots, seed, shape, t=t_s)
        drawn_from: int | None = seed
    elif not isinstance(x_T, Tensor) or not x_T.is_floating_point():
        got = x_T.dtype if isinstance(x_T, Tensor) else type(x_T).__name__
        raise TypeError(f"x_T must be a floating tensor of pilot states; got {got}")
    elif x_T.dim() < 1 or x_T.shape[0] < 1 or x_T.device.type == "meta":
        raise ValueError(
            f"x_T must hold at least one pilot state (a batch >= 1, with data); got shape "
            f"{tuple(x_T.shape)}" + (" on the meta device" if x_T.device.type == "meta" else "")
        )
    else:
        drawn_from = None  # the caller's states: no seed made them
    counted, calls = counting(model)
    cand = _candidates(schedule, t_s, t_e, candidates)
    states = [x_T]

    def keep(step: int, t: float, x: Tensor) -> None:
        if step > 0 and step % substeps == 0:
            states.append(x)

    Sampler(counted, _fine_solver(schedule, cand, substeps), callback=keep)(x_T)
    levels = schedule.levels(cand)
    outputs = [counted(x, lvl, "data") for x, lvl in zip(states[:-1], levels[:-1], strict=True)]
    held_x = held_end = None
    held_calls = 0
    if held_out_noises:
        # Rows n.. of `seed`'s draw (n the pilots): the pilots stay those of a run without
        # extras, and a caller's x_T drawn from the same seed is not drawn again.
        n = x_T.shape[0]
        drawn = start_noise(model, n + held_out_noises, seed, x_T.shape[1:], t=t_s)
        held_x = drawn[n:].to(dtype=x_T.dtype, device=x_T.device)
        counted, held = counting(model)
        coarse = _candidates(schedule, t_s, t_e, max(2, candidates // 2))
        held_end = Sampler(counted, _fine_solver(schedule, coarse, substeps))(held_x)
        held_calls = held[0]
    return PilotReference(
        x_start=x_T,
        times=cand.tolist(),
        levels=levels,
        states=states,
        outputs=outputs,
        model_calls=calls[0],
        seed=drawn_from,
        substeps=substeps,
        held_x=held_x,
        held_end=held_end,
        held_calls=held_calls,
    )


def _candidates(schedule: NoiseSchedule, t_s: float, t_e: float, candidates: int) -> Tensor:
    """`candidates` + 1 times from t_s to t_e, karras-spaced. Karras spacing is in lambda:
    from pure noise (alpha = 0, a flow schedule at t = 1) the candidates are quadratic in t
    instead, dense at low noise as Karras' are."""
    pure_noise = schedule.levels([t_s])[0].alpha == 0.0
    return time_grid(schedule, "time_quadratic" if pure_noise else "karras", t_s, t_e, candidates)


def _fine_solver(schedule: NoiseSchedule, cand: Tensor, substeps: int) -> SolverOptions:
    """DPM-Solver-3 (singlestep) on the candidate times, each interval in `substeps` steps."""
    fine = _refine(schedule, cand, substeps)
    return SolverOptions.of(timesteps=tuple(fine), order=3, method="singlestep_fixed")


def _refine(schedule: NoiseSchedule, grid: Tensor, substeps: int) -> list[float]:
    """`grid` with each interval split into `substeps` parts uniform in lambda (in t for
    an interval from pure noise, where lambda = -inf)."""
    lam = schedule.lambda_(grid)
    w = torch.linspace(0.0, 1.0, substeps + 1, dtype=torch.float64)[:-1]
    inner = (lam[:-1, None] + w[None, :] * (lam[1:] - lam[:-1])[:, None]).reshape(-1)
    fine = schedule.inverse_lambda(inner)
    if not bool(torch.isfinite(lam[0])):
        fine[:substeps] = grid[0] + w * (grid[1] - grid[0])
    fine[::substeps] = grid[:-1]
    return [*fine.tolist(), float(grid[-1])]
