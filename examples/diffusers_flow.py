"""DPMSolverScheduler on a flow-matching model, driven as SD3 / Flux pipelines drive it.

The "transformer" is the built-in exact digits mixture as a flow-matching model: given x_t
and a timestep 1000 s it returns the velocity eps - x_0 at x_t = (1 - s) x_0 + s eps. The
scheduler is loaded from FlowMatchEulerDiscreteScheduler configs as they are, as
`DPMSolverScheduler.from_config(pipe.scheduler.config)` does in a pipeline: SD3's (static
shift 3) and Flux's (dynamic shifting: the pipeline passes mu, and its own sigmas only to a
scheduler whose config does not say it places them). Ours runs the flow default; with
`use_diffusers_grid=True` it places its calls as diffusers' DPM-Solver does. Each run is
scored by the distance to a 200-call run. Needs the `diffusers` extra.
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


def run(scheduler, x: torch.Tensor, steps: int, mu: float | None = None) -> torch.Tensor:
    # As FluxPipeline: its own sigmas unless the scheduler's config says it places them.
    places = getattr(scheduler.config, "use_flow_sigmas", False)
    sigmas = None if places or mu is None else np.linspace(1.0, 1 / steps, steps)
    if sigmas is None:
        scheduler.set_timesteps(steps, **({} if mu is None else {"mu": mu}))
    else:
        scheduler.set_timesteps(sigmas=sigmas, mu=mu)
    for t in scheduler.timesteps:  # the pipeline's denoising loop
        x = scheduler.step(transformer(x, t), t, x, return_dict=False)[0]
    return x


noise = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
configs = {
    "SD3": (FlowMatchEulerDiscreteScheduler(shift=3.0).config, None),
    "Flux": (
        FlowMatchEulerDiscreteScheduler(
            use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, shift=3.0
        ).config,
        0.8,
    ),
}
for family, (config, mu) in configs.items():
    reference = run(DPMSolverScheduler.from_config(config), noise, 200, mu)
    for name, scheduler in [
        ("FlowMatchEuler", FlowMatchEulerDiscreteScheduler.from_config(config)),
        ("DPMSolverScheduler, use_diffusers_grid", DPMSolverScheduler.from_config(
            config, use_diffusers_grid=True
        )),
        ("DPMSolverScheduler (the flow default)", DPMSolverScheduler.from_config(config)),
    ]:  # fmt: skip
        error = (run(scheduler, noise, 10, mu) - reference).pow(2).mean().sqrt()
        print(f"{family}, 10 calls  {name:40s} RMS error {float(error):.3e}")
x0 = run(DPMSolverScheduler.from_config(configs["SD3"][0]), noise, 10)
print("samples:", tuple(x0.shape))
