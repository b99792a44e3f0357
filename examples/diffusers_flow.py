"""DPMSolverScheduler on a flow-matching model, driven as SD3 / Flux pipelines drive it.

The "transformer" is the built-in exact digits mixture as a flow-matching model: given x_t
and a timestep 1000 s it returns the velocity eps - x_0 at x_t = (1 - s) x_0 + s eps. The
scheduler is loaded from FlowMatchEulerDiscreteScheduler configs, as
`DPMSolverScheduler.from_config(pipe.scheduler.config)` does in a pipeline: SD3's (static
shift 3) and Flux's (dynamic shifting: the pipeline passes its sigmas and mu). Each run is
scored against FlowMatchEuler's with the same number of calls, by the distance to a
200-call run. Needs the `diffusers` extra.
"""

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from dpmsolver.diffusers import DPMSolverScheduler
from dpmsolver.models import load_digits_gmm

torch.set_num_threads(1)
gmm = load_digits_gmm()


def transformer(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    s = float(timestep) / 1000.0
    x0 = gmm.posterior_mean(x, max(1.0 - s, 1e-12), s)  # at s = 1: the data mean
    return (x - (1.0 - s) * x0) / s - x0


def run(scheduler, x: torch.Tensor, steps: int | None, **kwargs: object) -> torch.Tensor:
    scheduler.set_timesteps(steps, **kwargs)
    for t in scheduler.timesteps:  # the pipeline's denoising loop
        x = scheduler.step(transformer(x, t), t, x, return_dict=False)[0]
    return x


noise = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

sd3 = FlowMatchEulerDiscreteScheduler(shift=3.0).config
ours = DPMSolverScheduler.from_config(sd3, use_beta_sigmas=True, corrector="all")
reference = run(DPMSolverScheduler.from_config(sd3, use_beta_sigmas=True), noise, 200)
for name, scheduler in [
    ("FlowMatchEuler (SD3 config)", FlowMatchEulerDiscreteScheduler.from_config(sd3)),
    ("DPMSolverScheduler, beta sigmas + UniC", ours),
]:
    error = (run(scheduler, noise, 10) - reference).pow(2).mean().sqrt()
    print(f"SD3, 10 calls   {name:40s} RMS error {float(error):.3e}")

flux = FlowMatchEulerDiscreteScheduler(
    use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, shift=3.0
).config
sigmas = np.linspace(1.0, 1 / 10, 10).tolist()  # what FluxPipeline passes, with its mu
scheduler = DPMSolverScheduler.from_config(flux)
x0 = run(scheduler, noise, None, sigmas=sigmas, mu=0.8)
print("Flux, 10 calls: timesteps", [round(float(t), 1) for t in scheduler.timesteps[:4]], "...")
print("samples:", tuple(x0.shape))
