"""One call to the best sampler found for a model and a model-call budget.

    tuned = dpm.optimize_solver(model, nfe=6, shape=(4, 64, 64))
    x0 = dpm.sample(model, x_T, solver=tuned)
    tuned.to_json("tuned6.json")          # dpm.TunedSolver.from_json(...) in another process

All choices are made on pilot trajectories drawn from a seed, against their fine reference
(`pilot_reference`, shared by every setting and budget). A quarter of the pilots is held
out, with `held_out_noises` more states solved to their end only: they take no part in the
search and decide only the final choice, by `HELD_OUT_MEASURE` (the RMS error without the
worst tenth of them: the errors are heavy-tailed).
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
4. The finalist with the lowest tuning error is kept. On the held-out states its refined
   grid must beat the grid it started from, and its coefficients the analytic rules (on
   that kept grid and on their own), else they are dropped (`TunedSolver.fallback` says
   which and why); then the best untuned setting screened and the smaller budgets'
   solvers replace it where they do better there: the result is never worse there than
   any of them.
Every model call is counted (each on the tuning pilots or the held-out states) and
reported as reference, held-out reference and search calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..checks import check_bool, check_choice, check_float, check_int
from ..core import (
    DiffusionModel,
    SolverOptions,
    check_model,
)
from ..tools.progress import Progress
from .families import (
    PER_FAMILY,
    SEARCHED_FAMILIES,
    STANDARD_GRIDS,
    proposals,
    search_families,
)
from .pilots import PilotReference, pilot_reference
from .refinement import HELD_OUT_MEASURE, PilotSearch
from .values import TunedSolver

__all__ = [
    "HELD_OUT",
    "HELD_OUT_NOISES",
    "SEARCHED_FAMILIES",
    "held_out_count",
    "optimize_solver",
    "optimize_solvers",
]

# The share of the pilots held out of the search by default (at least one is).
HELD_OUT = 0.25
# The extra held-out states solved to their end only (`pilot_reference(held_out_noises=)`):
# 4 held-out pilots of 16 decide between candidates at random where errors are
# heavy-tailed; 32 more cost about 16 pilots' worth of calls, once for every budget.
HELD_OUT_NOISES = 32


def held_out_count(pilots: int, held_out: float = HELD_OUT) -> int:
    """How many of `pilots` pilots the search holds out."""
    return max(1, int(pilots * held_out))


# Options the search sets itself.
_SET_HERE = ("steps", "timesteps", "sigmas", "skip_type", "t_start", "t_end", "coefficients")
# Options the search cannot tune for: the reference ends at t_end, not at a last denoising
# call.
_REFUSED = ("denoise_to_zero",)


@torch.no_grad()
def optimize_solver(
    model: DiffusionModel,
    nfe: int,
    *,
    shape: Sequence[int] | None = None,
    x_T: Tensor | None = None,
    pilots: int = 64,
    seed: int = 0,
    candidates: int = 64,
    substeps: int = 4,
    held_out_noises: int = HELD_OUT_NOISES,
    reference: PilotReference | None = None,
    families: Sequence[str] | None = None,
    finalists: int = 2,
    iterations: int = 4,
    regularization: float = 1e-3,
    held_out: float = HELD_OUT,
    tune_coefficients: bool = True,
    max_calls: int = 3500,
    name: str | None = None,
    smaller: Sequence[TunedSolver] = (),
    progress: bool = False,
    **options: Any,
) -> TunedSolver:
    """The best multistep sampler found for `model` with `nfe` model calls.

    Args:
        model: any `DiffusionModel` (a `Denoiser` around a network, or a built-in model).
        nfe: the model-call budget of a run (>= 2).
        shape: the pilots' sample shape (default the model's); not with `reference`.
        x_T: the pilots' starting states, instead of drawing them.
        pilots: the number of pilot states sigma_T N(0, I) drawn from `seed`.
        seed: the seed that draws them (the result is a deterministic function of them).
        candidates: the pilot reference's candidate times (`pilot_reference`; it costs
            3 * candidates * substeps + candidates calls); not with `reference`.
        substeps: its DPM-Solver-3 steps per candidate interval; not with `reference`.
        held_out_noises: more held-out states, solved to their end only (3 * (candidates
            // 2) * substeps calls on them); not with `reference`.
        reference: a `pilot_reference(model, ...)` shared between calls (budgets,
            settings), so its model calls are paid once; computed here if None.
        families: preset names to search (default `SEARCHED_FAMILIES`).
        finalists: (family, grid) pairs refined after the first screening.
        iterations: Levenberg-Marquardt iterations per stage.
        regularization: the pull of the grid and the coefficients towards their start.
        held_out: the fraction of the pilots held out of the search (at least one); with
            the extra held-out states they decide the final choice.
        tune_coefficients: False stops after the grid (the analytic rules).
        max_calls: the search's model-call budget, a hard bound: one below the screening
            and the scoring runs is refused before any call (the message gives the least),
            and no Levenberg-Marquardt iteration starts that could overrun it.
        name: the model's name for the provenance (default its class name).
        smaller: tuned solvers of smaller budgets of this model (`optimize_solvers`), to
            keep if better on the held-out states.
        progress: a progress bar over the model calls, with a time estimate (tqdm).
        **options: solver options that narrow the search: those that make a family
            (algorithm, order, method, corrector, analytic_first_step) keep only the
            families that agree with them (none agreeing: the options themselves are the
            one family); the others (lower_order_final, corrector_variant, solver_type,
            ...) apply to every family searched. denoise_to_zero cannot be tuned for.

    Returns:
        A `TunedSolver` (`sample(model, x, solver=tuned)` or any face). `model_calls`
        counts the calls ('reference', 'held_out_reference', 'search') and 'evaluations',
        calls times the states each is on (the reference's when computed here).
    """
    model = check_model(model)
    nfe = check_int("nfe", nfe, 2)
    finalists = check_int("finalists", finalists, 1)
    check_int("iterations", iterations, 0)
    max_calls = check_int("max_calls", max_calls, 0)
    regularization = check_float("regularization", regularization)
    held_out = check_float("held_out", held_out)
    check_bool("tune_coefficients", tune_coefficients)
    given = _check_search(held_out, regularization, name, reference, options)
    smaller = _check_smaller(smaller, model)
    t_start = model.schedule.t_max if reference is None else reference.times[0]
    searched = search_families(families, given, options, nfe, model.schedule, t_start)
    reserve = _reserve(searched, nfe, finalists, max_calls, len(smaller))
    shared = reference is not None
    reference = _reference_for(
        model, reference, shape, x_T, pilots, seed, candidates, substeps, held_out_noises
    )
    n, held = reference.pilots, held_out_count(reference.pilots, held_out)
    if n < 2:
        raise ValueError(f"optimize_solver needs at least 2 pilots (some are held out); got {n}")
    # The runs outside the Levenberg-Marquardt iterations (`_reserve`) are kept out of
    # what the iterations may spend, so that max_calls bounds the whole search.
    bar = Progress(max_calls, not progress, desc=f"tuning {nfe} calls", unit="call")
    search = PilotSearch(model, reference, n - held, max_calls - reserve, on_call=bar.update)
    try:
        screened, best, kept = _search(
            search, searched, reference, nfe, finalists, iterations, regularization,
            tune_coefficients, smaller,
        )  # fmt: skip
        return _record(
            model, name, reference, shared, search, screened[: 4 * finalists], best, kept
        )
    finally:
        bar.close()


def _search(
    search: PilotSearch,
    searched: list[tuple[str, SolverOptions]],
    reference: PilotReference,
    nfe: int,
    finalists: int,
    iterations: int,
    regularization: float,
    tune_coefficients: bool,
    smaller: list[TunedSolver],
) -> tuple[list[_Screened], _Refined, _Kept]:
    """Steps 1-4: screening, refinement of the finalists, the held-out choice (among the
    refined result, the best untuned setting screened and the smaller budgets')."""
    screened = _screen(search, searched, reference, nfe)
    finals = [c for c in screened if math.isfinite(c.error)][:finalists]
    if not finals:
        raise ValueError("every searched setting gave a non-finite error on the pilots")
    best = _refine(search, finals, iterations, regularization, tune_coefficients)
    untuned = [c for c in screened if c.grid != "dp" and math.isfinite(c.error)][:1]
    others = [(f"{c.label}, {c.grid} (untuned)", c.options, nfe) for c in untuned]
    others += [(f"{s.setting} (tuned for nfe={s.nfe})", s.solver(), s.nfe) for s in smaller]
    return screened, best, _held_out_choice(search, best, others)


def _record(
    model: DiffusionModel,
    name: str | None,
    reference: PilotReference,
    shared: bool,
    search: PilotSearch,
    screened: list[_Screened],
    best: _Refined,
    kept: _Kept,
) -> TunedSolver:
    """The search's result and its provenance as a `TunedSolver` (its model calls counted
    after the last scoring run)."""
    final = kept.final
    pilot_error, grid_only_error = search.error(final), search.error(best.grid_only)
    levels = model.schedule.levels(list(final.timesteps or ()))
    return TunedSolver(
        times=list(final.timesteps or ()),
        sigmas=[lv.sigma / lv.alpha if lv.alpha > 0 else math.inf for lv in levels],
        nfe=kept.nfe,
        options={
            k: v for k, v in final.changed().items() if k not in ("timesteps", "coefficients")
        },
        coefficients=None
        if final.coefficients is None
        else [list(row) for row in final.coefficients],
        setting=kept.label,
        model=name or type(model).__name__,
        pilots=len(search.x),
        held_out=len(search.hold_x),
        seed=reference.seed,
        model_calls={
            "reference": reference.model_calls,
            "held_out_reference": reference.held_calls,
            "search": search.calls[0],
            "evaluations": (0 if shared else reference.evaluations) + search.calls[1],
        },
        pilot_error=pilot_error,
        held_out_error=kept.error,
        analytic_held_out_error=kept.analytic_error,
        fallback=kept.fallback,
        details=dict(
            reference_shared=shared,
            held_out_measure=HELD_OUT_MEASURE,
            start_grid=best.grid,
            start_pilot_error=best.start_error,
            grid_only_pilot_error=grid_only_error,
            grid_only_held_out_error=kept.grid_only_error,
            start_held_out_error=kept.start_error,
            screened=[dict(setting=c.label, grid=c.grid, pilot_error=c.error) for c in screened],
        ),
    )


def _reserve(
    candidates: list[tuple[str, SolverOptions]],
    nfe: int,
    finalists: int,
    max_calls: int,
    smaller: int = 0,
) -> int:
    """The calls kept for the runs outside the Levenberg-Marquardt iterations. The families
    and the search's least cost are known before any model call: a budget below it is
    refused before the reference is paid for."""
    grids = len(STANDARD_GRIDS) + 1
    reserve = (_fixed_runs(min(finalists, len(candidates) * grids)) + 1 + smaller) * nfe
    floor = len(candidates) * grids * nfe + reserve
    if max_calls < floor:
        raise ValueError(
            f"max_calls={max_calls} is below the least this search costs, {floor} calls for "
            f"nfe={nfe}: {len(candidates)} families screened on up to {grids} grids, then "
            f"the finalists scored (each run {nfe} calls); raise max_calls, narrow families, "
            "or lower nfe"
        )
    return reserve


@dataclass(frozen=True)
class _Screened:
    """One (family, grid) pair of the screening and its error on the tuning pilots."""

    error: float
    label: str
    grid: str
    options: SolverOptions  # the family's options on that grid


@dataclass(frozen=True)
class _Refined:
    """A finalist after refinement: its tuning error, family and starting grid, and its
    solver at each stage (the grid it started from, the refined grid, then with tuned
    coefficients if those were tuned)."""

    error: float
    label: str
    grid: str
    start: SolverOptions
    grid_only: SolverOptions
    tuned: SolverOptions
    start_error: float


def _screen(
    search: PilotSearch,
    candidates: list[tuple[str, SolverOptions]],
    reference: PilotReference,
    nfe: int,
) -> list[_Screened]:
    """Step 1: every family on the DP grid and on the standard grids, best first."""
    screened = []
    for label, opts in candidates:
        steps = opts.steps_for_calls(nfe)
        for grid_name, times in proposals(search.schedule, reference, steps).items():
            on_grid = SolverOptions.of(opts, timesteps=tuple(times))
            screened.append(_Screened(search.error(on_grid), label, grid_name, on_grid))
    screened.sort(key=lambda c: (c.error, c.label, c.grid))
    return screened


def _refine(
    search: PilotSearch,
    finals: list[_Screened],
    iterations: int,
    regularization: float,
    tune_coefficients: bool,
) -> _Refined:
    """Steps 2-3: each finalist's grid refined, then its grid and coefficients together;
    the one with the lowest tuning error."""
    results = []
    for c in finals:
        grid_only = search.refine(c.options, iterations, regularization, coefficients=False)
        tuned = grid_only
        if tune_coefficients:
            tuned = search.refine(grid_only, iterations, regularization, coefficients=True)
        results.append(
            _Refined(search.error(tuned), c.label, c.grid, c.options, grid_only, tuned, c.error)
        )
    results.sort(key=lambda r: (r.error, r.label))
    return results[0]


def optimize_solvers(
    model: DiffusionModel,
    budgets: Sequence[int],
    *,
    reference: PilotReference | None = None,
    shape: Sequence[int] | None = None,
    pilots: int = 64,
    seed: int = 0,
    candidates: int = 64,
    substeps: int = 4,
    held_out_noises: int = HELD_OUT_NOISES,
    **options: Any,
) -> dict[int, TunedSolver]:
    """`optimize_solver` for several budgets of one model, together: one pilot reference
    for all (its calls paid once), and each budget's result never worse on the held-out
    states than the smaller budgets' (`smaller`), so the errors are monotone in the budget.
    Returns {budget: TunedSolver}; a budget may keep a smaller budget's solver (its `nfe`
    says how many calls it takes). `**options` are `optimize_solver`'s."""
    if isinstance(budgets, int) or not isinstance(budgets, Sequence) or not budgets:
        raise TypeError(f"budgets must be a non-empty list of call counts; got {budgets!r}")
    ordered = sorted({check_int("budgets", b, 2) for b in budgets})
    reference = _reference_for(
        check_model(model), reference, shape, None, pilots, seed, candidates, substeps,
        held_out_noises,
    )  # fmt: skip
    found: dict[int, TunedSolver] = {}
    for nfe in ordered:
        found[nfe] = optimize_solver(
            model, nfe, reference=reference, smaller=list(found.values()), **options
        )
    return found


def _check_smaller(smaller: object, model: DiffusionModel) -> list[TunedSolver]:
    """`smaller` as a list of TunedSolver, each tuned on this model's schedule."""
    if isinstance(smaller, TunedSolver) or not isinstance(smaller, Sequence):
        raise TypeError(
            f"smaller must be a list of TunedSolver (smaller budgets); got {type(smaller).__name__}"
        )
    for i, solver in enumerate(smaller):
        if not isinstance(solver, TunedSolver):
            raise TypeError(f"smaller[{i}] must be a TunedSolver; got {type(solver).__name__}")
        solver.check_schedule(model.schedule, "the model's schedule")
    return list(smaller)


def _check_search(
    held_out: float,
    regularization: float,
    name: object,
    reference: object,
    options: dict[str, Any],
) -> SolverOptions:
    """The search's arguments checked; returns the caller's options as one value (those
    only some families have left out: they are checked alone, by name)."""
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
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None; got {type(name).__name__}")
    # Checked with the options' own messages; those only some families have (the
    # corrector's B(h), the third-order rule's form) are checked alone.
    given = SolverOptions.of(**{k: v for k, v in options.items() if k not in PER_FAMILY})
    for key, allowed in PER_FAMILY.items():
        if key in options:
            check_choice(key, options[key], allowed)
    if reference is not None and not isinstance(reference, PilotReference):
        raise TypeError(
            f"reference must be a PilotReference (from pilot_reference); got "
            f"{type(reference).__name__}"
        )
    return given


def _reference_for(
    model: DiffusionModel,
    reference: PilotReference | None,
    shape: Sequence[int] | None,
    x_T: Tensor | None,
    pilots: int,
    seed: int,
    candidates: int,
    substeps: int,
    held_out_noises: int,
) -> PilotReference:
    """The caller's shared reference (checked against the model, with no pilot arguments
    beside it), or a new one from the pilot arguments."""
    if reference is None:
        return pilot_reference(
            model,
            shape=shape,
            x_T=x_T,
            pilots=pilots,
            seed=seed,
            candidates=candidates,
            substeps=substeps,
            held_out_noises=held_out_noises,
        )
    given_pilots = [
        name_
        for name_, value, default in (
            ("shape", shape, None),
            ("x_T", x_T, None),
            ("pilots", pilots, 64),
            ("seed", seed, 0),
            ("candidates", candidates, 64),
            ("substeps", substeps, 4),
            ("held_out_noises", held_out_noises, HELD_OUT_NOISES),
        )
        if value is not default and value != default
    ]
    if given_pilots:
        raise ValueError(
            f"give reference or the pilots ({', '.join(given_pilots)}), not both: the "
            "reference holds its pilots"
        )
    reference.check_model(model)
    return reference


@dataclass(frozen=True)
class _Kept:
    """What the held-out states kept: the solver, its held-out error and that of its
    analytic rules, why a refinement was dropped (None if none was), and the held-out
    errors of the grid the search started from and of the grid-only refinement."""

    final: SolverOptions
    error: float
    analytic_error: float
    fallback: str | None
    start_error: float
    grid_only_error: float
    label: str
    nfe: int


def _held_out_choice(
    search: PilotSearch, best: _Refined, others: list[tuple[str, SolverOptions, int]]
) -> _Kept:
    """Step 4, by `HELD_OUT_MEASURE` on the held-out states (the held-out pilots and the
    extra held-out noises): the refined grid must beat the grid it started from, and the
    coefficients both analytic grids (the kept one, and their own with analytic rules);
    a refinement that does not is dropped, with the reason. Then the simpler candidates
    the search had in hand (`others`: the best untuned setting screened, the tuned
    solvers of smaller budgets) replace the result where they beat it there: the result
    is never worse than they are on the held-out states."""
    start, grid_only, tuned, grid_name = best.start, best.grid_only, best.tuned, best.grid
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
    label, nfe = best.label, int(final.model_calls() or 0)
    for other_label, options, other_nfe in others:
        e_other = hold(options)
        if e_other < e_final:
            note = f"kept {other_label}: held-out error {e_other:.4g} < {e_final:.4g}"
            fallback = note if fallback is None else f"{fallback}; {note}"
            final, e_final, label, nfe = options, e_other, other_label, other_nfe
            e_analytic = e_other if options.coefficients is None else e_analytic
    return _Kept(final, e_final, e_analytic, fallback, e_start, e_grid, label, nfe)


def _fixed_runs(finalists: int) -> int:
    """Runs of `nfe` calls each outside the screening and the Levenberg-Marquardt
    iterations: per finalist the first run of its grid and of its coefficient refinement
    and its score; then the result's tuning and grid-only errors and the held-out errors of
    the start grid, the refined grid, the tuned solver and its analytic rules."""
    return 3 * finalists + 6
