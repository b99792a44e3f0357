"""A Gaussian mixture's exact denoiser as a `DiffusionModel`, for any noise schedule."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..model import Target
from ..schedules import Level, NoiseSchedule, VPSchedule
from .gmm import GaussianMixture, load_digits_gmm

__all__ = ["MODELS", "ExactModel", "ddpm_linear_schedule", "load"]


def ddpm_linear_schedule(n: int = 1000) -> VPSchedule:
    """DDPM's discrete schedule: betas linear from 1e-4 to 0.02 over n steps."""
    return VPSchedule.discrete(betas=torch.linspace(1e-4, 0.02, n, dtype=torch.float64))


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

    def __call__(self, x: Tensor, level: Level, target: Target) -> Tensor:
        self.calls += 1
        x0 = self.mixture.posterior_mean(x, level.alpha, level.sigma)
        if target == "data":
            return x0
        return (x - level.alpha * x0) / level.sigma

    def sample_noise(
        self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """x_T ~ N(0, sigma_T^2 I) shaped like the mixture's samples."""
        sigma_t = float(self.schedule.sigma(self.schedule.t_max))
        shape = (n, *self.mixture.sample_shape)
        return sigma_t * torch.randn(shape, generator=generator, dtype=dtype)


MODELS = ("digits-exact", "digits-net")


def load(
    name: str = "digits-exact",
    schedule: NoiseSchedule | None = None,
    device: str | torch.device | None = None,
) -> Any:
    """A built-in model by name, with its schedule as `.schedule`.

    'digits-exact': the Gaussian mixture fitted to scikit-learn's 8x8 digits (pixels in
    [-1, 1]), whose denoiser is exact; 'digits-net': a small network trained on the same
    digits (a `Denoiser`). Both use DDPM's linear schedule unless `schedule` is given.
    `device`: where the network's weights go (the exact model follows its input's device).
    """
    if name == "digits-exact":
        return ExactModel(load_digits_gmm(), schedule or ddpm_linear_schedule())
    if name == "digits-net":
        from .digits_net import load_digits_net

        model = load_digits_net(schedule)
        if device is not None and isinstance(model.net, torch.nn.Module):
            model.net.to(device)
        return model
    raise ValueError(f"name must be one of {', '.join(repr(m) for m in MODELS)}; got {name!r}")
