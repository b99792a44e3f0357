"""Few-step sampling: the UniC corrector, iPNDM, and a time grid tuned for the model.

Runs on the built-in exact digits model, whose ODE solution is known, and prints each
setting's RMS error at 6 model calls against a 3000-call reference on held-out noises.
"""

import torch

import dpmsolver as dpm
from dpmsolver import noise
from dpmsolver.models import load, tuned_grid
from dpmsolver.tools import measure

torch.set_num_threads(1)
model = load("digits-exact")
noise = noise.start_noise(model, 32, seed=1)
reference = measure.reference(model, noise)


def report(name: str, **options: object) -> None:
    x = dpm.sample(model, noise, **options)  # type: ignore[arg-type]
    print(f"{name:42s} {float((x - reference).pow(2).mean().sqrt()):.3e}")


report("DPM-Solver++(2M), logSNR grid", steps=6, skip_type="logSNR")
report("  + UniC corrector (no extra call)", steps=6, skip_type="logSNR", corrector="all")
ipndm = dict(algorithm="ipndm", order=3, lower_order_final=False)
report("iPNDM order 3, time-quadratic grid", steps=6, skip_type="time_quadratic", **ipndm)
# The analytic first step (x0_pred = 0 at pure noise) costs no call: 7 steps for 6 calls.
afs = dict(ipndm, analytic_first_step=True)
report("  + analytic first step (7 steps, 6 calls)", steps=7, skip_type="time_quadratic", **afs)

# Tune a grid for this model, solver and budget on 16 pilot noises (seed 0, not these).
tuned = dpm.optimize_time_grid(model, 6, shape=(1, 8, 8), **ipndm)
report(f"iPNDM order 3, tuned ({tuned.model_calls} calls to tune)", timesteps=tuned.times, **ipndm)
print("tuned times:", [round(t, 4) for t in tuned.times])

# The grid shipped for this model and budget (what `dpmsolver sample --tuned` uses).
shipped = tuned_grid("digits-exact", 6)
report(f"shipped grid ({shipped.details['setting']})", timesteps=shipped.times, **shipped.options)
x0 = dpm.sample(model, noise[:16], timesteps=shipped.times, **shipped.options)
print("samples:", tuple(x0.shape))
