"""A scheduler's run as a core plan: its calls' times and diffusers' conventions on orders
and ends, turned into the core's `Plan` (levels, rules and calls, with the first-order
restarts a run that begins inside the grid takes).

The scheduler places its calls (`spacing`); here they become a plan: multistep, one step
per interval, or singlestep, either one step per interval of our grid or, on diffusers'
grids, steps that span several intervals (as DPMSolverSinglestepScheduler uses its
timesteps). Where the run ends: the smallest training level, the jump to sigma = 0 after
the last call, or, when the last call is already at that level, a step of length 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core import (
    DiscreteVPSchedule,
    Level,
    Plan,
    PlanEnd,
    call_plan,
    check_grid,
    sigmas_to_times,
    singlestep_outer,
    time_grid,
)
from .config import Setup
from .spacing import flow_calls, last_timestep, sigma_calls, timestep_calls

__all__ = ["Planned", "flow_grid", "plan_calls", "singlestep_call_orders", "steps_of", "vp_plan"]


@dataclass(frozen=True)
class Planned:
    """A run's plan and the noise level it ends at (0 after the jump to sigma = 0)."""

    plan: Plan
    end: Level
    final_zero: bool


def plan_calls(
    setup: Setup,
    grid: list[float],
    to_zero: bool,
    *,
    count_jump: bool = False,
    identity_end: bool = False,
    orders: list[int] | None = None,
    inner: str | None = None,
) -> Planned:
    """The core's plan (`call_plan`) of calls at the times `grid` (step boundaries), with
    the config's conventions: to_zero ends with the jump to sigma = 0; `count_jump`: that
    jump counts as a step where orders are lowered at the end (on diffusers' grids it is
    the last of num_inference_steps steps; on ours the steps before it are lowered too,
    the authors' rule); identity_end: the last call is already at the smallest training
    level, so the run ends with a step of length 0 after it (that call's output only
    corrects the step before it). Singlestep `orders` / `inner`: one step per interval of
    our grid."""
    end: PlanEnd = "jump" if to_zero else "hold" if identity_end else "stop"
    span = None
    if setup.options.method == "singlestep" and orders is None:
        # diffusers' grid: the orders DPMSolverSinglestepScheduler gives its calls; a last
        # call that only ends the run (the jump, or a step of length 0) takes no step here.
        options = setup.options
        calls = len(grid) - 1 if end == "stop" else len(grid)
        per_call = singlestep_call_orders(calls, options.order, options.lower_order_final, to_zero)
        span = steps_of(per_call if end == "stop" else per_call[:-1])
    plan = call_plan(
        setup.schedule,
        setup.options,
        grid,
        end=end,
        count_end=count_jump,
        final_first_order=setup.final_step_first_order,
        uncorrected=setup.disable_corrector,
        orders=orders,
        inner=inner,
        denoise_to_zero=setup.denoise_to_zero,
        span_orders=span,
    )
    return Planned(plan, plan.levels[-1], to_zero or setup.denoise_to_zero)


