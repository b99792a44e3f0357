"""The fixed-step driver: walk a plan's calls, one model call and one `stepper.step` each.

`run_plan` is the core's sampling loop for every fixed-step method (multistep, singlestep,
CFG++, denoise_to_zero): the stepper does the updates, this calls the model through the
`Evaluator` and hands the run's hooks over. It reads nothing back from the device, so it can
be compiled whole (`torch.compile(fullgraph=True)`) or captured in a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .kernel import Evaluator, like_x
from .plan import Plan
from .stepper import Callback, Hooks, XtCorrection, init, step

__all__ = ["Callback", "NoiseSampler", "XtCorrection", "noise_hook", "run_plan"]

# (t_s, t_t) -> the standard normal noise of the SDE step from t_s to t_t (k-diffusion's
# noise_sampler(sigma, sigma_next)), of x's shape.
NoiseSampler = Callable[[float, float], Tensor]


def run_plan(
    ev: Evaluator,
    plan: Plan,
    x: Tensor,
    hooks: Hooks,
    generator: torch.Generator | None = None,
    pairs: bool = False,
) -> Tensor:
    """The state after the plan's last call, from x at its start: one model call per
    `plan.calls` entry (from `plan.first`), each output handed to `stepper.step`.
    `pairs`: each call gives CFG++'s (guided, unconditional) pair (`Evaluator.pair`)."""
    # The state is handed to `step` out of a one-element box, so that nothing here holds
    # the old state while the new one is made: outputs no rule needs are freed first, and
    # memory stays at what the plan's rules keep.
    box = [init(plan, x, hooks)]
    del x
    for k in range(plan.first, len(plan.calls)):
        call = plan.calls[k]
        x_k = box[0].x
        output = (
            ev.pair(x_k, call.level, call.number)
            if pairs
            else ev(x_k, call.level, call.number, call.target)
        )
        del x_k
        box.append(step(plan, box.pop(), k, output, hooks, generator))
        del output
    return box[0].x


def noise_hook(
    ev: Evaluator, noise_sampler: NoiseSampler | None
) -> Callable[[float, float, Tensor, int], Tensor | None] | None:
    """The stepper's noise hook for a caller's noise sampler: its draw of (t_s, t_t),
    checked for x's shape now and for NaN/Inf with the run's other checks (None: the
    generator draws the noise)."""
    if noise_sampler is None:
        return None

    def draw(t_s: float, t_t: float, x: Tensor, step: int) -> Tensor:
        z = like_x("noise_sampler", noise_sampler(t_s, t_t), x, step)
        ev.note_noise(z, step, t_t)
        return z

    return draw
