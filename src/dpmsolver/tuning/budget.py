"""The budget benchmark: per model-call budget, the tuned solver against the untuned
settings a user could pick, each scored on held-out noises against a fine reference.

    from dpmsolver.tuning import budget
    result = budget.budget(model, [4, 5, 6, 8, 10])
    print(result.table())

The untuned settings are every preset of `BUDGET_SEARCH` on every grid of `BUDGET_GRIDS`
(the standard ones, and published ones mapped onto the model's noise range:
`untuned_grid`). The comparators: the best of them chosen on the tuning pilots (what a
user could choose), the best fixed published setting (`PUBLISHED_SETTINGS`), and the best
chosen on the held-out noises themselves (a choice no user can make). At 4-6 calls the
Frechet distance of the samples to the converged sampler's is printed beside its noise
floor. `dpmsolver bench --budget` and `benchmarks/low_budget.py` print it.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..checks import check_int
from ..core import (
    SKIP_TYPES,
    DiffusionModel,
    NoiseSchedule,
    SolverOptions,
    align_your_steps,
    gits_sigmas,
    sample,
    sigmas_to_times,
    time_grid,
)
from ..noise import start_noise
from ..tools.measure import frechet_distance, reference, rms
from ..tools.presets import SOLVERS, preset_name
from .pilots import PilotReference, pilot_reference
from .solver_search import (
    HELD_OUT_NOISES,
    SEARCHED_FAMILIES,
    held_out_count,
    optimize_solver,
    optimize_solvers,
)
from .values import TunedSolver

__all__ = [
    "BUDGET_GRIDS",
    "BUDGET_SEARCH",
    "FRECHET_BUDGETS",
    "PUBLISHED_GRIDS",
    "PUBLISHED_SETTINGS",
    "BudgetResult",
    "BudgetRow",
    "budget",
    "untuned_grid",
]

# The untuned settings of `budget`, each run on every grid of BUDGET_GRIDS.
BUDGET_SEARCH = (*SEARCHED_FAMILIES, "dpm++2m+c-taylor", "dpm++3m+c-taylor")
# The untuned grids of the budget search: the standard ones and published ones (mapped
# onto the model's noise range, see `untuned_grid`).
# (logSNR is k-diffusion's exponential grid.)
BUDGET_GRIDS = ("logSNR", "time_uniform", "time_quadratic", "karras", "beta", "ays", "gits")
# The fixed settings people publish and pick from lists (preset, grid): DPM-Solver++ 2M / 3M
# and DEIS / iPNDM on Karras sigmas, UniPC (2M with the UniC corrector) on the logSNR
# (exponential) grid, iPNDM on GITS' grid, DPM-Solver++ 2M on Align Your Steps'.
PUBLISHED_SETTINGS = {
    "DPM-Solver++ 2M, karras": ("dpm++2m", "karras"),
    "DPM-Solver++ 3M, karras": ("dpm++3m", "karras"),
    "UniPC, logSNR": ("dpm++2m+c", "logSNR"),
    "iPNDM, karras": ("ipndm4", "karras"),
    "DEIS, karras": ("deis3", "karras"),
    "iPNDM, GITS": ("ipndm3", "gits"),
    "DPM-Solver++ 2M, AYS": ("dpm++2m", "ays"),
}
# Budgets at which the Frechet distance resolves differences (above, every good sampler
# is within its noise floor).
FRECHET_BUDGETS = (4, 5, 6)
PUBLISHED_GRIDS: dict[str, Callable[[int], list[float]]] = {
    "ays": lambda steps: align_your_steps("sd15", steps),
    "gits": lambda steps: gits_sigmas(steps),
}


@dataclass(frozen=True)
class BudgetRow:
    """One model-call budget: the tuned solver, the same grid with the analytic rules, the
    grid-only tuned solver, and the best untuned setting, each scored on held-out noises."""

    nfe: int
    setting: str  # the tuned solver's family
    rms_error: float  # the tuned solver's
    analytic_error: float  # its grid with the analytic rules
    grid_only_error: float  # optimize_solver(..., tune_coefficients=False); nan if not run
    baseline: str  # the best untuned setting and grid
    baseline_error: float
    times: list[float] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    coefficients: list[list[float]] | None = None
    tuning_error: float = float("nan")  # the tuned solver's error on its tuning pilots
    model_calls: int = 0  # search calls spent tuning this budget (the reference apart)
    fallback: str | None = None
    chosen: str = ""  # the best untuned setting chosen on the tuning pilots
    chosen_error: float = float("nan")
    published: str = ""  # the best fixed published setting (on the held-out noises)
    published_error: float = float("nan")
    evaluations: int = 0  # model evaluations of the tuning, a share of the reference's too
    frechet: float = float("nan")  # the tuned solver's, at FRECHET_BUDGETS
    frechet_chosen: float = float("nan")  # the chosen untuned setting's
    frechet_floor: float = float("nan")  # the converged sampler against itself

    @property
    def ratio(self) -> float:
        return self.rms_error / self.baseline_error

    @property
    def grid_only_ratio(self) -> float:
        return self.grid_only_error / self.baseline_error

    @property
    def chosen_ratio(self) -> float:
        """The tuned error over that of the untuned setting chosen on the tuning pilots."""
        return self.rms_error / self.chosen_error

    @property
    def published_ratio(self) -> float:
        return self.rms_error / self.published_error


@dataclass
class BudgetResult:
    """Per budget: the tuned solver against the best untuned setting, on held-out noises."""

    rows: list[BudgetRow]
    # The shared pilot reference's calls, its extra noises' too (0 when it tuned nothing:
    # solvers given and no grid-only tuning; it then only chose the chosen untuned setting).
    reference_calls: int
    model_calls: int  # search calls, all budgets
    untuned: dict[int, list[tuple[float, str]]]  # nfe -> (error, setting and grid), sorted
    solvers: dict[int, TunedSolver] = field(default_factory=dict)  # nfe -> the tuned solver

    @property
    def monotone(self) -> bool:
        """Whether the tuned error never rises with the budget (on the held-out noises)."""
        errors = [r.rms_error for r in sorted(self.rows, key=lambda r: r.nfe)]
        return all(b <= a for a, b in itertools.pairwise(errors))

    def table(self) -> str:
        lines = [
            "Best setting per model-call budget (tuned on pilots; RMS error on held-out "
            "noises against the reference)",
            f"{'NFE':>4s}  {'tuned':22s}{'error':>10s}{'analytic':>10s}{'grid-only':>10s}"
            f"{'/chosen':>9s}{'/published':>11s}{'/best':>7s}{'evals':>8s}"
            f"{'FD':>9s}{'FD chosen':>10s}{'FD floor':>10s}",
        ]
        for r in self.rows:
            lines.append(
                f"{r.nfe:4d}  {r.setting[:22]:22s}{r.rms_error:10.2e}{r.analytic_error:10.2e}"
                f"{_e(r.grid_only_error)}{r.chosen_ratio:9.2f}{r.published_ratio:11.2f}"
                f"{r.ratio:7.2f}{r.evaluations:8d}{_e(r.frechet, 9)}{_e(r.frechet_chosen)}"
                f"{_e(r.frechet_floor)}"
            )
        lines.append("comparators (error on the held-out noises):")
        for r in self.rows:
            lines.append(
                f"{r.nfe:4d}  chosen on the pilots: {r.chosen} {r.chosen_error:.2e}; published: "
                f"{r.published} {r.published_error:.2e}; best on the held-out noises: "
                f"{r.baseline} {r.baseline_error:.2e}"
            )
        settings = len(next(iter(self.untuned.values()), []))
        lines.append(
            f"(analytic: the tuned grid with the analytic rules; grid-only: "
            f"optimize_solver(tune_coefficients=False); /chosen: ratio to the best of "
            f"{settings} untuned settings x grids chosen on the tuning pilots; /published: to "
            f"the best of {len(PUBLISHED_SETTINGS)} fixed published settings; /best: to the "
            "best untuned chosen on the held-out noises themselves; evals: model evaluations "
            "(calls x pilots) of the tuning, with its share of the shared reference's; FD: "
            "Frechet distance to the converged sampler's samples, beside its floor (the "
            f"converged sampler against itself); monotone in the budget: "
            f"{'yes' if self.monotone else 'no'})"
        )
        return "\n".join(lines)

    def to_json(self, path: str | Path) -> None:
        data = {
            "rows": [
                {
                    **asdict(r),
                    "ratio": r.ratio,
                    "grid_only_ratio": r.grid_only_ratio,
                    "chosen_ratio": r.chosen_ratio,
                    "published_ratio": r.published_ratio,
                }
                for r in self.rows
            ],
            "reference_calls": self.reference_calls,
            "model_calls": self.model_calls,
            "monotone": self.monotone,
            "untuned": {str(k): v for k, v in self.untuned.items()},
        }
        Path(path).write_text(json.dumps(data, indent=1))


def _e(value: float, width: int = 10) -> str:
    return f"{value:{width}.2e}" if math.isfinite(value) else f"{'-':>{width}s}"


def untuned_grid(schedule: NoiseSchedule, grid: str, steps: int) -> list[float]:
    """The times of an untuned grid of `steps` steps from t_max to t_min: a standard
    `skip_type`, or a published one ('ays': Align Your Steps for SD 1.5, 'gits': GITS at
    coefficient 1.2, as ComfyUI's GITSScheduler), whose noise levels are mapped
    log-affinely onto the schedule's range
    (they were published for Stable Diffusion's sigma_max / sigma_min)."""
    t_s, t_e = schedule.t_max, schedule.t_min
    if grid not in PUBLISHED_GRIDS:
        return time_grid(schedule, grid, t_s, t_e, steps).tolist()
    published = PUBLISHED_GRIDS[grid](steps)
    hi, lo = (float(v) for v in (published[0], published[-1]))
    ends = schedule.levels([t_s, t_e])
    s_hi, s_lo = (lv.sigma / lv.alpha for lv in ends)
    b = (math.log(s_hi) - math.log(s_lo)) / (math.log(hi) - math.log(lo))
    sig = [math.exp(math.log(s_lo) + b * (math.log(v) - math.log(lo))) for v in published]
    times = sigmas_to_times(schedule, sig).tolist()
    return [t_s, *times[1:-1], t_e]


def budget(
    model: DiffusionModel,
    budgets: Sequence[int] = (4, 5, 6, 8, 10),
    *,
    n: int = 64,
    seed: int = 1,
    tune_seed: int = 0,
    pilots: int = 16,
    settings: Sequence[str] = BUDGET_SEARCH,
    grids: Sequence[str] = BUDGET_GRIDS,
    reference_nfe: int = 3000,
    shape: Sequence[int] | None = None,
    tuned: Mapping[int, TunedSolver] | None = None,
    grid_only: bool = True,
    max_calls: int = 3500,
) -> BudgetResult:
    """For each budget, a tuned solver against the untuned settings a user could pick.

    The tuned solvers are `tuned[nfe]` if given (e.g. the shipped ones), else
    `optimize_solvers(model, budgets)` on `pilots` noises from `tune_seed` (one pilot
    reference for all budgets, each never worse than the smaller ones on the held-out
    pilots); with `grid_only`, `optimize_solver(..., tune_coefficients=False)` too.
    Untuned: every setting of `settings` on every grid of `grids` (see `untuned_grid`);
    the comparators are the best of them chosen on the tuning pilots (the pilots' reference
    is built for that even when every solver is given), the best fixed
    published setting (`PUBLISHED_SETTINGS`) and the best chosen on the held-out noises.
    Everything is scored on `n` held-out noises from `seed` against a `reference_nfe`-call
    reference; at `FRECHET_BUDGETS` the Frechet distance of the samples from the first half
    of the noises to the reference samples from the second half.
    """
    settings = [preset_name(name, "settings", ode=True) for name in settings]
    for g in grids:
        if g not in (*SKIP_TYPES, *PUBLISHED_GRIDS):
            allowed = ", ".join((*SKIP_TYPES, *PUBLISHED_GRIDS))
            raise ValueError(f"grids: unknown {g!r}; choose from {allowed}")
    for b in budgets:
        check_int("budgets", b, 2)
    check_int("n", n, 1)
    if n < 4 and any(b in FRECHET_BUDGETS for b in budgets):
        raise ValueError(
            f"n must be >= 4 with a budget in {FRECHET_BUDGETS}: the Frechet distance there "
            f"fits a covariance to each half of the held-out noises; got {n}"
        )
    test_x = start_noise(model, n, seed, shape)
    test_ref = reference(model, test_x, reference_nfe)
    tunes = tuned is None or any(b not in tuned for b in budgets) or grid_only
    # The pilots' reference: the tunings run on it, and the chosen untuned setting is
    # chosen on its tuning pilots (so it is built for given solvers too, without the extra
    # held-out noises, which only a tuning uses; the pilots are the same rows either way).
    pilots_ref = pilot_reference(
        model,
        shape=shape,
        pilots=pilots,
        seed=tune_seed,
        held_out_noises=HELD_OUT_NOISES if tunes else 0,
    )
    solvers = dict(tuned or {})
    spent = 0
    if any(b not in solvers for b in budgets):
        found = optimize_solvers(model, budgets, reference=pilots_ref, max_calls=max_calls)
        spent += sum(found[b].model_calls["search"] for b in budgets if b not in solvers)
        solvers = {b: solvers.get(b, found[b]) for b in budgets}
    scorer = _Scorer(model, test_x, test_ref, pilots_ref)
    rows, untuned = [], {}
    ref_evals = pilots_ref.evaluations if tunes else 0  # shared by the tunings it served
    for nfe in budgets:
        untuned[nfe] = scorer.untuned(settings, grids, nfe)
        grid_err = math.nan
        if grid_only:
            plain = optimize_solver(
                model, nfe, reference=pilots_ref, max_calls=max_calls, tune_coefficients=False
            )
            spent += plain.model_calls["search"]
            grid_err = scorer.error(plain.solver())
        solver = solvers[nfe]
        evals = solver.model_calls.get("evaluations", 0) + ref_evals // len(budgets)
        rows.append(scorer.row(nfe, solver, untuned[nfe], grid_err, evals))
    ref_calls = pilots_ref.model_calls + pilots_ref.held_calls if tunes else 0
    return BudgetResult(rows, ref_calls, spent, untuned, solvers)


class _Scorer:
    """The held-out noises and their reference, the tuning pilots and theirs: errors of
    settings on each, and a budget's row."""

    def __init__(
        self, model: DiffusionModel, test_x: Any, test_ref: Any, pilots_ref: PilotReference
    ) -> None:
        self.model, self.x, self.ref = model, test_x, test_ref
        self.pilots_ref = pilots_ref
        self.schedule: NoiseSchedule = model.schedule

    def error(self, options: SolverOptions) -> float:
        err = rms(sample(self.model, self.x, options), self.ref)
        return err if math.isfinite(err) else math.inf

    def on_pilots(self, options: SolverOptions) -> float:
        ref = self.pilots_ref
        held = held_out_count(ref.pilots)  # the pilots optimize_solver tunes on
        x, end = ref.x_start[: ref.pilots - held], ref.end[: ref.pilots - held]
        err = rms(sample(self.model, x, options), end)
        return err if math.isfinite(err) else math.inf

    def setting(self, name: str, grid: str, nfe: int) -> SolverOptions | None:
        opts = SOLVERS[name].options
        steps = opts.steps_for_calls(nfe)
        if opts.order > steps or opts.method != "multistep":
            return None
        try:
            times = untuned_grid(self.schedule, grid, steps)
            return SolverOptions.of(opts, timesteps=tuple(times))
        except ValueError:
            return None  # e.g. a grid spaced in lambda from pure noise

    def untuned(
        self, settings: Sequence[str], grids: Sequence[str], nfe: int
    ) -> list[tuple[float, str]]:
        scores = []
        for name in settings:
            for g in grids:
                options = self.setting(name, g, nfe)
                if options is None:
                    continue
                try:
                    scores.append((self.error(options), f"{name}, {g}"))
                except ValueError:
                    continue  # e.g. the analytic first step from too low a noise level
        return sorted(scores)

    def best_of(
        self, names: Sequence[tuple[str, str, str]], nfe: int, score: Any
    ) -> tuple[float, str, SolverOptions | None]:
        """The best of `names` ((label, setting, grid)) by `score(setting, grid, options)`."""
        best: tuple[float, str, SolverOptions | None] = (math.inf, "-", None)
        for label, name, g in names:
            options = self.setting(name, g, nfe)
            if options is None:
                continue
            try:
                err = score(name, g, options)
            except ValueError:
                continue
            if err < best[0]:
                best = (err, label, options)
        return best

    def frechet(self, options: SolverOptions) -> float:
        """The FD of the samples from the first half of the noises to the reference samples
        of the second half."""
        half = self.x.shape[0] // 2
        return frechet_distance(sample(self.model, self.x[:half], options), self.ref[half:])

    @functools.cached_property
    def frechet_floor(self) -> float:
        """The reference's first half against its second: what `frechet` cannot go below."""
        half = self.x.shape[0] // 2
        return frechet_distance(self.ref[:half], self.ref[half:])

    def row(
        self,
        nfe: int,
        solver: TunedSolver,
        untuned: list[tuple[float, str]],
        grid_err: float,
        evals: int,
    ) -> BudgetRow:
        base_err, base_name = untuned[0] if untuned else (math.inf, "-")
        # The held-out errors of the untuned settings, already measured, by (setting, grid).
        held_out = {tuple(label.split(", ")): err for err, label in untuned}

        def on_held_out(name: str, g: str, options: SolverOptions) -> float:
            known = held_out.get((name, g))
            return known if known is not None else self.error(options)

        names = [(f"{s}, {g}", s, g) for s, g in held_out]
        _, chosen, chosen_opts = self.best_of(
            names, nfe, lambda name, g, options: self.on_pilots(options)
        )
        chosen_err = math.inf if chosen_opts is None else held_out[tuple(chosen.split(", "))]
        fixed = [(label, s, g) for label, (s, g) in PUBLISHED_SETTINGS.items()]
        published_err, published, _ = self.best_of(fixed, nfe, on_held_out)
        fd = fd_chosen = floor = math.nan
        if nfe in FRECHET_BUDGETS:
            fd, floor = self.frechet(solver.solver()), self.frechet_floor
            if chosen_opts is not None:
                fd_chosen = self.frechet(chosen_opts)
        return BudgetRow(
            nfe,
            solver.setting,
            self.error(solver.solver()),
            self.error(solver.analytic()),
            grid_err,
            base_name,
            base_err,
            solver.times,
            solver.options,
            solver.coefficients,
            solver.pilot_error,
            solver.model_calls["search"],
            solver.fallback,
            chosen,
            chosen_err,
            published,
            published_err,
            evals,
            fd,
            fd_chosen,
            floor,
        )
