"""Error of each solver against the exact ODE solution on the built-in digits model.

The exact model is the closed-form denoiser of a Gaussian mixture fitted to scikit-learn's
digits, so the probability-flow ODE's solution is known to ~1e-10 (scipy DOP853). For each
solver and number of model calls (NFE) this prints the RMS error of 64 samples (float64,
DDPM's discrete linear schedule, t from 1 to 1e-3), and each error's ratio to DDIM's at
the same NFE.

Run: python benchmarks/accuracy.py [--nfe 5,10,15,20,25,50] [--n 64] [--plot accuracy.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from plots import plot_panels
from problems import reference_solution

import dpmsolver as dpm
from dpmsolver.models import ExactModel, ddpm_linear_schedule, load_digits_gmm

SOLVERS = {
    "DDIM (order 1)": dict(order=1, method="multistep"),
    "DPM-Solver++(2M)": dict(order=2, method="multistep"),
    "DPM-Solver++(3M)": dict(order=3, method="multistep"),
    "DPM-Solver++(3M) exact": dict(order=3, method="multistep", multistep3="exact"),
    "DPM-Solver-3 singlestep": dict(order=3, method="singlestep", algorithm="dpmsolver"),
    "DPM-Solver++-3 singlestep": dict(order=3, method="singlestep"),
}
MARKERS = "os^vDP"


def plot(errors: dict[str, dict[str, list[float]]], nfes: list[int], path: Path) -> None:
    """Error against model calls, one panel per grid (`errors[grid][solver]`), one line per
    solver."""
    panels = {
        f"{skip_type} grid": {
            name: (nfes, errs, dict(marker=marker))
            for (name, errs), marker in zip(rows.items(), MARKERS, strict=True)
        }
        for skip_type, rows in errors.items()
    }
    plot_panels(
        panels,
        path,
        title="Exact digits model (GMM), DDPM linear schedule",
        ylabel="RMS error vs exact ODE solution",
        legend_size="small",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nfe", default="5,10,15,20,25,50")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--skip-types", default="logSNR,time_uniform")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of error vs NFE")
    args = parser.parse_args()
    torch.set_num_threads(1)
    nfes = [int(v) for v in args.nfe.split(",")]
    schedule = ddpm_linear_schedule()
    model = ExactModel(load_digits_gmm(), schedule)
    x_T = model.sample_noise(args.n, torch.Generator().manual_seed(0), torch.float64)
    ref = reference_solution(model.mixture, schedule, x_T, schedule.t_max, schedule.t_min)
    errors: dict[str, dict[str, list[float]]] = {}
    for skip_type in args.skip_types.split(","):
        rows = errors[skip_type] = {}
        print(f"\nRMS error vs exact ODE solution, {skip_type} grid (ratio to DDIM)")
        print(f"{'solver':28s}" + "".join(f"{f'NFE {n}':>18s}" for n in nfes))
        ddim: dict[int, float] = {}
        for name, opts in SOLVERS.items():
            row = f"{name:28s}"
            rows[name] = []
            for n in nfes:
                x = dpm.sample(model, x_T, steps=n, skip_type=skip_type, **opts)  # type: ignore[arg-type]
                err = float((x - ref).pow(2).mean().sqrt())
                ddim.setdefault(n, err)
                rows[name].append(err)
                row += f"{err:11.2e} ({err / ddim[n]:.2f})"
            print(row)
    if args.plot is not None:
        plot(errors, nfes, args.plot)


if __name__ == "__main__":
    main()
