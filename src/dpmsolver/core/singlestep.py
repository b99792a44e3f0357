"""Singlestep plans (DPM-Solver-1, -2, -3 and the stochastic singlestep steps): step i of
order k calls the model at k levels inside its interval and ends at the next outer level
(Runge-Kutta like); the stages' tableaux come from `coefficients`.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from .coefficients import (
    Form,
    Linear,
    SolverType,
    sde_singlestep_rules,
    sde_singlestep_update,
    sde_stage_lambda,
    singlestep_tableau,
)
from .grids import singlestep_orders, time_grid
from .options import SolverOptions
from .plan import Plan, stage_calls
from .schedules import Level, NoiseSchedule
from .stepper import Mark

__all__ = [
    "grouped_singlestep_plan",
    "singlestep_outer",
    "singlestep_plan",
    "singlestep_plan_of",
    "singlestep_stage",
]


def singlestep_outer(
    schedule: NoiseSchedule,
    method: str,
    steps: int,
    order: int,
    skip_type: str,
    t_s: float,
    t_e: float,
) -> tuple[list[float], list[int]]:
    """Outer times and per-step orders of 'singlestep' (orders mixed to use exactly `steps`
    calls) and 'singlestep_fixed' (steps // order steps of `order`)."""
    if method == "singlestep":
        orders = singlestep_orders(steps, order)
        if skip_type == "logSNR":
            outer = time_grid(schedule, skip_type, t_s, t_e, len(orders))
        else:
            # Sub-sample the `steps`-interval grid at the cumulative orders, so each
            # step of order k spans k intervals of the fine grid.
            fine = time_grid(schedule, skip_type, t_s, t_e, steps)
            outer = fine[bounds_of(orders)]
    else:
        orders = [order] * (steps // order)
        outer = time_grid(schedule, skip_type, t_s, t_e, len(orders))
    return outer.tolist(), orders


def singlestep_stage(
    schedule: NoiseSchedule,
    form: Form,
    solver_type: SolverType,
    skip_type: str,
    s: float,
    t: float,
    k: int,
    r: list[float] | None = None,
) -> tuple[list[Level], list[Linear]]:
    """Evaluation levels [s, s1, ...] and the tableau of one singlestep step of order k.

    Intermediate lambdas are lambda_s + r_j h; by default r_j follows the same spacing
    as the grid (r = 1/2 or 1/3, 2/3 for logSNR), as the authors' code does.
    """
    lam = schedule.lambda_(torch.tensor([s, t], dtype=torch.float64)).tolist()
    if k > 1 and not math.isfinite(lam[0]):
        raise ValueError(
            f"a singlestep step of order {k} cannot start at alpha_t = 0 (pure noise, "
            f"t={s!r}): its intermediate points are placed in lambda = -inf; start below it "
            "or use method='multistep'"
        )
    h = lam[1] - lam[0]
    if r is None and k == 1:
        r = []
    if r is None:
        inner = schedule.lambda_(time_grid(schedule, skip_type, s, t, k)).tolist()
        r = [(li - lam[0]) / h for li in inner[1:k]]
    stage_t = schedule.inverse_lambda(
        torch.tensor([lam[0] + rj * h for rj in r], dtype=torch.float64)
    )
    levels = schedule.levels([s, *stage_t.tolist(), t])
    return levels[:-1], singlestep_tableau(
        form, solver_type, levels[0], levels[1:-1], levels[-1], r
    )


def singlestep_sde_stage(
    schedule: NoiseSchedule, options: SolverOptions, s: float, t: float, k: int
) -> tuple[list[Level], list[Linear]]:
    """Evaluation levels and rules of one stochastic singlestep step of order k <= 2
    (`sde_singlestep_rules`, stage at r = 1/2). A step whose stage would lie at lambda =
    +-inf (from pure noise, or an ancestral step whose sigma_down is 0) is of order 1."""
    lv_s, lv_t = schedule.levels([s, t])
    r = 0.5
    lam = sde_stage_lambda(lv_s, lv_t, r, options.eta, options.ancestral)
    if k == 1 or not math.isfinite(lam):
        return [lv_s], sde_singlestep_rules(lv_s, None, lv_t, r, options.eta, options.ancestral)
    stage_t = float(schedule.inverse_lambda(torch.tensor([lam], dtype=torch.float64))[0])
    stage = schedule.levels([stage_t])[0]
    return [lv_s, stage], sde_singlestep_rules(lv_s, stage, lv_t, r, options.eta, options.ancestral)


def bounds_of(orders: list[int]) -> list[int]:
    """The grid indices where singlestep steps of these orders start and end, when each
    step of order k spans k intervals of a grid."""
    bounds = [0]
    for k in orders:
        bounds.append(bounds[-1] + k)
    return bounds


def singlestep_plan(
    schedule: NoiseSchedule,
    options: SolverOptions,
    outer: list[float],
    orders: list[int],
    inner: str = "logSNR",
) -> Plan:
    """Singlestep steps of the given orders, one per interval of `outer`, their
    intermediate points spaced by `inner` inside each (DPM-Solver's singlestep)."""
    levels = schedule.levels(outer)
    form, solver_type = options.form, options.solver_type
    stages = [
        singlestep_stage(schedule, form, solver_type, inner, outer[i], outer[i + 1], k)
        for i, k in enumerate(orders)
    ]
    return _stepped(levels, stages)


def grouped_singlestep_plan(
    schedule: NoiseSchedule, options: SolverOptions, grid: list[float], orders: list[int]
) -> Plan:
    """Singlestep steps of the given orders over `grid`: step i spans orders[i] intervals,
    the grid's points inside it are its intermediate calls (as diffusers'
    DPMSolverSinglestepScheduler uses its timesteps). With eta > 0 each stage takes
    SDE-DPM-Solver++'s rule of its order from the step's start (`sde_singlestep_update`)."""
    levels = schedule.levels(grid)
    bounds = bounds_of(orders)
    stages = []
    for i, k in enumerate(orders):
        inside = levels[bounds[i] : bounds[i + 1] + 1]
        if options.eta > 0:
            rules = [sde_singlestep_update([*inside[: j + 1], inside[j + 1]]) for j in range(k)]
        else:
            # Each call's rule is the singlestep update of its order from the step's start
            # to the next grid point, as DPMSolverSinglestepScheduler takes it.
            rules = [_update(options, inside[: j + 1], inside[j + 1]) for j in range(k)]
        stages.append((inside[:k], rules))
    return _stepped([levels[b] for b in bounds], stages)


def _update(options: SolverOptions, points: list[Level], t: Level) -> Linear:
    """The singlestep update of order len(points) from points[0] to t, with the outputs at
    `points` (the stages at their own lambdas): the last rule of its tableau."""
    s = points[0]
    h = t.lambda_ - s.lambda_
    r = [(p.lambda_ - s.lambda_) / h for p in points[1:]]
    return singlestep_tableau(options.form, options.solver_type, s, points[1:], t, r)[-1]


def _stepped(outer: list[Level], stages: list[tuple[list[Level], list[Linear]]]) -> Plan:
    """The plan of singlestep `stages` between the `outer` levels."""
    return Plan(
        outer[0].t,
        outer[-1].t,
        outer[-1],
        outer,
        stages=stages,
        calls=stage_calls(stages, outer),
        start=Mark(0, outer[0].t, None),
    )


def singlestep_plan_of(
    schedule: NoiseSchedule,
    options: SolverOptions,
    grid: Tensor | None,
    t_s: float,
    t_e: float,
    end: Level,
) -> Plan:
    """The plan of singlestep options: on a given grid one step of `order` per interval
    (from pure noise the first step is of order 1), else the outer grid of `steps` calls
    (`singlestep_outer`); eta > 0 takes the stochastic steps (`singlestep_sde_stage`)."""
    if grid is not None:
        outer, orders, inner = grid.tolist(), [options.order] * options.grid_steps, "logSNR"
    else:
        outer, orders = singlestep_outer(
            schedule, options.method, options.steps, options.order, options.skip_type, t_s, t_e
        )
        inner = options.skip_type
    levels = schedule.levels(outer)
    if levels[0].alpha == 0.0 and options.form == "data" and orders[0] > 1:
        # From pure noise (lambda = -inf) the intermediate points would lie at -inf too.
        # With a given grid (the faces: one step per interval) the first step is the
        # first-order limit, x_t = sigma_t x + alpha_t x0_pred, one call fewer per order;
        # `steps` promises its calls, so there the start is refused.
        if grid is None:
            raise ValueError(
                f"a singlestep step of order {orders[0]} cannot start at alpha_t = 0 (pure "
                f"noise, t={outer[0]!r}): its intermediate points would lie at lambda = -inf; "
                "start below it, use method='multistep', or give the grid as timesteps (its "
                "first step is then taken at order 1)"
            )
        orders = [1, *orders[1:]]
    if options.eta == 0:
        return dataclasses.replace(
            singlestep_plan(schedule, options, outer, orders, inner), end=end
        )
    stages = [
        singlestep_sde_stage(schedule, options, outer[i], outer[i + 1], k)
        for i, k in enumerate(orders)
    ]
    return dataclasses.replace(_stepped(levels, stages), end=end)
