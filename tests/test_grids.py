"""Time grids (time_grid) and the order plan of DPM-Solver-fast (singlestep_orders)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dpmsolver import NoiseSchedule, VPSchedule, singlestep_orders, time_grid
from dpmsolver.core import GRIDS
from dpmsolver.core import SKIP_TYPES as ALL_SKIP_TYPES

F64 = torch.float64
SKIP_TYPES = ["time_uniform", "logSNR", "time_quadratic"]
SCHEDULES: dict[str, NoiseSchedule] = {
    "discrete": VPSchedule.discrete(betas=np.linspace(1e-4, 0.02, 1000)),
    "linear": VPSchedule.linear(),
    "cosine": VPSchedule.cosine(),
}
STEPS = [1, 2, 7, 20, 250]


def ends(schedule: NoiseSchedule, direction: str) -> tuple[float, float]:
    t_hi, t_lo = schedule.t_max, schedule.t_min
    return (t_hi, t_lo) if direction == "descending" else (t_lo, t_hi)


def check_shape_ends_monotone(grid: torch.Tensor, t_start: float, t_end: float, steps: int) -> None:
    assert grid.dtype == F64
    assert grid.shape == (steps + 1,)
    assert grid[0].item() == t_start
    assert grid[-1].item() == t_end
    diffs = grid[1:] - grid[:-1]
    if t_start > t_end:
        assert bool((diffs < 0).all())
    else:
        assert bool((diffs > 0).all())


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("direction", ["descending", "ascending"])
@pytest.mark.parametrize("skip_type", SKIP_TYPES)
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_grid_shape_ends_and_monotone(
    name: str, skip_type: str, direction: str, steps: int
) -> None:
    s = SCHEDULES[name]
    t_start, t_end = ends(s, direction)
    grid = time_grid(s, skip_type, t_start, t_end, steps)
    check_shape_ends_monotone(grid, t_start, t_end, steps)


@pytest.mark.parametrize("skip_type", SKIP_TYPES)
@pytest.mark.parametrize("name", list(SCHEDULES))
@settings(max_examples=25, deadline=None)
@given(u=st.floats(0.0, 1.0), v=st.floats(0.0, 1.0), steps=st.integers(1, 200))
def test_grid_properties_for_any_interval(
    name: str, skip_type: str, u: float, v: float, steps: int
) -> None:
    s = SCHEDULES[name]
    t_start = s.t_min + u * (s.t_max - s.t_min)
    t_end = s.t_min + v * (s.t_max - s.t_min)
    if abs(t_start - t_end) < 1e-3:
        t_end = t_start - 1e-3 if t_start - 1e-3 >= s.t_min else t_start + 1e-3
    grid = time_grid(s, skip_type, t_start, t_end, steps)
    check_shape_ends_monotone(grid, t_start, t_end, steps)


@pytest.mark.parametrize("direction", ["descending", "ascending"])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_logsnr_grid_uniform_in_lambda(name: str, direction: str) -> None:
    s = SCHEDULES[name]
    t_start, t_end = ends(s, direction)
    steps = 25
    grid = time_grid(s, "logSNR", t_start, t_end, steps)
    lam = s.lambda_(grid)
    lam_s, lam_e = s.lambda_(torch.tensor([t_start, t_end], dtype=F64)).tolist()
    expected = lam_s + (lam_e - lam_s) * torch.arange(steps + 1, dtype=F64) / steps
    assert (lam - expected).abs().max().item() <= 1e-10
    h = lam[1:] - lam[:-1]
    assert (h - (lam_e - lam_s) / steps).abs().max().item() <= 1e-10


@pytest.mark.parametrize("direction", ["descending", "ascending"])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_time_uniform_grid_uniform_in_t(name: str, direction: str) -> None:
    s = SCHEDULES[name]
    t_start, t_end = ends(s, direction)
    steps = 30
    grid = time_grid(s, "time_uniform", t_start, t_end, steps)
    expected = t_start + (t_end - t_start) * np.arange(steps + 1) / steps
    np.testing.assert_allclose(grid.numpy(), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("direction", ["descending", "ascending"])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_time_quadratic_grid_uniform_in_sqrt_t(name: str, direction: str) -> None:
    s = SCHEDULES[name]
    t_start, t_end = ends(s, direction)
    steps = 30
    grid = time_grid(s, "time_quadratic", t_start, t_end, steps)
    root = grid.sqrt()
    expected = t_start**0.5 + (t_end**0.5 - t_start**0.5) * np.arange(steps + 1) / steps
    np.testing.assert_allclose(root.numpy(), expected, rtol=0, atol=1e-12)
    d = root[1:] - root[:-1]
    assert (d - d.mean()).abs().max().item() <= 1e-12


def test_grid_is_cpu_float64_and_fresh() -> None:
    s = SCHEDULES["discrete"]
    a = time_grid(s, "time_uniform", 1.0, 0.001, 10)
    a[3] = 123.0
    b = time_grid(s, "time_uniform", 1.0, 0.001, 10)
    assert b.device.type == "cpu" and b.dtype == torch.float64
    assert b[3].item() == pytest.approx(1.0 - 3 * 0.999 / 10, abs=1e-15)


def test_every_skip_type_is_one_registry_entry() -> None:
    # A grid is added by one GRIDS entry and its name in SkipType: the two must agree, and
    # each entry makes a grid through time_grid.
    assert set(GRIDS) == set(ALL_SKIP_TYPES)
    s = SCHEDULES["linear"]
    for name in GRIDS:
        grid = time_grid(s, name, 1.0, 1e-3, 5)
        assert grid[0] == 1.0 and grid[-1] == pytest.approx(1e-3) and bool((grid.diff() < 0).all())


def test_unknown_skip_type() -> None:
    with pytest.raises(ValueError, match="skip_type must be one of"):
        time_grid(SCHEDULES["linear"], "uniform", 1.0, 1e-3, 10)


# ---------------------------------------------------------------------- singlestep_orders


def expected_orders(steps: int, order: int) -> list[int]:
    """The rules of the docstring (DPM-Solver paper, Section 3.4)."""
    if order == 1:
        return [1] * steps
    if order == 2:
        return [2] * (steps // 2) + ([1] if steps % 2 else [])
    q, r = divmod(steps, 3)
    if r == 0:
        return [3] * (q - 1) + [2, 1]
    return [3] * q + ([1] if r == 1 else [2])


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("steps", range(1, 31))
def test_singlestep_orders_rules(steps: int, order: int) -> None:
    orders = singlestep_orders(steps, order)
    assert sum(orders) == steps
    assert all(1 <= k <= order for k in orders)
    assert orders == expected_orders(steps, order)
    # only the last two entries may be below `order`, and they never increase
    assert orders[:-2] == [order] * max(len(orders) - 2, 0)
    assert orders == sorted(orders, reverse=True)


@pytest.mark.parametrize(
    ("steps", "order", "expected"),
    [
        (1, 1, [1]),
        (5, 1, [1, 1, 1, 1, 1]),
        (1, 2, [1]),
        (2, 2, [2]),
        (7, 2, [2, 2, 2, 1]),
        (8, 2, [2, 2, 2, 2]),
        (1, 3, [1]),
        (2, 3, [2]),
        (3, 3, [2, 1]),
        (4, 3, [3, 1]),
        (5, 3, [3, 2]),
        (6, 3, [3, 2, 1]),
        (10, 3, [3, 3, 3, 1]),
        (15, 3, [3, 3, 3, 3, 2, 1]),
        (20, 3, [3, 3, 3, 3, 3, 3, 2]),
    ],
)
def test_singlestep_orders_table(steps: int, order: int, expected: list[int]) -> None:
    assert singlestep_orders(steps, order) == expected


def test_beta_grid_is_the_beta_distributions_quantiles() -> None:
    """beta_sigmas places levels at Beta(0.6, 0.6) quantiles, as diffusers' use_beta_sigmas
    does with scipy.stats.beta.ppf; the time grid 'beta' spaces sigma_t / alpha_t so."""
    stats = pytest.importorskip("scipy.stats")
    from dpmsolver.core.grids import beta_sigmas

    values = beta_sigmas(14.6, 0.03, 12)
    quantiles = stats.beta.ppf(1 - np.linspace(0, 1, 12), 0.6, 0.6)
    np.testing.assert_allclose(values, 0.03 + quantiles * (14.6 - 0.03), rtol=1e-12, atol=1e-12)
    schedule = VPSchedule.linear()
    grid = time_grid(schedule, "beta", schedule.t_max, schedule.t_min, 11)
    levels = schedule.levels(grid)
    sig = [lv.sigma / lv.alpha for lv in levels]
    np.testing.assert_allclose(sig, beta_sigmas(sig[0], sig[-1], 12), rtol=1e-9)


# -- GITS (Chen et al., 2024): the published grids, as ComfyUI's GITSScheduler ships them ---

GITS_PUBLISHED = {
    # (coeff, steps): the levels as published (ComfyUI gives them with the last set to 0)
    (1.20, 10): [
        14.61464119, 5.85520077, 2.84484982, 1.67050016, 1.08895338, 0.74807048,
        0.50118381, 0.32104823, 0.19894916, 0.09824532, 0.02916753,
    ],
    (1.50, 6): [14.61464119, 1.56271636, 0.72133851, 0.36617002, 0.19894916, 0.09824532,
                0.02916753],
    (0.80, 3): [14.61464119, 11.54541874, 6.77309084, 0.02916753],
}  # fmt: skip


@pytest.mark.parametrize(("coeff", "steps"), sorted(GITS_PUBLISHED))
def test_gits_sigmas_are_the_published_grids(coeff: float, steps: int) -> None:
    from dpmsolver import gits_sigmas

    assert gits_sigmas(steps, coeff) == GITS_PUBLISHED[(coeff, steps)]
    assert gits_sigmas(steps, coeff + 1e-4) == GITS_PUBLISHED[(coeff, steps)]  # rounded


def test_gits_table_shape_and_default() -> None:
    from dpmsolver import gits_sigmas
    from dpmsolver.core.published import GITS_NOISE_LEVELS

    assert sorted(GITS_NOISE_LEVELS) == pytest.approx([0.8 + 0.05 * i for i in range(15)])
    for rows in GITS_NOISE_LEVELS.values():
        assert [len(r) for r in rows] == list(range(3, 22))  # 2 to 20 steps
        assert all(r[0] == 14.61464119 and r[-1] == 0.02916753 for r in rows)
    assert gits_sigmas(10) == gits_sigmas(10, 1.20)


@pytest.mark.parametrize("steps", [2, 3, 9, 20, 21, 30, 100, 1000])
@pytest.mark.parametrize("coeff", [0.80, 1.05, 1.20, 1.50])
def test_gits_sigmas_strictly_decrease_from_sigma_max_to_the_smallest(
    coeff: float, steps: int
) -> None:
    from dpmsolver import gits_sigmas

    sig = np.array(gits_sigmas(steps, coeff))
    assert sig.shape == (steps + 1,)
    assert (np.diff(sig) < 0).all()
    assert sig[0] == 14.61464119 and sig[-1] == 0.02916753


@pytest.mark.parametrize("steps", [21, 25, 64, 1000])
def test_gits_beyond_20_steps_interpolates_the_20_step_grid_log_linearly(steps: int) -> None:
    """As ComfyUI's node: log sigma of the reversed 20-step grid interpolated linearly at
    steps + 1 points evenly spaced over its positions, written out here with numpy."""
    from dpmsolver import gits_sigmas, interpolate_grid

    base = gits_sigmas(20, 1.35)
    rev = np.log(np.array(base)[::-1])
    want = np.exp(np.interp(np.linspace(0, 1, steps + 1), np.linspace(0, 1, 21), rev))[::-1]
    np.testing.assert_allclose(gits_sigmas(steps, 1.35), want, rtol=1e-14, atol=0)
    assert gits_sigmas(steps, 1.35) == interpolate_grid(base, steps)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(steps=1), ValueError, "steps must be between 2 and 100000; got 1"),
        (dict(steps=0), ValueError, "steps"),
        (dict(steps=10.0), TypeError, "steps must be an int"),
        (dict(steps=10, coeff=0.75), ValueError, r"coeff must be one of 0\.80, .*1\.50.*0\.75"),
        (dict(steps=10, coeff=1.23), ValueError, "coeff must be one of"),
        (dict(steps=10, coeff=float("nan")), ValueError, "coeff must be a finite number"),
        (dict(steps=10, coeff="1.2"), TypeError, "coeff must be a float"),
    ],
)
def test_gits_sigmas_refuses_bad_inputs(kwargs: dict, error: type, match: str) -> None:
    from dpmsolver import gits_sigmas

    with pytest.raises(error, match=match):
        gits_sigmas(**kwargs)