def singlestep_call_orders(n: int, order: int, lower_final: bool, final_zero: bool) -> list[int]:
    """DPMSolverSinglestepScheduler's order for each of n calls (its `get_order_list`): the
    calls of a step of order k are numbered 1..k. With lower_order_final (which it forces
    when n is not a multiple of the order, or the run ends at sigma = 0) the last calls
    take lower orders; ending at sigma = 0, the last call is of order 1."""
    lower = lower_final or n % order != 0 or final_zero
    block = list(range(1, order + 1))
    if not lower or order == 1:
        per_call = block * (n // order)
    elif n % order == 0:
        per_call = block * (n // order - 1) + ([1, 1] if order == 2 else [1, 2, 1])
    else:
        per_call = block * (n // order) + block[: n % order]
    if final_zero and per_call:
        per_call[-1] = 1
    return per_call


def steps_of(per_call: list[int]) -> list[int]:
    """The step orders of per-call orders: a step begins at each call of order 1."""
    orders: list[int] = []
    for k in per_call:
        if k == 1 or not orders:
            orders.append(1)
        else:
            orders[-1] = k
    return orders


def flow_grid(
    setup: Setup,
    n: int | None,
    timesteps: list[float] | Tensor | None,
    sigmas: list[float] | Tensor | None,
    mu: float | None,
) -> list[float]:
    """The call sigmas of a flow-matching config (`spacing.flow_calls`): custom
    `timesteps` (sigma times num_train_timesteps) or `sigmas`, or n calls."""
    total = setup.betas.numel()
    ts = None if timesteps is None else check_grid("timesteps", timesteps, min_len=1).tolist()
    if ts is not None and not (ts[-1] > 0 and ts[0] <= total):
        raise ValueError(
            f"timesteps from {ts[0]:.6g} to {ts[-1]:.6g} leave (0, {total}]: a flow "
            f"model's timesteps are its sigma times num_train_timesteps={total}"
        )
    sg = None if sigmas is None else check_grid("sigmas", sigmas, positive=True, min_len=1)
    calls = flow_calls(
        setup.alphas_cumprod,
        setup.spacing,
        n,
        None if sg is None else sg.tolist(),
        ts,
        mu,
    )
    grid = check_grid("sigmas", calls, positive=True, min_len=1)
    if float(grid[0]) > 1.0:
        raise ValueError(f"flow sigmas must lie in (0, 1]; the grid starts at {float(grid[0]):.6g}")
    return grid.tolist()


def vp_plan(
    setup: Setup,
    n: int | None,
    timesteps: list[float] | Tensor | None,
    sigmas: list[float] | Tensor | None,
    time_of: Mapping[float, float],
) -> Planned:
    """The plan of a VP config: at custom `timesteps` (a planned call's timestep maps
    to its exact time through `time_of`) or `sigmas` (a final 0 asks for the jump to
    sigma = 0), or n calls placed by the config's spacing."""
    ns = _vp(setup)
    to_zero = setup.to_zero
    if timesteps is not None or sigmas is not None:
        if timesteps is not None:
            values = check_grid("timesteps", timesteps, min_len=1)
            times = torch.tensor(
                [time_of.get(v, (v + 1.0) / ns.total_n) for v in values.tolist()],
                dtype=torch.float64,
            )
        else:
            values = check_grid("sigmas", sigmas, positive=True, final_zero=True, min_len=1)  # type: ignore[arg-type]
            if float(values[-1]) == 0.0:
                to_zero, values = True, values[:-1]
            times = sigmas_to_times(ns, values)
        if not (ns.contains(float(times.max())) and ns.contains(float(times.min()))):
            # Reported in the units given: training timesteps, or sigma_t / alpha_t.
            ends = ns.levels([ns.t_min, ns.t_max])
            if timesteps is not None:
                name, lo, hi = "timesteps", ends[0].model_t, ends[1].model_t
            else:
                name = "sigmas"
                lo, hi = (e.sigma / e.alpha for e in ends)
            raise ValueError(
                f"{name} from {float(values.max()):.6g} to {float(values.min()):.6g} reach "
                f"beyond the training schedule: allowed [{lo:.6g}, {hi:.6g}]"
            )
        return _given_calls(setup, times.tolist(), to_zero, custom=True)
    count = int(n)  # type: ignore[arg-type]
    spacing = setup.spacing
    if spacing.kind == "timestep_spacing":
        return _given_calls(setup, timestep_calls(ns, spacing, count), to_zero, custom=False)
    if spacing.kind == "sigmas":
        return _given_calls(setup, sigma_calls(ns, spacing, count), to_zero, custom=False)
    return _by_count(setup, count, to_zero)


def _given_calls(setup: Setup, calls: list[float], to_zero: bool, custom: bool) -> Planned:
    """Calls at `calls`, then the end: the jump to sigma = 0, or a step to the smallest
    training level. When the last call is already there, diffusers' grids end with a
    step of length 0 (as diffusers does: that call's output only corrects the step
    before it), and custom timesteps with that call's x0_pred."""
    t_min = setup.schedule.t_min
    at_end = calls[-1] <= t_min * (1 + 1e-12)
    if to_zero or (at_end and custom):
        return plan_calls(setup, calls, True, count_jump=not custom)
    if at_end:
        return plan_calls(setup, calls, False, identity_end=True)
    return plan_calls(setup, [*calls, t_min], False)


def _by_count(setup: Setup, n: int, to_zero: bool) -> Planned:
    """Our skip_type grid with n calls (multistep: n steps, or n - 1 and the jump)."""
    options = setup.options
    ns = _vp(setup)
    t_start = last_timestep(ns, setup.spacing.lambda_min_clipped) / ns.total_n
    skip = setup.spacing.name
    steps = n - 1 if to_zero else n
    if steps == 0:
        return plan_calls(setup, [t_start], True)
    if options.method == "multistep":
        grid = time_grid(ns, skip, t_start, ns.t_min, steps).tolist()
        return plan_calls(setup, grid, to_zero)
    outer, orders = singlestep_outer(
        ns, "singlestep", steps, options.order, skip, t_start, ns.t_min
    )
    return plan_calls(setup, outer, to_zero, orders=orders, inner=skip)


def _vp(setup: Setup) -> DiscreteVPSchedule:
    ns = setup.schedule
    if not isinstance(ns, DiscreteVPSchedule):  # internal: read_config builds it
        raise TypeError(f"a VP config has a DiscreteVPSchedule; got {type(ns).__name__}")
    return ns
