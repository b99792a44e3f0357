"""The budget benchmark: per model-call budget, the tuned solver against the best untuned
setting, each scored on held-out noises against a fine reference.

    from dpmsolver.tuning import budget
    result = budget.budget(model, [4, 5, 6, 8, 10])
    print(result.table())

The untuned settings are every preset of `BUDGET_SEARCH` on every grid of `BUDGET_GRIDS`
(the standard ones, and published ones mapped onto the model's noise range:
`untuned_grid`); `dpmsolver bench --budget` and `benchmarks/low_budget.py` print it.
"""

from __future__ import annotations

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
    align_your_steps,
    gits_sigmas,
    sample,
    sigmas_to_times,
    time_grid,
)
from ..noise import start_noise
from ..tools.measure import reference, rms
from ..tools.presets import SOLVERS
from .pilots import pilot_reference
from .solver_search import SEARCHED_FAMILIES, optimize_solver
from .values import TunedSolver

__all__ = [
    "BUDGET_GRIDS",
    "BUDGET_SEARCH",
    "PUBLISHED_GRIDS",
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

    @property
    def ratio(self) -> float:
        return self.rms_error / self.baseline_error

    @property
    def grid_only_ratio(self) -> float:
        return self.grid_only_error / self.baseline_error


@dataclass
class BudgetResult:
    """Per budget: the tuned solver against the best untuned setting, on held-out noises."""

    rows: list[BudgetRow]
    reference_calls: int  # the shared pilot reference (0 when the solvers were given)
    model_calls: int  # search calls, all budgets
    untuned: dict[int, list[tuple[float, str]]]  # nfe -> (error, setting and grid), sorted
    solvers: dict[int, TunedSolver] = field(default_factory=dict)  # nfe -> the tuned solver

    def table(self) -> str:
        lines = [
            "Best setting per model-call budget (tuned on pilots; RMS error on held-out "
            "noises against the reference)",
            f"{'NFE':>4s}  {'tuned':16s}{'error':>10s}{'analytic':>10s}{'grid-only':>10s}  "
            f"{'best untuned':30s}{'error':>10s}{'tuned/':>8s}{'grid/':>8s}{'calls':>7s}",
        ]
        for r in self.rows:
            lines.append(
                f"{r.nfe:4d}  {r.setting:16s}{r.rms_error:10.2e}{r.analytic_error:10.2e}"
                f"{_e(r.grid_only_error)}  {r.baseline:30s}{r.baseline_error:10.2e}"
                f"{r.ratio:8.2f}{_f(r.grid_only_ratio)}{r.model_calls:7d}"
            )
        settings = len(next(iter(self.untuned.values()), []))
        lines.append(
            f"(analytic: the tuned grid with the analytic rules; grid-only: "
            f"optimize_solver(tune_coefficients=False); best untuned: the best of {settings} "
            f"settings x grids, chosen on the held-out noises themselves; tuned/, grid/: "
            f"ratios to it; calls: search calls per budget, plus {self.reference_calls} for "
            f"the shared reference, {self.model_calls + self.reference_calls} in all)"
        )
        return "\n".join(lines)

    def to_json(self, path: str | Path) -> None:
        data = {
            "rows": [
                {**asdict(r), "ratio": r.ratio, "grid_only_ratio": r.grid_only_ratio}
                for r in self.rows
            ],
            "reference_calls": self.reference_calls,
            "model_calls": self.model_calls,
            "untuned": {str(k): v for k, v in self.untuned.items()},
        }
        Path(path).write_text(json.dumps(data, indent=1))


def _e(value: float) -> str:
    return f"{value:10.2e}" if math.isfinite(value) else f"{'-':>10s}"


def _f(value: float) -> str:
    return f"{value:8.2f}" if math.isfinite(value) else f"{'-':>8s}"


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
    pilots: int = 64,
    settings: Sequence[str] = BUDGET_SEARCH,
    grids: Sequence[str] = BUDGET_GRIDS,
    reference_nfe: int = 3000,
    shape: Sequence[int] | None = None,
    tuned: Mapping[int, TunedSolver] | None = None,
    grid_only: bool = True,
    max_calls: int = 3500,
) -> BudgetResult:
    """For each budget, a tuned solver against the best untuned setting.

    The tuned solver is `tuned[nfe]` if given (e.g. the shipped ones), else
    `optimize_solver(model, nfe)` on `pilots` noises from `tune_seed`, all budgets sharing
    one pilot reference; with `grid_only`, `optimize_solver(..., tune_coefficients=False)`
    too. Untuned: every setting of `settings` on every grid of `grids` (see
    `untuned_grid`), the best chosen on the held-out noises themselves (a choice in its
    favour). Everything is scored on `n` held-out noises from `seed` against a
    `reference_nfe`-call reference.
    """
    for name in settings:
        if name not in SOLVERS:
            raise ValueError(f"settings: unknown {name!r}; choose from {', '.join(SOLVERS)}")
    for g in grids:
        if g not in (*SKIP_TYPES, *PUBLISHED_GRIDS):
            allowed = ", ".join((*SKIP_TYPES, *PUBLISHED_GRIDS))
            raise ValueError(f"grids: unknown {g!r}; choose from {allowed}")
    for b in budgets:
        check_int("budgets", b, 2)
    test_x = start_noise(model, n, seed, shape)
    test_ref = reference(model, test_x, reference_nfe)
    schedule = model.schedule
    pilots_ref = None
    if tuned is None or any(b not in tuned for b in budgets) or grid_only:
        pilots_ref = pilot_reference(model, shape=shape, pilots=pilots, seed=tune_seed)
    rows: list[BudgetRow] = []
    untuned: dict[int, list[tuple[float, str]]] = {}
    solvers: dict[int, TunedSolver] = {}
    spent = 0
    for nfe in budgets:
        scores = []
        for name in settings:
            opts = SOLVERS[name].options
            steps = opts.steps_for_calls(nfe)
            if opts.order > steps or opts.method != "multistep":
                continue
            for g in grids:
                try:
                    out = sample(model, test_x, opts, timesteps=untuned_grid(schedule, g, steps))
                except ValueError:
                    continue  # e.g. the analytic first step from too low a noise level
                err = rms(out, test_ref)
                scores.append((err if math.isfinite(err) else math.inf, f"{name}, {g}"))
        scores.sort()
        untuned[nfe] = scores
        base_err, base_name = scores[0]
        if tuned is not None and nfe in tuned:
            solver = tuned[nfe]
        else:
            solver = optimize_solver(model, nfe, reference=pilots_ref, max_calls=max_calls)
            spent += solver.model_calls["search"]
        solvers[nfe] = solver
        grid_err = math.nan
        if grid_only:
            plain = optimize_solver(
                model, nfe, reference=pilots_ref, max_calls=max_calls, tune_coefficients=False
            )
            spent += plain.model_calls["search"]
            grid_err = rms(sample(model, test_x, solver=plain), test_ref)
        rows.append(
            BudgetRow(
                nfe,
                solver.setting,
                rms(sample(model, test_x, solver=solver), test_ref),
                rms(sample(model, test_x, solver.analytic()), test_ref),
                grid_err,
                base_name,
                base_err,
                solver.times,
                solver.options,
                solver.coefficients,
                solver.pilot_error,
                solver.model_calls["search"],
                solver.fallback,
            )
        )
    ref_calls = 0 if pilots_ref is None else pilots_ref.model_calls
    return BudgetResult(rows, ref_calls, spent, untuned, solvers)
