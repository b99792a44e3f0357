"""Plans: what a run needs that does not depend on x (its levels, its update rules, and
the calls the stepper walks).

A plan is built in float64 on the host (`planning.make_plan`, cached per schedule and
options), so repeated runs (batches, benchmarks, pipelines) skip it. This module holds the
value and the calls every planner builds alike; `multistep` and `singlestep` turn a setting
into rules, `planning` chooses between them and is what the sampler and the faces call.

    multistep:  levels[i] -> levels[i + 1] by rules[i] (orders 1..order-1 to warm up, then
                `order`, lowered at the end for short runs); corrections[i] (or None)
                re-does step i with the output at levels[i + 1] (UniC).
    singlestep: stages[i] = (evaluation levels, tableau) of step i between outer levels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .coefficients import (
    Form,
    Linear,
)
from .model import Target
from .schedules import Level
from .stepper import Call, Mark, Span

__all__ = [
    "AFS_MAX_SNR",
    "COPY",
    "Plan",
    "end_call",
    "stage_calls",
    "with_end",
]


# A rule whose result is the output itself: denoise_to_zero's x0_pred.
COPY = Linear(0.0, (1.0,))


# analytic_first_step's largest alpha / sigma at t_start: its x0_pred = 0 moves the first
# step by alpha_1 * (1 - e^-h) * E[x0 | x_T], negligible only from near pure noise.
AFS_MAX_SNR = 0.1


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
