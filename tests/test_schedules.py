"""Noise schedules: VP identity, the inverse of lambda, table interpolation, end values,
the -5.1 tail safeguard of cosine-beta tables and the compat NoiseScheduleVP face.

Expected values are computed here from the defining formulas (numpy / math, float64), not
from the package.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dpmsolver as dpm
from dpmsolver import NoiseScheduleVP, VPSchedule

F64 = torch.float64
N = 1000


def linear_betas() -> np.ndarray:
    return np.linspace(1e-4, 0.02, N, dtype=np.float64)


def cosine_betas(s: float = 0.008) -> np.ndarray:
    """Improved DDPM (Nichol & Dhariwal 2021): beta_i = min(1 - abar(i+1)/abar(i), 0.999)."""

    def abar(i: int) -> float:
        return math.cos((i / N + s) / (1 + s) * math.pi / 2) ** 2

    return np.array([min(1 - abar(i + 1) / abar(i), 0.999) for i in range(N)])


def scaled_linear_alphas_cumprod() -> np.ndarray:
    """Stable Diffusion's table, given as alphas_cumprod."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, N, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def table_lambda(alphas_cumprod: np.ndarray) -> np.ndarray:
    return 0.5 * np.log(alphas_cumprod / (1.0 - alphas_cumprod))


# name -> (factory, alphas_cumprod of the table or None for continuous schedules)
TABLES: dict[str, np.ndarray] = {
    "discrete_linear_betas": np.cumprod(1.0 - linear_betas()),
    "discrete_cosine_betas": np.cumprod(1.0 - cosine_betas()),
    "discrete_alphas_cumprod": scaled_linear_alphas_cumprod(),
}
FACTORIES: dict[str, Callable[[], dpm.NoiseSchedule]] = {
    "discrete_linear_betas": lambda: VPSchedule.discrete(betas=linear_betas()),
    "discrete_cosine_betas": lambda: VPSchedule.discrete(betas=torch.tensor(cosine_betas())),
    "discrete_alphas_cumprod": lambda: VPSchedule.discrete(
        alphas_cumprod=scaled_linear_alphas_cumprod()
    ),
    "linear": lambda: VPSchedule.linear(0.1, 20.0),
    "cosine": lambda: VPSchedule.cosine(),
}
SCHEDULES = {name: make() for name, make in FACTORIES.items()}
NAMES = list(SCHEDULES)
DISCRETE = list(TABLES)


def dense_grid(schedule: dpm.NoiseSchedule, n: int = 20001) -> torch.Tensor:
    grid = torch.linspace(schedule.t_min, schedule.t_max, n, dtype=F64)
    grid[0], grid[-1] = schedule.t_min, schedule.t_max
    return grid


def n_kept(name: str) -> int:
    """Table entries left after dropping the tail with lambda < -5.1 (the reference's rule)."""
    return int((table_lambda(TABLES[name]) >= -5.1).sum())


# ---------------------------------------------------------------------- VP identity, range


