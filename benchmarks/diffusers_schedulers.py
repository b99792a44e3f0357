"""DPMSolverScheduler against diffusers' own schedulers on exact models (VP and flow matching).

VP: the exact digits mixture is wrapped as an epsilon "UNet" on Stable Diffusion's training
schedule (scaled_linear betas 0.00085 to 0.012). Ours runs with final_noise_level='zero'
so that, like diffusers', it ends at sigma = 0 with the same number of calls. The exact
answer is the ODE solution (scipy DOP853, 1e-10) at t = 1/1000 denoised by the exact
posterior mean.

Flow matching, on both flow built-ins: the same mixture as a flow-matching "transformer"
(x_t = (1 - s) x_0 + s eps; it returns the velocity eps - x_0 at s = timestep / 1000), whose
exact answer is the ODE solution from pure noise (s = 1) to s = 1e-6 denoised by the
posterior mean; and the trained rectified-flow network (digits-flow), whose answer is a
2000-call DPM-Solver-3 run (its distance to a 1000-call run is printed). Each under SD3's
config (FlowMatchEuler, static shift 3) and Flux's (dynamic shifting, mu = 1.15: driven as
FluxPipeline drives a scheduler, which passes its own sigmas linspace(1, 1/n, n) unless the
scheduler's config says it places them). diffusers' rows are FlowMatchEulerDiscrete and
DPMSolverMultistep / UniPC with use_flow_sigmas; ours is loaded from the raw config, as a
pipeline user loads it (the flow default), and with use_diffusers_grid=True.

Every scheduler starts from the same x_T and makes the same number of model calls; each is
scored by the RMS distance of its final sample to the exact answer.

Run: python benchmarks/diffusers_schedulers.py [--steps 10,20] [--flow-steps 5,10,20] [--n 64]
    [--flow-models digits-exact-flow,digits-flow] [--plot diffusers_schedulers.png]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
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
from dpmsolver.models import load, load_digits_gmm

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
    mu: float | None = None,
) -> list[float]:
    errors = []
    for n in steps:
        scheduler = make()
        if mu is None:
            scheduler.set_timesteps(n)
        elif getattr(scheduler.config, "use_flow_sigmas", False):
            scheduler.set_timesteps(n, mu=mu)  # as FluxPipeline: no sigmas of its own
        else:
            scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / n, n), mu=mu)
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


def exact_flow(gmm: Any, x_T: torch.Tensor) -> tuple[Callable[..., torch.Tensor], torch.Tensor]:
    """The exact mixture as a flow "transformer", and its exact answer from x_T."""

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
    return velocity, gmm.posterior_mean(ode_end, end.alpha, end.sigma)


def trained_flow(x_T: torch.Tensor) -> tuple[Callable[..., torch.Tensor], torch.Tensor]:
    """The digits-flow network as a "transformer" (its time input is the timestep), and a
    2000-call DPM-Solver-3 run from pure noise to sigma 1e-5, denoised, as the answer."""
    schedule = dpm.FlowSchedule(shift=1.0, t_min=1e-5, t_max=1.0, time_scale=1000.0)
    model = load("digits-flow", schedule=schedule)
    net = model.net

    def velocity(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1).expand(x.shape[0])
        with torch.no_grad():
            return net(x, t)

    def answer(calls: int) -> torch.Tensor:
        return dpm.sample(
            model, x_T, steps=calls, order=3, skip_type="time_uniform", denoise_to_zero=True
        )

    with torch.no_grad():
        truth, check = answer(2000), answer(1000)
    print(f"digits-flow answer: 2000 calls, {rms(truth, check):.1e} from a 1000-call run")
    return velocity, truth


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


FLUX_CONFIG = dict(
    shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, max_image_seq_len=4096
)
FLUX_MU = 1.15  # FluxPipeline's mu at 1024 x 1024 (its max_shift)


def flow_table(
    model_name: str, velocity: Callable[..., torch.Tensor], x_T: torch.Tensor,
    truth: torch.Tensor, steps: list[int], family: str,
) -> Table:  # fmt: skip
    """diffusers' flow schedulers and ours on one flow model, under SD3's or Flux's config."""
    flow = dict(use_flow_sigmas=True, prediction_type="flow_prediction")
    if family == "SD3":
        config, mu, shift = (
            FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT).config,
            None,
            {"flow_shift": FLOW_SHIFT},
        )
    else:
        config, mu = FlowMatchEulerDiscreteScheduler(**FLUX_CONFIG).config, FLUX_MU
        shift = {"use_dynamic_shifting": True}
    theirs: dict[str, Callable[[], Any]] = {
        "diffusers FlowMatchEulerDiscrete": lambda: FlowMatchEulerDiscreteScheduler.from_config(
            config
        ),
        "diffusers DPMSolverMultistep (2M), use_flow_sigmas": lambda: DPMSolverMultistepScheduler(
            **flow, **shift
        ),
        "diffusers UniPCMultistep (bh2), use_flow_sigmas": lambda: UniPCMultistepScheduler(
            **flow, **shift
        ),
    }
    ours: dict[str, Callable[[], Any]] = {
        "dpmsolver from the raw config (the flow default)": lambda: DPMSolverScheduler.from_config(
            config
        ),
        "dpmsolver, use_diffusers_grid=True": lambda: DPMSolverScheduler.from_config(
            config, use_diffusers_grid=True
        ),
    }
    header(f"{model_name}, {family}'s config: RMS error against the answer", steps)
    best = [float("inf")] * len(steps)
    table: dict[str, list[float]] = {}
    for name, make in theirs.items():
        errors = table[name] = rms_row(name, make, velocity, x_T, truth, steps, mu)
        best = [min(b, e) for b, e in zip(best, errors, strict=True)]
    results = {
        name: rms_row(name, make, velocity, x_T, truth, steps, mu) for name, make in ours.items()
    }
    print("error / best diffusers error at the same step count (below 0.5: half or less)")
    for name, errors in results.items():
        ratios = [e / b for e, b in zip(errors, best, strict=True)]
        print(f"{name:52s}" + "".join(f"{r:12.2f}" for r in ratios))
    print()
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
        title="diffusers' schedulers and DPMSolverScheduler on the digits models",
        xlabel="model calls (NFE = steps)",
        ylabel="RMS error vs the answer",
        legend_size="x-small",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="10,20")
    parser.add_argument("--flow-steps", default="5,10,20")
    parser.add_argument("--flow-models", default="digits-exact-flow,digits-flow")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of error vs NFE")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gmm = load_digits_gmm()
    x_T = torch.randn(
        args.n, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    tables = {
        "VP, Stable Diffusion's schedule": vp_table(
            gmm, x_T, [int(s) for s in args.steps.split(",")]
        )
    }
    print()
    flow_steps = [int(s) for s in args.flow_steps.split(",")]
    for model_name in args.flow_models.split(","):
        if model_name == "digits-exact-flow":
            velocity, truth = exact_flow(gmm, x_T)
        elif model_name == "digits-flow":
            velocity, truth = trained_flow(x_T)
        else:
            raise SystemExit(f"--flow-models: unknown {model_name!r}")
        for family in ("SD3", "Flux"):
            tables[f"{model_name}, {family}"] = flow_table(
                model_name, velocity, x_T, truth, flow_steps, family
            )
    if args.plot is not None:
        plot(tables, args.plot)


if __name__ == "__main__":
    main()
