"""DPMSolverScheduler against diffusers' own schedulers on exact models (VP and flow matching).

VP: the exact digits mixture is wrapped as an epsilon "UNet" on Stable Diffusion's training
schedule (scaled_linear betas 0.00085 to 0.012). Ours runs with final_noise_level='zero'
so that, like diffusers', it ends at sigma = 0 with the same number of calls. The exact
answer is the ODE solution (scipy DOP853, 1e-10) at t = 1/1000 denoised by the exact
posterior mean.

Flow matching: the same mixture as a flow-matching "transformer" (x_t = (1 - s) x_0 + s eps;
it returns the velocity eps - x_0 at s = timestep / 1000, for the timestep it is given),
with SD3's shift 3. The exact answer is the ODE solution from pure noise (s = 1) to
s = 1e-6, denoised by the posterior mean. diffusers' rows are FlowMatchEulerDiscrete (the
SD3 / Flux scheduler) and DPMSolverMultistep / UniPC with use_flow_sigmas; ours are loaded
from the FlowMatchEulerDiscrete config, as a pipeline user loads them.

Every scheduler starts from the same x_T and makes the same number of model calls; each is
scored by the RMS distance of its final sample to the exact answer.

Run: python benchmarks/diffusers_schedulers.py [--steps 10,20] [--flow-steps 5,10,20] [--n 64]
    [--plot diffusers_schedulers.png]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from plots import plot_panels
from problems import reference_solution

import dpmsolver as dpm
from dpmsolver.diffusers import DPMSolverScheduler
from dpmsolver.models import load_digits_gmm

SD_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
)
FLOW_SHIFT = 3.0
Table = tuple[list[int], dict[str, list[float]]]  # step counts, scheduler -> RMS errors


def rms_row(
    name: str,
    make: Callable[[], Any],
    net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_T: torch.Tensor,
    truth: torch.Tensor,
    steps: list[int],
) -> list[float]:
    errors = []
    for n in steps:
        scheduler = make()
        scheduler.set_timesteps(n)
        x = x_T.clone()
        for t in scheduler.timesteps:
            x = scheduler.step(net(x, t), t, x).prev_sample
        errors.append(float((x - truth).pow(2).mean().sqrt()))
    print(f"{name:52s}" + "".join(f"{e:12.3e}" for e in errors))
    return errors


def header(title: str, steps: list[int]) -> None:
    print(title)
    print(f"{'scheduler':52s}" + "".join(f"{f'{n} steps':>12s}" for n in steps))


def vp_table(gmm: Any, x_T: torch.Tensor, steps: list[int]) -> Table:
    schedule = DPMSolverScheduler.from_config(SD_CONFIG).noise_schedule

    def unet(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        t = (torch.as_tensor(timestep).double() + 1) / 1000
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        return (x - alpha * gmm.posterior_mean(x, alpha, sigma)) / sigma

    end = schedule.levels([schedule.t_min])[0]
    ode_end = reference_solution(gmm, schedule, x_T, schedule.t_max, schedule.t_min, tol=1e-10)
    truth = gmm.posterior_mean(ode_end, end.alpha, end.sigma)
    ours = dict(final_noise_level="zero")
    rows: dict[str, Callable[[], Any]] = {
        "diffusers DPMSolverMultistep (2M)": lambda: DPMSolverMultistepScheduler.from_config(
            SD_CONFIG
        ),
        "diffusers UniPCMultistep (bh2)": lambda: UniPCMultistepScheduler.from_config(SD_CONFIG),
        "dpmsolver 2M time_uniform": lambda: DPMSolverScheduler.from_config(SD_CONFIG, **ours),
        "dpmsolver 2M logSNR": lambda: DPMSolverScheduler.from_config(
            SD_CONFIG, **ours, skip_type="logSNR"
        ),
        "dpmsolver 3M logSNR": lambda: DPMSolverScheduler.from_config(
            SD_CONFIG, **ours, skip_type="logSNR", solver_order=3
        ),
    }
    header("VP (Stable Diffusion's schedule): RMS error against the exact answer", steps)
    return steps, {
        name: rms_row(name, make, unet, x_T, truth, steps) for name, make in rows.items()
    }


def flow_table(gmm: Any, x_T: torch.Tensor, steps: list[int]) -> Table:
    def velocity(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        s = float(torch.as_tensor(timestep).double()) / 1000.0
        alpha = 1.0 - s
        # At s = 1 (pure noise) the posterior mean is the data mean: a tiny alpha gives it.
        x0 = gmm.posterior_mean(x, max(alpha, 1e-12), s)
        return (x - alpha * x0) / s - x0

    schedule = dpm.FlowSchedule(shift=1.0, t_min=1e-6, t_max=1.0)
    # The ODE in lambda cannot start at lambda = -inf; lambda = -30 is s = 1 - 1e-13.
    t_start = float(schedule.inverse_lambda(torch.tensor(-30.0)))
    end = schedule.levels([schedule.t_min])[0]
    ode_end = reference_solution(gmm, schedule, x_T, t_start, schedule.t_min, tol=1e-10)
    truth = gmm.posterior_mean(ode_end, end.alpha, end.sigma)
    flow = dict(use_flow_sigmas=True, flow_shift=FLOW_SHIFT, prediction_type="flow_prediction")
    sd3 = FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT).config
    sd3_beta = FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT, use_beta_sigmas=True).config
    theirs: dict[str, Callable[[], Any]] = {
        "diffusers FlowMatchEulerDiscrete (SD3)": lambda: FlowMatchEulerDiscreteScheduler(
            shift=FLOW_SHIFT
        ),
        "diffusers FlowMatchEulerDiscrete, use_beta_sigmas": lambda: (
            FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT, use_beta_sigmas=True)
        ),
        "diffusers DPMSolverMultistep (2M), use_flow_sigmas": lambda: DPMSolverMultistepScheduler(
            **flow
        ),
        "diffusers UniPCMultistep (bh2), use_flow_sigmas": lambda: UniPCMultistepScheduler(**flow),
    }
    ours: dict[str, Callable[[], Any]] = {
        "dpmsolver from the SD3 config (DPM-Solver's grid)": lambda: DPMSolverScheduler.from_config(
            sd3
        ),
        "dpmsolver, use_beta_sigmas, corrector='all'": lambda: DPMSolverScheduler.from_config(
            sd3_beta, corrector="all"
        ),
        "dpmsolver, time_quadratic, singlestep order 3": lambda: DPMSolverScheduler.from_config(
            sd3, skip_type="time_quadratic", method="singlestep", solver_order=3
        ),
    }
    header(f"Flow matching (shift {FLOW_SHIFT}): RMS error against the exact answer", steps)
    best = [float("inf")] * len(steps)
    table: dict[str, list[float]] = {}
    for name, make in theirs.items():
        errors = table[name] = rms_row(name, make, velocity, x_T, truth, steps)
        best = [min(b, e) for b, e in zip(best, errors, strict=True)]
    results = {
        name: rms_row(name, make, velocity, x_T, truth, steps) for name, make in ours.items()
    }
    print("error / best diffusers error at the same step count (below 0.5: half or less)")
    for name, errors in results.items():
        ratios = [e / b for e, b in zip(errors, best, strict=True)]
        print(f"{name:52s}" + "".join(f"{r:12.2f}" for r in ratios))
    return steps, {**table, **results}


def plot(tables: dict[str, Table], path: Path) -> None:
    """Error against model calls, one panel per table; diffusers' schedulers dashed."""
    panels = {
        title: {
            name: (
                steps,
                errors,
                dict(marker=marker, linestyle="--" if name.startswith("diffusers") else "-"),
            )
            for (name, errors), marker in zip(rows.items(), "os^vDPX", strict=False)
        }
        for title, (steps, rows) in tables.items()
    }
    plot_panels(
        panels,
        path,
        title="diffusers' schedulers and DPMSolverScheduler on the exact digits model (GMM)",
        xlabel="model calls (NFE = steps)",
        ylabel="RMS error vs exact answer",
        legend_size="x-small",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="10,20")
    parser.add_argument("--flow-steps", default="5,10,20")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of error vs NFE")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gmm = load_digits_gmm()
    x_T = torch.randn(
        args.n, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    vp = vp_table(gmm, x_T, [int(s) for s in args.steps.split(",")])
    print()
    flow = flow_table(gmm, x_T, [int(s) for s in args.flow_steps.split(",")])
    if args.plot is not None:
        tables = {"VP, Stable Diffusion's schedule": vp, f"flow matching, shift {FLOW_SHIFT}": flow}
        plot(tables, args.plot)


if __name__ == "__main__":
    main()
