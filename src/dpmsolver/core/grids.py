"""Time grids: the descending (or, for inversion, ascending) times a sampler steps through.

All grids are float64 tensors of length steps + 1 whose first and last entries are exactly
t_start and t_end.
    logSNR:         uniform in lambda (recommended for low-resolution pixel models)
    time_uniform:   uniform in t (recommended for high-resolution and latent models)
    time_quadratic: uniform in sqrt(t) (DDIM's choice for CIFAR-10)
    karras:         uniform in sigma^(1/7), sigma = sigma_t / alpha_t = e^{-lambda}
                    (Karras et al. 2022, rho = 7)
    exponential:    uniform in log sigma, sigma = sigma_t / alpha_t: the logSNR grid under
                    k-diffusion's name
    beta:           sigma = sigma_t / alpha_t at the quantiles of a Beta(0.6, 0.6)
                    distribution between the ends (Lee et al., "Beta Sampling is All You
                    Need", 2024): denser at both ends (`beta_sigmas`)
    kl_optimal:     uniform in arctan(sigma), sigma = sigma_t / alpha_t (Sabour et al.,
                    "Align Your Steps", 2024; ComfyUI's kl_optimal)

Each grid is one entry of `GRIDS` (a new grid is one entry). Published grids (`published`:
Align Your Steps, GITS) and tuned ones (`dpmsolver.optimize_time_grid`) are given to the
samplers as `sigmas=` / `timesteps=`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from ..checks import check_choice, check_float, check_int, check_tensor_values
from .schedules import NoiseSchedule

__all__ = [
    "GRIDS",
    "MAX_GRID_STEPS",
    "SKIP_TYPES",
    "SkipType",
    "Spacing",
    "beta_sigmas",
    "check_grid",
    "check_grid_range",
    "check_noise_levels",
    "resolve_times",
    "sigmas_to_times",
    "singlestep_orders",
    "time_grid",
]

SkipType = Literal[
    "logSNR", "time_uniform", "time_quadratic", "karras", "exponential", "beta", "kl_optimal"
]
SKIP_TYPES: tuple[str, ...] = get_args(SkipType)
KARRAS_RHO = 7.0
# The most steps a published grid is resampled to (the samplers plan at most that many).
MAX_GRID_STEPS = 100_000
BETA_SHAPE = 0.6  # both shape parameters of the Beta grid (the paper's and diffusers' value)


@dataclass(frozen=True)
class Spacing:
    """How a grid spaces its points: uniformly in `space` ('lambda': the half log-SNR, 'time':
    the schedule's t) after mapping by `points`, a function (start, end, n) -> n values
    from start to end in that space."""

    space: str
    points: Callable[[float, float, int], Tensor]


def _uniform(start: float, end: float, n: int) -> Tensor:
    return torch.linspace(start, end, n, dtype=torch.float64)


def _quadratic(start: float, end: float, n: int) -> Tensor:
    """Uniform in sqrt(t) (DDIM's quadratic grid)."""
    return torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2


def _karras(start: float, end: float, n: int) -> Tensor:
    """lambdas whose sigma = e^{-lambda} is uniform in sigma^(1/rho) (Karras et al., rho = 7)."""
    ends = [math.exp(-v) for v in (start, end)]
    inv = [e ** (1 / KARRAS_RHO) for e in ends]
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    return -torch.log((inv[0] + ramp * (inv[1] - inv[0])) ** KARRAS_RHO)


def _kl_optimal(start: float, end: float, n: int) -> Tensor:
    """lambdas whose sigma = e^{-lambda} is uniform in arctan(sigma) (the KL-optimal
    schedule of Sabour et al., 2024, ComfyUI's kl_optimal)."""
    ends = [math.atan(math.exp(-v)) for v in (start, end)]
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    return -torch.log(torch.tan(ends[0] + ramp * (ends[1] - ends[0])))


def _beta(start: float, end: float, n: int) -> Tensor:
    """lambdas whose sigma = e^{-lambda} lies at Beta(0.6, 0.6) quantiles (`beta_sigmas`)."""
    ends = [math.exp(-v) for v in (start, end)]
    return -torch.log(torch.tensor(beta_sigmas(ends[0], ends[1], n), dtype=torch.float64))


# The grids by name (`SKIP_TYPES`): one entry per grid, as ComfyUI's SCHEDULER_HANDLERS.
GRIDS: dict[str, Spacing] = {
    "logSNR": Spacing("lambda", _uniform),
    "time_uniform": Spacing("time", _uniform),
    "time_quadratic": Spacing("time", _quadratic),
    "karras": Spacing("lambda", _karras),
    "exponential": Spacing("lambda", _uniform),  # logSNR under k-diffusion's name
    "beta": Spacing("lambda", _beta),
    "kl_optimal": Spacing("lambda", _kl_optimal),
}


def resolve_times(
    schedule: NoiseSchedule, t_start: float | None, t_end: float | None
) -> tuple[float, float]:
    """(t_start, t_end) with the schedule's defaults, checked against its time range."""
    t_s = schedule.t_max if t_start is None else check_float("t_start", t_start)
    t_e = schedule.t_min if t_end is None else check_float("t_end", t_end)
    for name, value in (("t_start", t_s), ("t_end", t_e)):
        if not schedule.contains(value):
            raise ValueError(
                f"{name}={value!r} is outside the schedule's time range {schedule.time_range()}"
            )
    if t_s == t_e:
        raise ValueError(f"t_start and t_end must differ; both are {t_s!r}")
    return t_s, t_e


def time_grid(
    schedule: NoiseSchedule, skip_type: str, t_start: float, t_end: float, steps: int
) -> Tensor:
    """steps + 1 times from t_start to t_end spaced by `skip_type` (float64, CPU; see
    `GRIDS`).

    t_start and t_end must lie in the schedule's time range and differ (t_start < t_end
    spaces a grid for inversion).
    """
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule; got {type(schedule).__name__}")
    check_choice("skip_type", skip_type, SKIP_TYPES)
    steps = check_int("steps", steps, 1)
    t_start, t_end = resolve_times(
        schedule, check_float("t_start", t_start), check_float("t_end", t_end)
    )
    spacing = GRIDS[skip_type]
    if spacing.space == "lambda":
        lam = schedule.lambda_(torch.tensor([t_start, t_end], dtype=torch.float64)).tolist()
        if not all(math.isfinite(v) for v in lam):
            raise ValueError(
                f"skip_type={skip_type!r} spaces the grid in lambda, which is infinite at "
                f"t_start={t_start!r} or t_end={t_end!r} (pure noise or clean data); start "
                "inside the schedule or use 'time_uniform' / 'time_quadratic'"
            )
        grid = schedule.inverse_lambda(spacing.points(lam[0], lam[1], steps + 1))
    else:
        grid = spacing.points(t_start, t_end, steps + 1)
    grid[0], grid[-1] = t_start, t_end
    return grid


def beta_sigmas(start: float, end: float, n: int, shape: float = BETA_SHAPE) -> list[float]:
    """n values from `start` to `end`: end + (start - end) F^-1(1 - k / (n - 1)), k = 0..n-1,
    with F the CDF of Beta(shape, shape); the first is `start` and the last `end`."""
    check_int("n", n, 2)
    qs = [1.0 - k / (n - 1) for k in range(n)]
    return [end + (start - end) * _beta_quantile(q, shape, shape) for q in qs]


def _beta_quantile(q: float, a: float, b: float) -> float:
    """F^-1(q) of Beta(a, b) by bisection on the regularised incomplete beta function."""
    if q <= 0.0 or q >= 1.0:
        return min(max(q, 0.0), 1.0)
    lo, hi = 0.0, 1.0
    for _ in range(60):  # 2^-60: below double precision on [0, 1]
        mid = 0.5 * (lo + hi)
        if _beta_cdf(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _beta_cdf(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, by its continued fraction
    (Lentz's method), using the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where it converges
    slowly."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _beta_cdf(1.0 - x, b, a)
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 300):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-16:
            break
    return math.exp(log_front) * f / a


def check_grid(
    name: str,
    values: Sequence[float] | Tensor | np.ndarray,
    *,
    increasing: bool = False,
    positive: bool = False,
    final_zero: bool = False,
    min_len: int = 2,
) -> Tensor:
    """The one check of a user-given grid (times or noise levels) for every face.

    Returns the values as a float64 CPU tensor, or raises ValueError naming `name`: not
    1-D with at least `min_len` entries, not finite, not strictly decreasing (or, with
    `increasing`, strictly increasing: inversion), or, with `positive`, an entry <= 0
    (`final_zero`: except a last 0, the k-diffusion convention for the jump to sigma = 0).
    """
    if not isinstance(values, Tensor | np.ndarray | list | tuple):
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got {type(values).__name__}")
    grid = check_tensor_values(name, values)
    if grid.ndim != 1 or grid.numel() < min_len:
        raise ValueError(
            f"{name} must be 1-D with at least {min_len} entries, got shape {tuple(grid.shape)}"
        )
    if not bool(torch.isfinite(grid).all()):
        raise ValueError(f"{name} must be finite")
    diffs = grid[1:] - grid[:-1]
    if not (bool((diffs < 0).all()) or (increasing and bool((diffs > 0).all()))):
        raise ValueError(
            f"{name} must be strictly monotone (strictly decreasing, or increasing for inversion)"
            if increasing
            else f"{name} must be strictly decreasing"
        )
    if positive:
        body = grid[:-1] if final_zero and float(grid[-1]) == 0.0 else grid
        if not bool((body > 0).all()):
            raise ValueError(
                f"{name} must be > 0 (positive)" + (", except a final 0" if final_zero else "")
            )
    return grid


def check_grid_range(
    name: str, schedule: NoiseSchedule, times: Tensor, given: Sequence[float] | None = None
) -> None:
    """Raise ValueError unless the ends of a monotone grid of times lie in the schedule's
    time range. With `given` (the user's values, e.g. sigmas) the error names the entry as
    given and the allowed range in the same units (noise levels sigma_t / alpha_t)."""
    for k in (0, -1):
        value = float(times[k])
        if not schedule.contains(value):
            if given is None:
                raise ValueError(
                    f"{name} entry {value!r} is outside the schedule's time range "
                    f"{schedule.time_range()}"
                )
            ends = schedule.levels([schedule.t_min, schedule.t_max])
            lo, hi = (e.sigma / e.alpha if e.alpha > 0 else math.inf for e in ends)
            raise ValueError(
                f"{name} entry {given[k]!r} is outside the schedule's noise levels "
                f"sigma_t / alpha_t in [{lo:.6g}, {hi:.6g}]"
            )


def check_noise_levels(
    schedule: NoiseSchedule, times: Sequence[float], sigmas: Sequence[float], name: str
) -> None:
    """Raise ValueError unless `schedule` gives the noise levels sigma_t / alpha_t `sigmas`
    (to 1e-6) at `times`: a tuned solver's coefficients belong to the grid of the schedule
    it was tuned on. `name` says which schedule, e.g. "noise_schedule"."""
    for lv, want in zip(schedule.levels(list(times)), sigmas, strict=True):
        got = lv.sigma / lv.alpha if lv.alpha > 0 else math.inf
        if not math.isclose(got, want, rel_tol=1e-6):
            raise ValueError(
                f"the tuned solver's noise level at t={lv.t:.6g} is {want:.6g}; this {name} "
                f"gives {got:.6g}: it was tuned on another schedule"
            )


def sigmas_to_times(schedule: NoiseSchedule, sigmas: Sequence[float] | Tensor) -> Tensor:
    """Times (float64, CPU) of noise levels sigma_t / alpha_t, which must be > 0.

    Published noise levels are rounded (Align Your Steps' 14.615 lies 1e-4 above Stable
    Diffusion's sigma_max): times within 1e-4 of the schedule's range, relative, are moved
    onto its ends. Times further outside are returned as they are, for the caller's check.
    """
    levels = torch.as_tensor(
        sigmas.detach().cpu() if isinstance(sigmas, Tensor) else sigmas, dtype=torch.float64
    )
    if not bool((levels > 0).all()):
        raise ValueError("sigmas must be > 0 (the run ends at the last one)")
    times = schedule.inverse_lambda(-torch.log(levels))
    tol = 1e-4 * (schedule.t_max - schedule.t_min)
    for end, outside in (
        (schedule.t_max, times > schedule.t_max),
        (schedule.t_min, times < schedule.t_min),
    ):
        times[outside & ((times - end).abs() <= tol)] = end
    return times


def singlestep_orders(steps: int, order: int) -> list[int]:
    """Orders of the steps of 'singlestep' (DPM-Solver-fast) that use exactly `steps` calls.

    order 3: as many third-order steps as fit, ending with [2, 1], [1] or [2] for
    steps % 3 == 0, 1, 2; order 2: second-order steps plus one first-order step if `steps` is
    odd; order 1: `steps` first-order steps (DPM-Solver paper, Section 3.4).
    """
    steps, order = check_int("steps", steps, 1), check_int("order", order, 1, 3)
    if order == 3:
        k = steps // 3 + 1
        tail = {0: [2, 1], 1: [1], 2: [2]}[steps % 3]
        return [3] * (k - len(tail)) + tail
    if order == 2:
        return [2] * (steps // 2) + [1] * (steps % 2)
    return [1] * steps
