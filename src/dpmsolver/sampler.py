"""The sampling loop: walks a time grid with DPM-Solver (noise form) or DPM-Solver++ (data form).

`sample` is the native entry point; `Sampler` is the same run planned once for many calls
(and for `torch.compile`). All update coefficients are computed in float64 when a setting
is first planned (see `coefficients`); the loop applies each as a few fused axpys and one
scale in the caller's dtype, and reads nothing back from the device while it runs (the
finiteness check is accumulated on the device and read once at the end).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from ._checks import check_choice, check_float, check_int
from .coefficients import (
    Form,
    Linear,
    Multistep3,
    SolverType,
    Variant,
    ipndm_update,
    multistep_update,
    sde_multistep_update,
    singlestep_tableau,
    unic_correction,
)
from .grids import SKIP_TYPES, SkipType, sigmas_to_times, singlestep_orders, time_grid
from .model import Denoiser, DiffusionModel, Target
from .schedules import Level, NoiseSchedule

__all__ = [
    "ALGORITHMS",
    "CORRECTORS",
    "METHODS",
    "Algorithm",
    "Corrector",
    "Method",
    "ModelOutputError",
    "Sampler",
    "sample",
]

Algorithm = Literal["dpmsolver++", "dpmsolver", "ipndm"]
Method = Literal["multistep", "singlestep", "singlestep_fixed", "adaptive"]
Corrector = Literal["off", "all", "low_noise"]
ALGORITHMS: tuple[str, ...] = ("dpmsolver++", "dpmsolver", "ipndm")
DPM_ALGORITHMS: tuple[str, ...] = ("dpmsolver++", "dpmsolver")  # the faces' algorithm_type
CORRECTORS: tuple[str, ...] = ("off", "all", "low_noise")
VARIANTS: tuple[str, ...] = ("bh1", "bh2")
METHODS: tuple[str, ...] = ("multistep", "singlestep", "singlestep_fixed", "adaptive")
SOLVER_TYPES: tuple[str, ...] = ("dpmsolver", "taylor")

XtCorrection = Callable[[Tensor, float, int], Tensor]
Callback = Callable[[int, float, Tensor], None]


class ModelOutputError(ValueError):
    """The model returned a wrong shape or non-finite values; says at which step and time."""


def _finite_flag(out: Tensor) -> Tensor:
    """A 0-d tensor that is finite iff `out` is (up to float32 overflow of the sum).

    One read-only reduction: NaN and Inf survive a sum, and it costs a fraction of
    isfinite(out).all(), which writes a mask and reads it again (10-20x slower on CPU).
    Half-precision sums accumulate in float32 so 65504 is no limit.
    """
    if out.dtype in (torch.float16, torch.bfloat16):
        return out.sum(dtype=torch.float32)
    return out.sum()


class _Evaluator:
    """Calls the model and checks its output."""

    def __init__(self, model: DiffusionModel, target: Target, check_finite: bool) -> None:
        self.model = model
        self.target = target
        self.check_finite = check_finite
        self._finite: list[Tensor] = []
        self._where: list[tuple[int, float]] = []

    def __call__(self, x: Tensor, level: Level, step: int, target: Target | None = None) -> Tensor:
        out = self.model(x, level, target or self.target)
        if not isinstance(out, Tensor):
            raise ModelOutputError(
                f"model returned {type(out).__name__} at step {step} (t={level.t:.6g}); "
                "expected a tensor"
            )
        if out.shape != x.shape:
            raise ModelOutputError(
                f"model output at step {step} (t={level.t:.6g}) has shape {tuple(out.shape)}, "
                f"expected the input's shape {tuple(x.shape)}"
            )
        if out.dtype != x.dtype:
            out = out.to(x.dtype)
        if self.check_finite:
            self._finite.append(_finite_flag(out))
            self._where.append((step, level.t))
        return out

    def raise_if_nonfinite(self) -> None:
        """The one read-back of the run: report the first non-finite model output."""
        if not self._finite:
            return
        ok = torch.isfinite(torch.stack(self._finite)).cpu()
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0, 0])
            step, t = self._where[i]
            raise ModelOutputError(
                f"model returned NaN or Inf at step {step} (t={t:.6g}); check the network "
                "and its inputs (dtype, conditioning)"
            )


def _combine(
    rule: Linear, x: Tensor, ms: Sequence[Tensor], generator: torch.Generator | None = None
) -> Tensor:
    """x_new = cx * (x + sum_j (cm[j]/cx) m[j] (+ (noise/cx) z)), in x's dtype.

    Passes over memory: 1 + len(ms) (+1 for noise): one allocating axpy, in-place axpys,
    and the exact linear part cx applied last. Scaling last is the exponential integrator's
    own structure (x/alpha or x/sigma moves by the increment, then the linear part maps it
    exactly), and keeps float32 at or below the reference's float32 error on every golden
    case; scaling first, or summing in float32 in the order written, does not. z is drawn
    in float32 on the generator's device, so a seed gives the same noise on any device.
    """
    cx = rule.cx
    out = torch.add(x, ms[0], alpha=rule.cm[0] / cx)
    for c, m in zip(rule.cm[1:], ms[1:], strict=True):
        out.add_(m, alpha=c / cx)
    if rule.noise:
        device = generator.device if generator is not None else x.device
        z = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
        out.add_(z.to(out.device, out.dtype), alpha=rule.noise / cx)
    if cx != 1.0:
        out.mul_(cx)
    return out


def _resolve_times(
    schedule: NoiseSchedule, t_start: float | None, t_end: float | None
) -> tuple[float, float]:
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


def _check_timesteps(schedule: NoiseSchedule, timesteps: Sequence[float] | Tensor) -> Tensor:
    grid = torch.as_tensor(
        timesteps.detach().cpu() if isinstance(timesteps, Tensor) else timesteps,
        dtype=torch.float64,
    )
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(
            f"timesteps must be 1-D with at least 2 entries, got shape {tuple(grid.shape)}"
        )
    if not bool(torch.isfinite(grid).all()):
        raise ValueError("timesteps must be finite")
    diffs = grid[1:] - grid[:-1]
    if not (bool((diffs < 0).all()) or bool((diffs > 0).all())):
        raise ValueError("timesteps must be strictly decreasing (or increasing for inversion)")
    for value in (float(grid[0]), float(grid[-1])):
        if not schedule.contains(value):
            raise ValueError(
                f"timesteps entry {value!r} is outside the schedule's time range "
                f"{schedule.time_range()}"
            )
    return grid


def sample(
    model: DiffusionModel,
    x: Tensor,
    *,
    steps: int = 20,
    order: int = 2,
    method: Method = "multistep",
    algorithm: Algorithm = "dpmsolver++",
    skip_type: SkipType = "time_uniform",
    t_start: float | None = None,
    t_end: float | None = None,
    timesteps: Sequence[float] | Tensor | None = None,
    sigmas: Sequence[float] | Tensor | None = None,
    lower_order_final: bool = True,
    lower_order_final_below: int = 15,
    denoise_to_zero: bool = False,
    solver_type: SolverType = "dpmsolver",
    atol: float = 0.0078,
    rtol: float = 0.05,
    multistep3: Multistep3 = "damped",
    eta: float = 0.0,
    corrector: Corrector = "off",
    corrector_variant: Variant = "bh2",
    analytic_first_step: bool = False,
    generator: torch.Generator | None = None,
    correcting_xt_fn: XtCorrection | None = None,
    callback: Callback | None = None,
    check_finite: bool = True,
) -> Tensor:
    """Solve the diffusion ODE from x at t_start to t_end with DPM-Solver or DPM-Solver++.

    Args:
        model: a `Denoiser` (or any `DiffusionModel`) that gives eps_pred / x0_pred.
        x: the state at t_start (x_T ~ N(0, sigma_T^2 I) for sampling); any float dtype
            and device, kept for the result.
        steps: number of model calls (NFE) for the fixed-step methods.
        order: 1, 2 or 3 (1 is DDIM); 1 to 4 for algorithm='ipndm'.
        method: 'multistep' (Adams-like, 1 call per step: DPM-Solver++(2M)/(3M)),
            'singlestep' (Runge-Kutta-like, orders mixed to use exactly `steps` calls),
            'singlestep_fixed' (steps // order steps of order `order`), or 'adaptive'
            (DPM-Solver-12 / -23 for order 2 / 3, step size from atol/rtol; ignores steps).
        algorithm: 'dpmsolver++' (data form; stable with guidance and thresholding),
            'dpmsolver' (noise form) or 'ipndm' (multistep only: Adams-Bashforth steps in
            sigma = sigma_t / alpha_t with fixed equal-step weights, orders 1-4, noise form;
            strong at 4-10 calls on polynomial / karras grids).
        skip_type: time grid: 'time_uniform', 'logSNR', 'time_quadratic', 'karras' or
            'exponential' (see `grids`).
        t_start, t_end: start and end times; default schedule.t_max and schedule.t_min.
            t_start < t_end runs the ODE from data to noise (inversion).
        timesteps: a user-given grid of times (strictly monotone, inside the schedule's
            range) used instead of steps / skip_type / t_start / t_end. Multistep takes one
            step per interval; singlestep methods one step of order `order` per interval,
            with intermediate points uniform in lambda.
        sigmas: the same as `timesteps`, given as noise levels sigma_t / alpha_t (the VE /
            k-diffusion convention), positive and strictly monotone; levels within 1e-4
            (relative) outside the schedule's range are moved onto its ends, so rounded
            published grids (`align_your_steps`) fit.
        lower_order_final: multistep runs with fewer than `lower_order_final_below` steps
            lower the order of their final steps (the last step of a time-uniform grid is
            by far the largest in lambda); this stabilises few-step sampling.
        lower_order_final_below: 15 by default, as the authors' documentation and
            diffusers say; the authors' code uses 10 (`DPM_Solver` keeps 10). On the exact
            digits model at 10 steps, time-uniform grid, 15 cuts the error of 2M 1.8x and
            of 3M 7x.
        denoise_to_zero: finish with x = x0_pred(x, t_end) (one more model call).
        solver_type: 'dpmsolver' or 'taylor' form of the second/third-order corrections.
        atol, rtol: tolerances of the adaptive method.
        multistep3: the third-order multistep rule: 'damped' (the authors': second
            difference at half its Taylor weight; global order 2, lowest error at 10-40
            steps on time-uniform grids) or 'exact' (global order 3; better with logSNR
            grids and many steps).
        eta: noise of the reverse SDE, 0 (the ODE, default) to 1 (SDE-DPM-Solver++, the
            "DPM-Solver++(2M) SDE" sampler); needs algorithm='dpmsolver++', method
            'multistep' and order 1 or 2.
        corrector: UniC corrector after each multistep step, at no extra model call (the
            output at the predicted state, which the next step needs anyway, corrects the
            step just taken; the last step is not corrected): 'off' (default), 'all', or
            'low_noise' (only the second half of the steps: a corrector at high noise can
            hurt under large classifier-free guidance). Raises the order by one.
            dpmsolver / dpmsolver++ multistep with eta = 0 only.
        corrector_variant: B(h) of the corrector: 'bh2' (e^h - 1, default; UniPC's choice
            for guided sampling) or 'bh1' (h); they differ in order-1 corrections only.
        analytic_first_step: multistep only: take the first step without a model call,
            with x0_pred = 0 (eps_pred = x_T / sigma_T), so `steps` steps cost steps - 1
            calls. Near pure noise the network's output is that up to
            (alpha_T / sigma_T) * E[x0 | x_T], which is small for centred data (0.006 * the
            data mean on a 1000-step linear VP schedule); the call saved buys one more step.
            Needs steps >= 2 and alpha / sigma <= 0.1 at t_start. Strong at 4-10 calls.
        generator: torch.Generator for the SDE noise; a seed reproduces a sample exactly.
        correcting_xt_fn: optional (x, t, step) -> x applied after every step (and, for
            multistep, after the first model call at step 0); with a corrector, to the
            predicted state the model sees and to the corrected state.
        callback: optional (step, t, x) called at step 0 and after every step.
        check_finite: report a model output with NaN/Inf (with its step and time) at the end
            of the run; costs one sum per call (a finite output whose float32 sum overflows,
            |values| ~ 1e34, is reported too) and one read-back per run.

    Returns:
        The state at t_end, in x's dtype and on x's device.
    """
    return Sampler(
        model,
        steps=steps,
        order=order,
        method=method,
        algorithm=algorithm,
        skip_type=skip_type,
        t_start=t_start,
        t_end=t_end,
        timesteps=timesteps,
        sigmas=sigmas,
        lower_order_final=lower_order_final,
        lower_order_final_below=lower_order_final_below,
        denoise_to_zero=denoise_to_zero,
        solver_type=solver_type,
        atol=atol,
        rtol=rtol,
        multistep3=multistep3,
        eta=eta,
        corrector=corrector,
        corrector_variant=corrector_variant,
        analytic_first_step=analytic_first_step,
        correcting_xt_fn=correcting_xt_fn,
        callback=callback,
        check_finite=check_finite,
    )(x, generator=generator)


@dataclass(frozen=True)
class _Plan:
    """What a run needs that does not depend on x: the levels and the update rules.

    multistep: `levels` is the grid and `rules[i]` takes levels[i] to levels[i + 1];
    `corrections[i]` (if not None) re-does that step with the output at levels[i + 1];
    singlestep: `levels` holds the outer times and `stages[i]` the evaluation levels and
    tableau of step i. Built in float64 on the host, once per setting (see `_plan`).
    """

    levels: list[Level]
    rules: list[Linear] = field(default_factory=list)
    corrections: list[Linear | None] = field(default_factory=list)
    stages: list[tuple[list[Level], list[Linear]]] = field(default_factory=list)


# Plans by schedule and setting: repeated runs (batches, benchmarks, pipelines) skip the
# float64 planning, which costs as much as a 20-step loop on a small latent.
_PLANS: weakref.WeakKeyDictionary[NoiseSchedule, dict[tuple[object, ...], _Plan]] = (
    weakref.WeakKeyDictionary()
)
_PLANS_PER_SCHEDULE = 32
# analytic_first_step's largest alpha / sigma at t_start: its x0_pred = 0 moves the first
# step by alpha_1 * (1 - e^-h) * E[x0 | x_T], negligible only from near pure noise.
_AFS_MAX_SNR = 0.1


def _plan(schedule: NoiseSchedule, key: tuple[object, ...], build: Callable[[], _Plan]) -> _Plan:
    plans = _PLANS.setdefault(schedule, {})
    plan = plans.get(key)
    if plan is None:
        plan = build()
        if len(plans) >= _PLANS_PER_SCHEDULE:
            del plans[next(iter(plans))]
        plans[key] = plan
    return plan


class Sampler:
    """A planned DPM-Solver run: arguments checked and coefficients computed once, then
    called on any number of starting states.

    `Sampler(model, **options)(x)` equals `sample(model, x, **options)` (same options, see
    `sample`; the generator is given per call). The loop reads nothing back from the device
    and only calls the model and fused tensor ops, so `compile()` can hand it to
    `torch.compile(fullgraph=True)` and it can be captured in a CUDA graph.
    """

    def __init__(
        self,
        model: DiffusionModel,
        *,
        steps: int = 20,
        order: int = 2,
        method: Method = "multistep",
        algorithm: Algorithm = "dpmsolver++",
        skip_type: SkipType = "time_uniform",
        t_start: float | None = None,
        t_end: float | None = None,
        timesteps: Sequence[float] | Tensor | None = None,
        sigmas: Sequence[float] | Tensor | None = None,
        lower_order_final: bool = True,
        lower_order_final_below: int = 15,
        denoise_to_zero: bool = False,
        solver_type: SolverType = "dpmsolver",
        atol: float = 0.0078,
        rtol: float = 0.05,
        multistep3: Multistep3 = "damped",
        eta: float = 0.0,
        corrector: Corrector = "off",
        corrector_variant: Variant = "bh2",
        analytic_first_step: bool = False,
        correcting_xt_fn: XtCorrection | None = None,
        callback: Callback | None = None,
        check_finite: bool = True,
    ) -> None:
        schedule = getattr(model, "schedule", None)
        if not isinstance(schedule, NoiseSchedule) or not callable(model):
            raise TypeError("model must be a Denoiser (or a DiffusionModel with a .schedule)")
        check_choice("method", method, METHODS)
        check_choice("algorithm", algorithm, ALGORITHMS)
        check_choice("skip_type", skip_type, SKIP_TYPES)
        check_choice("solver_type", solver_type, SOLVER_TYPES)
        check_int("order", order, 1, 4 if algorithm == "ipndm" else 3)
        check_choice("corrector", corrector, CORRECTORS)
        check_choice("corrector_variant", corrector_variant, VARIANTS)
        if algorithm == "ipndm" and method != "multistep":
            raise ValueError(f"algorithm='ipndm' needs method='multistep'; got {method!r}")
        if corrector != "off" and (method != "multistep" or algorithm == "ipndm"):
            raise ValueError(
                f"corrector={corrector!r} needs method='multistep' and algorithm 'dpmsolver++' "
                f"or 'dpmsolver'; got method={method!r}, algorithm={algorithm!r}"
            )
        check_choice("multistep3", multistep3, ("damped", "exact"))
        eta = check_float("eta", eta)
        if eta != 0.0:
            if not 0.0 < eta <= 1.0:
                raise ValueError(f"eta must lie in [0, 1]; got {eta}")
            if algorithm != "dpmsolver++" or method != "multistep" or order > 2:
                raise ValueError(
                    "eta > 0 (SDE-DPM-Solver++) needs algorithm='dpmsolver++', "
                    f"method='multistep' and order 1 or 2; got {algorithm!r}, {method!r}, {order}"
                )
            if corrector != "off":
                raise ValueError(f"corrector={corrector!r} needs eta=0; got eta={eta}")
        grid: Tensor | None = None
        if sigmas is not None:
            if timesteps is not None:
                raise ValueError("give timesteps or sigmas, not both")
            timesteps = sigmas_to_times(schedule, sigmas)
        if timesteps is not None:
            if method == "adaptive":
                raise ValueError("timesteps cannot be used with method='adaptive'")
            grid = _check_timesteps(schedule, timesteps)
            steps = grid.numel() - 1
            t_s, t_e = float(grid[0]), float(grid[-1])
        else:
            if method != "adaptive":
                check_int("steps", steps, 1)
            t_s, t_e = _resolve_times(schedule, t_start, t_end)
        form: Form = "data" if algorithm == "dpmsolver++" else "noise"
        if form == "noise" and isinstance(model, Denoiser) and model.x0_correction is not None:
            raise ValueError(
                "x0_correction (e.g. thresholding) acts on x0_pred and needs "
                f"algorithm='dpmsolver++'; got algorithm={algorithm!r}"
            )
        if not isinstance(analytic_first_step, bool):
            raise TypeError(
                f"analytic_first_step must be a bool, got {type(analytic_first_step).__name__}"
            )
        if analytic_first_step:
            if method != "multistep":
                raise ValueError(f"analytic_first_step needs method='multistep'; got {method!r}")
            if steps < 2:
                raise ValueError(
                    f"analytic_first_step needs steps >= 2 (one model call at least); got {steps}"
                )
            snr = math.exp(schedule.levels([t_s])[0].lambda_)
            if snr > _AFS_MAX_SNR:
                raise ValueError(
                    "analytic_first_step needs a start near pure noise, alpha / sigma <= "
                    f"{_AFS_MAX_SNR} at t_start; got {snr:.3g} at t_start={t_s}"
                )
        if method == "multistep" and steps < order:
            raise ValueError(f"multistep needs steps >= order; got steps={steps}, order={order}")
        if method == "singlestep_fixed" and steps < order and grid is None:
            raise ValueError(
                f"singlestep_fixed needs steps >= order; got steps={steps}, order={order}"
            )
        if method == "adaptive":
            if order not in (2, 3):
                raise ValueError(f"adaptive needs order 2 or 3; got order={order}")
            if correcting_xt_fn is not None:
                raise ValueError("correcting_xt_fn is not supported with method='adaptive'")
            atol = check_float("atol", atol, positive=True)
            rtol = check_float("rtol", rtol, positive=True)
        self.model = model
        self.schedule = schedule
        self.method = method
        self.form = form
        self.solver_type = solver_type
        self.order = order
        self.t_start, self.t_end = t_s, t_e
        self.denoise_to_zero = denoise_to_zero
        self.analytic_first_step = analytic_first_step
        self.atol, self.rtol = atol, rtol
        self.correcting_xt_fn = correcting_xt_fn
        self.callback = callback
        self.check_finite = check_finite
        self._end = schedule.levels([t_e])[0]
        grid_key = tuple(grid.tolist()) if grid is not None else None
        self._plan = _Plan([])  # adaptive plans its steps as it goes
        if method == "multistep":
            lof = lower_order_final and steps < lower_order_final_below
            self._plan = _plan(
                schedule,
                (
                    "multistep",
                    form,
                    solver_type,
                    order,
                    steps,
                    skip_type,
                    t_s,
                    t_e,
                    grid_key,
                    lof,
                    multistep3,
                    eta,
                    algorithm,
                    corrector,
                    corrector_variant,
                ),
                lambda: _multistep_plan(
                    schedule,
                    form,
                    solver_type,
                    grid if grid is not None else time_grid(schedule, skip_type, t_s, t_e, steps),
                    order,
                    lof,
                    multistep3,
                    eta,
                    algorithm == "ipndm",
                    corrector,
                    corrector_variant,
                ),
            )
        elif method != "adaptive":
            self._plan = _plan(
                schedule,
                (method, form, solver_type, order, steps, skip_type, t_s, t_e, grid_key),
                lambda: _singlestep_plan(
                    schedule, form, solver_type, method, steps, order, skip_type, t_s, t_e, grid
                ),
            )

    def __call__(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Run from x at t_start to t_end; the result has x's dtype and device."""
        _check_state(x, generator)
        ev = _Evaluator(self.model, self.form, self.check_finite)
        out = self._loop(ev, x, generator)
        ev.raise_if_nonfinite()
        return out

    def compile(self, **options: Any) -> Callable[..., Tensor]:
        """This sampler with its loop compiled by `torch.compile(fullgraph=True, **options)`.

        The model is traced with the loop, so it must be compilable too. The compiled loop
        checks only its result for NaN/Inf (one reduction, read back after the loop: a
        check per model call costs more than the update itself once compiled); if the
        result is not finite, the run is repeated eagerly with a check after every model
        call, which names the step and time. Compile time is paid on the first call.
        """
        if self.method == "adaptive":
            raise ValueError(
                "method='adaptive' reads its error estimate back every step and cannot be "
                "compiled with fullgraph=True; use a fixed-step method"
            )

        def body(x: Tensor, generator: torch.Generator | None) -> Any:
            out = self.loop(x, generator)
            return out, _finite_flag(out)

        loop = torch.compile(body, fullgraph=True, **options)

        def run(x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
            _check_state(x, generator)
            out, flag = loop(x, generator)
            if self.check_finite and not bool(torch.isfinite(flag)):
                self(x, generator=generator)  # eager, checked per call: raises with the step
                raise ModelOutputError(
                    "the compiled run's result has NaN or Inf, but an eager re-run with a "
                    "check after every model call found none; the model's non-finite "
                    "output did not recur (check the network and its inputs)"
                )
            return out

        return run

    def loop(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The loop alone: no argument checks and no NaN/Inf check, so nothing is read back
        to the host. This is what `compile()` traces, and what a CUDA graph can capture."""
        return self._loop(_Evaluator(self.model, self.form, False), x, generator)

    def _loop(self, ev: _Evaluator, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """The whole run: model calls and fused updates only (no host reads)."""
        xt_fn, callback = self.correcting_xt_fn, self.callback
        with torch.no_grad():
            if self.method == "adaptive":
                from .adaptive import adaptive_solve

                x, last = adaptive_solve(
                    ev,
                    self.schedule,
                    self.form,
                    self.solver_type,
                    x,
                    self.order,
                    self.t_start,
                    self.t_end,
                    self.atol,
                    self.rtol,
                    callback,
                )
            elif self.method == "multistep":
                x, last = _multistep(
                    ev,
                    self._plan,
                    self.order,
                    x,
                    generator,
                    xt_fn,
                    callback,
                    self.analytic_first_step,
                )
            else:
                x, last = _singlestep(ev, self._plan, x, xt_fn, callback)
            if self.denoise_to_zero:
                t_e = self.t_end
                x = ev(x, self._end, last + 1, target="data")
                if xt_fn is not None:
                    # The authors' step numbers: singlestep corrections count steps from 0.
                    x = xt_fn(x, t_e, last + 1 if self.method == "multistep" else last)
                if callback is not None:
                    callback(last + 1, t_e, x)
        return x


def _check_state(x: object, generator: object) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must have a floating dtype, got {x.dtype}")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have a batch dimension, got shape {tuple(x.shape)}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _multistep_plan(
    schedule: NoiseSchedule,
    form: Form,
    solver_type: SolverType,
    grid: Tensor,
    order: int,
    lower_final: bool,
    multistep3: Multistep3,
    eta: float,
    ipndm: bool = False,
    corrector: Corrector = "off",
    variant: Variant = "bh2",
) -> _Plan:
    """Levels of the grid and one rule per step: orders 1..order-1 to warm up, then
    `order`, and (lower_final) no higher than the number of steps left at the end; a
    corrector of the same order for the steps `corrector` selects (never the last)."""
    levels = schedule.levels(grid)
    steps = len(levels) - 1
    rules = []
    corrections: list[Linear | None] = []
    for i in range(1, steps + 1):
        k = min(order, i)
        if lower_final:
            k = min(k, steps + 1 - i)
        step_levels = [*(levels[i - 1 - j] for j in range(k)), levels[i]]
        if ipndm:
            rules.append(ipndm_update(step_levels))
        elif eta > 0:
            rules.append(sde_multistep_update(solver_type, step_levels, eta))
        else:
            rules.append(multistep_update(form, solver_type, step_levels, multistep3))
        correct = i < steps and corrects(corrector, i, steps)
        corrections.append(unic_correction(form, step_levels, variant) if correct else None)
    return _Plan(levels, rules=rules, corrections=corrections)


def _multistep(
    ev: _Evaluator,
    plan: _Plan,
    order: int,
    x: Tensor,
    generator: torch.Generator | None,
    correcting_xt_fn: XtCorrection | None,
    callback: Callback | None,
    analytic_first: bool = False,
) -> tuple[Tensor, int]:
    """Multistep DPM-Solver(++) or iPNDM: 1 model call per step, `order` outputs kept at
    most. A corrected step calls the model at the predicted state, then re-does the step
    from the previous state with that output (which the next step uses as usual).
    `analytic_first`: the first output is x0_pred = 0, i.e. eps_pred = x / sigma_T."""
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
        x_new = _combine(rule, x, history[: len(rule.cm)], generator)
        if correcting_xt_fn is not None:
            x_new = correcting_xt_fn(x_new, levels[i].t, i)
        m = None
        if corr is not None:  # re-do the step from x with the output at the prediction
            m = ev(x_new, levels[i], i)
            x_new = _combine(corr, x, [m, *history[: len(corr.cm) - 1]])
            if correcting_xt_fn is not None:
                x_new = correcting_xt_fn(x_new, levels[i].t, i)
        x = x_new  # drops the previous state before the next model call
        if callback is not None:
            callback(i, levels[i].t, x)
        if i < steps:
            history.insert(0, m if m is not None else ev(x, levels[i], i))
            del history[order:]
    return x, steps


def corrects(corrector: str, i: int, steps: int) -> bool:
    """Whether step i (1-based, of `steps`) gets the corrector: all steps, or for
    'low_noise' the second half (callers exclude a last step no call follows)."""
    return corrector == "all" or (corrector == "low_noise" and 2 * i > steps)


def _singlestep_plan(
    schedule: NoiseSchedule,
    form: Form,
    solver_type: SolverType,
    method: str,
    steps: int,
    order: int,
    skip_type: str,
    t_s: float,
    t_e: float,
    grid: Tensor | None,
) -> _Plan:
    if grid is not None:
        outer, orders, inner = grid.tolist(), [order] * steps, "logSNR"
    else:
        outer, orders = singlestep_plan(schedule, method, steps, order, skip_type, t_s, t_e)
        inner = skip_type
    stages = [
        singlestep_rules(schedule, form, solver_type, inner, outer[i], outer[i + 1], k)
        for i, k in enumerate(orders)
    ]
    return _Plan(schedule.levels(outer), stages=stages)


def singlestep_plan(
    schedule: NoiseSchedule,
    method: str,
    steps: int,
    order: int,
    skip_type: str,
    t_s: float,
    t_e: float,
) -> tuple[list[float], list[int]]:
    """Outer times and per-step orders of the singlestep methods."""
    if method == "singlestep":
        orders = singlestep_orders(steps, order)
        if skip_type == "logSNR":
            outer = time_grid(schedule, skip_type, t_s, t_e, len(orders))
        else:
            # Sub-sample the `steps`-interval grid at the cumulative orders, so each
            # step of order k spans k intervals of the fine grid.
            fine = time_grid(schedule, skip_type, t_s, t_e, steps)
            idx = [0]
            for k in orders:
                idx.append(idx[-1] + k)
            outer = fine[idx]
    else:
        orders = [order] * (steps // order)
        outer = time_grid(schedule, skip_type, t_s, t_e, len(orders))
    return outer.tolist(), orders


def singlestep_rules(
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
    h = lam[1] - lam[0]
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


def run_singlestep(
    ev: _Evaluator,
    x: Tensor,
    levels: list[Level],
    rules: list[Linear],
    step: int,
) -> tuple[Tensor, list[Tensor]]:
    """One singlestep step: a model call at each of levels[0..k-1], then the update."""
    ms = [ev(x, levels[0], step)]
    for j, rule in enumerate(rules[:-1], start=1):
        ms.append(ev(_combine(rule, x, ms), levels[j], step))
    return _combine(rules[-1], x, ms), ms


def _singlestep(
    ev: _Evaluator,
    plan: _Plan,
    x: Tensor,
    correcting_xt_fn: XtCorrection | None,
    callback: Callback | None,
) -> tuple[Tensor, int]:
    """Singlestep DPM-Solver(++): step i has order len(stages[i][0]) and as many calls."""
    outer = plan.levels
    if callback is not None:
        callback(0, outer[0].t, x)
    for i, (levels, rules) in enumerate(plan.stages):
        x, _ = run_singlestep(ev, x, levels, rules, i)
        if correcting_xt_fn is not None:
            x = correcting_xt_fn(x, outer[i + 1].t, i)
        if callback is not None:
            callback(i + 1, outer[i + 1].t, x)
    return x, len(plan.stages)
