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

from dataclasses import dataclass

from ..core import Level, Linear, Plan, singlestep_orders
from ..core.coefficients import jump_to_zero
from ..core.plan import (
    end_call,
    grouped_singlestep_plan,
    multistep_orders,
    multistep_plan,
    singlestep_plan,
    with_end,
    with_restarts,
)
from .config import Setup

__all__ = ["IDENTITY", "Planned", "plan_calls"]

IDENTITY = Linear(1.0, (0.0,))  # a step of length 0: x as it is


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
    """The plan of calls at the times `grid` (step boundaries), then the end.

    to_zero: the run ends with the jump to sigma = 0 (one more call, at grid[-1]);
    `count_jump`: that jump counts as a step where orders are lowered at the end (on
    diffusers' grids it is the last of num_inference_steps steps; on ours the steps
    before it are lowered too, the authors' rule). identity_end: the last call is already
    at the smallest training level, so the run ends with a step of length 0 after it (as
    diffusers does: that call's output only corrects the step before it). Singlestep:
    with `orders`, one step per interval of `grid` with intermediate points spaced by
    `inner`; otherwise each step of order k spans k intervals of `grid`.
    """
    options = setup.options
    plan = (
        _multistep(setup, grid, to_zero, count_jump, identity_end)
        if options.method == "multistep"
        else _singlestep(setup, grid, orders, inner)
    )
    plan = with_restarts(plan, setup.schedule, options)
    end, form = plan.levels[-1], options.form
    number = len(plan.calls)
    if to_zero:
        plan = with_end(plan, end_call(end, number, jump_to_zero(form, end), completes=True))
    elif identity_end:
        plan = with_end(plan, end_call(end, number, IDENTITY, completes=True))
    if setup.denoise_to_zero and not to_zero:
        plan = with_end(plan, end_call(end, len(plan.calls), jump_to_zero(form, end)))
    return Planned(plan, end, to_zero or setup.denoise_to_zero)


def _multistep(
    setup: Setup, grid: list[float], to_zero: bool, count_jump: bool, identity_end: bool
) -> Plan:
    options = setup.options
    steps = len(grid) - 1
    counted = steps + 1 if (to_zero and count_jump) or identity_end else steps
    orders = multistep_orders(counted, options.order, options.lowers_final_order(counted))
    orders = orders[:steps]
    if setup.final_step_first_order and steps > 0 and not to_zero:
        orders[-1] = 1
    # With the jump to zero (or the step of length 0) another call follows the last step:
    # it is corrected.
    return multistep_plan(
        setup.schedule,
        options,
        grid,
        orders,
        correct_last=to_zero or identity_end,
        uncorrected=setup.disable_corrector,
    )


def _singlestep(
    setup: Setup, grid: list[float], orders: list[int] | None, inner: str | None
) -> Plan:
    options, schedule = setup.options, setup.schedule
    if orders is not None:  # our grid: one step per interval
        return singlestep_plan(schedule, options, grid, orders, inner or "logSNR")
    steps = len(grid) - 1
    orders = singlestep_orders(steps, options.order) if steps else []
    if steps and schedule.levels([grid[0]])[0].alpha == 0.0 and orders[0] > 1:
        # From pure noise the first step is of order 1 (its stages would lie at -inf).
        orders = [1, *(singlestep_orders(steps - 1, options.order) if steps > 1 else [])]
    if setup.final_step_first_order and orders and orders[-1] > 1:
        orders = [*orders[:-1], *([1] * orders[-1])]
    return grouped_singlestep_plan(schedule, options, grid, orders)
