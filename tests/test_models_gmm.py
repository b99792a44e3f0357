"""Tests for dpmsolver.models.gmm (exact GMM denoiser) and dpmsolver.tools.png."""

from __future__ import annotations

import math
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from dpmsolver.models import GaussianMixture, load_digits_gmm
from dpmsolver.tools.png import image_grid, read_png, read_png_text, write_png

F64 = torch.float64
LEVELS = [(1.0, 0.1), (0.8, 0.6), (0.1, 1.0), (0.999, 1e-3), (0.3, 3.0), (1e-3, 0.9999)]


def random_mixture(
    K: int = 3, D: int = 5, r: int = 2, seed: int = 0, sample_shape: tuple[int, ...] | None = None
) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(K, D, generator=g, dtype=F64)
    log_w = torch.randn(K, generator=g, dtype=F64)
    c = 0.05 + 0.3 * torch.rand(K, generator=g, dtype=F64)
    if r == 0:
        return GaussianMixture(means, log_w, c, sample_shape=sample_shape)
    U, _ = torch.linalg.qr(torch.randn(K, D, r, generator=g, dtype=F64))
    e = c[:, None] + 2.0 * torch.rand(K, r, generator=g, dtype=F64)
    return GaussianMixture(means, log_w, c, U, e, sample_shape=sample_shape)


def dense_covariances(m: GaussianMixture) -> torch.Tensor:
    """S_k built entry by entry from the stored parameters (independent of the model code)."""
    K, D, r = m.num_components, m.dim, m.rank
    U, e, c = m.basis, m.basis_var, m.floor_var
    S = torch.zeros(K, D, D, dtype=F64)
    for k in range(K):
        S[k] = c[k] * torch.eye(D, dtype=F64)
        for j in range(r):
            S[k] += (e[k, j] - c[k]) * torch.outer(U[k, :, j], U[k, :, j])
    return S


def dense_component_log_density(
    m: GaussianMixture, x: torch.Tensor, alpha: float, sigma: float
) -> torch.Tensor:
    """log N(x; alpha mu_k, alpha^2 S_k + sigma^2 I) via dense covariances, shape (B, K)."""
    S = dense_covariances(m)
    M = alpha**2 * S + sigma**2 * torch.eye(m.dim, dtype=F64)
    dist = torch.distributions.MultivariateNormal(alpha * m.means, covariance_matrix=M)
    return dist.log_prob(x.reshape(x.shape[0], 1, m.dim))


