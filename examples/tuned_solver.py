"""A solver tuned for one model and budget: `optimize_solver`, saved, loaded and run by
every face.

Tunes a 5-call solver for the built-in exact digits model on 32 pilot noises (a quarter
held out), compares it on fresh noises with the best untuned setting tried here, saves it
to JSON, and runs the loaded copy through the native API, the official-compatible API,
the diffusers scheduler and the k-diffusion face.
"""

import json
import tempfile
from pathlib import Path

import torch

import dpmsolver as dpm
from dpmsolver import noise
from dpmsolver.core import sigmas_to_times
from dpmsolver.k_diffusion import sample_tuned, tuned_sigmas
from dpmsolver.models import load, tuned_solver
from dpmsolver.tools import measure

torch.set_num_threads(1)
model = load("digits-exact")
x_start = noise.start_noise(model, 32, seed=1)  # not the pilots (seed 0)
reference = measure.reference(model, x_start)


def error(x: torch.Tensor) -> float:
    return measure.rms(x, reference)


# --8<-- [start:tune]
pilots = dpm.pilot_reference(model, pilots=32, seed=0)  # shared by every budget
tuned = dpm.optimize_solver(model, 5, reference=pilots, name="digits-exact")
x = dpm.sample(model, x_start, solver=tuned)  # or dpm.Sampler(model, solver=tuned)
# --8<-- [end:tune]
print(f"tuned: {tuned.setting}, {tuned.model_calls} model calls to tune")
print(
    f"  held-out pilots: {tuned.held_out_error:.3e} (its grid, analytic rules: "
    f"{tuned.analytic_held_out_error:.3e}); fallback: {tuned.fallback}"
)
untuned = dpm.sample(
    model,
    x_start,
    steps=6,
    algorithm="ipndm",
    order=3,
    lower_order_final=False,
    skip_type="time_quadratic",
    analytic_first_step=True,
)
print(
    f"fresh noises: tuned {error(x):.3e}, "
    f"iPNDM 3 + analytic first step on a time-quadratic grid {error(untuned):.3e}"
)

# Saved and loaded, it gives the same samples.
path = Path(tempfile.mkdtemp()) / "tuned5.json"
tuned.to_json(path)
loaded = dpm.TunedSolver.from_json(path)
native = dpm.sample(model, x_start, solver=loaded)
assert torch.equal(native, x)

# The official-compatible API (the authors' noise-prediction wrapper).
schedule = model.schedule
ns = dpm.NoiseScheduleVP("discrete", betas=torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))


def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return model(x, schedule.levels([float(t.reshape(-1)[0])])[0], "noise")


compat = dpm.DPM_Solver(eps, ns).sample(x_start, solver=loaded)

# The diffusers face: a pipeline's scheduler config gives the training schedule.
from dpmsolver.diffusers import DPMSolverScheduler  # noqa: E402

config = dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, timestep_spacing="leading")
scheduler = DPMSolverScheduler.from_tuned(loaded, config)
scheduler.set_timesteps(loaded.nfe)
latents = x_start * scheduler.init_noise_sigma  # what pipelines do with their initial noise
for t in scheduler.timesteps:
    level = schedule.levels([float(t) / 1000 + 1e-3])[0]  # DDPM's timestep -> time
    latents = scheduler.step(model(latents, level, "noise"), t, latents).prev_sample


# The k-diffusion face: a denoiser D(x, sigma) of x / alpha, on the solver's own sigmas.
def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    level = schedule.levels([float(sigmas_to_times(schedule, [float(sigma.reshape(-1)[0])])[0])])[0]
    return model(x * level.alpha, level, "data")


first, last = schedule.levels([loaded.times[0], loaded.times[-1]])
k = sample_tuned(denoiser, x_start / first.alpha, tuned_sigmas(loaded), solver=loaded, disable=True)
for name, x in (("compat", compat), ("diffusers", latents), ("k-diffusion", k * last.alpha)):
    print(f"{name:12s} max difference from the native run: {float((x - native).abs().max()):.1e}")

# The shipped solvers of the built-in models (what `dpmsolver sample --tuned` uses).
shipped = tuned_solver("digits-exact", 5)
print(
    f"shipped 5-call solver: {shipped.setting}, fresh-noise error "
    f"{error(dpm.sample(model, x_start, solver=shipped)):.3e}"
)
print("its model calls to tune:", json.dumps(shipped.model_calls))
x0 = dpm.sample(model, x_start[:16], solver=shipped)
print("samples:", tuple(x0.shape))
