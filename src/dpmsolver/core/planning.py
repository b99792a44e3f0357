"""From options to a plan: the sampler's `make_plan` (checked and cached per schedule)
and the faces' `call_plan` (a run at the call times a face places, with its conventions on
orders and ends); both add the restarts a run that begins inside the grid takes.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Callable, Collection, Hashable
from typing import Literal

import torch
from torch import Tensor

from .coefficients import (
    Linear,
    jump_to_zero,
    sde_singlestep_update,
    unic_correction,
)
from .grids import (
    check_grid_range,
    resolve_times,
    sigmas_to_times,
    singlestep_orders,
    time_grid,
)
from .multistep import multistep_orders, multistep_plan, multistep_rule
from .options import SolverOptions
from .plan import AFS_MAX_SNR, COPY, Plan, end_call, with_end
from .schedules import NoiseSchedule
from .singlestep import (
    grouped_singlestep_plan,
    singlestep_plan,
    singlestep_plan_of,
    singlestep_stage,
)
from .stepper import Mark

__all__ = [
    "PlanEnd",
    "adaptive_end",
    "call_plan",
    "make_plan",
]


# Plans kept per schedule; planning costs as much as a 20-step loop on a small latent.
PLANS_PER_SCHEDULE = 32


def resolve_grid(schedule: NoiseSchedule, options: SolverOptions) -> Tensor | None:
    """The times of a given grid (`timesteps`, or `sigmas` mapped to times), checked to lie
    in the schedule's range; None when the options ask for a grid by `skip_type`."""
    if options.sigmas is not None:
        grid = sigmas_to_times(schedule, options.sigmas)
        check_grid_range("sigmas", schedule, grid, options.sigmas)
    elif options.timesteps is not None:
        grid = torch.tensor(options.timesteps, dtype=torch.float64)
        check_grid_range("timesteps", schedule, grid)
    else:
        return None
    options.check_steps()
    return grid


def with_restarts(plan: Plan, schedule: NoiseSchedule, options: SolverOptions) -> Plan:
    """The plan with each call's first-order restart (`Call.restart`): what the stepper
    takes instead when a run begins at that call without the earlier outputs its rule
    needs (img2img: a pipeline begins inside the grid). Multistep: the first-order rule to
    the next level (and a first-order corrector where the call has one); singlestep: a
    first-order step from the stage to the next call's level."""
    form = options.form
    calls = list(plan.calls)
    if plan.stages:
        k = 0
        for i, (levels, _) in enumerate(plan.stages):
            ends = [*levels[1:], plan.levels[i + 1]]
            for j, level in enumerate(levels):
                call = calls[k]
                if j > 0:
                    rule = (
                        sde_singlestep_update([level, ends[j]])
                        if options.eta > 0
                        else singlestep_stage(
                            schedule, form, options.solver_type, "logSNR", level.t, ends[j].t, 1
                        )[1][0]
                    )
                    redo = dataclasses.replace(call, rule=rule, stage=0)
                    calls[k] = dataclasses.replace(call, restart=redo)
                k += 1
        return dataclasses.replace(plan, calls=tuple(calls))
    for k, call in enumerate(calls):
        if call.rule is None or k + 1 >= len(plan.levels):
            continue
        pair = [plan.levels[k], plan.levels[k + 1]]
        first = multistep_rule(options, pair)
        correction = None
        if call.correction is not None:
            correction = unic_correction(form, pair, options.corrector_variant)
        redo = dataclasses.replace(call, rule=first, correction=correction)
        if call.after is not None:  # reported as the corrected one would be
            redo = dataclasses.replace(redo, after=call.after._replace(report=correction is None))
        calls[k] = dataclasses.replace(call, restart=redo)
    return dataclasses.replace(plan, calls=tuple(calls))


