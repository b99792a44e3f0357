"""Native API: sample the built-in exact digits model with DPM-Solver++(2M) in 10 steps.

Run: python examples/native_quickstart.py
"""

import torch

import dpmsolver as dpm
from dpmsolver.models import ddpm_linear_schedule, load_digits_gmm

schedule = ddpm_linear_schedule()  # discrete DDPM betas, 1000 steps
mixture = load_digits_gmm()  # exact data distribution; stands in for a trained network


def net(x: torch.Tensor, t_input: torch.Tensor) -> torch.Tensor:
    """A 'network' predicting x0, called with the step index t_input in [0, 999]."""
    t = (t_input.double() + 1) / 1000
    return mixture.posterior_mean(x, schedule.alpha(t), schedule.sigma(t))


model = dpm.Denoiser(net, schedule, prediction="x0")
noise = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
x0 = dpm.sample(model, noise, steps=10)  # DPM-Solver++(2M), time-uniform grid
print("samples:", tuple(x0.shape), "range", round(float(x0.min()), 2), round(float(x0.max()), 2))
