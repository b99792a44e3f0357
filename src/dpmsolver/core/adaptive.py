"""Adaptive step size: DPM-Solver-12 and DPM-Solver-23 (DPM-Solver paper, Algorithm 4).

Each trial step of size h in lambda computes a lower-order and a higher-order singlestep
estimate that share their model calls (order 2: DPM-Solver-1 and -2 with r1 = 1/2, 2 calls;
order 3: DPM-Solver-2 and -3 with r1 = 1/3, r2 = 2/3, 3 calls). The step is accepted when
E = max over the batch of RMS((x_high - x_low) / delta) <= 1, with
delta = max(atol, rtol * max(|x_low|, |x_prev|)); the next step is
h <- theta * h * E^(-1/order), never past the end time, and the last step lands on t_end
exactly (the authors' code stops within 1e-5 of it in t). Accept/reject needs E on the host,
so this method synchronises once per trial step (the fixed-step methods never do).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .coefficients import Form, SolverType, singlestep_tableau
from .kernel import Evaluator, ModelOutputError, combine
from .plan import Plan, stage_calls
from .schedules import NoiseSchedule
from .singlestep import singlestep_stage
from .stepper import Callback, State, step

__all__ = ["adaptive_solve"]

H_INIT = 0.05
THETA = 0.9
MAX_TRIALS = 10_000


def adaptive_solve(
    ev: Evaluator,
    schedule: NoiseSchedule,
    form: Form,
    solver_type: SolverType,
    x: Tensor,
    order: int,
    t_s: float,
    t_e: float,
    atol: float,
    rtol: float,
    callback: Callback | None,
) -> tuple[Tensor, int]:
    """Integrate from t_s to t_e with DPM-Solver-12 (order 2) or -23 (order 3): `order`
    model calls per trial step; returns the state and the number of accepted steps."""
    r = [0.5] if order == 2 else [1.0 / 3.0, 2.0 / 3.0]
    lam_s, lam_end = schedule.lambda_(torch.tensor([t_s, t_e], dtype=torch.float64)).tolist()
    h = math.copysign(min(H_INIT, abs(lam_end - lam_s)), lam_end - lam_s)
    s = t_s
    x_prev = x
    accepted = 0
    if callback is not None:
        callback(0, s, x)
    for _ in range(MAX_TRIALS):
        if s == t_e:
            return x, accepted
        # A step that reaches the end lands on t_end exactly (no round trip through lambda).
        final = abs(h) >= abs(lam_end - lam_s)
        t = t_e if final else float(schedule.inverse_lambda(lam_s + h))
        levels, rules = singlestep_stage(schedule, form, solver_type, "logSNR", s, t, order, r)
        t_level = schedule.levels([t])[0]
        trial = Plan(s, t, t_level, calls=stage_calls([(levels, rules)], [levels[0], t_level]))
        state, ms = State(x), []
        for k, call in enumerate(trial.calls):
            ms.append(ev(state.x, call.level, accepted))
            state = step(trial, state, k, ms[-1])
        x_high = state.x
        lower = singlestep_tableau(form, solver_type, levels[0], levels[1:-1], t_level, r[:-1])
        x_low = combine(lower[-1], x, ms[: order - 1])
        delta = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        ratio = ((x_high - x_low) / delta).reshape(x.shape[0], -1)
        err = float(ratio.square().mean(dim=1).sqrt().max())
        if not math.isfinite(err):
            ev.raise_if_nonfinite()  # names the starting x or the model's step, if checked
            raise ModelOutputError(
                f"adaptive step from {ev.time_name}={s:.6g} to {ev.time_name}={t:.6g} gave a "
                "non-finite error estimate: the starting x or the model has NaN or Inf"
            )
        if err <= 1.0:
            x, x_prev, s = x_high, x_low, t
            lam_s = lam_end if final else t_level.lambda_
            accepted += 1
            if callback is not None:
                callback(accepted, s, x)
        factor = math.inf if err == 0.0 else err ** (-1.0 / order)
        remaining = lam_end - lam_s
        h = THETA * h * factor
        if abs(h) > abs(remaining):
            h = remaining
    raise RuntimeError(
        f"adaptive solver did not reach t_end={t_e} in {MAX_TRIALS} trial steps; loosen atol/rtol"
    )
