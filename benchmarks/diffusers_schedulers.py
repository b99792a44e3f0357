"""DPMSolverScheduler against diffusers' own schedulers on the exact digits model.

The exact digits mixture is wrapped as an epsilon "UNet" on Stable Diffusion's training
schedule (scaled_linear betas 0.00085 to 0.012). Every scheduler starts from the same x_T
and makes the same number of model calls; each is scored by the RMS distance of its final
sample to the exact answer, the ODE solution (scipy DOP853, 1e-10) at t = 1/1000 denoised by
the exact posterior mean. Ours runs with final_noise_level='zero' so that, like diffusers',
it ends at sigma = 0 with the same number of calls.

Run: python benchmarks/diffusers_schedulers.py [--steps 10,20] [--n 64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler
from problems import reference_solution

from dpmsolver.diffusers import DPMSolverScheduler
from dpmsolver.models import load_digits_gmm

SD_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="10,20")
    parser.add_argument("--n", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    gmm = load_digits_gmm()
    ours_default = DPMSolverScheduler.from_config(SD_CONFIG, final_noise_level="zero")
    schedule = ours_default.noise_schedule

    def unet(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        t = (torch.as_tensor(timestep).double() + 1) / schedule.total_n
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        return (x - alpha * gmm.posterior_mean(x, alpha, sigma)) / sigma

    x_T = torch.randn(
        args.n, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    end = schedule.levels([schedule.t_min])[0]
    ode_end = reference_solution(gmm, schedule, x_T, schedule.t_max, schedule.t_min, tol=1e-10)
    truth = gmm.posterior_mean(ode_end, end.alpha, end.sigma)
    schedulers = {
        "diffusers DPMSolverMultistep (2M)": DPMSolverMultistepScheduler.from_config(SD_CONFIG),
        "diffusers UniPCMultistep (bh2)": UniPCMultistepScheduler.from_config(SD_CONFIG),
        "dpmsolver 2M time_uniform": ours_default,
        "dpmsolver 2M logSNR": DPMSolverScheduler.from_config(
            SD_CONFIG, final_noise_level="zero", skip_type="logSNR"
        ),
        "dpmsolver 3M logSNR": DPMSolverScheduler.from_config(
            SD_CONFIG, final_noise_level="zero", skip_type="logSNR", solver_order=3
        ),
    }
    steps = [int(s) for s in args.steps.split(",")]
    print("RMS error of the final sample against the exact answer (same x_T, same calls)")
    print(f"{'scheduler':36s}" + "".join(f"{f'{n} steps':>12s}" for n in steps))
    for name, scheduler in schedulers.items():
        row = f"{name:36s}"
        for n in steps:
            scheduler.set_timesteps(n)
            x = x_T.clone()
            for t in scheduler.timesteps:
                x = scheduler.step(unet(x, t), t, x).prev_sample
            row += f"{float((x - truth).pow(2).mean().sqrt()):12.3e}"
        print(row)


if __name__ == "__main__":
    main()
