"""Inversion round trip: data -> noise -> data with a deterministic solver.

On the exact digits model (DDPM's discrete schedule, float64), 64 exact data samples are
run from t = 1/N to t = 1 and back with the same solver and grid; the table prints the RMS
distance to where they started. Run: python benchmarks/inversion.py
"""

from __future__ import annotations

import torch

import dpmsolver as dpm
from dpmsolver.models import load

SETTINGS = {
    "DDIM": dict(order=1),
    "DPM-Solver++(2M)": dict(order=2),
    "DPM-Solver++(3M)": dict(order=3),
}


def main() -> None:
    torch.set_num_threads(1)
    model = load("digits-exact")
    schedule = model.schedule
    x0 = model.mixture.sample(64, torch.Generator().manual_seed(0))
    steps = (10, 20, 50)
    for skip_type in ("time_quadratic", "logSNR", "time_uniform"):
        print(f"\nround-trip RMS error, {skip_type} grid")
        print(f"{'solver':20s}" + "".join(f"{f'{n} steps':>12s}" for n in steps))
        for name, opts in SETTINGS.items():
            row = f"{name:20s}"
            for n in steps:
                kw = dict(opts, steps=n, skip_type=skip_type)
                noise = dpm.sample(model, x0, t_start=schedule.t_min, t_end=schedule.t_max, **kw)  # type: ignore[arg-type]
                back = dpm.sample(model, noise, **kw)  # type: ignore[arg-type]
                row += f"{float((back - x0).pow(2).mean().sqrt()):12.2e}"
            print(row)


if __name__ == "__main__":
    main()
