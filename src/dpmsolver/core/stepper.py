"""The stepper: the one update loop's body, with the run's state as a value the caller holds.

A plan lists its run's model calls (`Plan.calls`, see `Call`). A driver evaluates the model
at `state.x` for each call in turn and hands the output to `step`, which applies the rules
that output completes and returns the next state:

    state = init(plan, x)
    for k in range(plan.first, len(plan.calls)):
        state = step(plan, state, k, model(state.x, plan.calls[k].level))
    x_end = state.x

(`plan.first` is 1 after an analytic first step, whose output `init` supplies.)

as diffrax's solvers do with `init` / `step` and scipy's `OdeSolver.step`: the state is a
value (`State`), so any driver can stop and resume a run. The core's loops, the tuner
(which re-runs a trajectory from any call) and the diffusers face's `step()` (one call per
pipeline step) all drive this one function; nothing else applies a plan's rules.

What one call's output completes:
    multistep (1 call per step): the pending UniC correction of the step that ended at the
        call's level, then the next step's predictor rule on the outputs kept (newest
        first); with CFG++ the output is a (guided, unconditional) pair and the
        unconditional ones are kept.
    singlestep (k calls per step of order k): the next stage's state, or after the last
        stage the step's end, from the step's start and its outputs so far.
Every rule is `combine(rule, x, outputs)`: x_new = cx x + sum_j cm[j] m[j] (+ noise z).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from .coefficients import Linear
from .kernel import combine
from .model import Target
from .schedules import Level

__all__ = ["Call", "Calls", "Hooks", "Mark", "Output", "Span", "State", "init", "step"]

# (x, t, step) -> x, and (step, t, x) -> None: the run's hooks (see `dpmsolver.sample`).
XtCorrection = Callable[[Tensor, float, int], Tensor]
Callback = Callable[[int, float, Tensor], None]
# A call's output: a tensor, or CFG++'s (guided, unconditional) pair.
Output = Tensor | tuple[Tensor, Tensor]


class Mark(NamedTuple):
    """A state the run settles on: `callback(number, t, x)` is called with it (when
    `report`), after `correcting_xt_fn(x, t, xt_step)` (unless xt_step is None)."""

    number: int
    t: float
    xt_step: int | None
    report: bool = True


class Span(NamedTuple):
    """The interval (t_s, t_t) whose noise a stochastic rule adds, and the step that
    errors name for it."""

    t_s: float
    t_t: float
    step: int


@dataclass(frozen=True)
class Call:
    """One model call of a plan and what `step` does with its output.

    level, target: where the model is evaluated, and what it predicts there (None: the
        plan's form; 'data' for denoise_to_zero's last call).
    number: the step that errors and hooks name for this call.
    rule: applied once the output is in (None: the output only completes a correction).
    stage: -1 for a multistep call; else the call's place in its singlestep step (0
        begins the step, whose start `step` keeps).
    keep: multistep: how many outputs, newest first, the state keeps.
    correction: multistep: the UniC correction of the step `rule` takes, which the next
        call's output completes.
    before / after: the marks settled after completing a correction (or, at a run's first
        call, the start) and after applying `rule`.
    noise: the interval whose noise `rule` adds, for a caller's noise sampler.
    restart: this call at first order, taken when the state lacks the outputs `rule`
        needs (a run that begins inside the plan: `planning.with_restarts`).
    """

    level: Level
    number: int
    rule: Linear | None
    stage: int = -1
    keep: int = 0
    correction: Linear | None = None
    before: Mark | None = None
    after: Mark | None = None
    noise: Span | None = None
    target: Target | None = None
    restart: Call | None = None


class State(NamedTuple):
    """Where a run stands between calls.

    x: the state the next call evaluates the model at (after the last call, the result).
    outputs: multistep: the model outputs kept, newest first; singlestep: the current
        step's outputs, in stage order.
    start: the state the pending correction, or the current singlestep step, starts from.
    pending: multistep: the correction the next call's output completes.
    """

    x: Tensor
    outputs: tuple[Tensor, ...] = ()
    start: Tensor | None = None
    pending: Linear | None = None


class Hooks(NamedTuple):
    """The caller's functions a run calls: `correct_xt` on settled states, `callback` on
    reported ones, and `noise(t_s, t_t, x, step)` for a rule's noise (None: drawn from the
    generator)."""

    correct_xt: XtCorrection | None = None
    callback: Callback | None = None
    noise: Callable[[float, float, Tensor, int], Tensor | None] | None = None


NO_HOOKS = Hooks()


class Calls(Protocol):
    """What the stepper reads of a plan (`dpmsolver.core.Plan`).

    calls: the run's calls. start: the mark settled before the first call (singlestep
    runs report their start then; multistep runs after their first call). first: the
    first call the model makes: 1 after an analytic first step, whose output `init`
    supplies in the form `first_output` ('data': x0_pred = 0; 'noise': eps_pred =
    x / sigma_T), else 0.
    """

    @property
    def calls(self) -> Sequence[Call]: ...

    @property
    def start(self) -> Mark | None: ...

    @property
    def first(self) -> int: ...

    @property
    def first_output(self) -> Target: ...


def init(plan: Calls, x: Tensor, hooks: Hooks = NO_HOOKS) -> State:
    """The state before the plan's first model call: x with the start mark settled, and
    after an analytic first step (no model call) that step taken."""
    if plan.start is not None:
        x = _settle(x, plan.start, hooks)
    state = State(x)
    if plan.first == 0:
        return state
    # x0_pred = 0, or eps_pred = x / sigma_T: the model's output near pure noise.
    sigma = plan.calls[0].level.sigma
    output = torch.zeros_like(x) if plan.first_output == "data" else x * (1.0 / sigma)
    return step(plan, state, 0, output, hooks)


def step(
    plan: Calls,
    state: State,
    k: int,
    output: Output,
    hooks: Hooks = NO_HOOKS,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> State:
    """The state after call k of the plan, whose model output (at `state.x`) is `output`.

    `noise` is the standard normal noise of a stochastic rule, when the caller draws it
    (else `hooks.noise`, else the generator). Applies at most a correction and one rule:
    the work between two model calls. A state that only the call refers to is taken
    apart at once, so that outputs no rule needs any more are freed before the rule's
    result is made (a driver hands its state over, see `loops.run_plan`).
    """
    call = plan.calls[k]
    x, kept, start, pending = state
    del state
    guided = None
    if isinstance(output, tuple):  # CFG++: the guided output acts now, the other is kept
        guided, output = output
    if call.stage >= 0:  # singlestep: a stage of the step that starts at `start`
        if call.restart is not None and (start is None or len(kept) + 1 < _needs(call)):
            call = call.restart  # the run began inside this step: first order from here
        if call.stage == 0 or start is None:
            start, kept = x, ()
        outputs = (*kept, output)
        del kept, x
        z = noise if noise is not None else _noise(call, start, hooks)
        x = combine(call.rule, start, outputs, generator, z)  # type: ignore[arg-type]
        if call.after is None:
            return State(x, outputs, start)
        del outputs, start  # the step is done: its start and outputs are freed
        return State(_settle(x, call.after, hooks))
    if pending is not None and start is not None:
        x = combine(pending, start, [output, *kept])  # the predicted state is dropped
    start = None
    if call.before is not None:
        x = _settle(x, call.before, hooks)
    outputs = (output, *kept)[: call.keep]
    del kept, output
    if call.restart is not None and len(outputs) < _needs(call):
        call = call.restart  # the run began here: first order until enough outputs are kept
    if call.rule is None:
        return State(x, outputs)
    z = noise if noise is not None or hooks.noise is None else _noise(call, x, hooks)
    ms = outputs if guided is None else (guided, *outputs)
    x_new = combine(call.rule, x, ms, generator, z)
    del ms
    if call.after is not None and (hooks.correct_xt is not None or hooks.callback is not None):
        x_new = _settle(x_new, call.after, hooks)
    if call.correction is None:
        return State(x_new, outputs)
    return State(x_new, outputs, x, call.correction)


def _needs(call: Call) -> int:
    """The model outputs the call's rule combines."""
    return 0 if call.rule is None else len(call.rule.cm)


def _noise(call: Call, x: Tensor, hooks: Hooks) -> Tensor | None:
    """The caller's noise for the call's stochastic rule (None: the generator's)."""
    if hooks.noise is None or call.rule is None or not call.rule.noise or call.noise is None:
        return None
    return hooks.noise(call.noise.t_s, call.noise.t_t, x, call.noise.step)


def _settle(x: Tensor, mark: Mark, hooks: Hooks) -> Tensor:
    if hooks.correct_xt is not None and mark.xt_step is not None:
        x = hooks.correct_xt(x, mark.t, mark.xt_step)
    if hooks.callback is not None and mark.report:
        hooks.callback(mark.number, mark.t, x)
    return x
