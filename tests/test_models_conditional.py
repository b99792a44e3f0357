"""Tests for dpmsolver.models.conditional: the exact class-conditional mixture, its noisy
classifier, and its use as a classifier-free-guided network."""

from __future__ import annotations

import io
import itertools
import math
from importlib import resources

import pytest
import torch

import dpmsolver as dpm
from dpmsolver.models import ExactModel, GaussianMixture, ddpm_linear_schedule
from dpmsolver.models.conditional import (
    UNCONDITIONAL,
    ClassConditionalMixture,
    ConditionalNet,
    load_digits_classes,
)

F64 = torch.float64
LEVELS = [(1.0, 0.0), (1.0, 0.1), (0.8, 0.6), (0.1, 1.0), (0.999, 1e-3), (0.3, 3.0), (0.0, 1.0)]
# sklearn's digits: images per class 0..9 (1797 in all); the shipped prior is these / 1797.
DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def random_class(K: int, D: int, r: int, seed: int) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(K, D, generator=g, dtype=F64)
    log_w = torch.randn(K, generator=g, dtype=F64)
    c = 0.05 + 0.3 * torch.rand(K, generator=g, dtype=F64)
    U, _ = torch.linalg.qr(torch.randn(K, D, r, generator=g, dtype=F64))
    e = c[:, None] + 2.0 * torch.rand(K, r, generator=g, dtype=F64)
    return GaussianMixture(means, log_w, c, U, e, sample_shape=(D, 1))


def random_model(seed: int = 0) -> ClassConditionalMixture:
    """Three classes with 1, 2 and 3 components in D = 5, rank 2, an uneven prior."""
    classes = [random_class(K, 5, 2, seed + 10 * K) for K in (1, 2, 3)]
    return ClassConditionalMixture(classes, torch.tensor([0.2, 0.5, 0.3], dtype=F64).log())


def noisy_batch(
    m: ClassConditionalMixture, alpha: float, sigma: float, n: int = 24
) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    x0 = m.sample(torch.arange(n) % m.num_classes, generator=g)
    return alpha * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=F64)


def bayes_posterior(m: ClassConditionalMixture, x: torch.Tensor, alpha: float, sigma: float):
    """log p(c | x_t) from each class's own GaussianMixture.log_prob and Bayes' rule."""
    joint = torch.stack(
        [m.log_prior[c] + cls.log_prob(x, alpha, sigma) for c, cls in enumerate(m.classes)], -1
    )
    return joint - torch.logsumexp(joint, -1, keepdim=True)


@pytest.fixture(scope="module")
def digits() -> ClassConditionalMixture:
    return load_digits_classes()


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize(("alpha", "sigma"), LEVELS)
def test_posterior_mean_matches_per_class_mixtures(alpha: float, sigma: float) -> None:
    m = random_model()
    x = noisy_batch(m, alpha, sigma)
    labels = torch.tensor([0, 1, 2, -1] * 6)
    out = m.posterior_mean(x, alpha, sigma, labels)
    per_class = torch.stack([cls.posterior_mean(x, alpha, sigma) for cls in m.classes], 1)
    # Brute force for -1: E[x0 | x_t] = sum_c p(c | x_t) E[x0 | x_t, c].
    post = bayes_posterior(m, x, alpha, sigma).exp()
    mixed = torch.einsum("bc,bc...->b...", post, per_class)
    for i, c in enumerate(labels.tolist()):
        expected = mixed[i] if c == UNCONDITIONAL else per_class[i, c]
        torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("alpha", "sigma"), LEVELS)
