"""How far a sample-dependent tuned solver could go: per-noise oracles on the built-in models.

`benchmarks/coefficient_ceiling.py` shows that a solver shared by all noises (a grid and
linear coefficients per step) is at its floor on these models. The remaining route to the
target of `benchmarks/low_budget.py` (at most 0.5x the chosen untuned error at 4-10
calls) is a solver that adapts to each noise, for example a predicted per-sample step
(AMED, Zhou et al., 2024). This script bounds that route from above. For each held-out
noise it starts from the shipped tuned solver and fits, by Levenberg-Marquardt on that
noise's own reference end state:
- its own grid: the inner grid points move, the tuned coefficients stay (what any
  per-sample choice of evaluation times could reach with a perfect predictor);
- its own grid and coefficients: every parameter of the tuned solver, per noise.
These are oracles: they see the answer, so no predictor of a noise's step or coefficients
can do better than they do. The second fits as many parameters per noise as the noise has
coordinates, or nearly (both are printed), so it is a loose bound: it shows room, not what
a predictor could reach. It prints the RMS error over the noises of the tuned solver,
of the untuned setting chosen on the tuning pilots (as `low_budget.py` chooses it), and of
each oracle, with the oracles' ratios to the tuned and to the chosen untuned error.

    python benchmarks/per_sample_ceiling.py                    # 3 models, 1 thread
    python benchmarks/per_sample_ceiling.py --models digits-net --budgets 4 --n 16

The untuned settings are `low_budget.py`'s (112 settings x grids); the tuned solvers are
the shipped ones (`dpmsolver.models.tuned_solver`, written by `low_budget.py`).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import Tensor

from dpmsolver import DiffusionModel, PilotReference, Sampler, SolverOptions
from dpmsolver.models import load, tuned_solver
from dpmsolver.noise import start_noise
from dpmsolver.tools.measure import reference
from dpmsolver.tuning import budget
from dpmsolver.tuning.refinement import PilotSearch

MODELS = ("digits-net", "digits-flow", "digits-exact")
# The held-out noises' seed: budget() scores on these noises, the oracles fit each of them.
SEED = 1


def fit_one(
    model: DiffusionModel,
    options: SolverOptions,
    x: Tensor,
    end: Tensor,
    coefficients: bool,
    iterations: int,
) -> float:
    """The squared error (mean over coordinates) of `options` refined on one noise `x`
    against its reference end state `end`: the grid, and with `coefficients` the per-step
    coefficients too."""
    # PilotSearch reads only the states and their end states: a reference of one noise
    # without its trajectory (not one for pilot_reference's other uses).
    one = PilotReference(
        x_start=x, times=[], levels=[], states=[end], outputs=[], model_calls=0, seed=None,
        substeps=1,
    )  # fmt: skip
    search = PilotSearch(model, one, n_tune=1, max_calls=10**9)
    fitted = search.refine(options, iterations, 0.0, coefficients)
    out = Sampler(model, fitted, check_finite=False)(x)
    return float((out - end).double().pow(2).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--budgets", default="4,6,10")
    parser.add_argument("--n", type=int, default=64, help="held-out noises (default 64)")
    parser.add_argument("--iterations", type=int, default=12, help="LM iterations per noise")
    parser.add_argument("--reference-nfe", type=int, default=3000)
    parser.add_argument("--settings", default=",".join(budget.BUDGET_SEARCH))
    args = parser.parse_args()
    torch.set_num_threads(1)
    budgets = [int(b) for b in args.budgets.split(",")]
    print(
        "Per-noise oracles on the shipped tuned solver: RMS error over the held-out noises, "
        "and ratios to the tuned (/tuned) and to the chosen untuned setting (/chosen)"
    )
    print(
        f"{'model':<13}{'NFE':>4}  {'tuned':>9}{'chosen':>10}{'/chosen':>8}  "
        f"{'own grid':>9}{'/tuned':>7}{'/chosen':>8}  {'own grid+coef':>13}{'/tuned':>7}"
        f"{'/chosen':>8}{'params':>7}{'size':>5}"
    )
    for name in args.models.split(","):
        start = time.perf_counter()
        model = load(name)
        shipped = {b: tuned_solver(name, b) for b in budgets}
        result = budget.budget(
            model,
            budgets,
            n=args.n,
            seed=SEED,
            tuned=shipped,
            grid_only=False,
            settings=args.settings.split(","),
            reference_nfe=args.reference_nfe,
        )
        test_x = start_noise(model, args.n, SEED)  # budget()'s held-out noises
        test_ref = reference(model, test_x, args.reference_nfe)
        with torch.no_grad():
            for row in result.rows:
                options = shipped[row.nfe].solver()
                # What each noise's fit moves (inner grid points and coefficients) against
                # the numbers it is fitted to (one sample's coordinates).
                params = (
                    len(options.timesteps or ()) - 2 + sum(map(len, options.coefficients or ()))
                )
                size = test_x[0].numel()
                found = {
                    coefficients: [
                        fit_one(
                            model,
                            options,
                            test_x[i : i + 1],
                            test_ref[i : i + 1],
                            coefficients,
                            args.iterations,
                        )
                        for i in range(args.n)
                    ]
                    for coefficients in (False, True)
                }
                grid, full = (math.sqrt(sum(v) / len(v)) for v in found.values())
                tuned, chosen = row.rms_error, row.chosen_error
                print(
                    f"{name:<13}{row.nfe:>4}  {tuned:>9.2e}{chosen:>10.2e}{tuned / chosen:>8.2f}"
                    f"  {grid:>9.2e}{grid / tuned:>7.2f}{grid / chosen:>8.2f}  "
                    f"{full:>13.2e}{full / tuned:>7.2f}{full / chosen:>8.2f}{params:>7}{size:>5}"
                )
        print(f"({name}: {time.perf_counter() - start:.0f} s)")
    print(
        "(own grid: each noise's inner grid points fitted to its own reference end state, the "
        "tuned coefficients kept; own grid+coef: every parameter of the tuned solver fitted "
        "per noise, params of them to the size numbers of one noise's end state; "
        f"{args.n} noises from seed {SEED}, as low_budget.py's first {args.n}; target "
        "at 4-10 calls: /chosen <= 0.50)"
    )


if __name__ == "__main__":
    main()
