"""Starting noise x_T ~ N(0, sigma_T^2 I), drawn in one of two ways.

- `start_noise`: one generator for the whole batch (benchmarks, tuning pilots, the CLI,
  `ExactModel.sample_noise`): n samples from one seed.
- `start_states`: one generator per sample (`generate`): sample i depends only on its own
  seed, so it is the same whatever the batch or the number of ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..checks import check_int, check_shape
from ..core import DiffusionModel

__all__ = ["sample_shape", "start_noise", "start_states"]


def sample_shape(model: DiffusionModel, shape: Sequence[int] | None = None) -> tuple[int, ...]:
    """`shape` if given, else the model's `sample_shape` (the built-in models and a
    `Denoiser` made with one have it); a ValueError if neither is known."""
    if shape is None:
        shape = getattr(model, "sample_shape", None)
        if shape is None:
            raise ValueError(
                "give shape (one sample's shape, without the batch): the model has no sample_shape"
            )
        return check_shape("the model's sample_shape", shape)
    return check_shape("shape", shape)


def start_noise(
    model: DiffusionModel,
    n: int,
    seed: int | None = 0,
    shape: Sequence[int] | None = None,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    t: float | None = None,
) -> Tensor:
    """n states x_T = sigma_t * N(0, I) of `shape` (default: the model's sample shape) at
    time t (default the schedule's t_max), on the CPU in `dtype`, from one generator:
    `generator` if given, else one seeded with `seed` (None: torch's global generator)."""
    check_int("n", n, 1)
    schedule = model.schedule
    shape = sample_shape(model, shape)
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    sigma_t = float(schedule.sigma(schedule.t_max if t is None else t))
    return sigma_t * torch.randn((n, *shape), generator=generator, dtype=dtype)


def start_states(sigma_T: float, shape: Sequence[int], seeds: Sequence[int]) -> Tensor:
    """x_T = sigma_T * N(0, I) in float64 on the CPU, one generator per sample."""
    gen = torch.Generator()
    noise = torch.empty((len(seeds), *shape), dtype=torch.float64)
    for row, s in zip(noise, seeds, strict=True):
        row.copy_(torch.randn(tuple(shape), generator=gen.manual_seed(s), dtype=torch.float64))
    return sigma_T * noise
