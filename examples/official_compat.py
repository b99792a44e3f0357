"""Code written for the authors' dpm_solver_pytorch.py runs unchanged after its import
line.

Run: python examples/official_compat.py
"""

import torch

# was: from dpm_solver_pytorch import DPM_Solver, NoiseScheduleVP, model_wrapper
from dpmsolver import DPM_Solver, NoiseScheduleVP, model_wrapper
from dpmsolver.models import load_digits_gmm

mixture = load_digits_gmm()
betas = torch.linspace(1e-4, 0.02, 1000)
noise_schedule = NoiseScheduleVP(schedule="discrete", betas=betas)


def model(x, t_input):
    """Noise prediction network: eps(x_t, t), with the time input 1000 (t - 1/N)."""
    t = t_input.double() / 1000 + 1 / 1000
    alpha, sigma = noise_schedule.marginal_alpha(t), noise_schedule.marginal_std(t)
    shape = (-1, 1, 1, 1)
    x0 = mixture.posterior_mean(x.double(), alpha, sigma)
    return ((x.double() - alpha.reshape(shape) * x0) / sigma.reshape(shape)).to(x.dtype)


model_fn = model_wrapper(model, noise_schedule, model_type="noise")
dpm_solver = DPM_Solver(model_fn, noise_schedule, algorithm_type="dpmsolver++")
noise = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
x_sample = dpm_solver.sample(
    noise,
    steps=20,
    order=2,
    skip_type="time_uniform",
    method="multistep",
)
print("samples:", tuple(x_sample.shape))