@pytest.mark.parametrize("name", NAMES)
def test_alpha_squared_plus_sigma_squared_is_one(name: str) -> None:
    s = SCHEDULES[name]
    t = dense_grid(s)
    err = (s.alpha(t) ** 2 + s.sigma(t) ** 2 - 1.0).abs().max().item()
    assert err <= 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_values_are_float64_and_consistent(name: str) -> None:
    s = SCHEDULES[name]
    t = dense_grid(s, 501).to(torch.float32)
    for fn in (s.log_alpha, s.alpha, s.sigma, s.lambda_, s.model_time):
        assert fn(t).dtype == F64
    t64 = t.to(F64)
    np.testing.assert_allclose(s.alpha(t64).numpy(), np.exp(s.log_alpha(t64).numpy()), rtol=1e-15)
    lam = s.log_alpha(t64) - torch.log(s.sigma(t64))
    np.testing.assert_allclose(s.lambda_(t64).numpy(), lam.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_levels_match_methods(name: str) -> None:
    s = SCHEDULES[name]
    ts = [s.t_max, 0.5 * (s.t_min + s.t_max), s.t_min]
    levels = s.levels(ts)
    assert [lv.t for lv in levels] == ts
    tt = torch.tensor(ts, dtype=F64)
    assert [lv.alpha for lv in levels] == s.alpha(tt).tolist()
    assert [lv.sigma for lv in levels] == s.sigma(tt).tolist()
    assert [lv.lambda_ for lv in levels] == s.lambda_(tt).tolist()


@pytest.mark.parametrize("name", NAMES)
def test_contains_both_ends(name: str) -> None:
    s = SCHEDULES[name]
    assert s.contains(s.t_min)
    assert s.contains(s.t_max)
    assert not s.contains(s.t_max + 1e-6)
    assert not s.contains(-1e-6)


# ---------------------------------------------------------------------- lambda and its inverse


@pytest.mark.parametrize("name", NAMES)
def test_inverse_lambda_round_trip_dense(name: str) -> None:
    s = SCHEDULES[name]
    t = dense_grid(s)
    back = s.inverse_lambda(s.lambda_(t))
    assert (back - t).abs().max().item() <= 1e-6
    # both ends of the allowed range
    ends = torch.tensor([s.t_min, s.t_max], dtype=F64)
    np.testing.assert_allclose(s.inverse_lambda(s.lambda_(ends)).numpy(), ends.numpy(), atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None)
@given(u=st.floats(0.0, 1.0))
def test_inverse_lambda_round_trip_property(name: str, u: float) -> None:
    s = SCHEDULES[name]
    t = s.t_min + u * (s.t_max - s.t_min)
    t = min(max(t, s.t_min), s.t_max)
    assert abs(float(s.inverse_lambda(s.lambda_(t))) - t) <= 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_lambda_strictly_decreasing(name: str) -> None:
    s = SCHEDULES[name]
    lam = s.lambda_(dense_grid(s))
    assert bool((lam[1:] < lam[:-1]).all())


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None)
@given(lam=st.floats(-5.0, 4.0))
def test_lambda_of_inverse_lambda(name: str, lam: float) -> None:
    s = SCHEDULES[name]
    lo, hi = s.lambda_(torch.tensor([s.t_max, s.t_min], dtype=F64)).tolist()
    lam = min(max(lam, lo), hi)
    assert abs(float(s.lambda_(s.inverse_lambda(lam))) - lam) <= 1e-8


SHAPES = [(), (7,), (2, 3), (2, 3, 4), (0,)]
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_inverse_lambda_shapes_and_device(name: str, shape: tuple[int, ...], device: str) -> None:
    s = SCHEDULES[name]
    g = torch.Generator().manual_seed(3)
    t = s.t_min + (s.t_max - s.t_min) * torch.rand(shape, generator=g, dtype=F64)
    lam = s.lambda_(t).to(device)
    got = s.inverse_lambda(lam)
    assert got.shape == torch.Size(shape)
    assert got.dtype == F64
    assert got.device.type == device
    np.testing.assert_allclose(got.cpu().numpy(), t.numpy(), atol=1e-9)
    # elementwise: same values as the flattened call, also for a non-contiguous view
    flat = s.inverse_lambda(lam.reshape(-1)).reshape(shape)
    assert torch.equal(got, flat)
    if len(shape) == 2:
        assert torch.equal(s.inverse_lambda(lam.t()), got.t())


@pytest.mark.parametrize("name", NAMES)
def test_inverse_lambda_accepts_float32_and_python_float(name: str) -> None:
    s = SCHEDULES[name]
    t = 0.5 * (s.t_min + s.t_max)
    lam = float(s.lambda_(t))
    assert float(s.inverse_lambda(lam)) == pytest.approx(t, abs=1e-9)
    lam32 = torch.tensor([lam], dtype=torch.float32)
    assert s.inverse_lambda(lam32).dtype == F64
    expected = float(s.inverse_lambda(float(lam32)))
    assert float(s.inverse_lambda(lam32)) == expected


# ---------------------------------------------------------------------- discrete tables


