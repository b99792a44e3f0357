"""Sampler trajectories in 2-D: where each sampler steps, against the exact ODE path.

The data are a mixture of four elongated Gaussians in the plane, noised with DDPM's
linear schedule. Its denoiser E[x_0 | x_t] is exact, so the probability-flow ODE can be
solved to high accuracy (thin grey lines). From the same 16 starting noises, DDIM,
DPM-Solver++(2M), DPM-Solver++(3M), iPNDM (order 3) and DPM-Solver++(2M) with the UniC
corrector take 5 and 10 model calls; the figure draws their states x_t after each step,
and the script prints each one's RMS end-point error against the exact solution.

Run: python examples/trajectories_2d.py [--out out/trajectories_2d.png]
"""

import argparse
import math
import time
from pathlib import Path
from typing import Any

import matplotlib
import torch

import dpmsolver as dpm
from dpmsolver.models import ExactModel, GaussianMixture, ddpm_linear_schedule
from dpmsolver.tools import measure

matplotlib.use("Agg")  # draw to a file; no display needed
import matplotlib.pyplot as plt
from matplotlib.patches import Ellipse

torch.set_num_threads(1)

# Four components, each long along one direction (std 0.5) and thin across it (std 0.2).
MEANS = [(-1.6, 1.2), (1.5, 1.4), (1.7, -1.3), (-1.3, -1.5)]
ANGLES = [0.6, -0.5, 0.9, -1.0]  # radians: each component's long direction
LONG_VAR, SHORT_VAR = 0.5**2, 0.2**2

SAMPLERS: dict[str, dict[str, Any]] = {
    "DDIM": dict(order=1),
    "DPM-Solver++(2M)": dict(order=2),
    "DPM-Solver++(3M)": dict(order=3),
    "iPNDM (order 3)": dict(algorithm="ipndm", order=3, lower_order_final=False),
    "DPM-Solver++(2M) + UniC": dict(order=2, corrector="all"),
}
STYLES = [
    ("tab:red", "o"),
    ("tab:orange", "s"),
    ("tab:green", "^"),
    ("tab:blue", "D"),
    ("tab:purple", "v"),
]
GRID = "time_quadratic"  # the same time grid for every sampler; dense near the data
BUDGETS = [5, 10]  # model calls: one per step for each of these multistep samplers
N_NOISES, N_SHOWN = 16, 8


def make_mixture() -> GaussianMixture:
    directions = [[[math.cos(a)], [math.sin(a)]] for a in ANGLES]
    return GaussianMixture(
        means=torch.tensor(MEANS),
        log_weights=torch.zeros(len(MEANS)),
        floor_var=torch.full((len(MEANS),), SHORT_VAR),
        basis=torch.tensor(directions),
        basis_var=torch.full((len(MEANS), 1), LONG_VAR),
    )


def trajectory(model: ExactModel, x_T: torch.Tensor, **options: Any) -> torch.Tensor:
    """x_T and the state after every step, shape (steps + 1, batch, 2)."""
    states = []
    dpm.sample(model, x_T, callback=lambda step, t, x: states.append(x.clone()), **options)
    return torch.stack(states)


def draw_mixture(ax: plt.Axes, mixture: GaussianMixture) -> None:
    """Each component's mean and its 1- and 2-standard-deviation ellipses."""
    for mean, cov in zip(mixture.means, mixture.component_covariances(), strict=True):
        variances, vectors = torch.linalg.eigh(cov)  # ascending: the long axis is last
        angle = math.degrees(math.atan2(vectors[1, 1], vectors[0, 1]))
        long, short = variances.flip(0).sqrt().tolist()
        for k, shade in ((2, "0.93"), (1, "0.85")):
            ellipse = Ellipse(mean.tolist(), 2 * k * long, 2 * k * short, angle=angle, color=shade)
            ax.add_patch(ellipse)
        ax.plot(*mean.tolist(), "+", color="0.55", ms=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/trajectories_2d.png"))
    args = parser.parse_args()
    started = time.perf_counter()

    mixture = make_mixture()
    model = ExactModel(mixture, ddpm_linear_schedule())
    generator = torch.Generator().manual_seed(0)
    x_T = model.sample_noise(N_NOISES, generator=generator, dtype=torch.float64)
    # DPM-Solver-3 with 900 model calls: end-point error ~1e-6, and a smooth path to draw.
    exact_path = trajectory(
        model, x_T, steps=900, order=3, method="singlestep_fixed", skip_type=GRID
    )
    exact = exact_path[-1]
    shown = slice(0, N_SHOWN)

    fig, axes = plt.subplots(
        1, len(BUDGETS), figsize=(12, 6.6), sharex=True, sharey=True, layout="constrained"
    )
    for ax, nfe in zip(axes, BUDGETS, strict=True):
        draw_mixture(ax, mixture)
        for (name, options), (colour, marker) in zip(SAMPLERS.items(), STYLES, strict=True):
            path = trajectory(model, x_T, steps=nfe, skip_type=GRID, **options)
            error = measure.rms(path[-1], exact)
            print(f"{nfe:2d} model calls  {name:24s} RMS end-point error {error:.3e}")
            xs, ys = path[:, shown, 0], path[:, shown, 1]
            lines = ax.plot(xs, ys, marker=marker, color=colour, lw=1.1, ms=4, alpha=0.9)
            lines[0].set_label(name)
        lines = ax.plot(exact_path[:, shown, 0], exact_path[:, shown, 1], color="0.35", lw=0.9)
        lines[0].set_label("exact ODE path")
        ax.plot(*exact[shown].T, "o", mfc="none", mec="k", ms=9, label="exact ODE solution")
        ax.plot(*x_T[shown].T, "s", color="k", ms=5, label="start $x_T$ (same for all)")
        ax.set_title(f"{nfe} model calls")
        ax.set_xlabel("$x_t$, first coordinate")
        ax.set_aspect("equal")
    axes[0].set_ylabel("$x_t$, second coordinate")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, frameon=False)
    fig.suptitle(f"Probability-flow ODE paths on a 2-D Gaussian mixture ({GRID} grid)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out} in {time.perf_counter() - started:.1f} s")
    print("samples:", tuple(path[-1].shape))


if __name__ == "__main__":
    main()