def _build(schedule: NoiseSchedule, options: SolverOptions) -> Plan:
    """The plan, with `end` computed alone as the loop has always used it (a level inside a
    vector can differ from a scalar one in the last bit)."""
    grid = resolve_grid(schedule, options)
    if grid is not None:
        t_s, t_e = float(grid[0]), float(grid[-1])
    else:
        t_s, t_e = resolve_times(schedule, options.t_start, options.t_end)
    if options.analytic_first_step:
        snr = math.exp(schedule.levels([t_s])[0].lambda_)
        if snr > AFS_MAX_SNR:
            raise ValueError(
                "analytic_first_step needs a start near pure noise, alpha / sigma <= "
                f"{AFS_MAX_SNR} at t_start; got {snr:.3g} at t_start={t_s}"
            )
    end = schedule.levels([t_e])[0]
    if options.method == "adaptive":
        return Plan(t_s, t_e, end)
    if options.method == "multistep":
        if grid is None:
            grid = time_grid(schedule, options.skip_type, t_s, t_e, options.steps)
        plan = dataclasses.replace(multistep_plan(schedule, options, grid), end=end)
    else:
        plan = singlestep_plan_of(schedule, options, grid, t_s, t_e, end)
    if not options.denoise_to_zero:
        return plan
    # One more call at t_end, whose x0_pred is the result (numbered after the last step;
    # the authors' hook numbering counts singlestep steps from 0).
    last = len(plan.rules) if options.method == "multistep" else len(plan.stages)
    xt_step = last + 1 if options.method == "multistep" else last
    final = end_call(end, last + 1, COPY, after=Mark(last + 1, t_e, xt_step), target="data")
    return with_end(plan, final)


def adaptive_end(plan: Plan, last: int) -> Plan:
    """denoise_to_zero's last call after an adaptive run of `last` accepted steps (whose
    number is known only then), as a plan of its own."""
    call = end_call(plan.end, last + 1, COPY, after=Mark(last + 1, plan.t_end, last), target="data")
    return Plan(plan.t_end, plan.t_end, plan.end, calls=(call,))


# Plans per schedule object, keyed by its id (a schedule need not be hashable: a dataclass
# with eq=True is not) and dropped when the schedule is collected.
_PLANS: dict[int, dict[Hashable, Plan]] = {}


def _plans_of(schedule: NoiseSchedule) -> dict[Hashable, Plan] | None:
    """The plan cache of `schedule` (None: it cannot be watched for collection, so its
    plans are not kept)."""
    key = id(schedule)
    plans = _PLANS.get(key)
    if plans is None:
        try:
            weakref.finalize(schedule, _PLANS.pop, key, None)
        except TypeError:
            return None
        plans = _PLANS[key] = {}
    return plans


def make_plan(schedule: NoiseSchedule, options: SolverOptions) -> Plan:
    """The plan of `options` on `schedule`, checked (times inside the schedule's range,
    the analytic first step's start) and cached: the cache's one key is the options."""
    return _cached(schedule, options, lambda: _build(schedule, options))


def _cached(schedule: NoiseSchedule, key: Hashable, build: Callable[[], Plan]) -> Plan:
    """The plan cached under `key` for `schedule`, built by `build` on a miss (the oldest
    of PLANS_PER_SCHEDULE is dropped to make room)."""
    plans = _plans_of(schedule)
    found = None if plans is None else plans.get(key)
    if found is None:
        found = build()
        if plans is not None:
            if len(plans) >= PLANS_PER_SCHEDULE:
                del plans[next(iter(plans))]
            plans[key] = found
    return found


# How a face's run ends after the last step: there ('stop'); with one more call at the
# last level whose output jumps to sigma = 0 ('jump'); or with one more call there whose
# output only completes the last step's correction, a step of length 0 ('hold').
PlanEnd = Literal["stop", "jump", "hold"]
# A step of length 0: x as it is.
HOLD = Linear(1.0, (0.0,))


def call_plan(
    schedule: NoiseSchedule,
    options: SolverOptions,
    grid: list[float],
    *,
    end: PlanEnd = "stop",
    count_end: bool = False,
    final_first_order: bool = False,
    uncorrected: Collection[int] = (),
    orders: list[int] | None = None,
    inner: str | None = None,
    denoise_to_zero: bool = False,
    span_orders: list[int] | None = None,
) -> Plan:
    """The plan of a run whose steps end at the times `grid`, as a face places them.

    Multistep: one step per interval of `grid`. Singlestep: with `orders`, one step per
    interval, its intermediate points spaced by `inner` (default logSNR); otherwise each
    step of order k spans k intervals of `grid`, the grid's points inside it its
    intermediate calls (as diffusers' DPMSolverSinglestepScheduler uses its timesteps),
    of the orders `span_orders` (default: as `singlestep_orders` mixes them), a first step
    from pure noise split into first-order steps.

    Args:
        end: what follows the last step (`PlanEnd`); a run ending with 'jump' or 'hold'
            corrects its last step, as the call after it gives the output that needs.
        count_end: the end's call counts as a step where multistep orders are lowered at
            the end (diffusers' grids, whose last step is the jump).
        final_first_order: the last step is of order 1 (multistep: unless the run ends
            with the jump, itself a first-order step; singlestep: the last step's calls
            become first-order steps).
        uncorrected: multistep steps (0-based) that do not get the corrector.
        denoise_to_zero: after a 'stop' end, one more call whose output jumps to sigma = 0.
        span_orders: singlestep steps that span several intervals: their orders.

    Each call carries its first-order restart (`with_restarts`): a run may begin at any
    call (img2img). Plans are cached with `make_plan`'s, keyed by all the arguments.
    """
    key = (
        "calls",
        options,
        tuple(grid),
        end,
        count_end,
        final_first_order,
        tuple(sorted(uncorrected)),
        None if orders is None else tuple(orders),
        inner,
        denoise_to_zero,
        None if span_orders is None else tuple(span_orders),
    )
    return _cached(
        schedule,
        key,
        lambda: _call_plan(
            schedule, options, list(grid), end, count_end, final_first_order,
            uncorrected, orders, inner, denoise_to_zero, span_orders,
        ),
    )  # fmt: skip


