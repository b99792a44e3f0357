"""Starting noise: one generator per batch (`start_noise`) or per sample (`start_states`),
with the shape from the caller or the model's `sample_shape`."""

from __future__ import annotations

import pytest
import torch

import dpmsolver as dpm
from dpmsolver.models import ddpm_linear_schedule, load
from dpmsolver.noise import start_noise, start_states

SCHEDULE = ddpm_linear_schedule()


def test_the_shape_comes_from_the_model_or_the_caller() -> None:
    shaped = dpm.Denoiser(lambda x, t: x, SCHEDULE, sample_shape=(3, 4, 4))
    assert shaped.sample_shape == (3, 4, 4)
    assert start_noise(shaped, 2, 0).shape == (2, 3, 4, 4)
    plain = dpm.Denoiser(lambda x, t: x, SCHEDULE)
    assert start_noise(plain, 2, 0, shape=(1, 2, 2)).shape == (2, 1, 2, 2)
    with pytest.raises(ValueError, match="give shape"):
        start_noise(plain, 2, 0)
    assert load("digits-net").sample_shape == (1, 8, 8) == load("digits-exact").sample_shape


def test_one_generator_per_batch_or_per_sample() -> None:
    model = load("digits-exact")
    sigma_T = float(SCHEDULE.sigma(SCHEDULE.t_max))
    expected = sigma_T * torch.randn(
        (3, 1, 8, 8), generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    assert torch.equal(start_noise(model, 3, 5), expected)
    g = torch.Generator().manual_seed(5)
    assert torch.equal(model.sample_noise(3, g, torch.float64), expected)
    whole = start_states(sigma_T, (1, 8, 8), [11, 12, 13])
    assert torch.equal(start_states(sigma_T, (1, 8, 8), [12]), whole[1:2])
