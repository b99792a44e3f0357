"""Where diffusers' schedulers place their model calls, as times of our schedules.

Each function returns the n call times (descending) that diffusers' scheduler of that
config would evaluate the network at (or, for a flow config with no grid key of its own,
the flow default's: `flow_default_calls`); the scheduler adds the end (sigma = 0, or the
smallest training level). VP times are t = (timestep + 1) / N of `DiscreteVPSchedule`;
flow times are the flow sigmas themselves (`FlowSchedule(shift=1, t_max=1)`).

    timestep_calls   timestep_spacing 'linspace' / 'leading' / 'trailing' (+ steps_offset,
                     lambda_min_clipped), as DPMSolverMultistepScheduler computes them
    sigma_calls      use_karras_sigmas / use_exponential_sigmas / use_beta_sigmas /
                     use_lu_lambdas: levels sigma_t / alpha_t between sigma_max and sigma_min
    flow_calls       flow-matching configs, see its docstring
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

from ..checks import check_float
from ..core import DiscreteVPSchedule, FlowSchedule, sigmas_to_times, time_grid
from ..core.grids import KARRAS_RHO, beta_sigmas
from .config import Spacing

__all__ = [
    "FLOW_END",
    "FLOW_POWER",
    "MU_SHIFTS",
    "flow_calls",
    "flow_default_calls",
    "last_timestep",
    "sigma_calls",
    "spaced",
    "timestep_calls",
]


# The flow shifts a dynamic `mu` may ask for: released flow models use shifts from about
# 0.5 to 20 (SD3 3, Flux 1.6-3.2, Wan 5-12); a shift of 1e-2 or 1e2 moves the first call far
# from pure noise or every call to it, which no model is trained to be sampled with.
MU_SHIFTS = (1e-2, 1e2)


def last_timestep(schedule: DiscreteVPSchedule, lambda_min_clipped: float) -> int:
    """One more than the largest training timestep whose lambda is >= lambda_min_clipped
    (and inside the schedule: the core drops a tail with lambda < -5.1)."""
    n = schedule.total_n
    if math.isinf(lambda_min_clipped) and lambda_min_clipped < 0:
        clipped = n
    else:
        lam = schedule.lambda_(torch.arange(1, n + 1, dtype=torch.float64) / n)
        clipped = int((lam >= lambda_min_clipped).sum())
    return min(clipped, round(schedule.t_max * n))


def timestep_calls(schedule: DiscreteVPSchedule, spacing: Spacing, n: int) -> list[float]:
    """The training timesteps of diffusers' timestep_spacing, as times."""
    total = schedule.total_n
    last = last_timestep(schedule, spacing.lambda_min_clipped)
    if spacing.name == "linspace":
        ts = np.linspace(0, last - 1, n + 1).round()[::-1][:-1].astype(np.int64)
    elif spacing.name == "leading":
        ratio = last // (n + 1)
        ts = (np.arange(0, n + 1) * ratio).round()[::-1][:-1].astype(np.int64)
        ts = ts + spacing.steps_offset
    else:  # trailing
        ts = np.arange(last, 0, -total / n).round().astype(np.int64) - 1
    if len(ts) != n or not bool((np.diff(ts) < 0).all()) or ts[-1] < 0 or ts[0] >= last + 1:
        raise ValueError(
            f"timestep_spacing={spacing.name!r} gives {len(ts)} distinct training timesteps "
            f"for num_inference_steps={n} (from {int(ts[0])} to {int(ts[-1])}); use fewer "
            "steps or another spacing"
        )
    return ((ts.astype(np.float64) + 1.0) / total).tolist()


def spaced(name: str, start: float, end: float, n: int) -> list[float]:
    """n values from `start` down to `end` spaced as diffusers' _convert_to_karras /
    _convert_to_exponential / _convert_to_beta / _convert_to_lu do."""
    if n == 1:
        return [start]
    if name == "karras":
        inv = [start ** (1 / KARRAS_RHO), end ** (1 / KARRAS_RHO)]
        return [(inv[0] + k / (n - 1) * (inv[1] - inv[0])) ** KARRAS_RHO for k in range(n)]
    if name in ("exponential", "logSNR"):
        return np.exp(np.linspace(math.log(start), math.log(end), n)).tolist()
    return beta_sigmas(start, end, n)