def _call_plan(
    schedule: NoiseSchedule,
    options: SolverOptions,
    grid: list[float],
    end: PlanEnd,
    count_end: bool,
    final_first_order: bool,
    uncorrected: Collection[int],
    orders: list[int] | None,
    inner: str | None,
    denoise_to_zero: bool,
    span_orders: list[int] | None,
) -> Plan:
    if options.method == "multistep":
        plan = _multistep_calls(
            schedule, options, grid, end, count_end, final_first_order, uncorrected
        )
    elif orders is not None:
        if final_first_order and orders and orders[-1] > 1:
            # The last step's k calls become k first-order steps through its own
            # intermediate points: the same calls, each a first-order update.
            k = orders[-1]
            points, _ = singlestep_stage(
                schedule, options.form, options.solver_type, inner or "logSNR",
                grid[-2], grid[-1], k,
            )  # fmt: skip
            grid = [*grid[:-1], *(lv.t for lv in points[1:]), grid[-1]]
            orders = [*orders[:-1], *([1] * k)]
        plan = singlestep_plan(schedule, options, grid, orders, inner or "logSNR")
    else:
        plan = _grouped_calls(schedule, options, grid, final_first_order, span_orders)
    plan = with_restarts(plan, schedule, options)
    last, form = plan.levels[-1], options.form
    number = len(plan.calls)
    if end == "jump":
        plan = with_end(plan, end_call(last, number, jump_to_zero(form, last), completes=True))
    elif end == "hold":
        plan = with_end(plan, end_call(last, number, HOLD, completes=True))
    if denoise_to_zero and end != "jump":
        plan = with_end(plan, end_call(last, len(plan.calls), jump_to_zero(form, last)))
    return plan


def _multistep_calls(
    schedule: NoiseSchedule,
    options: SolverOptions,
    grid: list[float],
    end: PlanEnd,
    count_end: bool,
    final_first_order: bool,
    uncorrected: Collection[int],
) -> Plan:
    steps = len(grid) - 1
    counted = steps + 1 if (end == "jump" and count_end) or end == "hold" else steps
    orders = multistep_orders(counted, options.order, options.lowers_final_order(counted))
    orders = orders[:steps]
    if final_first_order and steps > 0 and end != "jump":
        orders[-1] = 1
    # With the jump to zero (or the step of length 0) another call follows the last step:
    # it is corrected.
    return multistep_plan(
        schedule, options, grid, orders, correct_last=end != "stop", uncorrected=uncorrected
    )


def _grouped_calls(
    schedule: NoiseSchedule,
    options: SolverOptions,
    grid: list[float],
    final_first_order: bool,
    span_orders: list[int] | None,
) -> Plan:
    steps = len(grid) - 1
    pure_noise = bool(steps) and schedule.levels([grid[0]])[0].alpha == 0.0
    if span_orders is not None:
        orders = list(span_orders)
        if pure_noise and orders and orders[0] > 1:
            # From pure noise the first step is of order 1 (its stages would lie at -inf).
            orders = [*([1] * orders[0]), *orders[1:]]
    else:
        orders = singlestep_orders(steps, options.order) if steps else []
        if pure_noise and orders[0] > 1:
            orders = [1, *(singlestep_orders(steps - 1, options.order) if steps > 1 else [])]
    if final_first_order and orders and orders[-1] > 1:
        orders = [*orders[:-1], *([1] * orders[-1])]
    return grouped_singlestep_plan(schedule, options, grid, orders)