@pytest.mark.parametrize("name", DISCRETE)
def test_discrete_table_values_at_grid_points(name: str) -> None:
    s = SCHEDULES[name]
    acp = TABLES[name]
    kept = n_kept(name)
    t = torch.arange(1, kept + 1, dtype=F64) / N
    np.testing.assert_allclose(s.alpha(t).numpy(), np.sqrt(acp[:kept]), rtol=1e-12)
    np.testing.assert_allclose(s.sigma(t).numpy(), np.sqrt(1 - acp[:kept]), rtol=1e-10)
    np.testing.assert_allclose(s.lambda_(t).numpy(), table_lambda(acp[:kept]), rtol=1e-10)


@pytest.mark.parametrize("name", DISCRETE)
def test_discrete_interval_ends(name: str) -> None:
    s = SCHEDULES[name]
    acp = TABLES[name]
    kept = n_kept(name)
    assert s.t_min == 1.0 / N
    assert s.t_max == kept / N
    assert float(s.alpha(1.0 / N)) == pytest.approx(math.sqrt(acp[0]), rel=1e-13)
    assert float(s.alpha(s.t_min)) == pytest.approx(math.sqrt(acp[0]), rel=1e-13)
    assert float(s.alpha(s.t_max)) == pytest.approx(math.sqrt(acp[kept - 1]), rel=1e-12)
    # the network's time input is the table index n = N t - 1
    assert float(s.model_time(s.t_min)) == pytest.approx(0.0, abs=1e-12)
    assert float(s.model_time(s.t_max)) == pytest.approx(kept - 1, abs=1e-9)
    assert float(s.model_time(0.5)) == pytest.approx(N * 0.5 - 1, abs=1e-9)


