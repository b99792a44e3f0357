"""The default noise of the SDE steps: a fresh normal draw per step, Brownian within a step.

A stochastic singlestep step (DPM-Solver++ SDE) asks for the noise of its stage's interval
[s, s1] and then of the whole step [s, t]. Drawn independently, the two would not be the
increments of one Brownian path, and the scheme loses accuracy in distribution (measured:
`benchmarks/sde.py`); k-diffusion's default there is a Brownian tree. `StepNoise` keeps the
last draw and gives a query that extends it from the same start the increment consistent
with it: with rho = |s1 - s| / |t - s| (the path's time is the solver's time),
    z_[s,t] = sqrt(rho) z_[s,s1] + sqrt(1 - rho) z_new,
which is (W(t) - W(s)) / sqrt|t - s| for W(s1) - W(s) = sqrt|s1 - s| z_[s,s1]. Other
queries (multistep steps) get a fresh draw each.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["LinkedNoise", "StepNoise"]


class LinkedNoise:
    """A noise sampler (t_s, t_t) -> z that draws `fresh()` per query and links a query
    that extends the previous one from the same start (module doc). Subclasses give
    `fresh()`: N(0, I) of the samples' shape, in the output's dtype and device."""

    def __init__(self) -> None:
        self.last: tuple[float, float, Tensor] | None = None

    def fresh(self) -> Tensor:
        raise NotImplementedError

    def __call__(self, t_s: float, t_t: float) -> Tensor:
        z = self.fresh()
        last = self.last
        if last is not None and last[0] == t_s:
            inner, outer = abs(last[1] - t_s), abs(t_t - t_s)
            if 0.0 < inner < outer and (last[1] - t_s) * (t_t - t_s) > 0:
                rho = inner / outer
                z = last[2] * math.sqrt(rho) + z * math.sqrt(1.0 - rho)
        self.last = (t_s, t_t, z)
        return z


class StepNoise(LinkedNoise):
    """(t_s, t_t) -> N(0, I) of x's shape from `generator` (None: torch's global one), drawn
    in `dtype` (default float32, as `combine` draws) on the generator's device and returned
    in x's dtype and device; nested intervals from one start are linked (module doc)."""

    def __init__(
        self, x: Tensor, generator: torch.Generator | None, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        self.shape, self.dtype = tuple(x.shape), dtype
        self.out = (x.device, x.dtype)
        self.generator = generator
        self.device = generator.device if generator is not None else x.device

    def fresh(self) -> Tensor:
        z = torch.randn(self.shape, generator=self.generator, device=self.device, dtype=self.dtype)
        return z.to(*self.out)