def test_unconditional_label_is_the_full_mixture(alpha: float, sigma: float) -> None:
    m = random_model(seed=1)
    x = noisy_batch(m, alpha, sigma)
    # The full mixture built here by hand: every component, weighted p(c) w_{k|c}.
    full = GaussianMixture(
        torch.cat([cls.means for cls in m.classes]),
        torch.cat([m.log_prior[c] + cls.log_weights for c, cls in enumerate(m.classes)]),
        torch.cat([cls.floor_var for cls in m.classes]),
        torch.cat([cls.basis for cls in m.classes]),
        torch.cat([cls.basis_var for cls in m.classes]),
        sample_shape=m.sample_shape,
    )
    expected = full.posterior_mean(x, alpha, sigma)
    torch.testing.assert_close(m.posterior_mean(x, alpha, sigma), expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(
        m.posterior_mean(x, alpha, sigma, torch.full((x.shape[0],), -1)),
        expected,
        rtol=0,
        atol=1e-10,
    )
    torch.testing.assert_close(m.log_prob(x, alpha, sigma), full.log_prob(x, alpha, sigma))
    torch.testing.assert_close(
        m.full_mixture.posterior_mean(x, alpha, sigma), expected, rtol=0, atol=1e-12
    )


@pytest.mark.parametrize(("alpha", "sigma"), LEVELS)
def test_classifier_is_bayes_rule(alpha: float, sigma: float) -> None:
    m = random_model(seed=2)
    x = noisy_batch(m, alpha, sigma)
    log_post = m.class_log_posterior(x, alpha, sigma)
    assert log_post.shape == (x.shape[0], 3)
    torch.testing.assert_close(
        torch.logsumexp(log_post, -1), torch.zeros(x.shape[0], dtype=F64), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(log_post, bayes_posterior(m, x, alpha, sigma), rtol=0, atol=1e-9)
    ll = m.class_log_likelihood(x, alpha, sigma)
    for c, cls in enumerate(m.classes):
        torch.testing.assert_close(ll[:, c], cls.log_prob(x, alpha, sigma), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(
        m.log_prob(x, alpha, sigma), torch.logsumexp(ll + m.log_prior, -1), rtol=1e-12, atol=1e-9
    )
    torch.testing.assert_close(m.classify(x, alpha, sigma), log_post.argmax(-1))


def test_classifier_tends_to_the_prior_at_high_noise(digits: ClassConditionalMixture) -> None:
    labels = torch.arange(10).repeat(20)
    x0 = digits.sample(labels, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(x0.shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    prior = digits.prior
    gaps = []
    for alpha in (1.0, 0.3, 0.1, 0.03, 0.01, 1e-3, 1e-4):
        sigma = math.sqrt(1 - alpha**2) if alpha < 1 else 0.0
        post = digits.class_log_posterior(alpha * x0 + sigma * eps, alpha, sigma).exp()
        gaps.append(float((post - prior).abs().max()))
    assert gaps[0] > 0.9  # clean digits: the classifier is nearly certain
    assert all(later < earlier for earlier, later in itertools.pairwise(gaps))
    # Measured 1.03e-3 at alpha = 1e-3 and 1.03e-4 at 1e-4: the log-odds are linear in the
    # signal-to-noise ratio, so the gap to the prior falls like alpha.
    assert gaps[-2] < 2e-3
    assert 9.0 < gaps[-2] / gaps[-1] < 11.0
    # alpha = 0: x_t is pure noise, independent of the class, so p(c | x_t) = p(c) exactly.
    exact = digits.class_log_posterior(eps, 0.0, 1.0).exp()
    torch.testing.assert_close(exact, prior.expand_as(exact), rtol=0, atol=1e-12)


def test_samples_are_classified_as_their_class(digits: ClassConditionalMixture) -> None:
    labels = torch.arange(10).repeat(200)
    x0 = digits.sample(labels, generator=torch.Generator().manual_seed(0))
    predicted = digits.classify(x0)  # alpha = 1, sigma = 0: log p(c | x0)
    accuracy = float((predicted == labels).double().mean())
    # Measured 1.0000 (2000 of 2000); the classes barely overlap in the fitted model.
    assert accuracy >= 0.995
    for c in range(10):
        assert float((predicted[labels == c] == c).double().mean()) >= 0.98


def test_shipped_digits_model(digits: ClassConditionalMixture) -> None:
    assert digits.num_classes == 10 and digits.sample_shape == (1, 8, 8)
    assert [cls.num_components for cls in digits.classes] == [2] * 10
    assert all(cls.rank == 12 for cls in digits.classes)
    expected = torch.tensor(DIGIT_COUNTS, dtype=F64) / sum(DIGIT_COUNTS)
    torch.testing.assert_close(digits.prior, expected, rtol=1e-6, atol=0)  # float32 storage
    blob = resources.files("dpmsolver.models").joinpath("digits_classes.npz").read_bytes()
    assert len(blob) < 100_000
    # Mean log p(x0) of its own samples estimates minus its entropy: 11.92 nats (measured
    # on 50,000 samples, standard error 0.045); 500 samples must land within 4 standard
    # errors of it (their own, about 0.46).
    x0 = digits.sample(torch.arange(10).repeat(50), generator=torch.Generator().manual_seed(0))
    assert x0.abs().max() < 3.0
    ll = digits.log_prob(x0)
    assert abs(float(ll.mean()) - 11.92) < 4 * float(ll.std()) / math.sqrt(500)


# ---------------------------------------------------------------- levels, limits, dtypes


def test_per_sample_levels_match_scalar_calls() -> None:
    m = random_model(seed=3)
    alphas = torch.tensor([1.0, 0.7, 0.2, 0.999, 0.5, 0.0], dtype=F64)
    sigmas = torch.tensor([0.0, 0.7, 0.98, 0.04, 2.0, 1.0], dtype=F64)
    x = noisy_batch(m, 0.5, 0.5, n=6)
    labels = torch.tensor([2, -1, 0, 1, -1, 1])
    out = m.posterior_mean(x, alphas, sigmas, labels)
    post = m.class_log_posterior(x, alphas, sigmas)
    for i in range(6):
        a, s = float(alphas[i]), float(sigmas[i])
        single = m.posterior_mean(x[i : i + 1], a, s, int(labels[i]))
        torch.testing.assert_close(out[i : i + 1], single, rtol=0, atol=1e-13)
        torch.testing.assert_close(post[i : i + 1], m.class_log_posterior(x[i : i + 1], a, s))


def test_limits_and_dtype() -> None:
    m = random_model(seed=4)
    x0 = m.sample(torch.tensor([0, 1, 2, -1, 1]), generator=torch.Generator().manual_seed(0))
    # sigma = 0: the denoiser returns x / alpha whatever the label.
    for label in (0, 2, -1):
        torch.testing.assert_close(
            m.posterior_mean(0.5 * x0, 0.5, 0.0, label), x0, atol=1e-12, rtol=0
        )
    # alpha = 0: the class mean (label c) or the data mean (-1).
    noise = torch.randn(5, 5, 1, dtype=F64, generator=torch.Generator().manual_seed(1))
    for c, cls in enumerate(m.classes):
        torch.testing.assert_close(
            m.posterior_mean(noise, 0.0, 1.0, c), cls.mean().reshape(5, 1).expand(5, 5, 1)
        )
    torch.testing.assert_close(
        m.posterior_mean(noise, 0.0, 1.0), m.full_mixture.mean().reshape(5, 1).expand(5, 5, 1)
    )
    x32 = x0.float()
    out32 = m.posterior_mean(x32, 0.8, 0.6, 1)
    assert out32.dtype == torch.float32 and out32.shape == x32.shape
    assert m.class_log_posterior(x32, 0.8, 0.6).dtype == torch.float32


def test_differentiable() -> None:
    m = random_model(seed=5)
    x = noisy_batch(m, 0.7, 0.5, n=3).requires_grad_(True)
    labels = torch.tensor([0, -1, 2])
    assert torch.autograd.gradcheck(lambda z: m.posterior_mean(z, 0.7, 0.5, labels), (x,))
    assert torch.autograd.gradcheck(lambda z: m.class_log_posterior(z, 0.7, 0.5), (x,))


def test_sampling_labels_and_reproducibility() -> None:
    m = random_model(seed=6)
    labels = torch.tensor([0, 0, 2, -1, 1])
    a = m.sample(labels, generator=torch.Generator().manual_seed(3))
    b = m.sample(labels, generator=torch.Generator().manual_seed(3))
    assert a.shape == (5, 5, 1) and a.dtype == F64
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert m.sample(1, n=4).shape == (4, 5, 1)
    drawn = m.sample_labels(20_000, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(drawn, minlength=3).double() / 20_000
    # 6 binomial standard errors (< 0.022) around the prior [0.2, 0.5, 0.3].
    assert ((freq - m.prior).abs() < 6 * (0.25 / 20_000) ** 0.5).all()


def test_npz_round_trip() -> None:
    m = random_model(seed=7)
    buf = io.BytesIO()
    m.to_npz(buf)
    buf.seek(0)
    back = ClassConditionalMixture.from_npz(buf)
    x = noisy_batch(m, 0.6, 0.8)
    labels = torch.arange(24) % 4 - 1
    torch.testing.assert_close(
        back.posterior_mean(x, 0.6, 0.8, labels), m.posterior_mean(x, 0.6, 0.8, labels)
    )
    torch.testing.assert_close(back.log_prior, m.log_prior, rtol=0, atol=1e-15)
    buf32 = io.BytesIO()
    m.to_npz(buf32, precision="float32")
    assert len(buf32.getvalue()) < len(buf.getvalue())


# ---------------------------------------------------------------- as a guided network

SCHEDULES = {
    "discrete": ddpm_linear_schedule(),
    "linear": dpm.VPSchedule.linear(),
    "cosine": dpm.VPSchedule.cosine(),
    "edm": dpm.EDMSchedule(),
    "flow": dpm.FlowSchedule(shift=3.0, time_scale=1000.0),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_net_maps_time_input_back_to_the_level(name: str) -> None:
    schedule = SCHEDULES[name]
    net = ConditionalNet(random_model(), schedule)
    t = torch.linspace(schedule.t_min, schedule.t_max, 33, dtype=F64)
    alpha, sigma = net.levels(schedule.model_time(t))
    torch.testing.assert_close(alpha, schedule.alpha(t), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sigma, schedule.sigma(t), rtol=1e-12, atol=1e-14)


def test_net_refuses_a_schedule_it_cannot_invert() -> None:
    odd = dpm.CustomSchedule(
        lambda t: torch.cos(t), lambda t: torch.sin(t), 0.01, 1.5, model_time=lambda t: 7 * t
    )
    with pytest.raises(ValueError, match="model_time that is not the identity"):
        ConditionalNet(random_model(), odd)


@pytest.mark.parametrize("scale", [1.0, 3.0, 7.5])
def test_net_inside_denoiser_with_classifier_free_guidance(scale: float) -> None:
    m = random_model(seed=8)
    schedule = ddpm_linear_schedule()
    net = ConditionalNet(m, schedule)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    model = dpm.Denoiser(
        net,
        schedule,
        prediction="x0",
        guidance=dpm.ClassifierFree(scale, cond=labels, uncond=torch.full_like(labels, -1)),
    )
    (level,) = schedule.levels([0.4])
    x = noisy_batch(m, level.alpha, level.sigma, n=6)
    calls = net.calls
    x0 = model(x, level, "data")
    assert net.calls == calls + 1  # one call on the doubled batch (or on cond alone)
    cond = m.posterior_mean(x, level.alpha, level.sigma, labels)
    uncond = m.posterior_mean(x, level.alpha, level.sigma)
    torch.testing.assert_close(x0, uncond + scale * (cond - uncond), rtol=0, atol=1e-12)
    torch.testing.assert_close(net.denoiser(labels, scale)(x, level, "data"), x0)


def test_scale_one_samples_the_conditional_model() -> None:
    m = random_model(seed=9)
    schedule = ddpm_linear_schedule()
    net = ConditionalNet(m, schedule)
    x_T = torch.randn(8, 5, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    for c, cls in enumerate(m.classes):
        labels = torch.full((8,), c)
        guided = dpm.sample(net.denoiser(labels, 1.0), x_T, steps=10)
        # The same ODE through GaussianMixture's own denoiser (ExactModel), no guidance.
        direct = dpm.sample(ExactModel(cls, schedule), x_T, steps=10)
        torch.testing.assert_close(guided, direct, rtol=0, atol=1e-10)


def test_exact_classifier_guidance_at_scale_one_is_the_conditional_model() -> None:
    # grad log p_t(x | c) = grad log p_t(x) + grad log p(c | x_t): classifier guidance of
    # the unconditional model with the exact classifier at scale 1 is the conditional model.
    m = random_model(seed=10)
    schedule = dpm.VPSchedule.linear()
    net = ConditionalNet(m, schedule)
    labels = torch.tensor([0, 1, 2, 1])
    guided = dpm.Denoiser(
        net, schedule, prediction="x0", guidance=dpm.ClassifierGuidance(net.classifier, 1.0, labels)
    )
    for t in (0.9, 0.5, 0.1):
        (level,) = schedule.levels([t])
        x = noisy_batch(m, level.alpha, level.sigma, n=4)
        expected = m.posterior_mean(x, level.alpha, level.sigma, labels)
        torch.testing.assert_close(guided(x, level, "data"), expected, rtol=0, atol=1e-9)


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs() -> None:
    m = random_model()
    x = noisy_batch(m, 0.6, 0.8, n=4)
    with pytest.raises(ValueError, match=r"labels must lie in \[-1, 2\].*got \[3\]"):
        m.posterior_mean(x, 0.6, 0.8, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="labels must have 1 or 4 elements"):
        m.posterior_mean(x, 0.6, 0.8, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match=r"labels must be an int or an integer torch\.Tensor"):
        m.posterior_mean(x, 0.6, 0.8, torch.tensor([0.0, 1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        m.posterior_mean(x, 0.6, -0.1)
    with pytest.raises(ValueError, match="alpha must be a float or a tensor with 1 or 4"):
        m.class_log_posterior(x, torch.ones(3), 0.5)
    with pytest.raises(ValueError, match="must not both be 0"):
        m.log_prob(x, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, \*\(5, 1\)\)"):
        m.log_prob(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="log_prior must have shape \\(3,\\)"):
        ClassConditionalMixture(m.classes, torch.zeros(2))
    with pytest.raises(ValueError, match="classes\\[1\\] has dim=4"):
        ClassConditionalMixture([random_class(2, 5, 2, 0), random_class(2, 4, 2, 1)], [0.0, 0.0])
    with pytest.raises(ValueError, match="at least one"):
        ClassConditionalMixture([], torch.zeros(0))
    net = ConditionalNet(m, ddpm_linear_schedule())
    with pytest.raises(ValueError, match="cond must hold class labels >= 0"):
        net.classifier(x, torch.full((4,), 10.0), torch.tensor([0, -1, 1, 2]))
    with pytest.raises(TypeError, match="model must be a ClassConditionalMixture"):
        ConditionalNet(m.classes[0], ddpm_linear_schedule())  # type: ignore[arg-type]
