"""Noise samplers of the SDE solvers: the Brownian tree, per-sample noise, the default
step noise; strong convergence on one Brownian path; batch invariance."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from problems import digits_mixture
from torch import Tensor

import dpmsolver as dpm
import dpmsolver.k_diffusion as K  # noqa: N812 (k-diffusion's own convention)
from dpmsolver.core import StepNoise

GMM = digits_mixture()


def ve_model(x: Tensor, sigma: Tensor) -> Tensor:
    return GMM.posterior_mean(x, 1.0, sigma)


def start(n: int, dtype: torch.dtype = torch.float64, scale: float = 20.0) -> Tensor:
    g = torch.Generator().manual_seed(0)
    return scale * torch.randn(n, 1, 8, 8, generator=g, dtype=dtype)


def test_brownian_tree_increments_belong_to_one_path() -> None:
    x = start(3)
    tree = dpm.BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=[1, 2, 3])

    def w(a: float, b: float) -> Tensor:  # W(b) - W(a), from the normalised increment
        return tree(a, b) * math.sqrt(abs(b - a))

    # Additive over a cut, whatever order it is asked in; the sign follows the direction.
    torch.testing.assert_close(w(9.0, 1.0), w(9.0, 4.0) + w(4.0, 1.0), rtol=0, atol=1e-9)
    torch.testing.assert_close(tree(1.0, 9.0), -tree(9.0, 1.0), rtol=0, atol=0)
    # Standard normal entries; the samples' paths are independent.
    z = torch.stack([tree(10.0 - k * 0.5, 9.5 - k * 0.5) for k in range(19)])
    assert abs(float(z.mean())) < 0.06 and abs(float(z.std()) - 1.0) < 0.06
    corr = np.corrcoef(z[:, 0].flatten().numpy(), z[:, 1].flatten().numpy())[0, 1]
    assert abs(corr) < 0.1
    # Sample i's path depends on seed[i] only.
    alone = dpm.BrownianTreeNoiseSampler(x[1:2], 0.1, 10.0, seed=[2])
    torch.testing.assert_close(alone(5.0, 2.0)[0], tree(5.0, 2.0)[1], rtol=0, atol=0)
    whole = dpm.BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=2)  # one path for the tensor
    assert whole(5.0, 2.0).shape == x.shape
    # cpu=False builds the trees on x's device (here the CPU too): the same path.
    on_x = dpm.BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=[1, 2, 3], cpu=False)
    torch.testing.assert_close(on_x(5.0, 2.0), tree(5.0, 2.0), rtol=0, atol=0)


def test_brownian_tree_and_per_sample_noise_errors() -> None:
    x = start(3)
    with pytest.raises(ValueError, match="seed has 2 entries; per-sample seeds need one"):
        dpm.BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=[1, 2])
    with pytest.raises(TypeError, match="seed must be an int, a sequence of ints"):
        dpm.BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=1.5)  # type: ignore[arg-type]
    tree = dpm.BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=0)
    with pytest.raises(ValueError, match="outside the tree's range"):
        tree(20.0, 5.0)
    # An end given in float32 (a float32 sigma grid) is float rounding, not out of range.
    top = torch.tensor(10.0 * (1 + 2e-7), dtype=torch.float32)
    torch.testing.assert_close(tree(top, 5.0), tree(10.0, 5.0), rtol=0, atol=0)
    with pytest.raises(ValueError, match="empty interval"):
        tree(5.0, 5.0)
    # k-diffusion's transforms take tensors; a float-only one works too.
    logged = dpm.BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=0, transform=lambda s: s.log())
    same = dpm.BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=0, transform=math.log)
    torch.testing.assert_close(logged(5.0, 2.0), same(5.0, 2.0), rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"transform\(sigma_min\) must be a float"):
        dpm.BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=0, transform=lambda s: "a")
    with pytest.raises(TypeError, match="seeds must be a sequence of ints"):
        dpm.PerSampleNoise(x, 3)  # type: ignore[arg-type]


def test_per_sample_noise_rows_do_not_depend_on_the_batch() -> None:
    seeds = [5, 6, 7, 8]
    big = dpm.PerSampleNoise(start(4), seeds)
    small = dpm.PerSampleNoise(start(2), seeds[2:])
    for _ in range(3):
        torch.testing.assert_close(big(1.0, 0.5)[2:], small(1.0, 0.5), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["step", "per_sample"])
def test_step_noise_couples_a_stage_with_its_step(kind: str) -> None:
    """The second query from the same start is the increment of one Brownian path: its
    covariance with the first is sqrt(rho), rho = 1/4 here (the default noise, and the
    per-sample noise `generate` uses)."""
    x = torch.zeros(20000, 4, dtype=torch.float64)
    noise: Any = (
        StepNoise(x, torch.Generator().manual_seed(0), dtype=torch.float64)
        if kind == "step"
        else dpm.PerSampleNoise(x, list(range(20000)))
    )
    stage, step = noise(10.0, 9.0), noise(10.0, 6.0)
    assert abs(float((stage * step).mean()) - 0.5) < 0.01
    assert abs(float(step.var()) - 1.0) < 0.01
    fresh = noise(6.0, 4.0)  # a new start: independent
    assert abs(float((fresh * step).mean())) < 0.01


SDE = [
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m_sde",
    "sample_dpmpp_sde",
    "sample_dpmpp_2s_ancestral",
]


@pytest.mark.parametrize("name", SDE)
def test_sample_i_is_bit_identical_at_batch_sizes_1_7_and_64(name: str) -> None:
    fn = getattr(K, name)
    x = start(64, torch.float32)
    seeds = list(range(100, 164))
    sigmas = K.get_sigmas_karras(8, 0.05, 20.0)

    def run(n: int) -> Tensor:
        tree = K.BrownianTreeNoiseSampler(x[:n], 0.05, 20.0, seed=seeds[:n])
        return fn(ve_model, x[:n], sigmas, disable=True, noise_sampler=tree)

    out = {n: run(n) for n in (1, 7, 64)}
    assert torch.equal(out[64][:7], out[7]) and torch.equal(out[7][:1], out[1])
    # The noise matters: other seeds give other samples.
    other = K.BrownianTreeNoiseSampler(x[:7], 0.05, 20.0, seed=seeds[7:14])
    assert not torch.allclose(
        fn(ve_model, x[:7], sigmas, disable=True, noise_sampler=other), out[7]
    )


def test_native_api_takes_the_brownian_tree_and_is_batch_invariant() -> None:
    """(In float32, where the mixture's own batched matmuls are bitwise batch-invariant on
    the CPU; in float64 they are not, by 1e-16.)"""
    model = dpm.Denoiser(ve_model, dpm.VESchedule(0.05, 20.0), prediction="x0")
    x = start(7, torch.float32)
    runs = []
    for n in (7, 1):
        tree = dpm.BrownianTreeNoiseSampler(x[:n], 0.05, 20.0, seed=list(range(n)))
        runs.append(dpm.sample(model, x[:n], steps=10, eta=1.0, noise_sampler=tree))
    assert torch.equal(runs[0][:1], runs[1])


# -- strong convergence on one Brownian path ----------------------------------------------

LOW, HIGH = 0.05, 20.0


def solve(name: str, n: int, x: Tensor) -> Tensor:
    """n steps uniform in lambda from HIGH to LOW (no jump to 0), on the path of seeds 1, 2
    in the time log(sigma) (where torchsde's 6-digit time rounding is far below the steps)."""
    tree = K.BrownianTreeNoiseSampler(x, LOW, HIGH, seed=[1, 2], transform=math.log)
    sigmas = K.get_sigmas_exponential(n + 1, LOW, HIGH).double()[:-1]
    return getattr(K, name)(ve_model, x, sigmas, disable=True, noise_sampler=tree)


@pytest.fixture(scope="module")
def strong_reference() -> Tensor:
    """The 2000-step DPM-Solver++(2M) SDE solution: every SDE solver converges to the same
    solution of the reverse SDE on one path."""
    return solve("sample_dpmpp_2m_sde", 2000, start(2))


@pytest.mark.parametrize("name", SDE)
def test_strong_error_falls_at_order_one(name: str, strong_reference: Tensor) -> None:
    """The noise is additive, and each step's noise is the path's increment weighted at one
    point of the step: strong order 1 for all four (fitted slope over 25 to 200 steps:
    0.93-1.18 measured, `benchmarks/sde.py`; asserted within [0.75, 1.4])."""
    steps = [25, 50, 100, 200]
    errors = [
        float((solve(name, n, start(2)) - strong_reference).pow(2).mean().sqrt()) for n in steps
    ]
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert 0.75 < slope < 1.4, (errors, slope)
    assert errors[-1] < 0.01


def test_step_count_does_not_change_the_path() -> None:
    """One path whatever the solver: 400-step runs of two solvers on the same tree agree far
    better than a run on another path."""
    x = start(2)
    a = solve("sample_dpmpp_2m_sde", 400, x)
    b = solve("sample_dpmpp_3m_sde", 400, x)
    tree = K.BrownianTreeNoiseSampler(x, LOW, HIGH, seed=[3, 4], transform=math.log)
    sigmas = K.get_sigmas_exponential(401, LOW, HIGH).double()[:-1]
    c = K.sample_dpmpp_2m_sde(ve_model, x, sigmas, disable=True, noise_sampler=tree)
    same, other = float((a - b).abs().max()), float((a - c).abs().max())
    assert same < 0.05 * other, (same, other)
