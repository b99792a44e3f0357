"""A Gaussian mixture's exact denoiser as a `DiffusionModel`, for any noise schedule."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core import Level, NoiseSchedule, Target
from ..noise.start import start_noise
from .gmm import GaussianMixture

__all__ = ["ExactModel"]


class ExactModel:
    """x0_pred = E[x_0 | x_t] of a Gaussian mixture, in closed form at every noise level.

    It stands in for a perfectly trained network: `dpmsolver.sample(ExactModel(gmm,
    schedule), x_T)` solves the probability-flow ODE of the mixture itself, so solver error
    can be measured exactly. eps_pred = (x - alpha_t x0_pred) / sigma_t. `calls` counts
    the evaluations.
    """

    def __init__(self, mixture: GaussianMixture, schedule: NoiseSchedule) -> None:
        self.mixture = mixture
        self.schedule = schedule
        self.calls = 0

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample (the mixture's)."""
        return self.mixture.sample_shape

    def __call__(self, x: Tensor, level: Level, target: Target) -> Tensor:
        self.calls += 1
        x0 = self.mixture.posterior_mean(x, level.alpha, level.sigma)
        if target == "data":
            return x0
        return (x - level.alpha * x0) / level.sigma

    def sample_noise(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """x_T ~ N(0, sigma_T^2 I) shaped like the mixture's samples (`generator` None:
        torch's global generator)."""
        return start_noise(self, n, None, generator=generator, dtype=dtype)