def dense_posterior_mean(
    m: GaussianMixture, x: torch.Tensor, alpha: float, sigma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(posterior mean (B, D), responsibilities (B, K), per-component means (B, K, D))."""
    S = dense_covariances(m)
    M = alpha**2 * S + sigma**2 * torch.eye(m.dim, dtype=F64)
    Minv = torch.linalg.inv(M)
    xf = x.reshape(x.shape[0], m.dim)
    y = xf[:, None, :] - alpha * m.means[None]
    comp = m.means[None] + alpha * torch.einsum("kde,kef,bkf->bkd", S, Minv, y)
    logits = m.log_weights + dense_component_log_density(m, xf, alpha, sigma)
    resp = torch.softmax(logits, dim=-1)
    return torch.einsum("bk,bkd->bd", resp, comp), resp, comp


def noisy_batch(m: GaussianMixture, alpha: float, sigma: float, n: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    x0 = m.sample(n, generator=g)
    return alpha * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=F64)


# ---------------------------------------------------------------- exactness vs dense


@pytest.mark.parametrize("r", [0, 2, 5])
@pytest.mark.parametrize(("alpha", "sigma"), LEVELS)
def test_posterior_mean_matches_dense(r: int, alpha: float, sigma: float) -> None:
    m = random_mixture(K=3, D=5, r=r, seed=r)
    x = noisy_batch(m, alpha, sigma)
    expected, resp, _ = dense_posterior_mean(m, x, alpha, sigma)
    torch.testing.assert_close(m.posterior_mean(x, alpha, sigma), expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(
        m.log_responsibilities(x, alpha, sigma).exp(), resp, rtol=0, atol=1e-10
    )
    log_p = torch.logsumexp(m.log_weights + dense_component_log_density(m, x, alpha, sigma), -1)
    torch.testing.assert_close(m.log_prob(x, alpha, sigma), log_p, rtol=1e-12, atol=1e-10)


def test_per_sample_alpha_sigma_match_scalar_calls() -> None:
    m = random_mixture(K=4, D=6, r=3, seed=1, sample_shape=(2, 3))
    alphas = torch.tensor([1.0, 0.7, 0.2, 0.999], dtype=F64)
    sigmas = torch.sqrt(1 - alphas**2) + 1e-3
    x = torch.randn(4, 2, 3, dtype=F64, generator=torch.Generator().manual_seed(5))
    out = m.posterior_mean(x, alphas, sigmas)
    assert out.shape == (4, 2, 3)
    for i in range(4):
        single = m.posterior_mean(x[i : i + 1], float(alphas[i]), float(sigmas[i]))
        torch.testing.assert_close(out[i : i + 1], single, rtol=0, atol=1e-13)
    # (B, 1, 1) tensors are accepted too, as are 0-d tensors.
    torch.testing.assert_close(m.posterior_mean(x, alphas[:, None, None], sigmas), out)
    torch.testing.assert_close(
        m.posterior_mean(x, torch.tensor(0.5), 0.8), m.posterior_mean(x, 0.5, 0.8)
    )


def test_component_labels() -> None:
    m = random_mixture(K=3, D=5, r=2, seed=2)
    alpha, sigma = 0.6, 0.8
    x = noisy_batch(m, alpha, sigma, n=6)
    full, _, comp = dense_posterior_mean(m, x, alpha, sigma)
    labels = torch.tensor([0, 1, 2, -1, 2, -1])
    out = m.posterior_mean(x, alpha, sigma, component=labels)
    for i, k in enumerate(labels.tolist()):
        expected = full[i] if k < 0 else comp[i, k]
        torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-10)
    all_mix = m.posterior_mean(x, alpha, sigma, component=torch.full((6,), -1))
    torch.testing.assert_close(all_mix, full, rtol=0, atol=1e-10)


def test_alpha_to_zero_gives_mixture_mean() -> None:
    m = random_mixture(K=3, D=5, r=2, seed=3)
    x = torch.randn(8, 5, dtype=F64, generator=torch.Generator().manual_seed(0))
    for alpha in (0.0, 1e-9):
        out = m.posterior_mean(x, alpha, 1.0)
        torch.testing.assert_close(out, m.mean().expand(8, 5), rtol=0, atol=1e-8)


def test_sigma_to_zero_returns_data_point() -> None:
    m = random_mixture(K=3, D=5, r=2, seed=4)
    x0 = m.sample(32, generator=torch.Generator().manual_seed(1))
    # sigma = 0 exactly: no division by sigma, the denoiser is x / alpha.
    torch.testing.assert_close(m.posterior_mean(x0, 1.0, 0.0), x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(m.posterior_mean(0.5 * x0, 0.5, 0.0), x0, rtol=0, atol=1e-12)
    # Tweedie: E[x0 | x] - x = sigma^2 grad log p(x) = O(sigma^2).
    err3 = (m.posterior_mean(x0, 1.0, 1e-3) - x0).abs().max()
    err4 = (m.posterior_mean(x0, 1.0, 1e-4) - x0).abs().max()
    assert err4 < 1e-5
    assert 50 < err3 / err4 < 200  # quadratic decay in sigma


@pytest.mark.parametrize(("alpha", "sigma"), LEVELS)
def test_tweedie_identity(alpha: float, sigma: float) -> None:
    m = random_mixture(K=3, D=5, r=2, seed=5)
    x = noisy_batch(m, alpha, sigma).requires_grad_(True)
    log_p = torch.logsumexp(m.log_weights + dense_component_log_density(m, x, alpha, sigma), -1)
    (score,) = torch.autograd.grad(log_p.sum(), x)
    tweedie = (x.detach() + sigma**2 * score) / alpha
    tol = 1e-10 / alpha  # dividing by alpha amplifies rounding in the score
    torch.testing.assert_close(
        m.posterior_mean(x.detach(), alpha, sigma), tweedie, rtol=0, atol=tol
    )


def test_differentiable_and_dtype() -> None:
    m = random_mixture(K=2, D=4, r=1, seed=6, sample_shape=(1, 2, 2))
    x = torch.randn(3, 1, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: m.posterior_mean(z, 0.7, 0.5), (x,))
    assert torch.autograd.gradcheck(lambda z: m.log_responsibilities(z, 0.7, 0.5), (x,))
    x32 = x.detach().float()
    out32 = m.posterior_mean(x32, 0.7, 0.5)
    assert out32.dtype == torch.float32 and out32.shape == x32.shape
    assert m.log_responsibilities(x32, 0.7, 0.5).dtype == torch.float32
    torch.testing.assert_close(out32.double(), m.posterior_mean(x32.double(), 0.7, 0.5))


# ---------------------------------------------------------------- sampling and moments


def test_sample_moments() -> None:
    m = random_mixture(K=3, D=5, r=2, seed=7)
    n = 200_000
    xs = m.sample(n, generator=torch.Generator().manual_seed(0))
    assert xs.shape == (n, 5) and xs.dtype == F64
    # Tolerance: 6 standard errors per entry, the standard errors estimated from the samples
    # (std of x_i for the mean, std of (x_i - m_i)(x_j - m_j) for the covariance) / sqrt(n).
    # With 5 + 25 entries the false-alarm probability is < 1e-7 (and the seed is fixed).
    mean, cov = m.mean(), m.covariance()
    se_mean = xs.std(0) / math.sqrt(n)
    assert ((xs.mean(0) - mean).abs() <= 6 * se_mean).all()
    dev = xs - mean
    prods = dev[:, :, None] * dev[:, None, :]
    se_cov = prods.std(0) / math.sqrt(n)
    assert ((prods.mean(0) - cov).abs() <= 6 * se_cov).all()
    # The exact moments agree with dense per-component covariances.
    S = dense_covariances(m)
    w = m.weights
    second = torch.einsum("k,kde->de", w, S + m.means[:, :, None] * m.means[:, None, :])
    torch.testing.assert_close(cov, second - torch.outer(mean, mean), rtol=0, atol=1e-12)


def test_sample_components_and_reproducibility() -> None:
    m = random_mixture(K=3, D=5, r=2, seed=8, sample_shape=(5, 1))
    a = m.sample(10, generator=torch.Generator().manual_seed(3))
    b = m.sample(10, generator=torch.Generator().manual_seed(3))
    assert a.shape == (10, 5, 1)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    n = 50_000
    xs = m.sample(n, generator=torch.Generator().manual_seed(4), component=1).reshape(n, 5)
    S1 = dense_covariances(m)[1]
    # 6 standard errors of the component mean (exact per-coordinate std sqrt(S_ii / n)).
    assert ((xs.mean(0) - m.means[1]).abs() <= 6 * (S1.diagonal() / n).sqrt()).all()
    labels = torch.tensor([0, -1, 2, -1])
    assert m.sample(4, component=labels).shape == (4, 5, 1)
    assert m.sample(0).shape == (0, 5, 1)


# ---------------------------------------------------------------- persistence


def test_npz_round_trip(tmp_path: Path) -> None:
    m = random_mixture(K=3, D=6, r=2, seed=9, sample_shape=(1, 2, 3))
    path = tmp_path / "m.npz"
    m.to_npz(path)
    m2 = GaussianMixture.from_npz(path)
    assert m2.sample_shape == (1, 2, 3)
    for name in ("means", "log_weights", "floor_var", "basis", "basis_var"):
        torch.testing.assert_close(getattr(m2, name), getattr(m, name), rtol=0, atol=1e-15)
    m.to_npz(tmp_path / "m32.npz", precision="float32")
    m3 = GaussianMixture.from_npz(tmp_path / "m32.npz")
    assert m3.means.dtype == F64
    x = torch.randn(4, 1, 2, 3, dtype=F64)
    torch.testing.assert_close(
        m3.posterior_mean(x, 0.8, 0.6), m.posterior_mean(x, 0.8, 0.6), rtol=0, atol=1e-5
    )


def test_digits_model() -> None:
    m = load_digits_gmm()
    assert m.sample_shape == (1, 8, 8)
    assert m.dim == 64
    xs = m.sample(2000, generator=torch.Generator().manual_seed(0))
    assert xs.shape == (2000, 1, 8, 8)
    assert (xs.abs() <= 1.2).double().mean() > 0.85
    den = m.posterior_mean(xs[:8].float() + 0.1 * torch.randn(8, 1, 8, 8), 1.0, 0.1)
    assert den.shape == (8, 1, 8, 8) and torch.isfinite(den).all()


# ---------------------------------------------------------------- PNG helpers


def test_png_round_trip_grid(tmp_path: Path) -> None:
    m = load_digits_gmm()
    xs = m.sample(20, generator=torch.Generator().manual_seed(1))
    grid = image_grid(xs, nrow=8, padding=1, scale=4)
    assert grid.dtype == np.uint8
    assert grid.shape == ((3 * 8 + 2) * 4, (8 * 8 + 7) * 4)
    assert grid[0, 8 * 4] == 128  # padding column is mid-grey
    write_png(tmp_path / "g.png", grid)
    np.testing.assert_array_equal(read_png(tmp_path / "g.png"), grid)
    rgb = image_grid(np.tile(xs.numpy(), (1, 3, 1, 1)), nrow=5, padding=2, scale=1)
    assert rgb.shape == (4 * 8 + 3 * 2, 5 * 8 + 4 * 2, 3)
    write_png(tmp_path / "rgb.png", rgb)
    np.testing.assert_array_equal(read_png(tmp_path / "rgb.png"), rgb)


def _filtered_png(image: np.ndarray, filters: list[int]) -> bytes:
    """Encode a grey uint8 image using the given per-row PNG filter types (test-only)."""
    h, w = image.shape
    img = image.astype(np.int64)
    raw = bytearray()
    for i in range(h):
        up = img[i - 1] if i > 0 else np.zeros(w, dtype=np.int64)
        left = np.concatenate([[0], img[i, :-1]])
        upleft = np.concatenate([[0], up[:-1]])
        p = left + up - upleft
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        pred = {0: 0 * img[i], 1: left, 2: up, 3: (left + up) // 2, 4: paeth}[filters[i]]
        raw.append(filters[i])
        raw += bytes(((img[i] - pred) % 256).astype(np.uint8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(raw)))
        + chunk(b"IEND", b"")
    )


def test_read_png_all_filter_types(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(10, 7), dtype=np.uint8)
    path = tmp_path / "f.png"
    path.write_bytes(_filtered_png(image, [0, 1, 2, 3, 4, 4, 3, 2, 1, 0]))
    np.testing.assert_array_equal(read_png(path), image)


def test_png_text_chunks_round_trip(tmp_path: Path) -> None:
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    text = {"Title": "16 samples of digits-exact", "Description": "seed 0, 10 calls (\u00e9)"}
    write_png(tmp_path / "t.png", image, text)
    assert read_png_text(tmp_path / "t.png") == text
    np.testing.assert_array_equal(read_png(tmp_path / "t.png"), image)
    write_png(tmp_path / "plain.png", image)
    assert read_png_text(tmp_path / "plain.png") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ({"": "x"}, "text key '': a PNG keyword has 1 to 79 characters"),
        ({"k" * 80: "x"}, "a PNG keyword has 1 to 79 characters"),
        ({" Title": "x"}, "no leading or trailing spaces"),
        ({"Title": "a\0b"}, "no NUL"),
        ({"Title": "\u2192"}, "is not Latin-1"),
    ],
)
def test_png_text_refuses_what_a_text_chunk_cannot_hold(
    tmp_path: Path, text: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        write_png(tmp_path / "bad.png", np.zeros((2, 2), dtype=np.uint8), text)
    assert not (tmp_path / "bad.png").exists()


# ---------------------------------------------------------------- input validation


def _valid() -> dict[str, torch.Tensor]:
    U, _ = torch.linalg.qr(torch.randn(2, 4, 2, dtype=F64))
    return {
        "means": torch.zeros(2, 4, dtype=F64),
        "log_weights": torch.zeros(2, dtype=F64),
        "floor_var": torch.full((2,), 0.1, dtype=F64),
        "basis": U,
        "basis_var": torch.ones(2, 2, dtype=F64),
    }


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("means", torch.zeros(4)),
        ("log_weights", torch.zeros(3)),
        ("floor_var", torch.tensor([0.1, -0.1])),
        ("floor_var", torch.tensor([0.1, float("nan")])),
        ("basis", torch.ones(2, 4, 2)),
        ("basis_var", torch.full((2, 2), 0.01)),
        ("basis_var", torch.ones(2, 3)),
    ],
)
def test_constructor_rejects_bad_input(name: str, bad: torch.Tensor) -> None:
    kwargs = _valid()
    kwargs[name] = bad
    with pytest.raises(ValueError, match=name):
        GaussianMixture(**kwargs)


def test_constructor_rejects_bad_sample_shape_and_missing_pair() -> None:
    with pytest.raises(ValueError, match="sample_shape"):
        GaussianMixture(**_valid(), sample_shape=(3, 3))
    kwargs = _valid()
    del kwargs["basis_var"]
    with pytest.raises(ValueError, match="basis_var"):
        GaussianMixture(**kwargs)


def test_methods_reject_bad_input() -> None:
    m = random_mixture(K=3, D=5, r=2, seed=10)
    x = torch.randn(4, 5, dtype=F64)
    with pytest.raises(ValueError, match="x"):
        m.posterior_mean(torch.randn(4, 6), 1.0, 0.1)
    with pytest.raises(ValueError, match="alpha"):
        m.posterior_mean(x, -1.0, 0.1)
    with pytest.raises(ValueError, match="sigma"):
        m.posterior_mean(x, 1.0, torch.ones(3))
    with pytest.raises(ValueError, match="alpha and sigma"):
        m.posterior_mean(x, 0.0, 0.0)
    with pytest.raises(ValueError, match="component"):
        m.posterior_mean(x, 1.0, 0.1, component=torch.tensor([0, 1, 3, -1]))
    with pytest.raises(ValueError, match="component"):
        m.sample(3, component=5)
    with pytest.raises(ValueError, match="n must"):
        m.sample(-1)
    with pytest.raises(ValueError, match="images"):
        image_grid(np.zeros((2, 2, 8, 8)))
    with pytest.raises(ValueError, match="image"):
        write_png("/tmp/never_written.png", np.zeros((4, 4), dtype=np.float32))
