"""SDE-DPM-Solver(++) (eta > 0): reproducibility and the distribution it samples (data
form at any eta, noise form at eta = 1)."""

from __future__ import annotations

import pytest
import torch

import dpmsolver as dpm
from dpmsolver.models import load

N = 4096


def draw(steps: int, seed: int, n: int = N, **kwargs: object) -> torch.Tensor:
    model = load("digits-exact")
    gen = torch.Generator().manual_seed(seed)
    x_T = model.sample_noise(n, gen, torch.float64)
    return dpm.sample(model, x_T, steps=steps, eta=1.0, generator=gen, skip_type="logSNR", **kwargs)  # type: ignore[arg-type]


def test_a_seed_reproduces_the_sample_bit_for_bit() -> None:
    a, b = draw(10, seed=3, n=16), draw(10, seed=3, n=16)
    assert torch.equal(a, b)
    assert not torch.equal(a, draw(10, seed=4, n=16))


def test_eta_zero_is_the_ode_solver() -> None:
    model = load("digits-exact")
    x_T = model.sample_noise(8, torch.Generator().manual_seed(0), torch.float64)
    ode = dpm.sample(model, x_T, steps=12)
    torch.testing.assert_close(dpm.sample(model, x_T, steps=12, eta=0.0), ode, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("steps", "cov_se", "algorithm"),
    [(20, 7.0, "dpmsolver++"), (50, 5.0, "dpmsolver++"), (50, 5.0, "dpmsolver")],
)
def test_samples_have_the_data_mean_and_covariance(
    steps: int, cov_se: float, algorithm: str
) -> None:
    # 4096 samples: each mean entry has standard error sqrt(C_ii / n) and each covariance
    # entry sqrt((C_ii C_jj + C_ij^2) / n). A Gaussian exceeds 5 standard errors with
    # probability 6e-7 per entry; mean entries must lie within 5. Covariance entries must lie
    # within 5 at 50 steps; at 20 steps the solver's own discretisation bias shows (measured:
    # 2 of 2080 entries at 6.2), so they get 7.
    gmm = load("digits-exact").mixture
    mean, cov = gmm.mean(), gmm.covariance()
    out = draw(steps, seed=0, algorithm=algorithm).reshape(N, -1)
    var = torch.diag(cov)
    assert bool(((out.mean(0) - mean).abs() <= 5 * (var / N).sqrt()).all())
    se_cov = ((var[:, None] * var[None, :] + cov**2) / N).sqrt()
    assert bool(((torch.cov(out.T) - cov).abs() <= cov_se * se_cov).all())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(eta=0.5, algorithm="dpmsolver"), "eta > 0"),
        (dict(eta=1.0, algorithm="dpmsolver", order=3), "eta > 0"),
        (dict(eta=1.0, method="singlestep", order=3), "eta > 0"),
        (dict(eta=1.0, method="singlestep", algorithm="dpmsolver"), "eta > 0"),
        (dict(eta=1.0, method="adaptive"), "eta > 0"),
        (dict(eta=0.0, method="singlestep", ancestral=True), "ancestral=True"),
        (dict(eta=1.0, ancestral=True), "ancestral=True"),
        (dict(eta=-0.5), "eta must be >= 0"),
        (dict(eta=float("inf")), "eta must be a finite"),
        (dict(eta=1.0, method="singlestep", solver_type="taylor"), "midpoint form only"),
    ],
)
def test_bad_sde_options(kwargs: dict[str, object], match: str) -> None:
    model = load("digits-exact")
    with pytest.raises(ValueError, match=match):
        dpm.sample(model, torch.zeros(1, 1, 8, 8), steps=4, **kwargs)  # type: ignore[arg-type]


def test_generator_must_be_a_generator() -> None:
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator"):
        dpm.sample(load("digits-exact"), torch.zeros(1, 1, 8, 8), eta=1.0, generator=0)  # type: ignore[arg-type]


def test_a_noise_sampler_replaces_the_generator() -> None:
    """noise_sampler(t_s, t_t) gives each SDE step's standard normal noise: one that draws
    what the generator would draw reproduces the generator's run exactly, and it is called
    once per step with the step's times."""
    model = load("digits-exact")
    x_T = model.sample_noise(8, torch.Generator().manual_seed(0), torch.float64)
    by_generator = dpm.sample(
        model, x_T, steps=6, eta=1.0, generator=torch.Generator().manual_seed(5)
    )
    source = torch.Generator().manual_seed(5)
    calls: list[tuple[float, float]] = []

    def noise_sampler(t_s: float, t_t: float) -> torch.Tensor:
        calls.append((t_s, t_t))
        return torch.randn(x_T.shape, generator=source, dtype=torch.float32)

    by_sampler = dpm.sample(model, x_T, steps=6, eta=1.0, noise_sampler=noise_sampler)
    assert torch.equal(by_sampler, by_generator)
    assert len(calls) == 6 and all(a > b for a, b in calls)
