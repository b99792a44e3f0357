"""k-diffusion's sigma schedules: n noise levels from sigma_max down to sigma_min, then a
final 0 (the samplers then end with the denoised prediction at the last positive one)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..checks import check_device, check_float, check_int

__all__ = ["get_sigmas_exponential", "get_sigmas_karras", "get_sigmas_logsnr"]


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def check_sigma_range(sigma_min: float, sigma_max: float) -> None:
    """Both positive floats, sigma_min < sigma_max (the samplers that take a range use it)."""
    check_float("sigma_min", sigma_min, positive=True)
    check_float("sigma_max", sigma_max, positive=True)
    if not sigma_min < sigma_max:
        raise ValueError(f"need sigma_min < sigma_max; got {sigma_min!r} and {sigma_max!r}")


def _check_range(n: int, sigma_min: float, sigma_max: float) -> None:
    check_int("n", n, 1)
    check_sigma_range(sigma_min, sigma_max)


def get_sigmas_karras(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: Any = "cpu"
) -> Tensor:
    """n sigmas spaced uniformly in sigma^(1/rho) (Karras et al. 2022), then a final 0."""
    _check_range(n, sigma_min, sigma_max)
    check_float("rho", rho, positive=True)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    sigmas[0], sigmas[-1] = sigma_max, sigma_min if n > 1 else sigma_max
    device = check_device("device", device)
    return _append_zero(sigmas).to(device=device, dtype=torch.get_default_dtype())


def get_sigmas_exponential(
    n: int, sigma_min: float, sigma_max: float, device: Any = "cpu"
) -> Tensor:
    """n sigmas spaced uniformly in log sigma, then a final 0."""
    _check_range(n, sigma_min, sigma_max)
    sigmas = torch.exp(
        torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64)
    )
    device = check_device("device", device)
    return _append_zero(sigmas).to(device=device, dtype=torch.get_default_dtype())


def get_sigmas_logsnr(n: int, sigma_min: float, sigma_max: float, device: Any = "cpu") -> Tensor:
    """n sigmas uniform in lambda = -log sigma (DPM-Solver's logSNR grid), then a final 0.

    In VE scaling lambda = -log sigma, so this is the same grid as `get_sigmas_exponential`.
    """
    return get_sigmas_exponential(n, sigma_min, sigma_max, device)
