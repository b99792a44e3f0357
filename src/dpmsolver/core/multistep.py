"""Multistep plans (DPM-Solver(++) multistep, iPNDM, DEIS, their SDE forms, the UniC
corrector and tuned coefficients): step i of order k takes the outputs at the k levels
before it, one model call per step (Adams-Bashforth like).
"""

from __future__ import annotations

from collections.abc import Collection

from torch import Tensor

from .coefficients import (
    Linear,
    cfg_pp_update,
    deis_update,
    ipndm_update,
    multistep_update,
    sde_multistep_update,
    sde_noise_multistep_update,
    unic_correction,
)
from .options import Corrector, SolverOptions
from .plan import Plan
from .schedules import Level, NoiseSchedule
from .stepper import Call, Mark, Span

__all__ = [
    "multistep_orders",
    "multistep_plan",
    "multistep_rule",
]


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
