"""The forward process at a pipeline's timesteps: x_t = alpha_t x_0 + sigma_t noise
(`add_noise`, img2img and inpainting), and flow pipelines' `scale_noise`. Timesteps are
the network's time inputs: t = (timestep + 1) / N on VP schedules, sigma = timestep / N
on flow-matching ones."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from .config import Setup
from .inputs import check_samples

__all__ = ["add_noise", "scale_noise"]


def add_noise(setup: Setup, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
    """x_t = alpha_t x_0 + sigma_t noise at (possibly fractional) timesteps of the
    network's time input, which must lie in the schedule's range (checked: one read of
    their ends). For flow matching alpha_t = 1 - sigma_t, sigma_t = timestep / N."""
    check_samples("original_samples", original_samples)
    check_samples("noise", noise)
    if noise.shape != original_samples.shape:
        raise ValueError(
            f"add_noise: noise has shape {tuple(noise.shape)}; it must have "
            f"original_samples' shape {tuple(original_samples.shape)}"
        )
    if not isinstance(timesteps, Tensor | numbers.Real | list | tuple) or isinstance(
        timesteps, bool
    ):
        raise TypeError(
            "add_noise: timesteps must be a tensor, a number or a list of numbers (the "
            f"network's time inputs); got {type(timesteps).__name__} {timesteps!r:.40}"
        )
    if isinstance(timesteps, Tensor) and timesteps.device.type == "meta":
        raise ValueError("add_noise: timesteps is a meta tensor (a shape without data)")
    steps = torch.as_tensor(timesteps, device=original_samples.device)
    if not (steps.is_floating_point() or steps.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"add_noise: timesteps must be numbers; got dtype {steps.dtype}")
    if steps.numel() not in (1, original_samples.shape[0]) or steps.dim() > 1:
        raise ValueError(
            f"add_noise: timesteps has shape {tuple(steps.shape)}; give one timestep, or "
            f"one per sample ({original_samples.shape[0]},)"
        )
    ns = setup.schedule
    t = _times_of(setup, steps.double().reshape(-1))
    ends = torch.stack([t.min(), t.max()]).tolist() if t.numel() else []
    if not all(math.isfinite(v) and ns.contains(v) for v in ends):
        lo, hi = (_timestep_of(setup, v) for v in (ns.t_min, ns.t_max))
        given = [float(steps.min()), float(steps.max())]  # the error path: one read
        raise ValueError(
            f"add_noise: timesteps must lie in [{lo:.6g}, {hi:.6g}] (the network's time "
            f"inputs); got {given[0]:.6g} to {given[1]:.6g}"
        )
    shape = (-1,) + (1,) * (original_samples.dim() - 1)
    alpha = ns.alpha(t).to(original_samples.dtype).reshape(shape)
    sigma = ns.sigma(t).to(original_samples.dtype).reshape(shape)
    return alpha * original_samples + sigma * noise


def scale_noise(
    setup: Setup, sample: Tensor, timestep: float | Tensor, noise: Tensor | None = None
) -> Tensor:
    """The forward process at `timestep` (flow img2img pipelines such as SD3's): for
    flow matching sigma noise + (1 - sigma) sample, for VP models `add_noise`."""
    if noise is None:
        raise ValueError("scale_noise needs noise")
    check_samples("sample", sample)
    if isinstance(timestep, bool) or not isinstance(timestep, Tensor | numbers.Real):
        raise TypeError(
            f"scale_noise: timestep must be a number or a tensor; got "
            f"{type(timestep).__name__} {timestep!r:.40}"
        )
    ts = torch.as_tensor(timestep, device=sample.device).reshape(-1)
    if ts.numel() == 1 and sample.shape[0] != 1:
        ts = ts.expand(sample.shape[0])
    return add_noise(setup, sample, noise, ts)


def _times_of(setup: Setup, timesteps: Tensor) -> Tensor:
    """The schedule's times of the network's time inputs: N sigma (flow), the training
    step t N - 1 (VP), or c_noise = -lambda / 4 (timestep_type='continuous')."""
    n = float(setup.betas.numel())
    if setup.continuous:
        ns = setup.schedule
        lam = -4.0 * timesteps
        lo, hi = (
            float(v) for v in ns.lambda_(torch.tensor([ns.t_max, ns.t_min], dtype=torch.float64))
        )
        inside = (lam >= lo) & (lam <= hi)  # elsewhere NaN: reported as out of range
        return torch.where(inside, ns.inverse_lambda(lam.clamp(lo, hi)), torch.nan)
    return timesteps / n if setup.flow else (timesteps + 1.0) / n


def _timestep_of(setup: Setup, t: float) -> float:
    n = float(setup.betas.numel())
    if setup.continuous:
        return -0.25 * float(setup.schedule.lambda_(torch.tensor(t, dtype=torch.float64)))
    return t * n if setup.flow else t * n - 1.0
