"""The tuner's pilots as a search space: end-point errors of a solver on the tuning pilots
and the held-out states, runs re-done from any step through the core's stepper, and the
Levenberg-Marquardt refinement of a grid and its per-step coefficients.

A solver's run on the pilots keeps, per model call, the stepper's state before the call
and the call's output; a finite-difference column of the Jacobian then re-runs only the
steps after the point or coefficient it moves.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..core import DiffusionModel, NoiseSchedule, Sampler, SolverOptions
from ..core.kernel import Evaluator
from ..core.multistep import multistep_plan
from ..core.plan import Plan
from ..core.stepper import State, init, step
from ..tools.measure import counting, rms, trimmed_rms
from .pilots import PilotReference

__all__ = ["HELD_OUT_MEASURE", "HELD_OUT_TRIM", "PilotRun", "PilotSearch"]

# The held-out choice leaves out the worst tenth of the held-out states: the errors are
# heavy-tailed (a trajectory near a boundary between modes ends in the other one), so a
# plain RMS over a few dozen states is decided by whichever of them falls in the tail.
HELD_OUT_TRIM = 0.1
HELD_OUT_MEASURE = (
    f"RMS end-point error without the worst {HELD_OUT_TRIM:.0%} of the held-out states"
)

# Finite-difference steps: lambda (times a local gap), d_x, and d_j (times |cm_j / alpha_t|).
_FD_GRID, _FD_X, _FD_M = 1e-3, 1e-4, 1e-4


@dataclass
class PilotRun:
    """A trajectory of one setting on the tuning pilots: the end state and, per model call
    k, the stepper's state before it and its output (to re-run from any step)."""

    end: Tensor
    before: dict[int, tuple[State, Tensor]] = field(default_factory=dict)


