"""Tuned solvers against the untuned settings a user could pick, per model-call budget, on
every built-in model (VP and rectified flow, exact and trained).

For each budget (4, 5, 6, 8, 10, 15, 20 model calls) `dpmsolver.tuning.budget.budget` tunes
solvers with `optimize_solvers` on 16 pilot noises (one pilot reference for all budgets;
each budget never worse than the smaller ones on the held-out pilots), and a grid-only one
(`tune_coefficients=False`), and scores them on 1024 held-out noises against a 3000-call
reference. The per-sample errors are heavy-tailed: a few trajectories pass near a boundary
between two modes, so with fewer noises the ratios change a lot from one seed to the next.
Comparators: the best untuned setting chosen on the tuning pilots (every searched setting
- DPM-Solver++ 2M/3M with and without the UniC corrector, their Taylor forms, iPNDM 3/4
and DEIS 3 as ComfyUI runs them, each with and without the analytic first step - on every
grid: logSNR = exponential, time-uniform, time-quadratic, karras, beta, Align Your Steps
and GITS mapped onto the model's noise range), the best fixed published setting
(`budget.PUBLISHED_SETTINGS`), and the best untuned setting chosen on the held-out noises
themselves. At 4-6 calls the Frechet distance to the converged sampler's samples, beside
its floor. It prints the errors, the ratios, the cost of the tuning in model evaluations
(calls x pilots), whether the errors are monotone in the budget, and the targets: at most
0.5x the chosen untuned error at 4-10 calls, at most 1x at 15-20, at most 50000
evaluations per budget.

    python benchmarks/low_budget.py                       # every model, 1 thread
    python benchmarks/low_budget.py --budgets 4,5,6,8,10 --write-solvers tuned.json
    python benchmarks/low_budget.py --plot docs/images/low_budget.png   # and the plot
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from plots import Line, plot_panels

from dpmsolver.models import MODELS, TUNED_NFE, load
from dpmsolver.tuning import budget

# Published batch-1 throughputs, in denoising steps per second of one image (one step is
# one evaluation of the tuner, classifier-free guidance included): SD 1.5 at 512 x 512 and
# SDXL at 1024 x 1024 on an A100 80GB with diffusers (fal-ai/stable-diffusion-benchmarks),
# FLUX.1-dev at 1024 x 1024 on an RTX 4090 in FP16 (30 steps in 6.2 s, gigagpu.com).
# Batching the pilots is faster on a large GPU: these give an upper bound on the time.
THROUGHPUT = {"SD 1.5": 31.2, "SDXL": 8.43, "FLUX.1-dev": 30 / 6.2}
# Held-out noises: the per-sample errors are heavy-tailed on every built-in model (a few
# trajectories pass near a boundary between two modes and end in the other), so an RMS
# needs many noises to settle; with a few hundred, two budgets' order can flip with the seed.
HELD_OUT = 1024
TITLES = {
    "digits-exact": "exact digits model (GMM)",
    "digits-net": "trained digits network",
    "digits-exact-flow": "exact digits model, rectified flow",
    "digits-flow": "trained rectified-flow network",
}


def plot(results: dict[str, budget.BudgetResult], path: Path) -> None:
    """Error against model calls, one panel per model: tuned, grid-only, best untuned."""
    panels: dict[str, dict[str, Line]] = {}
    for name, result in results.items():
        rows = result.rows
        nfe = [r.nfe for r in rows]
        panels[TITLES.get(name, name)] = {
            "tuned (optimize_solver)": (nfe, [r.rms_error for r in rows], dict(marker="o")),
            "grid-only tuned": (nfe, [r.grid_only_error for r in rows], dict(marker="s")),
            "best untuned setting": (
                nfe,
                [r.baseline_error for r in rows],
                dict(marker="^", linestyle="--", color="0.35"),
            ),
        }
    plot_panels(
        panels,
        path,
        title="Tuned solvers against the best untuned setting (held-out noises)",
        ylabel="RMS error vs reference",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--budgets", default="4,5,6,8,10,15,20")
    parser.add_argument("--settings", default=",".join(budget.BUDGET_SEARCH))
    parser.add_argument("--grids", default=",".join(budget.BUDGET_GRIDS))
    parser.add_argument("--reference-nfe", type=int, default=3000)
    parser.add_argument("--pilots", type=int, default=16, help="pilot noises (default 16)")
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="held-out noises (default 1024)",
    )
    parser.add_argument(
        "--write-solvers", type=Path, default=None, help="write the tuned solvers to this JSON"
    )
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of error vs NFE")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shipped: dict[str, dict[str, object]] = {}
    results: dict[str, budget.BudgetResult] = {}
    for name in args.models.split(","):
        start = time.perf_counter()
        result = budget.budget(
            load(name),
            [int(b) for b in args.budgets.split(",")],
            n=args.n or HELD_OUT,
            settings=args.settings.split(","),
            grids=args.grids.split(","),
            reference_nfe=args.reference_nfe,
            pilots=args.pilots,
        )
        results[name] = result
        print(f"== {name} ({time.perf_counter() - start:.0f} s)")
        print(result.table())
        low = [r for r in result.rows if r.nfe <= 10]
        high = [r for r in result.rows if r.nfe > 10]
        if low:
            worst = max(low, key=lambda r: r.chosen_ratio)
            print(
                f"4-10 calls: largest tuned / chosen untuned ratio {worst.chosen_ratio:.2f} at "
                f"{worst.nfe} calls (target <= 0.5): "
                f"{'met' if worst.chosen_ratio <= 0.5 else 'NOT met'}"
            )
        if high:
            worst = max(high, key=lambda r: r.chosen_ratio)
            print(
                f"15-20 calls: largest ratio {worst.chosen_ratio:.2f} at {worst.nfe} calls "
                f"(target <= 1): {'met' if worst.chosen_ratio <= 1 else 'NOT met'}"
            )
        most = max(r.evaluations for r in result.rows)
        print(
            f"evaluations per budget: at most {most} (target <= 50000); monotone in the "
            f"budget: {'yes' if result.monotone else 'no'}"
        )
        estimate = ", ".join(
            f"{model} {most / rate / 60:.0f} min" for model, rate in THROUGHPUT.items()
        )
        print(f"time for {most} evaluations at published batch-1 throughput: {estimate}")
        shipped[name] = {
            str(n): json.loads(s.to_json()) for n, s in result.solvers.items() if n in TUNED_NFE
        }
        for record in shipped[name].values():
            record["model"] = name
    if args.write_solvers is not None:
        args.write_solvers.write_text(json.dumps(shipped, indent=1) + "\n")
        print(f"wrote {args.write_solvers}")
    if args.plot is not None:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
