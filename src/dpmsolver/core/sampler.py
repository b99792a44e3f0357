"""The native entry points: `sample` and `Sampler` (the same run, planned once).

Both take the solver options as keywords (or a `SolverOptions` value; see there for every
option), check them once, and get the run's update coefficients from the plan cache
(`plan`: float64, computed once per schedule and setting). The loop applies each rule as a
few fused axpys and one scale in the caller's dtype, and reads nothing back from the device
while it runs (the finiteness check is accumulated on the device and read once at the end).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..checks import check_bool
from .adaptive import adaptive_solve
from .kernel import Evaluator, ModelOutputError, finite_flag, like_x, tensor_version
from .loops import Callback, NoiseSampler, XtCorrection, noise_hook, run_plan
from .model import Denoiser, DiffusionModel, check_model
from .options import SolverOptions
from .plan import Plan
from .planning import adaptive_end, make_plan
from .schedules import NoiseSchedule
from .stepnoise import StepNoise
from .stepper import Hooks

__all__ = ["Sampler", "check_state", "sample"]


def sample(
    model: DiffusionModel,
    x: Tensor,
    options: SolverOptions | None = None,
    *,
    generator: torch.Generator | None = None,
    correcting_xt_fn: XtCorrection | None = None,
    callback: Callback | None = None,
    check_finite: bool = True,
    noise_sampler: NoiseSampler | None = None,
    solver: Any = None,
    **solver_options: Any,
) -> Tensor:
    """Solve the diffusion ODE from x at t_start to t_end with DPM-Solver or DPM-Solver++.

    DPM-Solver++(2M) by default: the data-form multistep rule of order 2, one model call
    per step, on `steps` = 20 steps of a time-uniform grid. The update of each step is the
    exponential integrator x_t = (sigma_t / sigma_s) x_s + sigma_t Int e^lambda x0_pred
    dlambda with x0_pred expanded in lambda (see `coefficients` for every rule).

    Args:
        model: a `Denoiser` (or any `DiffusionModel`) that gives eps_pred / x0_pred.
        x: the state at t_start (x_T ~ N(0, sigma_T^2 I) for sampling); any float dtype
            and device, kept for the result.
        options: a `SolverOptions` value; keywords in `solver_options` override its fields.
        solver: instead of `options`, a tuned value with a `solver()` method
            (`dpmsolver.TunedSolver` from `optimize_solver`, or a `TunedGrid`): its grid,
            solver options and per-step coefficients.
        generator: torch.Generator for the SDE noise; a seed reproduces a sample exactly.
        correcting_xt_fn: optional (x, t, step) -> x applied after every step (and, for
            multistep, after the first model call at step 0); with a corrector, to the
            predicted state the model sees and to the corrected state.
        callback: optional (step, t, x) called at step 0 and after every step.
        noise_sampler: eta > 0 only: (t_s, t_t) -> the standard normal noise of the step
            from t_s to t_t, of x's shape (k-diffusion's noise_sampler; e.g. a Brownian tree,
            so that the noise does not depend on the grid). Default: drawn from `generator`.
        check_finite: report a model output with NaN/Inf (with its step and time) at the end
            of the run; costs one sum per call (a finite output whose float32 sum overflows,
            |values| ~ 1e34, is reported too) and one read-back per run.
        **solver_options: the solver options by name: steps, order, method, algorithm,
            skip_type, t_start, t_end, timesteps, sigmas, lower_order_final,
            lower_order_final_below, denoise_to_zero, solver_type, atol, rtol,
            multistep3, eta, ancestral, cfg_pp, corrector, corrector_variant,
            analytic_first_step, coefficients (their meaning, default and allowed values:
            `SolverOptions`).

    Returns:
        The state at t_end, in x's dtype and on x's device.
    """
    return Sampler(
        model,
        options,
        correcting_xt_fn=correcting_xt_fn,
        callback=callback,
        check_finite=check_finite,
        noise_sampler=noise_sampler,
        solver=solver,
        **solver_options,
    )(x, generator=generator)


class Sampler:
    """A planned DPM-Solver run: arguments checked and coefficients computed once, then
    called on any number of starting states.

    `Sampler(model, **options)(x)` equals `sample(model, x, **options)` (same arguments,
    see `sample`, `solver=` a tuned solver included; the generator is given per call).
    The loop reads nothing back from the device and only calls the model and fused tensor
    ops, so `compile()` can hand it to `torch.compile(fullgraph=True)` and it can be
    captured in a CUDA graph.

    Attributes:
        model: the model the run calls.
        schedule: the model's noise schedule.
        options: the `SolverOptions` of the run.
        plan: its levels and update rules (`t_start`, `t_end` resolved).
    """

    def __init__(
        self,
        model: DiffusionModel,
        options: SolverOptions | None = None,
        *,
        correcting_xt_fn: XtCorrection | None = None,
        callback: Callback | None = None,
        check_finite: bool = True,
        noise_sampler: NoiseSampler | None = None,
        solver: Any = None,
        **solver_options: Any,
    ) -> None:
        schedule = check_model(model).schedule
        if solver is not None and options is not None:
            raise TypeError("give options or solver (a tuned solver), not both")
        if solver is not None and not (
            isinstance(solver, SolverOptions) or callable(getattr(solver, "solver", None))
        ):
            raise TypeError(
                "solver must be a tuned solver (a TunedSolver or TunedGrid, with a solver() "
                f"method) or a SolverOptions; got {type(solver).__name__}"
            )
        if solver is not None and not isinstance(solver, SolverOptions):
            grid = sorted(k for k in solver_options if k in _SET_BY_A_TUNED_SOLVER)
            if grid:
                raise ValueError(
                    f"solver (a tuned solver) sets the grid; {', '.join(grid)} cannot be given "
                    "with it"
                )
            check = getattr(solver, "check_schedule", None)
            if callable(check):
                check(schedule, "model's schedule")
        opts = SolverOptions.of(options if solver is None else solver, **solver_options)
        check_finite = check_bool("check_finite", check_finite)
        for name, fn in (
            ("correcting_xt_fn", correcting_xt_fn),
            ("callback", callback),
            ("noise_sampler", noise_sampler),
        ):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None; got {type(fn).__name__}")
        if noise_sampler is not None and opts.eta == 0:
            raise ValueError("noise_sampler draws the noise of the SDE steps; it needs eta > 0")
        if opts.method == "adaptive" and correcting_xt_fn is not None:
            raise ValueError("correcting_xt_fn is not supported with method='adaptive'")
        if opts.form == "noise" and isinstance(model, Denoiser) and model.x0_correction is not None:
            raise ValueError(
                "x0_correction (e.g. thresholding) acts on x0_pred and needs "
                f"algorithm='dpmsolver++'; got algorithm={opts.algorithm!r}"
            )
        if opts.cfg_pp and not (
            getattr(model, "gives_pair", False) and callable(getattr(model, "predict_pair", None))
        ):
            raise TypeError(
                "cfg_pp=True needs a model that gives the guided and the unconditional "
                "prediction from one call: a Denoiser with ClassifierFree(scale, cond, uncond) "
                f"guidance (or a model with predict_pair); got {type(model).__name__}"
            )
        self.model = model
        self.schedule: NoiseSchedule = schedule
        self.options = opts
        self.plan: Plan = make_plan(schedule, opts)
        self.correcting_xt_fn = None if correcting_xt_fn is None else _checked(correcting_xt_fn)
        self.callback = callback
        self.noise_sampler = noise_sampler
        self.check_finite = check_finite

    def __call__(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Run from x at t_start to t_end; the result has x's dtype and device."""
        check_state(x, generator)
        ev = Evaluator(self.model, self.options.form, self.check_finite)
        ev.note_input(x)
        out = self._run(ev, x, generator)
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
        if self.options.method == "adaptive":
            raise ValueError(
                "method='adaptive' reads its error estimate back every step and cannot be "
                "compiled with fullgraph=True; use a fixed-step method"
            )

        def body(x: Tensor, generator: torch.Generator | None) -> Any:
            out = self.loop(x, generator)
            return out, finite_flag(out)

        try:
            loop = torch.compile(body, fullgraph=True, **options)
        except (RuntimeError, TypeError, ValueError) as error:
            raise ValueError(f"torch.compile refused the options {options}: {error}") from None

        def run(x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
            check_state(x, generator)
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

    def loop(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        evaluator: Evaluator | None = None,
    ) -> Tensor:
        """The loop alone: no argument checks and no NaN/Inf check, so nothing is read back
        to the host. This is what `compile()` traces, and what a CUDA graph can capture.
        `evaluator`: call the model through this one instead (e.g. one that accumulates the
        finiteness check on the device; reading it is then the caller's)."""
        check_state(x, generator)  # types, shapes and devices: nothing read back
        if evaluator is not None and (
            not isinstance(evaluator, Evaluator) or evaluator.target != self.options.form
        ):
            got = getattr(evaluator, "target", type(evaluator).__name__)
            raise TypeError(
                f"evaluator must be an Evaluator of this run's form {self.options.form!r}; "
                f"got {got!r}"
            )
        ev = evaluator or Evaluator(self.model, self.options.form, False)
        return self._run(ev, x, generator)

    def _run(self, ev: Evaluator, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """The whole run: model calls and fused updates only (no host reads, except the
        adaptive method's error estimate)."""
        opts, plan = self.options, self.plan
        xt_fn, callback = self.correcting_xt_fn, self.callback
        noise = self.noise_sampler
        if noise is None and opts.eta > 0 and opts.method != "multistep":
            noise = StepNoise(x, generator)  # a stage's and its step's noise coupled
        hooks = Hooks(
            None if xt_fn is None else _noted(xt_fn, ev),
            None if callback is None else _watched(callback, ev.time_name),
            noise_hook(ev, noise),
        )
        # The run starts from its own copy of x: the caller's x is never handed to the
        # model or to correcting_xt_fn, which could change it in place (one pass over x;
        # made in the call, so that nothing here keeps it alive after the first step).
        with torch.no_grad():
            if opts.method != "adaptive":
                return run_plan(ev, plan, x.clone(), hooks, generator, pairs=opts.cfg_pp)
            x, last = adaptive_solve(
                ev,
                self.schedule,
                opts.form,
                opts.solver_type,
                x.clone(),
                opts.order,
                plan.t_start,
                plan.t_end,
                opts.atol,
                opts.rtol,
                hooks.callback,
            )
            if opts.denoise_to_zero:
                x = run_plan(ev, adaptive_end(plan, last), x, hooks)
        return x


# What a tuned solver sets, so that a caller cannot also give it.
_SET_BY_A_TUNED_SOLVER = ("steps", "skip_type", "t_start", "t_end", "timesteps", "sigmas")


def _checked(correcting_xt_fn: XtCorrection) -> XtCorrection:
    """correcting_xt_fn with its result checked: a tensor of x's shape, dtype and device
    (the check reads metadata only, so the compiled loop traces it)."""

    def run(x: Tensor, t: float, step: int) -> Tensor:
        out = correcting_xt_fn(x, t, step)
        return like_x("correcting_xt_fn", out, x, step, t, exact=True)

    return run


def _watched(callback: Callback, time_name: str) -> Callback:
    """callback, raising if it changes x in place (the run goes on from x): seen from x's
    version counter, on the host."""

    def run(step: int, t: float, x: Tensor) -> None:
        version = tensor_version(x)
        callback(step, t, x)
        if version is not None and x._version != version:
            raise ValueError(
                f"callback changed x in place at step {step} ({time_name}={t:.6g}); the run "
                "goes on from x: read it, or change a copy"
            )

    return run


def _noted(correcting_xt_fn: XtCorrection, ev: Evaluator) -> XtCorrection:
    """correcting_xt_fn whose results join the run's finiteness check under its own name
    (a NaN it makes is then not reported as the model's, which sees it next)."""

    def run(x: Tensor, t: float, step: int) -> Tensor:
        out = correcting_xt_fn(x, t, step)
        ev.note(out, step, t, "correcting_xt_fn")
        return out

    return run


def check_state(x: object, generator: object) -> None:
    """Raise TypeError/ValueError unless x is a floating tensor with a batch dimension and
    generator is None or a torch.Generator."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.device.type == "meta":
        raise ValueError(
            "x is a meta tensor (a shape without data); give the starting sample's values"
        )
    if not x.is_floating_point():
        raise TypeError(f"x must have a floating dtype, got {x.dtype}")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have a batch dimension, got shape {tuple(x.shape)}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