class PilotSearch:
    """The tuning pilots, the held-out states (held-out pilots and the reference's extra
    held-out noises), their reference end states, and the model with its calls counted."""

    def __init__(
        self,
        model: DiffusionModel,
        reference: PilotReference,
        n_tune: int,
        max_calls: int,
        on_call: Callable[[], object] | None = None,
    ) -> None:
        self.model, self.calls = counting(model, on_call)
        self.max_calls = max_calls
        self.schedule: NoiseSchedule = model.schedule
        self.x = reference.x_start[:n_tune]
        self.target = reference.end[:n_tune]
        self.hold_x = reference.x_start[n_tune:]
        self.hold_target = reference.end[n_tune:]
        if reference.held_x is not None and reference.held_end is not None:
            self.hold_x = torch.cat([self.hold_x, reference.held_x.to(self.hold_x)])
            self.hold_target = torch.cat([self.hold_target, reference.held_end.to(self.hold_x)])

    def error(self, options: SolverOptions) -> float:
        """RMS end-point error on the tuning pilots, by the library's own sampler."""
        return self._score(options, self.x, self.target, 0.0)

    def held_out(self, options: SolverOptions) -> float:
        """`HELD_OUT_MEASURE` on the held-out states: the held-out pilots and the
        reference's extra held-out noises (their calls count as search calls, though each
        is on the held-out batch only)."""
        return self._score(options, self.hold_x, self.hold_target, HELD_OUT_TRIM)

    def _score(self, options: SolverOptions, x: Tensor, target: Tensor, trim: float) -> float:
        """inf for a setting the sampler refuses (e.g. a grid the options cannot run) or a
        non-finite result, so that the search passes over it."""
        try:
            out = Sampler(self.model, options, check_finite=False)(x)
        except ValueError:
            return math.inf
        e = trimmed_rms(out, target, trim) if trim else rms(out, target)
        return e if math.isfinite(e) else math.inf

    # -- the trajectory, re-run from any step -----------------------------------------

    def plan(self, options: SolverOptions) -> Plan:
        return multistep_plan(self.schedule, options, list(options.timesteps or ()))

    def run(
        self, options: SolverOptions, plan: Plan, start: int = 1, prev: PilotRun | None = None
    ) -> PilotRun:
        """The plan's run on the tuning pilots, driven through the core's stepper (as the
        sampler drives it, without hooks), from before step `start` of `prev`: the call
        whose output takes step `start` is re-done from its saved state and output, and
        only the later calls call the model (a re-run from step 1 is a whole run)."""
        ev = Evaluator(self.model, options.form, False)  # the loops' calls: checked, in x's dtype
        if start == 1 or prev is None:
            state, first, before = init(plan, self.x), plan.first, {}
        else:
            state, output = prev.before[start - 1]
            before = {k: v for k, v in prev.before.items() if k < start}
            state, first = step(plan, state, start - 1, output), start
        for k in range(first, len(plan.calls)):
            call = plan.calls[k]
            output = ev(state.x, call.level, call.number)
            before[k] = (state, output)
            state = step(plan, state, k, output)
        return PilotRun(state.x, before)

    def residual(self, run: PilotRun) -> Tensor:
        """The end-point residuals of every tuning pilot, flattened, in float64 on the host
        (the least-squares step is solved there, whatever the pilots' dtype and device)."""
        return (run.end - self.target).reshape(-1).to("cpu", torch.float64)

    # -- Levenberg-Marquardt ------------------------------------------------------------

    def refine(
        self, options: SolverOptions, iterations: int, reg: float, coefficients: bool
    ) -> SolverOptions:
        """`options` with its inner grid points (and, with `coefficients`, its per-step
        coefficients) moved to minimise the tuning pilots' end-point error."""
        times = list(options.timesteps or ())
        lam0 = self.schedule.lambda_(torch.tensor(times, dtype=torch.float64)).tolist()
        analytic = self.plan(SolverOptions.of(options, coefficients=None))
        shape = [
            (len(r.cm), 0 if c is None else len(c.cm))
            for r, c in zip(analytic.rules, analytic.corrections, strict=True)
        ]
        n_grid = len(times) - 2
        rows0 = options.coefficients
        flat0: list[float] = []
        if coefficients:
            for i, (k, kc) in enumerate(shape):
                flat0.extend(
                    rows0[i] if rows0 is not None else [0.0] * (1 + k + (1 + kc if kc else 0))
                )
        v = torch.tensor([*lam0[1:-1], *flat0], dtype=torch.float64)
        v_start = v.clone()

        def unpack(vec: Tensor) -> SolverOptions | None:
            lam = [lam0[0], *vec[:n_grid].tolist(), lam0[-1]]
            if any(b <= a for a, b in itertools.pairwise(lam)):
                return None  # the grid must stay strictly monotone
            inner = self.schedule.inverse_lambda(torch.tensor(lam[1:-1], dtype=torch.float64))
            grid = (times[0], *inner.tolist(), times[-1])
            rows: tuple[tuple[float, ...], ...] | None = rows0
            if coefficients:
                flat, found, p = vec[n_grid:].tolist(), [], 0
                for k, kc in shape:
                    size = 1 + k + (1 + kc if kc else 0)
                    found.append(tuple(flat[p : p + size]))
                    p += size
                rows = tuple(found)
            try:
                return SolverOptions.of(options, timesteps=grid, coefficients=rows)
            except ValueError:
                return None

        def evaluate(vec: Tensor, start: int = 1, prev: PilotRun | None = None) -> PilotRun | None:
            opts = unpack(vec)
            if opts is None:
                return None
            run = self.run(opts, self.plan(opts), start, prev)
            return run if bool(torch.isfinite(run.end).all()) else None

        current = evaluate(v)
        if current is None:
            return options
        steps_of, eps = self._columns(analytic, shape, n_grid, lam0, coefficients)
        steps = len(analytic.rules)
        # An iteration's calls at most: each column re-runs from its step (a corrected step
        # costs one call more), then up to 6 trial runs of the line search.
        per_run = steps + sum(c is not None for c in analytic.corrections)
        cost = sum(per_run - (j - 1) for j in steps_of) + 6 * per_run
        mu = 1e-3
        for _ in range(iterations):
            if self.calls[0] + cost > self.max_calls:
                break  # the next iteration could overrun the budget
            r = self.residual(current)
            best = float(r.pow(2).mean())
            jac = torch.empty((r.numel(), v.numel()), dtype=torch.float64)
            for q in range(v.numel()):
                bumped = v.clone()
                bumped[q] += eps[q]
                run = evaluate(bumped, steps_of[q], current)
                jac[:, q] = 0.0 if run is None else (self.residual(run) - r) / eps[q]
            jtj = jac.T @ jac
            g = jac.T @ r
            d = torch.diag(jtj).clamp_min(1e-12 * float(torch.diag(jtj).max().clamp_min(1e-300)))
            accepted = False
            for _ in range(6):
                a = jtj + (mu + reg) * torch.diag(d)
                step = torch.linalg.solve(a, -(g + reg * d * (v - v_start)))
                trial = evaluate(v + step)
                if trial is not None:
                    r2 = self.residual(trial)
                    e2 = float(r2.pow(2).mean())
                    if e2 < best:
                        v, current = v + step, trial
                        mu, accepted = max(mu / 3.0, 1e-9), True
                        break
                mu *= 4.0
            if not accepted:
                break
        out = unpack(v)
        return options if out is None else out

    def _columns(
        self,
        plan: Plan,
        shape: list[tuple[int, int]],
        n_grid: int,
        lam: list[float],
        coefficients: bool,
    ) -> tuple[list[int], list[float]]:
        """For each parameter, the first step it changes and its finite-difference step."""
        steps_of: list[int] = []
        eps: list[float] = []
        for j in range(1, n_grid + 1):  # inner point j is the end of step j
            steps_of.append(j)
            eps.append(_FD_GRID * min(lam[j] - lam[j - 1], lam[j + 1] - lam[j]))
        if coefficients:
            for i, (rule, corr) in enumerate(zip(plan.rules, plan.corrections, strict=True)):
                alpha = plan.levels[i + 1].alpha
                for r in (rule, corr):
                    if r is None:
                        continue
                    scale = max((abs(c) / alpha for c in r.cm), default=1.0)
                    steps_of.append(i + 1)
                    eps.append(_FD_X)
                    for c in r.cm:
                        steps_of.append(i + 1)
                        eps.append(_FD_M * max(abs(c) / alpha, 1e-3 * scale))
        return steps_of, eps
