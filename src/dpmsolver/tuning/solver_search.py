"""One call to the best sampler found for a model and a model-call budget.

    tuned = dpm.optimize_solver(model, nfe=6, shape=(4, 64, 64))
    x0 = dpm.sample(model, x_T, solver=tuned)
    tuned.to_json("tuned6.json")          # dpm.TunedSolver.from_json(...) in another process

All choices are made on pilot trajectories drawn from a seed, against their fine reference
(`pilot_reference`, shared by every setting and budget). A quarter of the pilots is held
out: it takes no part in the search and decides only the fallbacks.
1. Predictor families (DPM-Solver++ 2M / 3M with and without the UniC corrector, iPNDM 3 /
   4, DEIS 3, each with and without the analytic first step; options the caller passes keep only
   the families that agree with them) are run on the GITS dynamic-programme grid (priced
   on the reference states, see `optimize_time_grid`) and on the standard grids; the best
   `finalists` (family, grid) pairs by end-point error on the tuning pilots go on.
2. Grid: Levenberg-Marquardt on the inner points' lambdas, minimising the tuning pilots'
   end-point error (Jacobian by finite differences; a column re-runs the steps after the
   point only).
3. Coefficients: the same, jointly on the grid and on the per-step coefficients of
   `SolverOptions.coefficients` (1 + k numbers for a rule of order k, 2 + k more for its
   corrector: a few per step), starting from the analytic rule and regularised towards
   it (the penalty `regularization * sum_q D_q v_q^2`, D the Gauss-Newton diagonal).
4. The finalist with the lowest tuning error is kept. On the held-out pilots its refined
   grid must beat the grid it started from, and its coefficients the analytic rules (on
   that kept grid and on their own), else they are dropped (`TunedSolver.fallback` says
   which and why): the result is never worse there than the analytic solver it started
   from.
Every model call is counted (each on the tuning or the held-out part of the pilot batch)
and reported as reference and search calls.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..checks import check_bool, check_choice, check_float, check_int
from ..core import (
    DiffusionModel,
    NoiseSchedule,
    Sampler,
    SolverOptions,
    check_model,
    time_grid,
)
from ..core.kernel import Evaluator
from ..core.options import MULTISTEP3, VARIANTS
from ..core.plan import AFS_MAX_SNR, Plan, multistep_plan
from ..core.stepper import State, init, step
from ..tools.measure import counting, rms
from ..tools.presets import SOLVERS
from .pilots import PilotReference, pilot_reference
from .values import TunedSolver

__all__ = ["SEARCHED_FAMILIES", "optimize_solver"]

# The predictor families searched by default (preset names, see `presets.SOLVERS`).
SEARCHED_FAMILIES = (
    "dpm++2m",
    "dpm++3m",
    "dpm++2m+c",
    "dpm++3m+c",
    "ipndm3",
    "ipndm4",
    "dpm++2m+afs",
    "dpm++3m+afs",
    "dpm++2m+c+afs",
    "dpm++3m+c+afs",
    "ipndm3+afs",
    "ipndm4+afs",
    "deis3",
    "deis3+afs",
)
STANDARD_GRIDS = ("time_uniform", "time_quadratic", "logSNR", "karras")
# The options that tell the families apart: a caller's value of one of them keeps only the
# families that have it; its other options apply to every family.
FAMILY_KEYS = ("algorithm", "order", "method", "corrector", "analytic_first_step")
# Options the search sets itself.
_SET_HERE = ("steps", "timesteps", "sigmas", "skip_type", "t_start", "t_end", "coefficients")
# Options the search cannot tune for: the reference ends at t_end, not at a last denoising
# call.
_REFUSED = ("denoise_to_zero",)
# Options that only some families have: applied to those, checked alone.
_PER_FAMILY = {"corrector_variant": VARIANTS, "multistep3": MULTISTEP3}
# Finite-difference steps: lambda (times a local gap), d_x, and d_j (times |cm_j / alpha_t|).
_FD_GRID, _FD_X, _FD_M = 1e-3, 1e-4, 1e-4


@torch.no_grad()
def optimize_solver(
    model: DiffusionModel,
    nfe: int,
    *,
    shape: Sequence[int] | None = None,
    x_T: Tensor | None = None,
    pilots: int = 64,
    seed: int = 0,
    reference: PilotReference | None = None,
    families: Sequence[str] | None = None,
    finalists: int = 2,
    iterations: int = 4,
    regularization: float = 1e-3,
    held_out: float = 0.25,
    tune_coefficients: bool = True,
    max_calls: int = 3500,
    name: str | None = None,
    **options: Any,
) -> TunedSolver:
    """The best multistep sampler found for `model` with `nfe` model calls.

    Args:
        model: any `DiffusionModel` (a `Denoiser` around a network, or a built-in model).
        nfe: the model-call budget of a run (>= 2).
        shape: the pilots' sample shape, without the batch (default the model's sample
            shape); not with `reference`, which holds its pilots.
        x_T: the pilots' starting states, instead of drawing them.
        pilots: the number of pilot states sigma_T N(0, I) drawn from `seed`.
        seed: the seed that draws them; the result is a deterministic function of the
            pilots.
        reference: a `pilot_reference(model, ...)` shared between calls (budgets,
            settings), so its model calls are paid once; computed here if None.
        families: preset names to search (default `SEARCHED_FAMILIES`).
        finalists: (family, grid) pairs refined after the first screening.
        iterations: Levenberg-Marquardt iterations per stage.
        regularization: the pull of the grid and the coefficients towards their start.
        held_out: the fraction of the pilots held out of the search (at least one), on
            which the fallbacks are decided.
        tune_coefficients: False stops after the grid (the analytic rules).
        max_calls: the search's model-call budget (each call on the tuning or held-out
            pilots), a hard bound: a budget below the screening and the runs that score
            the result is refused before any call (the message gives the least), and no
            Levenberg-Marquardt iteration starts that could overrun it.
        name: the model's name for the provenance (default its class name).
        **options: solver options that narrow the search: those that make a family
            (algorithm, order, method, corrector, analytic_first_step) keep only the
            families that agree with them (none agreeing: the options themselves are the
            one family); the others (lower_order_final, corrector_variant, solver_type,
            ...) apply to every family searched. denoise_to_zero cannot be tuned for.

    Returns:
        A `TunedSolver`; run it with `sample(model, x, solver=tuned)` or any face.
    """
    model = check_model(model)
    nfe = check_int("nfe", nfe, 2)
    finalists = check_int("finalists", finalists, 1)
    check_int("iterations", iterations, 0)
    max_calls = check_int("max_calls", max_calls, 0)
    regularization = check_float("regularization", regularization)
    held_out = check_float("held_out", held_out)
    if not 0.0 < held_out < 1.0:
        raise ValueError(f"held_out must be a fraction in (0, 1); got {held_out}")
    if regularization < 0:
        raise ValueError(f"regularization must be >= 0; got {regularization}")
    for key in _SET_HERE:
        if key in options:
            raise ValueError(f"{key} is set by optimize_solver; pass the solver's other options")
    for key in _REFUSED:
        if options.get(key):
            raise ValueError(
                f"{key}=True cannot be tuned for: the pilots' reference ends at t_end; tune "
                "without it (a tuned solver ends there)"
            )
    check_bool("tune_coefficients", tune_coefficients)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None; got {type(name).__name__}")
    # Checked with the options' own messages; those only some families have (the
    # corrector's B(h), the third-order rule's form) are checked alone.
    given = SolverOptions.of(**{k: v for k, v in options.items() if k not in _PER_FAMILY})
    for key, allowed in _PER_FAMILY.items():
        if key in options:
            check_choice(key, options[key], allowed)
    if reference is not None and not isinstance(reference, PilotReference):
        raise TypeError(
            f"reference must be a PilotReference (from pilot_reference); got "
            f"{type(reference).__name__}"
        )
    # The families and the search's least cost are known before any model call: a budget
    # below it is refused before the reference is paid for.
    t_start = model.schedule.t_max if reference is None else reference.times[0]
    candidates = _families(families, given, options, nfe, model.schedule, t_start)
    screening = len(candidates) * (len(STANDARD_GRIDS) + 1) * nfe
    reserve = _fixed_runs(min(finalists, len(candidates) * (len(STANDARD_GRIDS) + 1))) * nfe
    floor = screening + reserve
    if max_calls < floor:
        raise ValueError(
            f"max_calls={max_calls} is below the least this search costs, {floor} calls for "
            f"nfe={nfe}: {len(candidates)} families screened on up to "
            f"{len(STANDARD_GRIDS) + 1} grids, then the finalists scored (each run {nfe} "
            "calls); raise max_calls, narrow families, or lower nfe"
        )
    if reference is None:
        reference = pilot_reference(model, shape=shape, x_T=x_T, pilots=pilots, seed=seed)
        shared = False
    else:
        given_pilots = [
            name_
            for name_, value, default in (
                ("shape", shape, None),
                ("x_T", x_T, None),
                ("pilots", pilots, 64),
                ("seed", seed, 0),
            )
            if value is not default and value != default
        ]
        if given_pilots:
            raise ValueError(
                f"give reference or the pilots ({', '.join(given_pilots)}), not both: the "
                "reference holds its pilots"
            )
        reference.check_model(model)
        shared = True
    n = reference.pilots
    if n < 2:
        raise ValueError(f"optimize_solver needs at least 2 pilots (some are held out); got {n}")
    held = max(1, int(n * held_out))
    # The runs outside the Levenberg-Marquardt iterations (each finalist's starting runs
    # and score, the result's pilot and held-out scores) are kept out of what the
    # iterations may spend, so that max_calls bounds the whole search.
    search = _Search(model, reference, n - held, max_calls - reserve)

    # 1. Screening: every family on the DP grid and the standard grids.
    screened = []
    for label, opts in candidates:
        steps = opts.steps_for_calls(nfe)
        for grid_name, times in _proposals(model.schedule, reference, steps).items():
            err = search.error(SolverOptions.of(opts, timesteps=tuple(times)))
            screened.append((err, label, grid_name, times, opts))
    screened.sort(key=lambda c: (c[0], c[1], c[2]))
    finals = [c for c in screened if math.isfinite(c[0])][:finalists]
    if not finals:
        raise ValueError("every searched setting gave a non-finite error on the pilots")

    # 2-3. Refine each finalist's grid, then its grid and coefficients together.
    results = []
    for err, label, grid_name, times, opts in finals:
        base = SolverOptions.of(opts, timesteps=tuple(times))
        grid_only = search.refine(base, iterations, regularization, coefficients=False)
        tuned = grid_only
        if tune_coefficients:
            tuned = search.refine(grid_only, iterations, regularization, coefficients=True)
        results.append((search.error(tuned), label, grid_name, base, grid_only, tuned, err))
    results.sort(key=lambda r: (r[0], r[1]))
    _, label, grid_name, start, grid_only, tuned, start_err = results[0]

    # 4. Held-out checks: the refined grid must beat the grid it started from, and the
    # coefficients both analytic grids (the kept one, and their own with analytic rules).
    hold = search.held_out
    e_start, e_grid = hold(start), hold(grid_only)
    fallback = None
    if e_grid < e_start:
        kept, e_kept = grid_only, e_grid
    else:
        kept, e_kept = start, e_start
        fallback = (
            f"grid refinement dropped: held-out error {e_grid:.4g} >= {e_start:.4g} on the "
            f"{grid_name} grid it started from"
        )
    final, e_final, e_analytic = kept, e_kept, e_kept
    if tuned.coefficients is not None:
        same = SolverOptions.of(tuned, coefficients=None)
        e_tuned, e_same = hold(tuned), hold(same)
        if e_tuned < min(e_kept, e_same):
            final, e_final, e_analytic = tuned, e_tuned, e_same
        else:
            note = (
                f"coefficients dropped: held-out error {e_tuned:.4g} >= "
                f"{min(e_kept, e_same):.4g} of the analytic rules"
            )
            fallback = note if fallback is None else f"{fallback}; {note}"
            if e_same < e_kept:
                final, e_final, e_analytic = same, e_same, e_same
    schedule = model.schedule
    times = list(final.timesteps or ())
    levels = schedule.levels(times)
    pilot_error, grid_only_error = search.error(final), search.error(grid_only)
    base_options = {
        k: v for k, v in final.changed().items() if k not in ("timesteps", "coefficients")
    }
    return TunedSolver(
        times=times,
        sigmas=[lv.sigma / lv.alpha if lv.alpha > 0 else math.inf for lv in levels],
        nfe=nfe,
        options=base_options,
        coefficients=None
        if final.coefficients is None
        else [list(row) for row in final.coefficients],
        setting=label,
        model=name or type(model).__name__,
        pilots=n - held,
        held_out=held,
        seed=reference.seed,
        model_calls={
            "reference": reference.model_calls,
            "search": search.calls[0],
        },
        pilot_error=pilot_error,
        held_out_error=e_final,
        analytic_held_out_error=e_analytic,
        fallback=fallback,
        details=dict(
            reference_shared=shared,
            start_grid=grid_name,
            start_pilot_error=start_err,
            grid_only_pilot_error=grid_only_error,
            grid_only_held_out_error=e_grid,
            start_held_out_error=e_start,
            screened=[
                dict(setting=c[1], grid=c[2], pilot_error=c[0]) for c in screened[: 4 * finalists]
            ],
        ),
    )


def _fixed_runs(finalists: int) -> int:
    """Runs of `nfe` calls each outside the screening and the Levenberg-Marquardt
    iterations: per finalist the first run of its grid and of its coefficient refinement
    and its score; then the result's tuning and grid-only errors and the held-out errors of
    the start grid, the refined grid, the tuned solver and its analytic rules."""
    return 3 * finalists + 6


def _families(
    names: Sequence[str] | None,
    given: SolverOptions,
    options: dict[str, Any],
    nfe: int,
    schedule: NoiseSchedule,
    t_start: float,
) -> list[tuple[str, SolverOptions]]:
    """(name, options) of the families to search that agree with the caller's options
    and can run `nfe` calls from `t_start` (the pilots' start)."""
    if isinstance(names, str) or not (names is None or isinstance(names, Sequence)):
        raise TypeError(
            f"families must be a list of preset names (e.g. ['dpm++3m', 'ipndm4']); got "
            f"{type(names).__name__} {names!r}"
        )
    chosen = SEARCHED_FAMILIES if names is None else tuple(names)
    if not chosen:
        raise ValueError("families is empty; give preset names to search, or None for the default")
    for label in chosen:
        if label not in SOLVERS:
            raise ValueError(f"families: unknown {label!r}; choose from {', '.join(SOLVERS)}")
    found: list[tuple[str, SolverOptions]] = []
    for label in chosen:
        opts = SOLVERS[label].options
        # What makes a family (its predictor, order, corrector, first step) must agree with
        # the caller's options; the others (lower_order_final, corrector_variant, ...)
        # apply on top of it.
        if any(getattr(opts, key) != getattr(given, key) for key in options if key in FAMILY_KEYS):
            continue
        # Options that only some families have (the corrector's B(h), the third-order
        # rule's form) apply to those that have them.
        own = dict(options)
        if opts.corrector == "off" and "corrector" not in options:
            own.pop("corrector_variant", None)
        third = opts.order == 3 and opts.algorithm in ("dpmsolver++", "dpmsolver")
        if not third and "algorithm" not in options and "order" not in options:
            own.pop("multistep3", None)
        try:
            merged = SolverOptions.of(opts, **own) if own else opts
        except ValueError:
            continue  # e.g. a corrector_variant on a family whose corrector is off is fine,
            # but a combination the options refuse is not a family to search
        if all(merged != other for _, other in found):
            found.append((label, merged))
    if not found and options:
        found = [("given", given)]
    for key, has in (
        ("corrector_variant", lambda o: o.corrector != "off"),
        ("multistep3", lambda o: o.order == 3 and o.algorithm in ("dpmsolver++", "dpmsolver")),
    ):
        if key in options and not any(has(o) for _, o in found):
            raise ValueError(
                f"{key}={options[key]!r} applies to families that have it; none of those "
                f"searched ({', '.join(label for label, _ in found)}) does"
            )
    snr = math.exp(schedule.levels([t_start])[0].lambda_)
    usable = []
    for label, opts in found:
        if opts.method != "multistep" or opts.eta != 0 or opts.cfg_pp:
            raise ValueError(
                "optimize_solver tunes multistep ODE solvers; got "
                f"method={opts.method!r}, eta={opts.eta}, cfg_pp={opts.cfg_pp}"
            )
        if opts.steps_for_calls(nfe) < opts.order:
            continue
        if opts.analytic_first_step and snr > AFS_MAX_SNR:
            continue
        usable.append((label, opts))
    if not usable:
        raise ValueError(f"no searched family can run nfe={nfe} with options {options}")
    return usable


def _proposals(
    schedule: NoiseSchedule, reference: PilotReference, steps: int
) -> dict[str, list[float]]:
    """The GITS dynamic-programme grid of `steps` steps on the reference's candidate times
    (a first-order step's error from reference state i to j, the cheapest path) and the
    standard grids."""
    t_s, t_e = reference.times[0], reference.times[-1]
    out = {g: time_grid(schedule, g, t_s, t_e, steps).tolist() for g in STANDARD_GRIDS}
    if steps < len(reference.times):
        out["dp"] = reference.dp_grid(steps)
    return out


@dataclass
class _Run:
    """A trajectory of one setting on the tuning pilots: the end state and, per model call
    k, the stepper's state before it and its output (to re-run from any step)."""

    end: Tensor
    before: dict[int, tuple[State, Tensor]] = field(default_factory=dict)


class _Search:
    """The tuning pilots, the held-out pilots, their reference end states, and the model
    with its calls counted."""

    def __init__(
        self,
        model: DiffusionModel,
        reference: PilotReference,
        n_tune: int,
        max_calls: int,
    ) -> None:
        self.model, self.calls = counting(model)
        self.max_calls = max_calls
        self.schedule: NoiseSchedule = model.schedule
        self.x = reference.x_start[:n_tune]
        self.target = reference.end[:n_tune]
        self.hold_x = reference.x_start[n_tune:]
        self.hold_target = reference.end[n_tune:]

    def error(self, options: SolverOptions) -> float:
        """RMS end-point error on the tuning pilots, by the library's own sampler."""
        return self._score(options, self.x, self.target)

    def held_out(self, options: SolverOptions) -> float:
        """RMS end-point error on the held-out pilots (their calls count as search calls,
        though each is on the held-out part of the batch only)."""
        return self._score(options, self.hold_x, self.hold_target)

    def _score(self, options: SolverOptions, x: Tensor, target: Tensor) -> float:
        """inf for a setting the sampler refuses (e.g. a grid the options cannot run) or a
        non-finite result, so that the search passes over it."""
        try:
            out = Sampler(self.model, options, check_finite=False)(x)
        except ValueError:
            return math.inf
        e = rms(out, target)
        return e if math.isfinite(e) else math.inf

    # -- the trajectory, re-run from any step -----------------------------------------

    def plan(self, options: SolverOptions) -> Plan:
        return multistep_plan(self.schedule, options, list(options.timesteps or ()))

    def run(
        self, options: SolverOptions, plan: Plan, start: int = 1, prev: _Run | None = None
    ) -> _Run:
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
        return _Run(state.x, before)

    def residual(self, run: _Run) -> Tensor:
        """The end-point residuals of every tuning pilot, flattened."""
        return (run.end - self.target).reshape(-1)

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

        def evaluate(vec: Tensor, start: int = 1, prev: _Run | None = None) -> _Run | None:
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
