"""Benchmark solvers against a high-accuracy solution of the same ODE from the same x_T.

    from dpmsolver import bench
    result = bench.run(model, steps=[5, 10, 20], solvers=["ddim", "dpm++2m", "dpm++3m"])
    print(result.table())

`model` is any `DiffusionModel` (a `Denoiser` around your network, or a built-in model).
The reference is DPM-Solver-3 (singlestep, logSNR grid) with `reference_nfe` model calls;
`reference_check` repeats it with half the calls, and their difference bounds the
reference's own error (it converges at third order, so the full-cost error is about 1/8 of
that difference).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .checks import check_int
from .core import (
    SKIP_TYPES,
    DiffusionModel,
    DiscreteVPSchedule,
    NoiseSchedule,
    align_your_steps,
    gits_sigmas,
    sample,
    sigmas_to_times,
    time_grid,
)
from .measure import counting, reference, rms
from .noise import start_noise
from .pilots import pilot_reference
from .presets import RECOMMENDED, SOLVERS
from .solver_tuning import SEARCHED_FAMILIES, optimize_solver
from .tuned import TunedSolver

__all__ = [
    "BUDGET_GRIDS",
    "BUDGET_SEARCH",
    "PUBLISHED_GRIDS",
    "BenchResult",
    "BudgetResult",
    "BudgetRow",
    "Line",
    "Row",
    "budget",
    "plot_panels",
    "run",
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
DIFFUSERS_BASELINES = {
    "diffusers-dpm++2m": "DPMSolverMultistepScheduler",
    "diffusers-unipc": "UniPCMultistepScheduler",
}


@dataclass(frozen=True)
class Row:
    """One solver at one step count: model calls and error against the reference."""

    solver: str
    steps: int
    nfe: int
    rms_error: float
    max_error: float
    seconds: float


@dataclass
class BenchResult:
    """The benchmark's rows plus how the reference was made."""

    rows: list[Row]
    reference_nfe: int
    reference_error: float  # |ref(nfe) - ref(nfe / 2)| RMS: an upper bound of its error
    skip_type: str
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """The RMS errors as a text table, solvers by step counts."""
        steps = sorted({r.steps for r in self.rows})
        solvers = list(dict.fromkeys(r.solver for r in self.rows))
        lines = [
            f"RMS error against the reference ({self.skip_type} grid; reference: "
            f"{self.reference_nfe} calls, within {self.reference_error:.1e})",
            f"{'solver':20s}" + "".join(f"{f'{s} steps':>12s}" for s in steps),
        ]
        by_key = {(r.solver, r.steps): r for r in self.rows}
        for name in solvers:
            cells = [by_key.get((name, s)) for s in steps]
            lines.append(
                f"{name:20s}"
                + "".join(f"{c.rms_error:12.2e}" if c is not None else f"{'-':>12s}" for c in cells)
            )
        if any(r.solver.startswith("diffusers") for r in self.rows):
            lines.append(
                "(diffusers' schedulers end at sigma = 0: their rows compare with the "
                "reference's x0 prediction)"
            )
        summary = self.summary()
        if summary:
            lines.append(summary)
        return "\n".join(lines)

    def summary(self) -> str:
        """How few calls the recommended setting needs to match DDIM at its most steps."""
        ddim = [r for r in self.rows if r.solver == "ddim"]
        best = [r for r in self.rows if r.solver == RECOMMENDED]
        if not ddim or not best:
            return ""
        target = max(ddim, key=lambda r: r.nfe)
        reach = [r for r in sorted(best, key=lambda r: r.nfe) if r.rms_error <= target.rms_error]
        if not reach:
            return (
                f"{RECOMMENDED} does not reach DDIM's {target.nfe}-call error "
                f"{target.rms_error:.2e} within the step counts run"
            )
        r = reach[0]
        return (
            f"{RECOMMENDED} reaches DDIM's {target.nfe}-call error ({target.rms_error:.2e}) "
            f"with {r.nfe} calls ({r.rms_error:.2e}): {target.nfe / r.nfe:.1f}x fewer"
        )

    def to_csv(self, path: str | Path) -> None:
        """One line per row, with a header."""
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(Row.__dataclass_fields__))
            writer.writeheader()
            for row in self.rows:
                writer.writerow(asdict(row))

    def to_json(self, path: str | Path) -> None:
        """Rows and reference details as JSON."""
        data = {
            "reference_nfe": self.reference_nfe,
            "reference_error": self.reference_error,
            "skip_type": self.skip_type,
            **self.extra,
            "rows": [asdict(r) for r in self.rows],
        }
        Path(path).write_text(json.dumps(data, indent=1))

    def plot(self, path: str | Path) -> None:
        """Error against model calls, log-log, one line per solver (needs matplotlib)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4.2))
        for name in dict.fromkeys(r.solver for r in self.rows):
            pts = sorted((r.nfe, r.rms_error) for r in self.rows if r.solver == name)
            ax.loglog([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xlabel("model calls (NFE)")
        ax.set_ylabel("RMS error vs reference ODE solution")
        ax.set_title(str(self.extra.get("model", "")))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


Line = tuple[Sequence[float], Sequence[float], dict[str, Any]]  # x, y, matplotlib style


def plot_panels(
    panels: Mapping[str, Mapping[str, Line]],
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    xlabel: str = "model calls (NFE)",
    legend_size: str | None = None,
) -> None:
    """Error against model calls side by side, one panel per entry of `panels` (its title ->
    {label: (calls, errors, style)}), log error axis, ticks at the calls drawn (needs
    matplotlib). The benchmarks' `--plot` figures are drawn by it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(panels), figsize=(6.4 * len(panels), 4.2), squeeze=False, layout="constrained"
    )
    for ax, (panel, lines) in zip(axes[0], panels.items(), strict=True):
        for label, (calls, errors, style) in lines.items():
            ax.plot(calls, errors, label=label, **style)
        ax.set_yscale("log")
        ax.set_xticks(sorted({c for calls, _, _ in lines.values() for c in calls}))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(panel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(**({"fontsize": legend_size} if legend_size else {}))
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(
    model: DiffusionModel,
    steps: Sequence[int] = (4, 5, 6, 8, 10, 15, 20, 25, 50),
    solvers: Sequence[str] = ("ddim", "dpm++2m", "dpm++3m", "dpm++3s", "dpm3s"),
    n: int = 64,
    seed: int = 0,
    skip_type: str = "logSNR",
    x_T: Tensor | None = None,
    reference_nfe: int = 3000,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    baselines: bool = True,
) -> BenchResult:
    """Run every solver at every step count from the same x_T and measure its error.

    Args:
        model: the model to sample (its `.schedule` sets the time range).
        steps: step counts (model calls for the fixed-step solvers).
        solvers: names from `SOLVERS`; with `baselines`, diffusers' DPMSolverMultistep and
            UniPC schedulers join for discrete VP schedules when diffusers is installed.
        n, seed, x_T: the starting noise (x_T overrides n and seed).
        reference_nfe: model calls of the reference solve.
    """
    for name in solvers:
        if name not in SOLVERS:
            raise ValueError(f"solvers: unknown {name!r}; choose from {', '.join(SOLVERS)}")
    for s in steps:
        check_int("steps", s, 1)
    check_int("reference_nfe", reference_nfe, 6)
    if x_T is None:
        x_T = start_noise(model, n, seed)
    x_T = x_T.to(device=device, dtype=dtype)
    ref = reference(model, x_T, reference_nfe, skip_type)
    check = reference(model, x_T, reference_nfe // 2, skip_type)
    rows: list[Row] = []
    counted, calls = counting(model)
    for name in solvers:
        opts = SOLVERS[name].options
        for s in steps:
            if opts.order > s and opts.method == "multistep":
                continue
            calls[0] = 0
            start = time.perf_counter()
            x = sample(counted, x_T, opts, steps=s, skip_type=skip_type)
            seconds = time.perf_counter() - start
            rows.append(Row(name, s, calls[0], rms(x, ref), float((x - ref).abs().max()), seconds))
    if baselines:
        rows += _diffusers_rows(model, x_T, ref, steps)
    return BenchResult(rows, reference_nfe, rms(ref, check), skip_type)


@torch.no_grad()
def _diffusers_rows(
    model: DiffusionModel, x_T: Tensor, ref: Tensor, steps: Sequence[int]
) -> list[Row]:
    """diffusers' own schedulers on the same model, for discrete VP schedules."""
    schedule = model.schedule
    if not isinstance(schedule, DiscreteVPSchedule) or schedule.t_max != 1.0:
        return []
    try:
        import diffusers
    except ImportError:
        return []
    ac = torch.exp(2 * schedule.log_alpha_table).to(torch.float32)
    betas = 1 - ac / torch.cat([torch.ones(1), ac[:-1]])
    # diffusers ends at sigma = 0; the reference at t = 1/N: compare x0 estimates.
    end = schedule.levels([schedule.t_min])[0]
    ref0 = model(ref, end, "data")
    rows = []
    for name, cls_name in DIFFUSERS_BASELINES.items():
        scheduler = getattr(diffusers, cls_name)(
            num_train_timesteps=len(ac), trained_betas=betas.numpy()
        )
        for s in steps:
            scheduler.set_timesteps(s)
            x = x_T.clone()
            start = time.perf_counter()
            for t in scheduler.timesteps:
                level = schedule.levels([(float(t) + 1.0) / schedule.total_n])[0]
                eps = model(x, level, "noise")
                x = scheduler.step(eps, t, x).prev_sample
            seconds = time.perf_counter() - start
            rows.append(
                Row(
                    name,
                    s,
                    len(scheduler.timesteps),
                    rms(x, ref0),
                    float((x - ref0).abs().max()),
                    seconds,
                )
            )
    return rows


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
