"""Time grids: the descending (or, for inversion, ascending) times a sampler steps through.

All grids are float64 tensors of length steps + 1 whose first and last entries are exactly
t_start and t_end.
    logSNR:         uniform in lambda (recommended for low-resolution pixel models)
    time_uniform:   uniform in t (recommended for high-resolution and latent models)
    time_quadratic: uniform in sqrt(t) (DDIM's choice for CIFAR-10)
    karras:         uniform in sigma^(1/7), sigma = sigma_t / alpha_t = e^{-lambda}
                    (Karras et al. 2022, rho = 7)
    exponential:    uniform in log sigma, sigma = sigma_t / alpha_t: the logSNR grid under
                    k-diffusion's name
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ._checks import check_choice
from .schedules import NoiseSchedule

__all__ = ["SKIP_TYPES", "SkipType", "singlestep_orders", "time_grid"]

SkipType = Literal["logSNR", "time_uniform", "time_quadratic", "karras", "exponential"]
SKIP_TYPES: tuple[str, ...] = (
    "logSNR",
    "time_uniform",
    "time_quadratic",
    "karras",
    "exponential",
)
KARRAS_RHO = 7.0


def time_grid(
    schedule: NoiseSchedule, skip_type: str, t_start: float, t_end: float, steps: int
) -> Tensor:
    """steps + 1 times from t_start to t_end spaced by `skip_type` (float64, CPU)."""
    check_choice("skip_type", skip_type, SKIP_TYPES)
    if skip_type in ("logSNR", "karras", "exponential"):
        lam = schedule.lambda_(torch.tensor([t_start, t_end], dtype=torch.float64)).tolist()
        if skip_type != "karras":
            lams = torch.linspace(lam[0], lam[1], steps + 1, dtype=torch.float64)
        else:
            ends = torch.tensor(lam, dtype=torch.float64).neg().exp() ** (1 / KARRAS_RHO)
            ramp = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
            lams = -KARRAS_RHO * torch.log(ends[0] + ramp * (ends[1] - ends[0]))
        grid = schedule.inverse_lambda(lams)
    elif skip_type == "time_uniform":
        grid = torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64)
    else:
        grid = torch.linspace(t_start**0.5, t_end**0.5, steps + 1, dtype=torch.float64) ** 2
    grid[0], grid[-1] = t_start, t_end
    return grid


def singlestep_orders(steps: int, order: int) -> list[int]:
    """Orders of the steps of 'singlestep' (DPM-Solver-fast) that use exactly `steps` calls.

    order 3: as many third-order steps as fit, ending with [2, 1], [1] or [2] for
    steps % 3 == 0, 1, 2; order 2: second-order steps plus one first-order step if `steps` is
    odd; order 1: `steps` first-order steps (DPM-Solver paper, Section 3.4).
    """
    if order == 3:
        k = steps // 3 + 1
        tail = {0: [2, 1], 1: [1], 2: [2]}[steps % 3]
        return [3] * (k - len(tail)) + tail
    if order == 2:
        return [2] * (steps // 2) + [1] * (steps % 2)
    return [1] * steps
