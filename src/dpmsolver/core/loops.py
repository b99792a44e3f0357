"""The fixed-step loops: walk a plan's levels with model calls and fused updates only.

Both loops read nothing back from the device, so they can be compiled whole
(`torch.compile(fullgraph=True)`) or captured in a CUDA graph. They return the final state
and the number of the last step (for denoise_to_zero's step number).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .coefficients import Linear
from .kernel import Evaluator, combine, like_x, remember
from .plan import Plan
from .schedules import Level

__all__ = [
    "Callback",
    "NoiseSampler",
    "XtCorrection",
    "cfg_pp_loop",
    "multistep_loop",
    "singlestep_loop",
    "singlestep_step",
]

XtCorrection = Callable[[Tensor, float, int], Tensor]
Callback = Callable[[int, float, Tensor], None]
# (t_s, t_t) -> the standard normal noise of the SDE step from t_s to t_t (k-diffusion's
# noise_sampler(sigma, sigma_next)), of x's shape.
NoiseSampler = Callable[[float, float], Tensor]


def multistep_loop(
    ev: Evaluator,
    plan: Plan,
    order: int,
    x: Tensor,
    generator: torch.Generator | None,
    correcting_xt_fn: XtCorrection | None,
    callback: Callback | None,
    analytic_first: bool = False,
    noise_sampler: NoiseSampler | None = None,
) -> tuple[Tensor, int]:
    """Multistep DPM-Solver(++) or iPNDM: 1 model call per step, `order` outputs kept at
    most. A corrected step calls the model at the predicted state, then re-does the step
    from the previous state with that output (which the next step uses as usual).
    `analytic_first`: the first output is x0_pred = 0, i.e. eps_pred = x / sigma_T.
    `noise_sampler`: the SDE steps' noise (default: drawn from `generator`)."""
    levels, rules, corrections = plan.levels, plan.rules, plan.corrections
    steps = len(rules)
    if analytic_first:
        history = [torch.zeros_like(x) if ev.target == "data" else x * (1.0 / levels[0].sigma)]
    else:
        history = [ev(x, levels[0], 0)]  # newest first (no other name, so dropped outputs free)
    if correcting_xt_fn is not None:
        x = correcting_xt_fn(x, levels[0].t, 0)
    if callback is not None:
        callback(0, levels[0].t, x)
    for i, (rule, corr) in enumerate(zip(rules, corrections, strict=True), start=1):
        noise = _draw(ev, noise_sampler, rule, levels[i - 1].t, levels[i].t, x, i)
        x_new = combine(rule, x, history, generator, noise)
        if correcting_xt_fn is not None:
            x_new = correcting_xt_fn(x_new, levels[i].t, i)
        m = None
        if corr is not None:  # re-do the step from x with the output at the prediction
            m = ev(x_new, levels[i], i)
            x_new = combine(corr, x, [m, *history])
            if correcting_xt_fn is not None:
                x_new = correcting_xt_fn(x_new, levels[i].t, i)
        x = x_new  # drops the previous state before the next model call
        if callback is not None:
            callback(i, levels[i].t, x)
        if i < steps:
            remember(history, m if m is not None else ev(x, levels[i], i), order)
    return x, steps


def cfg_pp_loop(
    ev: Evaluator,
    plan: Plan,
    order: int,
    x: Tensor,
    correcting_xt_fn: XtCorrection | None,
    callback: Callback | None,
) -> tuple[Tensor, int]:
    """Multistep DPM-Solver++ with CFG++ rules (`cfg_pp_update`): 1 model call per step,
    which gives the guided and the unconditional x0_pred; each rule acts on
    [guided now, unconditional now, earlier unconditional outputs...]."""
    levels, rules = plan.levels, plan.rules
    steps = len(rules)
    guided, uncond = ev.pair(x, levels[0], 0)
    history = [uncond]
    if correcting_xt_fn is not None:
        x = correcting_xt_fn(x, levels[0].t, 0)
    if callback is not None:
        callback(0, levels[0].t, x)
    for i, rule in enumerate(rules, start=1):
        x = combine(rule, x, [guided, *history])
        if correcting_xt_fn is not None:
            x = correcting_xt_fn(x, levels[i].t, i)
        if callback is not None:
            callback(i, levels[i].t, x)
        if i < steps:
            guided, uncond = ev.pair(x, levels[i], i)
            remember(history, uncond, order)
    return x, steps


def _draw(
    ev: Evaluator,
    noise_sampler: NoiseSampler | None,
    rule: Linear,
    t_s: float,
    t_t: float,
    x: Tensor,
    step: int,
) -> Tensor | None:
    """The noise of a rule with a noise term from `noise_sampler(t_s, t_t)`, checked: its
    shape now, its finiteness with the model's outputs after the run (None: `combine` draws
    it from the generator, or the rule has none)."""
    if noise_sampler is None or not rule.noise:
        return None
    z = like_x("noise_sampler", noise_sampler(t_s, t_t), x, step)
    ev.note_noise(z, step, t_t)
    return z


def singlestep_step(
    ev: Evaluator,
    x: Tensor,
    levels: list[Level],
    rules: list[Linear],
    step: int,
    t: float | None = None,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """One singlestep step of order len(levels): a model call at each of levels[0..k-1],
    each stage's state from the outputs so far, then the update; returns the new state and
    the outputs. A stochastic rule's noise is that of the interval from levels[0] to its
    stage (to `t`, the step's end, for the last rule)."""
    t_s = levels[0].t
    ms = [ev(x, levels[0], step)]
    for j, rule in enumerate(rules[:-1], start=1):
        noise = _draw(ev, noise_sampler, rule, t_s, levels[j].t, x, step)
        ms.append(ev(combine(rule, x, ms, generator, noise), levels[j], step))
    last = rules[-1]
    noise = _draw(ev, noise_sampler, last, t_s, t_s if t is None else t, x, step)
    return combine(last, x, ms, generator, noise), ms


def singlestep_loop(
    ev: Evaluator,
    plan: Plan,
    x: Tensor,
    correcting_xt_fn: XtCorrection | None,
    callback: Callback | None,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> tuple[Tensor, int]:
    """Singlestep DPM-Solver(++): step i has order len(stages[i][0]) and as many calls;
    stochastic rules draw their noise from `noise_sampler` (default: `generator`)."""
    outer = plan.levels
    if callback is not None:
        callback(0, outer[0].t, x)
    for i, (levels, rules) in enumerate(plan.stages):
        x, _ = singlestep_step(ev, x, levels, rules, i, outer[i + 1].t, generator, noise_sampler)
        if correcting_xt_fn is not None:
            x = correcting_xt_fn(x, outer[i + 1].t, i)
        if callback is not None:
            callback(i + 1, outer[i + 1].t, x)
    return x, len(plan.stages)