def sigma_calls(schedule: DiscreteVPSchedule, spacing: Spacing, n: int) -> list[float]:
    """n calls at levels sigma = sigma_t / alpha_t spaced by `spacing.name` from sigma_max
    to sigma_min (the config's, else the training schedule's ends), as diffusers places
    them: the last call is at sigma_min whatever the end."""
    start_t = last_timestep(schedule, spacing.lambda_min_clipped) / schedule.total_n
    ends = schedule.levels([start_t, schedule.t_min])
    top, low = _sigma_range(spacing, ends[0].sigma / ends[0].alpha, ends[1].sigma / ends[1].alpha)
    return sigmas_to_times(schedule, spaced(spacing.name, top, low, n)).tolist()


def _sigma_range(spacing: Spacing, top: float, low: float) -> tuple[float, float]:
    """(sigma_max, sigma_min) of a sigma spacing: the config's where given, else these."""
    top = top if spacing.sigma_max is None else spacing.sigma_max
    low = low if spacing.sigma_min is None else spacing.sigma_min
    if not low < top:
        raise ValueError(f"sigma_min={low!r} must be below sigma_max={top!r}")
    return top, low


def flow_calls(
    alphas_cumprod: torch.Tensor,
    spacing: Spacing,
    n: int | None,
    sigmas: list[float] | None,
    timesteps: list[float] | None,
    mu: float | None,
) -> list[float]:
    """The call sigmas of a flow-matching config.

    Custom sigmas / timesteps: a FlowMatch config shifts them as FlowMatchEulerDiscrete does
    (Flux passes unshifted sigmas and mu); a use_flow_sigmas config takes them as they are.
    A sigma spacing (use_karras_sigmas, ...): FlowMatchEulerDiscrete's re-spacing of its
    own grid (FlowMatch configs) or UniPC's spacing of sigma_t / alpha_t mapped to the flow
    sigma (use_flow_sigmas configs). Otherwise n calls at the shift in use (the config's
    shift or flow_shift, or e^mu / mu with dynamic shifting): on the flow default grid
    (`flow_default_calls`), with use_diffusers_grid where diffusers'
    DPMSolverMultistepScheduler places them on flow models, or with skip_type on our grid
    in the unshifted flow time from pure noise; shift_terminal stretches each.
    """
    total = alphas_cumprod.numel()
    if spacing.kind == "flow_match" and (
        sigmas is not None or timesteps is not None or spacing.name
    ):
        return flow_match_calls(total, spacing, n, sigmas, timesteps, mu)
    if sigmas is not None:
        return list(sigmas)
    if timesteps is not None:
        return [t / total for t in timesteps]
    if spacing.name:
        return flow_spaced_calls(alphas_cumprod, spacing, int(n))  # type: ignore[arg-type]
    shift = _flow_shift(spacing, mu)
    count = int(n)  # type: ignore[arg-type]
    if spacing.flow_default:
        sig = flow_default_calls(total, shift, count)
    elif spacing.skip:
        u = (
            time_grid(_UNIT_FLOW, spacing.skip, 1.0, 1.0 / total, count - 1)
            if count > 1
            else torch.ones(1, dtype=torch.float64)
        )
        sig = _shifted(u.numpy(), shift)
    else:
        sig = np.asarray(flow_sigma_calls(total, shift, count))
    if spacing.shift_terminal is not None:
        sig = _stretch(sig, spacing.shift_terminal)
    return sig.tolist()


# The unshifted flow time: one value or an array of them.
_U = TypeVar("_U", float, np.ndarray)

_UNIT_FLOW = FlowSchedule(shift=1.0, t_max=1.0)
# The flow default grid (`flow_default_calls`): its power and where it ends, chosen by a
# sweep on the flow built-ins that is not kept; benchmarks/diffusers_schedulers.py prints
# what these values give against diffusers' schedulers.
FLOW_POWER = 2.5
FLOW_END = 0.1


def flow_default_calls(total: int, shift: float, n: int) -> np.ndarray:
    """The flow default's n call sigmas: in the unshifted flow time u, from pure noise
    u = 1 down to u_end = max(FLOW_END / n, 1 / total), spaced as
    u_i = u_end + (1 - u_end) (1 - i / (n - 1))^FLOW_POWER (denser at low noise), then
    shifted (sigma = shift u / (1 + (shift - 1) u)). The run jumps to sigma = 0 after the
    last call, from a sigma that shrinks as 1 / n: the jump's first-order error falls as
    1 / n^2, as the second-order steps before it do (diffusers' flow grids end at
    sigma = shift / n, so their error falls as 1 / n only)."""
    if n == 1:
        return np.ones(1)
    u_end = max(FLOW_END / n, 1.0 / total)
    ramp = 1.0 - np.arange(n, dtype=np.float64) / (n - 1)
    return _shifted(u_end + (1.0 - u_end) * ramp**FLOW_POWER, shift)


