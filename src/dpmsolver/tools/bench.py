"""Benchmark solvers against a high-accuracy solution of the same ODE from the same x_T.

    from dpmsolver.tools import bench
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
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..checks import check_int
from ..core import (
    DiffusionModel,
    DiscreteVPSchedule,
    sample,
)
from ..extras import needs_extra
from ..noise.start import start_noise
from .measure import counting, reference, rms
from .presets import RECOMMENDED, SOLVERS, preset_name

__all__ = ["BenchResult", "Row", "run"]

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

    def figure(self) -> Any:
        """The matplotlib Figure of `plot`: error against model calls, log-log, one line
        per solver; the calls axis ticked at the calls run, as plain integers (a log axis
        would label them 5x10^0). Needs matplotlib (the plot extra)."""
        with needs_extra("plot", "BenchResult.plot"):
            import matplotlib  # noqa: F401 (only the extra's check)
        # A Figure without pyplot: no backend is chosen for the caller (a notebook keeps
        # its own), and nothing is left open.
        from matplotlib.figure import Figure
        from matplotlib.ticker import NullLocator

        fig = Figure(figsize=(6, 4.2))
        ax = fig.add_subplot()
        for name in dict.fromkeys(r.solver for r in self.rows):
            pts = sorted((r.nfe, r.rms_error) for r in self.rows if r.solver == name)
            ax.loglog([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        calls = sorted({r.nfe for r in self.rows})
        ax.set_xticks(calls, [str(c) for c in calls])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("model calls (NFE)")
        ax.set_ylabel("RMS error vs reference ODE solution")
        ax.set_title(str(self.extra.get("model", "")))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def plot(self, path: str | Path) -> None:
        """Write `figure` to `path` (needs matplotlib)."""
        self.figure().savefig(path, dpi=120)


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
        solvers: ODE preset names (any name `presets.resolve` takes); with `baselines`,
            diffusers' DPMSolverMultistep and UniPC schedulers join for discrete VP
            schedules when diffusers is installed.
        n: the number of starting states drawn from `seed` (unused when `x_T` is given).
        seed: the seed that draws them.
        x_T: the starting states, instead of drawing them (overrides n and seed).
        reference_nfe: model calls of the reference solve.
    """
    solvers = [preset_name(name, "solvers", ode=True) for name in solvers]
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
