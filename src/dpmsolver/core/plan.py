"""Plans: what a run needs that does not depend on x (its levels and update rules).

A plan is built in float64 on the host, once per (schedule, `SolverOptions`) and kept in a
small cache per schedule, so repeated runs (batches, benchmarks, pipelines) skip it. The
functions here are the only place where a setting becomes rules; the diffusers face plans
through them too.

    multistep:  levels[i] -> levels[i + 1] by rules[i] (orders 1..order-1 to warm up, then
                `order`, lowered at the end for short runs); corrections[i] (or None)
                re-does step i with the output at levels[i + 1] (UniC).
    singlestep: stages[i] = (evaluation levels, tableau) of step i between outer levels.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Collection
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..checks import check_float
from .coefficients import (
    Form,
    Linear,
    SolverType,
    cfg_pp_update,
    deis_update,
    ipndm_update,
    multistep_update,
    sde_multistep_update,
    sde_noise_multistep_update,
    sde_singlestep_rules,
    sde_stage_lambda,
    singlestep_tableau,
    unic_correction,
)
from .grids import check_grid_range, sigmas_to_times, singlestep_orders, time_grid
from .model import Target
from .options import Corrector, SolverOptions
from .schedules import Level, NoiseSchedule
from .stepper import Call, Mark, Span

__all__ = [
    "AFS_MAX_SNR",
    "Plan",
    "corrects",
    "from_pure_noise",
    "make_plan",
    "multistep_orders",
    "multistep_plan",
    "multistep_rule",
    "resolve_grid",
    "resolve_times",
    "singlestep_outer",
    "singlestep_sde_stage",
    "singlestep_stage",
    "tuned_rules",
]

# A rule whose result is the output itself: denoise_to_zero's x0_pred.
COPY = Linear(0.0, (1.0,))
# analytic_first_step's largest alpha / sigma at t_start: its x0_pred = 0 moves the first
# step by alpha_1 * (1 - e^-h) * E[x0 | x_T], negligible only from near pure noise.
AFS_MAX_SNR = 0.1
# Plans kept per schedule; planning costs as much as a 20-step loop on a small latent.
PLANS_PER_SCHEDULE = 32


@dataclass(frozen=True)
class Plan:
    """The run's end times, its levels and rules, and its calls (see the module docstring).

    `end` is the level at t_end (for denoise_to_zero). `calls` is what the stepper walks
    (`stepper.step`): one per model call, `first` the first the model makes (1 after an
    analytic first step, whose output of the form `first_output` the stepper supplies),
    `start` the mark settled before it. An adaptive plan has no levels or calls: it plans
    its steps as it goes.
    """

    t_start: float
    t_end: float
    end: Level
    levels: list[Level] = field(default_factory=list)
    rules: list[Linear] = field(default_factory=list)
    corrections: list[Linear | None] = field(default_factory=list)
    stages: list[tuple[list[Level], list[Linear]]] = field(default_factory=list)
    calls: tuple[Call, ...] = ()
    start: Mark | None = None
    first: int = 0
    first_output: Form = "data"


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


def corrects(corrector: Corrector | str, i: int, steps: int) -> bool:
    """Whether step i (1-based, of `steps`) gets the corrector: all steps, or for
    'low_noise' the second half (callers exclude a last step no call follows)."""
    return corrector == "all" or (corrector == "low_noise" and 2 * i > steps)


def multistep_orders(steps: int, order: int, lower_final: bool) -> list[int]:
    """The order of each multistep step: 1..order-1 to warm up (one earlier output more
    each step), then `order`; with `lower_final`, no higher than the steps left."""
    orders = []
    for i in range(1, steps + 1):
        k = min(order, i)
        if lower_final:
            k = min(k, steps + 1 - i)
        orders.append(k)
    return orders


def from_pure_noise(options: SolverOptions, orders: list[int]) -> list[int]:
    """The orders of a multistep run that starts at alpha = 0 (a flow schedule at t = 1).

    There lambda = -inf: a finite difference in lambda that reaches the start is zero, so
    its output enters the first step only (the limit of the rules, without inf / inf), and
    step i >= 2 uses at most i - 1 earlier outputs. The noise form (x / alpha), iPNDM and
    DEIS (sigma / alpha) cannot start there: ValueError.
    """
    if options.form == "noise" or options.algorithm in ("ipndm", "deis"):
        raise ValueError(
            f"algorithm={options.algorithm!r} cannot start at alpha_t = 0 (pure noise: a "
            "flow schedule at t = 1); use algorithm='dpmsolver++' or start below t = 1"
        )
    return [k if i == 0 else min(k, i) for i, k in enumerate(orders)]


def multistep_rule(options: SolverOptions, levels: list[Level]) -> Linear:
    """The rule of one multistep step of order len(levels) - 1 for these options: iPNDM,
    DEIS, SDE-DPM-Solver(++) (eta > 0) or DPM-Solver(++) (see `coefficients`)."""
    if options.algorithm == "ipndm":
        return ipndm_update(levels)
    if options.algorithm == "deis":
        return deis_update(levels)
    if options.eta > 0 and options.form == "noise":
        return sde_noise_multistep_update(options.solver_type, levels)
    if options.eta > 0:
        return sde_multistep_update(options.solver_type, levels, options.eta, options.multistep3)
    return multistep_update(options.form, options.solver_type, levels, options.multistep3)


def multistep_plan(
    schedule: NoiseSchedule,
    options: SolverOptions,
    grid: Tensor | list[float],
    orders: list[int] | None = None,
    correct_last: bool = False,
    uncorrected: Collection[int] = (),
) -> Plan:
    """Levels of the grid and one rule per step, of the orders `multistep_orders` gives
    (or `orders`); a corrector of the same order for the steps `corrects` selects, except
    the steps in `uncorrected` (0-based) and the last one, unless `correct_last` (a run
    that ends with one more model call, added with `end_call`)."""
    levels = schedule.levels(grid)
    steps = len(levels) - 1
    if orders is None:
        orders = multistep_orders(steps, options.order, options.lowers_final_order(steps))
    pure_noise = bool(steps) and levels[0].alpha == 0.0
    if pure_noise:
        orders = from_pure_noise(options, orders)
    rules: list[Linear] = []
    corrections: list[Linear | None] = []
    for i, k in enumerate(orders, start=1):
        step_levels = [*(levels[i - 1 - j] for j in range(k)), levels[i]]
        rule = multistep_rule(options, step_levels)
        rules.append(cfg_pp_update(rule, levels[i - 1], levels[i]) if options.cfg_pp else rule)
        correct = (i < steps or correct_last) and corrects(options.corrector, i, steps)
        correct = correct and i - 1 not in uncorrected
        # From pure noise (lambda = -inf) bh1's B(h) = h is infinite: that step is not
        # corrected (bh2's e^h - 1 stays finite).
        correct = correct and not (i == 1 and pure_noise and options.corrector_variant == "bh1")
        corrections.append(
            unic_correction(options.form, step_levels, options.corrector_variant)
            if correct
            else None
        )
    if options.coefficients is not None:
        rules, corrections = tuned_rules(options.coefficients, levels, rules, corrections)
    return Plan(
        levels[0].t,
        levels[-1].t,
        levels[-1],
        levels,
        rules=rules,
        corrections=corrections,
        calls=multistep_calls(levels, rules, corrections, options.order),
        first=1 if options.analytic_first_step else 0,
        first_output=options.form,
    )


def multistep_calls(
    levels: list[Level], rules: list[Linear], corrections: list[Linear | None], keep: int
) -> tuple[Call, ...]:
    """The calls of a multistep run: call k at levels[k] takes step k + 1 (rules[k]),
    after completing step k's correction (corrections[k - 1]) if it has one; step 0 (the
    start) is settled after the first call, as the authors' loop does. A last correction
    (a face's run that ends with one more call) is completed by a call the face adds
    (`end_call`)."""
    calls = []
    for k, (rule, correction) in enumerate(zip(rules, corrections, strict=True)):
        level, target = levels[k], levels[k + 1]
        before = None
        if k == 0:
            before = Mark(0, level.t, 0)
        elif corrections[k - 1] is not None:
            before = Mark(k, level.t, k)
        after = Mark(k + 1, target.t, k + 1, report=correction is None)
        noise = Span(level.t, target.t, k + 1)
        calls.append(Call(level, k, rule, -1, keep, correction, before, after, noise))
    return tuple(calls)


def end_call(
    level: Level,
    number: int,
    rule: Linear,
    completes: bool = False,
    after: Mark | None = None,
    target: Target | None = None,
) -> Call:
    """A run's last call, at `level` (its last level), applying `rule` to its output alone
    (the jump to sigma = 0, denoise_to_zero's x0_pred, or a step of length 0): `completes`
    the last step's correction first (a multistep run whose last step was corrected)."""
    before = Mark(number, level.t, number) if completes else None
    return Call(level, number, rule, -1, 1, None, before, after, None, target)


def with_end(plan: Plan, call: Call) -> Plan:
    """The plan with one more call at its end (`end_call`)."""
    return dataclasses.replace(plan, calls=(*plan.calls, call))


def stage_calls(
    stages: list[tuple[list[Level], list[Linear]]], outer: list[Level], first: int = 0
) -> tuple[Call, ...]:
    """The calls of singlestep steps: one per stage, numbered by the step (from `first`);
    the last stage's rule ends the step at outer[i + 1], which is settled."""
    calls = []
    for i, (levels, rules) in enumerate(stages):
        t_s, t_end = levels[0].t, outer[i + 1].t
        for j, (level, rule) in enumerate(zip(levels, rules, strict=True)):
            last = j == len(rules) - 1
            after = Mark(first + i + 1, t_end, first + i) if last else None
            noise = Span(t_s, t_end if last else levels[j + 1].t, first + i)
            calls.append(Call(level, first + i, rule, j, 0, None, None, after, noise))
    return tuple(calls)


def tuned_rules(
    coefficients: tuple[tuple[float, ...], ...],
    levels: list[Level],
    rules: list[Linear],
    corrections: list[Linear | None],
) -> tuple[list[Linear], list[Linear | None]]:
    """The analytic rules with the tuned changes of `SolverOptions.coefficients`: step i's
    row (d_x, d_0, ...) makes its rule cx (1 + d_x) x + sum_j (cm_j + alpha_t d_j) m_j, the
    predictor's numbers first, then its corrector's. A row whose length is not the one the
    step's rules need is a ValueError (a tuned solver run with other options)."""
    new_rules: list[Linear] = []
    new_corrections: list[Linear | None] = []
    for i, (row, rule, corr) in enumerate(zip(coefficients, rules, corrections, strict=True)):
        alpha = levels[i + 1].alpha
        need = 1 + len(rule.cm) + (0 if corr is None else 1 + len(corr.cm))
        if len(row) != need:
            what = f"order {len(rule.cm)}" + ("" if corr is None else " and a corrector")
            raise ValueError(
                f"coefficients[{i}] has {len(row)} numbers; step {i + 1} of this plan "
                f"({what}) needs {need}: were the coefficients tuned with other options?"
            )
        new_rules.append(_changed(rule, row[: 1 + len(rule.cm)], alpha))
        new_corrections.append(
            None if corr is None else _changed(corr, row[1 + len(rule.cm) :], alpha)
        )
    return new_rules, new_corrections


def _changed(rule: Linear, row: tuple[float, ...], alpha: float) -> Linear:
    cm = tuple(c + alpha * d for c, d in zip(rule.cm, row[1:], strict=True))
    return Linear(rule.cx * (1.0 + row[0]), cm, rule.noise)


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
    DPMSolverSinglestepScheduler uses its timesteps)."""
    levels = schedule.levels(grid)
    bounds = bounds_of(orders)
    stages = []
    for i, k in enumerate(orders):
        lam = [lv.lambda_ for lv in levels[bounds[i] : bounds[i + 1] + 1]]
        r = [(lj - lam[0]) / (lam[-1] - lam[0]) for lj in lam[1:-1]]
        stages.append(
            singlestep_stage(
                schedule,
                options.form,
                options.solver_type,
                "logSNR",
                grid[bounds[i]],
                grid[bounds[i + 1]],
                k,
                r,
            )
        )
    return _stepped([levels[b] for b in bounds], stages)


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
                    rule = singlestep_stage(
                        schedule, form, options.solver_type, "logSNR", level.t, ends[j].t, 1
                    )[1][0]
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


def _singlestep_plan(
    schedule: NoiseSchedule,
    options: SolverOptions,
    grid: Tensor | None,
    t_s: float,
    t_e: float,
    end: Level,
) -> Plan:
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
        plan = _singlestep_plan(schedule, options, grid, t_s, t_e, end)
    if not options.denoise_to_zero:
        return plan
    # One more call at t_end, whose x0_pred is the result (numbered after the last step;
    # the authors' hook numbering counts singlestep steps from 0).
    last = len(plan.rules) if options.method == "multistep" else len(plan.stages)
    xt_step = last + 1 if options.method == "multistep" else last
    final = end_call(end, last + 1, COPY, after=Mark(last + 1, t_e, xt_step), target="data")
    return with_end(plan, final)


# Plans per schedule object, keyed by its id (a schedule need not be hashable: a dataclass
# with eq=True is not) and dropped when the schedule is collected.
def adaptive_end(plan: Plan, last: int) -> Plan:
    """denoise_to_zero's last call after an adaptive run of `last` accepted steps (whose
    number is known only then), as a plan of its own."""
    call = end_call(plan.end, last + 1, COPY, after=Mark(last + 1, plan.t_end, last), target="data")
    return Plan(plan.t_end, plan.t_end, plan.end, calls=(call,))


_PLANS: dict[int, dict[SolverOptions, Plan]] = {}


def _plans_of(schedule: NoiseSchedule) -> dict[SolverOptions, Plan] | None:
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
    plans = _plans_of(schedule)
    found = None if plans is None else plans.get(options)
    if found is None:
        found = _build(schedule, options)
        if plans is not None:
            if len(plans) >= PLANS_PER_SCHEDULE:
                del plans[next(iter(plans))]
            plans[options] = found
    return found