def _shifted(u: _U, shift: float) -> _U:
    """The flow sigma of the unshifted time u: shift u / (1 + (shift - 1) u)."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def _flow_shift(spacing: Spacing, mu: float | None) -> float:
    """The shift in use: static, or from mu (exponential e^mu, linear mu). (A mu without
    dynamic shifting is refused by the scheduler's set_timesteps.)"""
    if not spacing.dynamic:
        return spacing.shift
    if mu is None:
        raise ValueError("use_dynamic_shifting=True needs mu: set_timesteps(..., mu=...)")
    mu = check_float("mu", mu)
    exponential = spacing.time_shift_type == "exponential"
    lo, hi = MU_SHIFTS
    if exponential and not math.log(lo) <= mu <= math.log(hi):
        raise ValueError(
            f"mu={mu!r} gives the shift e^mu = {math.exp(min(mu, 700.0)):.3g} "
            f"(time_shift_type='exponential'); allowed mu in [{math.log(lo):.3g}, "
            f"{math.log(hi):.3g}] (shifts {lo:g} to {hi:g}: Flux's mu lies between "
            "base_shift and max_shift, 0.5 to 1.15 by default)"
        )
    if not exponential and not lo <= mu <= hi:
        raise ValueError(
            f"mu={mu!r} is the shift itself under time_shift_type='linear'; allowed "
            f"{lo:g} to {hi:g}"
        )
    return math.exp(mu) if exponential else mu


def _stretch(sig: np.ndarray, terminal: float) -> np.ndarray:
    """Stretch 1 - sigma so that the last sigma is `terminal` (shift_terminal)."""
    one_minus = 1.0 - sig
    return 1.0 - one_minus / (one_minus[-1] / (1.0 - terminal))


def flow_sigma_calls(total: int, shift: float, n: int) -> list[float]:
    """DPMSolverMultistep's use_flow_sigmas: u uniform from 1 - 1/N down to (1 - 1/N) / n,
    shifted: sigma = s u / (1 + (s - 1) u)."""
    u = 1.0 - np.linspace(1.0, 1.0 / total, n + 1)
    sig = _shifted(u, shift)
    return sig[::-1][:-1].tolist()


def flow_spaced_calls(alphas_cumprod: torch.Tensor, spacing: Spacing, n: int) -> list[float]:
    """use_flow_sigmas with a sigma spacing (UniPC): n levels sigma = sigma_t / alpha_t
    spaced by `spacing.name` between sigma_max and sigma_min (the config's, else the
    training table's ends), as flow sigmas sigma / (1 + sigma)."""
    table = ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt()
    top, low = _sigma_range(spacing, float(table[-1]), float(table[0]))
    return [v / (1.0 + v) for v in spaced(spacing.name, top, low, n)]


def flow_match_calls(
    total: int,
    spacing: Spacing,
    n: int | None,
    sigmas: list[float] | None,
    timesteps: list[float] | None,
    mu: float | None,
) -> list[float]:
    """FlowMatchEulerDiscreteScheduler's call sigmas: unshifted sigmas (given, from given
    timesteps / N, or uniform from 1 to the smallest training level), shifted (static
    `shift`, or by mu: exponential e^mu / (e^mu + 1/t - 1), linear mu / (mu + 1/t - 1)),
    stretched to end at shift_terminal, then re-spaced by a sigma spacing."""
    if sigmas is not None:
        base = np.asarray(sigmas, dtype=np.float64)
    elif timesteps is not None:
        base = np.asarray(timesteps, dtype=np.float64) / total
    else:
        top, low = 1.0, 1.0 / total
        if not spacing.dynamic:  # diffusers' sigma_min is the shifted smallest level
            low = _shifted(low, spacing.shift)
        base = np.linspace(top, low, n)  # type: ignore[arg-type]
    shift = _flow_shift(spacing, mu)
    sig = _shifted(base, shift)
    if spacing.shift_terminal is not None:
        sig = _stretch(sig, spacing.shift_terminal)
    if spacing.name:
        sig = np.asarray(spaced(spacing.name, float(sig[0]), float(sig[-1]), len(sig)))
    return sig.tolist()
