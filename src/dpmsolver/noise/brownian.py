"""Noise samplers for the SDE solvers: (t_s, t_t) -> the standard normal noise of a step.

Two kinds, both callables of the step's two times (the native API's `noise_sampler`, and
k-diffusion's `noise_sampler(sigma, sigma_next)`):

- `PerSampleNoise`: a fresh N(0, I) per step from one generator per sample (a singlestep
  step's draw extends its stage's, as the default noise does). Cheap; sample i depends on
  its own seed only, so it is the same at any batch size or rank, but the noise of a step
  depends on the grid (a run with more steps sees other noise).
- `BrownianTreeNoiseSampler`: increments of one fixed Brownian path per sample (torchsde's
  Brownian tree, the optional extra `dpmsolver[sde]`, as k-diffusion and ComfyUI use it):
  (W(t_t) - W(t_s)) / sqrt(|t_t - t_s|). The noise of an interval is the same whatever
  grid it is cut into, so runs with different step counts solve the SDE on the same path
  and their strong error can be measured. Slower: each query walks a tree per sample.

Without a noise sampler, the solvers draw each step's noise from the run's generator
(one draw for the whole batch): the cheapest, and what the diffusers face does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..checks import check_bool, check_float, check_int
from ..core import LinkedNoise
from ..extras import needs_extra

__all__ = ["BrownianTreeNoiseSampler", "PerSampleNoise"]

Time = float | Tensor


def _seeds(seed: int | Sequence[int] | None, batch: int) -> tuple[list[int], bool]:
    """(seeds, per_sample): one seed per sample, or one for the whole tensor (None: drawn
    from torch's global generator, as k-diffusion does)."""
    if seed is None:
        return [int(torch.randint(0, 2**63 - 1, ()).item())], False
    if isinstance(seed, int) and not isinstance(seed, bool):
        return [check_int("seed", seed, 0, 2**63 - 1)], False
    if not isinstance(seed, Sequence) or isinstance(seed, str):
        raise TypeError(
            f"seed must be an int, a sequence of ints (one per sample) or None; got "
            f"{type(seed).__name__}"
        )
    if len(seed) != batch:
        raise ValueError(
            f"seed has {len(seed)} entries; per-sample seeds need one per sample of x "
            f"(batch {batch})"
        )
    return [check_int(f"seed[{i}]", s, 0, 2**63 - 1) for i, s in enumerate(seed)], True


def _check_x(x: object) -> None:
    """x: a floating tensor with a batch dimension, holding data (not on the meta device)."""
    if not isinstance(x, Tensor) or x.dim() < 1 or not x.is_floating_point():
        got = f"a {x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x)
        raise TypeError(f"x must be a floating tensor with a batch dimension; got {got}")
    if x.device.type == "meta":
        raise ValueError("x is a meta tensor (a shape without data): noise needs a real device")


def _float(name: str, value: Time) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be one number; got a tensor of shape {value.shape}")
        value = float(value)
    return check_float(name, value)


class BrownianTreeNoiseSampler:
    """(t_s, t_t) -> (W(t_t) - W(t_s)) / sqrt(|t_t - t_s|) on a fixed Brownian path W.

    Args:
        x: a tensor of the samples' shape, dtype and device (batch first).
        sigma_min: the lowest time a query lies at (the grid's lowest positive time; for
            k-diffusion grids, its lowest positive sigma).
        sigma_max: the highest time a query lies at (the grid's highest time or sigma).
        seed: an int (one path for the whole tensor, k-diffusion's default), a sequence of
            ints, one per sample (sample i's noise depends on seed[i] only, whatever the
            batch), or None (a random seed from torch's global generator).
        transform: maps a time to the path's own time (default: the identity); it gets a
            0-d float64 tensor, as k-diffusion's does (e.g. `lambda s: s.log()`), and may
            return a tensor or a float.
        cpu: build the trees on the CPU (the noise is moved to x's device); their noise
            then does not depend on the device.

    Needs torchsde (`pip install "dpmsolver[sde]"`). Queries are independent of their order
    and of the other queries (torchsde's BrownianTree keeps its bisection halfway).
    """

    def __init__(
        self,
        x: Tensor,
        sigma_min: Time,
        sigma_max: Time,
        seed: int | Sequence[int] | None = None,
        transform: Callable[[Tensor], Tensor | float] | None = None,
        cpu: bool = True,
    ) -> None:
        with needs_extra("sde", "BrownianTreeNoiseSampler"):
            import torchsde
        _check_x(x)
        cpu = check_bool("cpu", cpu)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None; got {type(transform).__name__}")
        self.transform = transform
        lo = self._time("sigma_min", sigma_min)
        hi = self._time("sigma_max", sigma_max)
        if lo == hi:
            raise ValueError(f"sigma_min and sigma_max must span an interval; both map to {lo}")
        self.t0, self.t1 = min(lo, hi), max(lo, hi)
        seeds, self.per_sample = _seeds(seed, x.shape[0])
        self.device, self.dtype = x.device, x.dtype
        shape = x.shape[1:] if self.per_sample else x.shape
        w0 = torch.zeros(shape, dtype=x.dtype, device="cpu" if cpu else x.device)
        self.trees: list[Any] = [
            torchsde.BrownianTree(self.t0, w0, self.t1, entropy=s) for s in seeds
        ]

    def _time(self, name: str, value: Time) -> float:
        """The path's time of a query time, as a float."""
        t = _float(name, value)
        if self.transform is None:
            return t
        return _float(f"transform({name})", self.transform(torch.tensor(t, dtype=torch.float64)))

    def __call__(self, sigma: Time, sigma_next: Time) -> Tensor:
        a = self._time("sigma", sigma)
        b = self._time("sigma_next", sigma_next)
        lo, hi = min(a, b), max(a, b)
        if lo == hi:
            raise ValueError(f"the noise of an empty interval was asked for (at {lo})")
        # Float rounding at the ends (a float32 grid, the transform): clamped, not refused.
        slack = 1e-6 * max(abs(self.t0), abs(self.t1), self.t1 - self.t0)
        if lo < self.t0 - slack or hi > self.t1 + slack:
            raise ValueError(
                f"the noise of [{lo:.6g}, {hi:.6g}] was asked for, outside the tree's range "
                f"[{self.t0:.6g}, {self.t1:.6g}] (give sigma_min / sigma_max covering the grid)"
            )
        # torchsde rounds times to its tolerance (6 digits); clamp to its rounded ends.
        lo, hi = max(lo, round(self.t0, 6)), min(hi, round(self.t1, 6))
        parts = [tree(lo, hi) for tree in self.trees]
        w = torch.stack(parts) if self.per_sample else parts[0]
        sign = 1.0 if b >= a else -1.0
        return (w * (sign / math.sqrt(hi - lo))).to(self.device, self.dtype)


class PerSampleNoise(LinkedNoise):
    """(t_s, t_t) -> N(0, I) of x's shape, sample i from its own generator seeded with
    seeds[i]: each call draws the next step's noise of every sample. Sample i's noise does
    not depend on the batch. As the default noise, a singlestep step's noise extends its
    stage's as one Brownian increment (`dpmsolver.core.stepnoise`)."""

    def __init__(self, x: Tensor, seeds: Sequence[int]) -> None:
        super().__init__()
        _check_x(x)
        found, per_sample = _seeds(seeds, x.shape[0])
        if not per_sample:
            raise TypeError("seeds must be a sequence of ints, one per sample")
        self.shape = tuple(x.shape[1:])
        self.device, self.dtype = x.device, x.dtype
        self.generators = [torch.Generator().manual_seed(s) for s in found]

    def fresh(self) -> Tensor:
        rows = [torch.randn(self.shape, generator=g, dtype=torch.float64) for g in self.generators]
        return torch.stack(rows).to(self.device, self.dtype)