@pytest.mark.parametrize("name", DISCRETE)
def test_discrete_log_alpha_midpoint_is_mean(name: str) -> None:
    s = SCHEDULES[name]
    la = 0.5 * np.log(TABLES[name][: n_kept(name)])
    n = np.arange(la.size - 1)
    mid = torch.tensor((n + 1.5) / N, dtype=F64)
    np.testing.assert_allclose(
        s.log_alpha(mid).numpy(), 0.5 * (la[:-1] + la[1:]), rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("name", DISCRETE)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_discrete_log_alpha_piecewise_linear(name: str, data: st.DataObject) -> None:
    s = SCHEDULES[name]
    la = 0.5 * np.log(TABLES[name][: n_kept(name)])
    n = data.draw(st.integers(0, la.size - 2), label="n")
    w = data.draw(st.floats(0.0, 1.0), label="w")
    t = (n + 1 + w) / N
    expected = (1 - w) * la[n] + w * la[n + 1]
    assert float(s.log_alpha(t)) == pytest.approx(expected, rel=1e-11, abs=1e-13)


def test_discrete_betas_and_alphas_cumprod_give_same_schedule() -> None:
    betas = linear_betas()
    a = VPSchedule.discrete(betas=betas)
    b = VPSchedule.discrete(alphas_cumprod=np.cumprod(1.0 - betas))
    t = dense_grid(a, 2001)
    np.testing.assert_allclose(a.log_alpha(t).numpy(), b.log_alpha(t).numpy(), rtol=1e-12)
    assert (a.t_min, a.t_max) == (b.t_min, b.t_max)


def test_discrete_accepts_float32_tensor_betas() -> None:
    betas32 = torch.tensor(linear_betas(), dtype=torch.float32)
    s = VPSchedule.discrete(betas=betas32)
    expected = 0.5 * np.cumsum(np.log1p(-betas32.double().numpy()))
    t = torch.arange(1, N + 1, dtype=F64) / N
    np.testing.assert_allclose(s.log_alpha(t).numpy(), expected, rtol=1e-12)


# ---------------------------------------------------------------------- -5.1 tail safeguard


def test_cosine_table_tail_is_dropped_native() -> None:
    s = SCHEDULES["discrete_cosine_betas"]
    lam = table_lambda(TABLES["discrete_cosine_betas"])
    kept = n_kept("discrete_cosine_betas")
    assert 0 < N - kept < 10  # a few trailing entries fall below -5.1
    assert bool((lam[kept:] < -5.1).all())
    assert s.t_max == kept / N
    assert s.t_max < 1.0
    assert s.t_min == 1.0 / N
    assert float(s.lambda_(s.t_max)) >= -5.1
    assert float(s.lambda_(s.t_max)) == pytest.approx(lam[kept - 1], rel=1e-10)
    # the native schedule keeps the table's own spacing and time input n = N t - 1
    assert float(s.model_time(s.t_max)) == pytest.approx(kept - 1, abs=1e-9)
    assert not s.contains(1.0)


def test_linear_table_keeps_every_entry() -> None:
    s = SCHEDULES["discrete_linear_betas"]
    assert n_kept("discrete_linear_betas") == N
    assert s.t_max == 1.0
    assert float(s.model_time(1.0)) == pytest.approx(N - 1, abs=1e-9)


def test_cosine_table_tail_compat_respaces_like_reference() -> None:
    betas = torch.tensor(cosine_betas())
    kept = n_kept("discrete_cosine_betas")
    ns = NoiseScheduleVP("discrete", betas=betas)
    assert ns.total_N == kept
    assert ns.T == 1.0
    assert ns.t_array.shape == (1, kept)
    assert float(ns.t_array[0, -1]) == 1.0
    assert float(ns.t_array[0, 0]) == pytest.approx(1.0 / kept, rel=1e-6)
    la = 0.5 * np.log(TABLES["discrete_cosine_betas"][:kept])
    np.testing.assert_allclose(ns.log_alpha_array[0].double().numpy(), la, rtol=1e-6)
    t = torch.tensor([1.0 / kept, 1.0], dtype=F64)
    np.testing.assert_allclose(ns.marginal_log_mean_coeff(t).numpy(), [la[0], la[-1]], rtol=1e-12)
    # the reference's hard-coded time input 1000 * (t - 1/N')
    assert float(ns.native.model_time(1.0)) == pytest.approx(1000.0 * (1 - 1 / kept), rel=1e-12)


# ---------------------------------------------------------------------- continuous closed forms

BETA_PAIRS = [(0.1, 20.0), (0.1, 10.0), (0.0, 5.0), (1.0, 1.5)]


@pytest.mark.parametrize(("b0", "b1"), BETA_PAIRS)
def test_linear_closed_forms(b0: float, b1: float) -> None:
    s = VPSchedule.linear(b0, b1)
    assert (s.t_min, s.t_max) == (1e-3, 1.0)
    t = np.linspace(1e-3, 1.0, 1001)
    log_alpha = -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0
    sigma = np.sqrt(-np.expm1(2.0 * log_alpha))  # 1 - alpha^2 without cancellation
    lam = log_alpha - np.log(sigma)
    tt = torch.tensor(t)
    np.testing.assert_allclose(s.log_alpha(tt).numpy(), log_alpha, rtol=1e-14)
    np.testing.assert_allclose(s.alpha(tt).numpy(), np.exp(log_alpha), rtol=1e-14)
    np.testing.assert_allclose(s.sigma(tt).numpy(), sigma, rtol=1e-12)
    np.testing.assert_allclose(s.lambda_(tt).numpy(), lam, rtol=1e-11)
    # the reference's inverse: t = 2 log(1 + e^{-2 lambda}) / (sqrt(b0^2 + 2 (b1-b0) ...) + b0)
    tmp = 2.0 * (b1 - b0) * np.logaddexp(0.0, -2.0 * lam)
    t_ref = tmp / (np.sqrt(b0**2 + tmp) + b0) / (b1 - b0)
    np.testing.assert_allclose(s.inverse_lambda(torch.tensor(lam)).numpy(), t_ref, rtol=1e-10)
    np.testing.assert_allclose(t_ref, t, rtol=1e-9)


@pytest.mark.parametrize(("s_", "t_max"), [(0.008, 0.9946), (0.02, 0.9)])
def test_cosine_closed_forms(s_: float, t_max: float) -> None:
    s = VPSchedule.cosine(s_, t_max)
    assert (s.t_min, s.t_max) == (1e-3, t_max)
    t = np.linspace(1e-3, t_max, 1001)
    alpha = np.cos((t + s_) / (1 + s_) * np.pi / 2) / np.cos(s_ / (1 + s_) * np.pi / 2)
    tt = torch.tensor(t)
    np.testing.assert_allclose(s.alpha(tt).numpy(), alpha, rtol=1e-12)
    sigma = np.sin((t + s_) / (1 + s_) * np.pi / 2) ** 2 - np.sin(s_ / (1 + s_) * np.pi / 2) ** 2
    sigma = np.sqrt(sigma) / np.cos(s_ / (1 + s_) * np.pi / 2)  # 1 - alpha^2, no cancellation
    np.testing.assert_allclose(s.sigma(tt).numpy(), sigma, rtol=1e-10)
    np.testing.assert_allclose(s.lambda_(tt).numpy(), np.log(alpha / sigma), rtol=1e-10)
    assert float(s.alpha(0.0)) == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t", [1e-8, 1e-6, 1e-4])
def test_continuous_round_trip_below_t_min(name: str, t: float) -> None:
    # continuous schedules accept any end time in (0, t_max]
    s = SCHEDULES[name]
    assert s.contains(t)
    assert float(s.inverse_lambda(s.lambda_(t))) == pytest.approx(t, rel=1e-6, abs=1e-12)


# ---------------------------------------------------------------------- compat dtypes

COMPAT = {
    "discrete_betas": lambda dtype: NoiseScheduleVP(
        "discrete", betas=torch.tensor(linear_betas(), dtype=dtype), dtype=dtype
    ),
    "discrete_alphas_cumprod": lambda dtype: NoiseScheduleVP(
        "discrete",
        alphas_cumprod=torch.tensor(scaled_linear_alphas_cumprod(), dtype=dtype),
        dtype=dtype,
    ),
    "linear": lambda dtype: NoiseScheduleVP("linear", dtype=dtype),
    "cosine": lambda dtype: NoiseScheduleVP("cosine", dtype=dtype),
}
METHODS = [
    "marginal_log_mean_coeff",
    "marginal_alpha",
    "marginal_std",
    "marginal_lambda",
    "inverse_lambda",
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("in_dtype", [torch.float16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kind", list(COMPAT))
def test_compat_methods_return_input_dtype(kind: str, in_dtype: torch.dtype, method: str) -> None:
    ns = COMPAT[kind](torch.float32)
    t = torch.tensor([0.01, 0.3, 0.7], dtype=F64)
    arg = ns.native.lambda_(t) if method == "inverse_lambda" else t
    got = getattr(ns, method)(arg.to(in_dtype))
    assert got.dtype == in_dtype
    assert got.shape == (3,)
    native = {
        "marginal_log_mean_coeff": ns.native.log_alpha,
        "marginal_alpha": ns.native.alpha,
        "marginal_std": ns.native.sigma,
        "marginal_lambda": ns.native.lambda_,
        "inverse_lambda": ns.native.inverse_lambda,
    }[method](arg.to(in_dtype))
    assert torch.equal(got, native.to(in_dtype))


@pytest.mark.parametrize("kind", list(COMPAT))
def test_compat_float64_schedule_matches_native(kind: str) -> None:
    ns = COMPAT[kind](F64)
    t = torch.linspace(1e-3, ns.T, 101, dtype=F64)
    lam = ns.marginal_lambda(t)
    np.testing.assert_allclose(ns.inverse_lambda(lam).numpy(), t.numpy(), atol=1e-9)
    alpha, std = ns.marginal_alpha(t), ns.marginal_std(t)
    np.testing.assert_allclose((alpha**2 + std**2).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(
        ns.marginal_log_mean_coeff(t).numpy(), torch.log(alpha).numpy(), rtol=1e-12
    )
