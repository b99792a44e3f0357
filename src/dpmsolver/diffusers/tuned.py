"""A tuned solver (`dpmsolver.optimize_solver`) run by the scheduler: its record read
back as solver options (checked against the config), and the state its analytic first
step leaves a pipeline in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..core import Plan, SolverOptions, check_noise_levels
from ..core.stepper import State
from ..tuning.values import check_solver_record
from .config import Setup
from .config_io import TUNED_KEEPS

__all__ = ["analytic_scale", "analytic_state", "tuned_options"]


def tuned_options(
    record: dict[str, Any], keys: dict[str, Any], setup: Setup, defaults: dict[str, Any]
) -> SolverOptions:
    """The solver options of a tuned solver's JSON record, checked against the config: no
    grid or solver key besides it, and the schedule it was tuned on (VP or flow: its noise
    levels must be the config schedule's at its times)."""
    said = sorted(k for k, v in keys.items() if k not in TUNED_KEEPS and v != defaults.get(k, v))
    if said:
        raise ValueError(
            f"tuned_solver sets the grid and the solver; {', '.join(said)} cannot be given "
            "with it (use DPMSolverScheduler.from_tuned(tuned, config), which keeps the "
            "config's schedule keys only)"
        )
    missing = [k for k in ("times", "sigmas", "options", "coefficients") if k not in record]
    if missing:
        raise ValueError(f"tuned_solver lacks {', '.join(missing)}: give a TunedSolver's record")
    record = check_solver_record(record)
    rows = record["coefficients"]
    options = SolverOptions.of(
        timesteps=tuple(record["times"]),
        coefficients=None if rows is None else tuple(tuple(r) for r in rows),
        **record["options"],
    )
    check_noise_levels(
        setup.schedule, list(options.timesteps or ()), record["sigmas"], "config's schedule"
    )
    return options


def analytic_scale(plan: Plan) -> float:
    """c of x_1 = c x_T: the analytic first step (x0_pred = 0, or eps_pred = x_T /
    sigma_T; no model call) as a scaling of the initial noise, which a pipeline applies
    through init_noise_sigma."""
    first = plan.calls[0]
    if first.rule is None:  # internal: the analytic step has a rule
        raise ValueError("the analytic first step has no rule")
    scale = first.rule.cx
    if plan.first_output == "noise":
        scale += first.rule.cm[0] / first.level.sigma
    return scale


def analytic_state(plan: Plan, sample: Tensor, scale: float) -> State:
    """The stepper's state at the pipeline's first call after an analytic first step:
    the pipeline's sample is x_1 = scale x_T; the step's output (from x_T) heads the kept
    outputs, and its correction (if any) waits for the first call's output."""
    first = plan.calls[0]
    start = sample * (1.0 / scale)
    analytic = (
        torch.zeros_like(sample)
        if plan.first_output == "data"
        else start * (1.0 / first.level.sigma)
    )
    return State(sample, (analytic,), start, first.correction)
