"""Drop-in face for code written against the authors' `dpm_solver_pytorch.py`.

`NoiseScheduleVP`, `model_wrapper` and `DPM_Solver` take the reference's argument names and
defaults and give its results: switch `from dpm_solver_pytorch import ...` to
`from dpmsolver import ...`. They are thin shells over the native API (`dpmsolver.sample`,
`dpmsolver.Denoiser`, `dpmsolver.VPSchedule`).

Kept from the reference on purpose, so that samples match:
  - discrete schedules drop the table's tail where lambda < -5.1 and then re-space the
    shortened table over [1/N', 1] (N' the shortened length);
  - discrete networks get the time input 1000 * (t - 1/N') whatever the table length;
  - lower_order_final applies to multistep runs with steps < 10;
  - third-order multistep weights the second difference at half its Taylor value, so it
    converges at order 2 (native: multistep3='damped', the default; 'exact' reaches 3);
  - `sample(..., return_intermediate=True)` returns a tuple.
Changed for the better (results closer to the exact algorithm, never further):
  - every time-dependent coefficient is computed in float64 whatever `dtype` says;
  - bad input raises ValueError/TypeError instead of an assert, and a model returning
    NaN/Inf or the wrong shape is reported with its step and time.
The native API keeps the table's own spacing and time input (n = N t - 1) instead.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .checks import check_bool, check_choice, check_device, check_float, check_int
from .core import (
    DPM_ALGORITHMS,
    ClassifierFree,
    ClassifierGuidance,
    CosineVPSchedule,
    Denoiser,
    DiscreteVPSchedule,
    DynamicThresholding,
    Level,
    LinearVPSchedule,
    NoiseSchedule,
    SolverOptions,
    Target,
    corrected_x0,
    sample,
    time_grid,
)

__all__ = ["DPM_Solver", "NoiseScheduleVP", "check_times", "expand_dims", "model_wrapper"]


def expand_dims(v: Tensor, dims: int) -> Tensor:
    """Reshape v of shape (N,) to (N, 1, ..., 1) with `dims` dimensions in all."""
    return v[(...,) + (None,) * (dims - 1)]


class NoiseScheduleVP:
    """The reference's VP noise schedule: 'discrete' (betas or alphas_cumprod), 'linear'
    (continuous_beta_0, continuous_beta_1) or 'cosine' (s = 0.008, T = 0.9946).

    Methods take and return tensors: marginal_log_mean_coeff (log alpha_t), marginal_alpha,
    marginal_std (sigma_t), marginal_lambda (lambda_t) and inverse_lambda.
    """

    def __init__(
        self,
        schedule: str = "discrete",
        betas: Tensor | None = None,
        alphas_cumprod: Tensor | None = None,
        continuous_beta_0: float = 0.1,
        continuous_beta_1: float = 20.0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        check_choice("schedule", schedule, ("discrete", "linear", "cosine"))
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(
                f"dtype must be a floating torch.dtype (e.g. torch.float32); got {dtype!r}"
            )
        self.schedule = schedule
        self.dtype = dtype
        self.native: NoiseSchedule
        if schedule == "discrete":
            if betas is None and alphas_cumprod is None:
                raise ValueError("schedule='discrete' needs betas= or alphas_cumprod=")
            if betas is not None and alphas_cumprod is not None:
                raise ValueError(
                    "give betas= or alphas_cumprod=, not both: they are two ways of saying "
                    "the same schedule"
                )
            native = DiscreteVPSchedule(
                betas=betas,
                alphas_cumprod=None if betas is not None else alphas_cumprod,
                respace_after_clip=True,
                time_input_scale=1000.0,
            )
            self.native = native
            self.total_N = native.total_n
            self.T = 1.0
            self.log_alpha_array = native.log_alpha_table.reshape(1, -1).to(dtype)
            self.t_array = native.t_table.reshape(1, -1).to(dtype)
        elif schedule == "linear":
            self.native = LinearVPSchedule(continuous_beta_0, continuous_beta_1)
            self.total_N = 1000
            self.T = 1.0
            self.beta_0, self.beta_1 = continuous_beta_0, continuous_beta_1
        else:
            self.native = CosineVPSchedule()
            self.total_N = 1000
            self.T = self.native.t_max

    def _out(self, value: Tensor, like: object) -> Tensor:
        if isinstance(like, Tensor) and like.is_floating_point():
            return value.to(like.dtype)
        return value.to(self.dtype)

    def _times(self, name: str, t: Tensor) -> Tensor:
        """t as a flat tensor, its entries checked to lie in the schedule's time range (one
        read of their ends)."""
        return check_times(self.native, name, t)

    def marginal_log_mean_coeff(self, t: Tensor) -> Tensor:
        """log alpha_t."""
        return self._out(self.native.log_alpha(self._times("t", t)), t)

    def marginal_alpha(self, t: Tensor) -> Tensor:
        """alpha_t."""
        return self._out(self.native.alpha(self._times("t", t)), t)

    def marginal_std(self, t: Tensor) -> Tensor:
        """sigma_t."""
        return self._out(self.native.sigma(self._times("t", t)), t)

    def marginal_lambda(self, t: Tensor) -> Tensor:
        """lambda_t = log alpha_t - log sigma_t."""
        return self._out(self.native.lambda_(self._times("t", t)), t)

    def inverse_lambda(self, lamb: Tensor) -> Tensor:
        """t such that lambda_t = lamb."""
        values = _as_tensor("lamb", lamb).reshape(-1)
        return self._out(self.native.inverse_lambda(values), lamb)


def _as_tensor(name: str, value: object) -> Tensor:
    """A tensor, a number or a list of numbers as a tensor (float64 unless given as one),
    else a TypeError naming `name`."""
    if isinstance(value, Tensor):
        if value.device.type == "meta":
            raise ValueError(f"{name} is a meta tensor (a shape without data)")
        return value
    if isinstance(value, list | tuple):
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
            raise TypeError(
                f"{name} must be a tensor, a number or a list of numbers; got {value!r}"
            )
        return torch.tensor(value, dtype=torch.float64)
    return torch.tensor([check_float(name, value)], dtype=torch.float64)


def check_times(schedule: NoiseSchedule, name: str, t: object) -> Tensor:
    """`t` (a tensor, a number or a list of numbers) as a flat tensor whose entries lie in
    the schedule's time range, else a ValueError naming `name`, the values and the range."""
    t = _as_tensor(name, t)
    if not t.is_floating_point() and t.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name} must be a tensor of times; got dtype {t.dtype}")
    flat = t.reshape(-1)
    if flat.numel():
        lo, hi = torch.stack([flat.min(), flat.max()]).double().tolist()
        if not (schedule.contains(lo) and schedule.contains(hi)):
            got = f"{lo:.6g}" if lo == hi else f"from {lo:.6g} to {hi:.6g}"
            raise ValueError(
                f"{name}={got} lies outside the schedule's time range {schedule.time_range()}"
            )
    return flat


class _WrappedModel:
    """What `model_wrapper` returns: model_fn(x, t_continuous) -> eps_pred."""

    def __init__(self, denoiser: Denoiser, noise_schedule: NoiseScheduleVP) -> None:
        self.denoiser = denoiser
        self.noise_schedule = noise_schedule

    def __call__(self, x: Tensor, t_continuous: Tensor) -> Tensor:
        t = t_continuous.reshape(-1)
        native = self.denoiser.schedule
        alpha = expand_dims(native.alpha(t).to(x.device, x.dtype), x.dim())
        sigma = expand_dims(native.sigma(t).to(x.device, x.dtype), x.dim())
        return self.denoiser.predict(x, t, alpha, sigma, "noise")


def model_wrapper(
    model: Callable[..., Tensor],
    noise_schedule: NoiseScheduleVP,
    model_type: str = "noise",
    model_kwargs: dict[str, Any] = {},
    guidance_type: str = "uncond",
    condition: Any = None,
    unconditional_condition: Any = None,
    guidance_scale: float = 1.0,
    classifier_fn: Callable[..., Tensor] | None = None,
    classifier_kwargs: dict[str, Any] = {},
) -> _WrappedModel:
    """Wrap a network as the noise-prediction function model_fn(x, t_continuous).

    model_type: 'noise', 'x_start', 'v' or 'score'. guidance_type: 'uncond', 'classifier'
    (needs classifier_fn and condition) or 'classifier-free' (needs condition; the network
    is called as model(x, t_input, cond, **model_kwargs), once on [uncond, cond]).
    """
    if not isinstance(noise_schedule, NoiseScheduleVP):
        raise TypeError(
            f"noise_schedule must be a NoiseScheduleVP, got {type(noise_schedule).__name__}"
        )
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    check_choice("model_type", model_type, ("noise", "x_start", "v", "score"))
    check_choice("guidance_type", guidance_type, ("uncond", "classifier", "classifier-free"))
    guidance: ClassifierFree | ClassifierGuidance | None = None
    if guidance_type != "uncond" and not isinstance(guidance_scale, Tensor):
        guidance_scale = check_float("guidance_scale", guidance_scale)
    classifier_kwargs = {} if classifier_kwargs is None else classifier_kwargs
    if not isinstance(classifier_kwargs, Mapping):
        raise TypeError(
            f"classifier_kwargs must be a dict of keyword arguments; got "
            f"{type(classifier_kwargs).__name__}"
        )
    if guidance_type == "classifier":
        if classifier_fn is None:
            raise ValueError("guidance_type='classifier' needs classifier_fn, got None")
        if condition is None:
            raise ValueError("guidance_type='classifier' needs condition, got None")
        guidance = ClassifierGuidance(
            classifier_fn, guidance_scale, condition, dict(classifier_kwargs)
        )
    elif guidance_type == "classifier-free":
        if condition is None:
            raise ValueError("guidance_type='classifier-free' needs condition, got None")
        # The reference calls the conditional model alone when there is no unconditional
        # condition, whatever the scale; the native ClassifierFree refuses a scale it
        # cannot apply, so that case is passed as scale 1 (the scale still checked).
        guidance = ClassifierFree(guidance_scale, condition, unconditional_condition)
        if unconditional_condition is None:
            guidance = ClassifierFree(1.0, condition)
    prediction = "x0" if model_type == "x_start" else model_type
    denoiser = Denoiser(
        model,
        noise_schedule.native,
        prediction=prediction,  # type: ignore[arg-type]
        guidance=guidance,
        model_kwargs=model_kwargs,
    )
    return _WrappedModel(denoiser, noise_schedule)


class _CompatModel:
    """Adapts model_fn(x, t_continuous) -> eps to the native DiffusionModel protocol."""

    def __init__(
        self,
        model_fn: Callable[[Tensor, Tensor], Tensor],
        ns: NoiseScheduleVP,
        correcting_x0_fn: Callable[[Tensor, Tensor], Tensor] | None,
    ) -> None:
        self.model_fn = model_fn
        self.schedule = ns.native
        self.correcting_x0_fn = correcting_x0_fn

    def _t(self, x: Tensor, t: float) -> Tensor:
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        return torch.full((1,), t, dtype=dtype, device=x.device)

    def __call__(self, x: Tensor, level: Level, target: Target) -> Tensor:
        fn = self.model_fn
        if isinstance(fn, _WrappedModel):
            out = fn.denoiser.predict(x, level.t, level.alpha, level.sigma, target, level.model_t)
        else:
            eps = fn(x, self._t(x, level.t).expand(x.shape[0]))
            usable = isinstance(eps, Tensor) and eps.is_floating_point()
            usable = usable and eps.shape == x.shape and eps.device == x.device
            if target == "noise" or not usable:
                return eps  # a wrong output is reported by the sampler, with the step
            out = (x - level.sigma * eps) / level.alpha
        if target == "data" and self.correcting_x0_fn is not None and out.shape == x.shape:
            fixed = self.correcting_x0_fn(out, self._t(x, level.t))
            out = corrected_x0("correcting_x0_fn", fixed, out, level.t)
        return out


class DPM_Solver:
    """The reference's solver object: DPM-Solver ('dpmsolver') or DPM-Solver++
    ('dpmsolver++'), with optional x0 correction ('dynamic_thresholding' or a function
    (x0, t) -> x0) and x_t correction ((x, t, step) -> x)."""

    def __init__(
        self,
        model_fn: Callable[[Tensor, Tensor], Tensor],
        noise_schedule: NoiseScheduleVP,
        algorithm_type: str = "dpmsolver++",
        correcting_x0_fn: str | Callable[[Tensor, Tensor], Tensor] | None = None,
        correcting_xt_fn: Callable[[Tensor, Tensor, int], Tensor] | None = None,
        thresholding_max_val: float = 1.0,
        dynamic_thresholding_ratio: float = 0.995,
    ) -> None:
        if not callable(model_fn):
            raise TypeError(f"model_fn must be callable, got {type(model_fn).__name__}")
        if not isinstance(noise_schedule, NoiseScheduleVP):
            raise TypeError(
                f"noise_schedule must be a NoiseScheduleVP, got {type(noise_schedule).__name__}"
            )
        check_choice("algorithm_type", algorithm_type, DPM_ALGORITHMS)
        thresholding_max_val = check_float("thresholding_max_val", thresholding_max_val)
        if not thresholding_max_val > 0:
            raise ValueError(f"thresholding_max_val must be > 0; got {thresholding_max_val!r}")
        ratio = check_float("dynamic_thresholding_ratio", dynamic_thresholding_ratio)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"dynamic_thresholding_ratio must lie in [0, 1]; got {ratio!r}")
        dynamic_thresholding_ratio = ratio
        if isinstance(correcting_x0_fn, str):
            check_choice("correcting_x0_fn", correcting_x0_fn, ("dynamic_thresholding",))
            correcting_x0_fn = DynamicThresholding(dynamic_thresholding_ratio, thresholding_max_val)
        elif correcting_x0_fn is not None and not callable(correcting_x0_fn):
            raise TypeError("correcting_x0_fn must be None, 'dynamic_thresholding' or callable")
        if correcting_xt_fn is not None and not callable(correcting_xt_fn):
            raise TypeError("correcting_xt_fn must be None or callable")
        self.model = model_fn
        self.noise_schedule = noise_schedule
        self.algorithm_type = algorithm_type
        self.correcting_x0_fn = correcting_x0_fn
        self.correcting_xt_fn = correcting_xt_fn
        self.thresholding_max_val = thresholding_max_val
        self.dynamic_thresholding_ratio = dynamic_thresholding_ratio
        self._model = _CompatModel(model_fn, noise_schedule, correcting_x0_fn)

    def dynamic_thresholding_fn(self, x0: Tensor, t: Tensor | None = None) -> Tensor:
        """Dynamic thresholding of x0 with this solver's ratio and max value."""
        return DynamicThresholding(self.dynamic_thresholding_ratio, self.thresholding_max_val)(x0)

    def _level(self, t: Tensor | float) -> Level:
        """The level of a scalar time (a number, or a tensor whose first entry is used)."""
        native = self.noise_schedule.native
        return native.levels(check_times(native, "t", t)[:1])[0]

    def noise_prediction_fn(self, x: Tensor, t: Tensor) -> Tensor:
        """eps_pred at the scalar time t."""
        return self._model(x, self._level(t), "noise")

    def data_prediction_fn(self, x: Tensor, t: Tensor) -> Tensor:
        """x0_pred at the scalar time t, with the x0 correction applied."""
        return self._model(x, self._level(t), "data")

    def model_fn(self, x: Tensor, t: Tensor) -> Tensor:
        """The prediction this algorithm integrates: x0_pred for dpmsolver++, else eps_pred."""
        if self.algorithm_type == "dpmsolver++":
            return self.data_prediction_fn(x, t)
        return self.noise_prediction_fn(x, t)

    def get_time_steps(
        self, skip_type: str, t_T: float, t_0: float, N: int, device: torch.device | str
    ) -> Tensor:
        """N + 1 times from t_T to t_0 spaced by skip_type."""
        N = check_int("N", N, 1)
        native = self.noise_schedule.native
        t_T, t_0 = check_float("t_T", t_T), check_float("t_0", t_0)
        check_times(native, "t_T", t_T)
        check_times(native, "t_0", t_0)
        if t_T == t_0:
            raise ValueError(f"t_T and t_0 must differ; both are {t_T!r}")
        return time_grid(native, skip_type, t_T, t_0, N).to(check_device("device", device))

    def add_noise(self, x: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """x_t = alpha_t x + sigma_t noise for each time in t; shape (len(t), *x.shape),
        squeezed when t has one entry."""
        native = self.noise_schedule.native
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"x must be a floating tensor; got {got}")
        t = check_times(native, "t", t)
        allowed = ((t.shape[0], *x.shape), tuple(x.shape))
        if noise is not None and (not isinstance(noise, Tensor) or noise.shape not in allowed):
            shape = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
            raise ValueError(
                f"noise must have shape {allowed[0]} (len(t), *x.shape) or x's shape; got {shape}"
            )
        alpha_t = native.alpha(t).to(x.device, x.dtype)
        sigma_t = native.sigma(t).to(x.device, x.dtype)
        if noise is None:
            noise = torch.randn((t.reshape(-1).shape[0], *x.shape), device=x.device, dtype=x.dtype)
        xs = x.reshape((-1, *x.shape))
        xt = expand_dims(alpha_t, xs.dim()) * xs + expand_dims(sigma_t, xs.dim()) * noise
        return xt.squeeze(0) if t.reshape(-1).shape[0] == 1 else xt

    def inverse(
        self,
        x: Tensor,
        steps: int = 20,
        t_start: float | None = None,
        t_end: float | None = None,
        order: int = 2,
        skip_type: str = "time_uniform",
        method: str = "multistep",
        lower_order_final: bool = True,
        denoise_to_zero: bool = False,
        solver_type: str = "dpmsolver",
        atol: float = 0.0078,
        rtol: float = 0.05,
        return_intermediate: bool = False,
    ) -> Any:
        """Run the ODE from data at t_start (default 1/N) to noise at t_end (default T)."""
        t_0 = 1.0 / self.noise_schedule.total_N if t_start is None else t_start
        t_T = self.noise_schedule.T if t_end is None else t_end
        return self.sample(
            x, steps, t_0, t_T, order, skip_type, method, lower_order_final, denoise_to_zero,
            solver_type, atol, rtol, return_intermediate,
        )  # fmt: skip

    def sample(
        self,
        x: Tensor,
        steps: int = 20,
        t_start: float | None = None,
        t_end: float | None = None,
        order: int = 2,
        skip_type: str = "time_uniform",
        method: str = "multistep",
        lower_order_final: bool = True,
        denoise_to_zero: bool = False,
        solver_type: str = "dpmsolver",
        atol: float = 0.0078,
        rtol: float = 0.05,
        return_intermediate: bool = False,
        timesteps: Any = None,
        solver: Any = None,
    ) -> Any:
        """Sample from x at t_start (default T) to t_end (default 1/N); see `dpmsolver.sample`.

        Returns x_end, or (x_end, intermediates) with return_intermediate=True.
        `timesteps` (an extension): a list of times to step through instead of steps,
        skip_type, t_start and t_end, e.g. `dpmsolver.optimize_time_grid(...).times`.
        `solver` (an extension): a tuned solver (`dpmsolver.optimize_solver(...)`), run
        instead of the other solver arguments (which must keep their defaults) and of this
        DPM_Solver's algorithm_type (the solver has its own algorithm), on the times of
        the model it was tuned for; this noise schedule must be that model's (checked).
        """
        return_intermediate = check_bool("return_intermediate", return_intermediate)
        if timesteps is not None and solver is None:
            _keep_defaults(
                "timesteps sets the grid",
                steps=(steps, 20),
                t_start=(t_start, None),
                t_end=(t_end, None),
                skip_type=(skip_type, "time_uniform"),
            )
        if return_intermediate and method == "adaptive":
            raise ValueError("return_intermediate=True is not supported with method='adaptive'")
        intermediates: list[Tensor] = []

        def keep(step: int, t: float, x_t: Tensor) -> None:
            # The reference records the starting point only for multistep.
            if step > 0 or method == "multistep":
                intermediates.append(x_t)

        xt_fn = self.correcting_xt_fn
        time_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32

        def correct_xt(xx: Tensor, t: float, step: int) -> Tensor:
            if xt_fn is None:  # internal
                raise TypeError("no correcting_xt_fn")
            return xt_fn(xx, torch.full((1,), t, dtype=time_dtype, device=xx.device), step)

        hooks: dict[str, Any] = dict(
            correcting_xt_fn=None if xt_fn is None else correct_xt,
            callback=keep if return_intermediate else None,
        )
        if solver is not None:
            _keep_defaults(
                "solver (a tuned solver) sets the grid and the solver",
                steps=(steps, 20),
                t_start=(t_start, None),
                t_end=(t_end, None),
                order=(order, 2),
                skip_type=(skip_type, "time_uniform"),
                method=(method, "multistep"),
                lower_order_final=(lower_order_final, True),
                denoise_to_zero=(denoise_to_zero, False),
                solver_type=(solver_type, "dpmsolver"),
                atol=(atol, 0.0078),
                rtol=(rtol, 0.05),
                timesteps=(timesteps, None),
            )
            check = getattr(solver, "check_schedule", None)
            if not callable(check):
                raise TypeError(
                    f"solver must be a TunedSolver (optimize_solver); got {type(solver).__name__}"
                )
            check(self.noise_schedule.native, "noise_schedule")
            out = sample(self._model, x, solver=solver, **hooks)
        else:
            options = self._options(
                steps, t_start, t_end, order, skip_type, method, lower_order_final,
                denoise_to_zero, solver_type, atol, rtol, timesteps,
            )  # fmt: skip
            out = sample(self._model, x, options, **hooks)
        return (out, intermediates) if return_intermediate else out

    def _options(
        self,
        steps: int,
        t_start: float | None,
        t_end: float | None,
        order: int,
        skip_type: str,
        method: str,
        lower_order_final: bool,
        denoise_to_zero: bool,
        solver_type: str,
        atol: float,
        rtol: float,
        timesteps: Any,
    ) -> SolverOptions:
        """The reference's arguments as native options (checked there, with the allowed
        values); its lower-order-final threshold is 10 steps, not the native 15."""
        t_0 = 1.0 / self.noise_schedule.total_N if t_end is None else t_end
        t_T = self.noise_schedule.T if t_start is None else t_start
        grid: dict[str, Any] = (
            dict(steps=steps, skip_type=skip_type, t_start=t_T, t_end=t_0)
            if timesteps is None
            else dict(timesteps=timesteps)
        )
        if method == "adaptive":
            # The reference's adaptive method chooses its own steps and ignores `steps`.
            check_int("steps", steps, 1)
            grid.pop("steps", None)
        # The reference ignores the tolerances outside 'adaptive'; the native options
        # refuse them there, so they are passed only where they apply.
        tolerances: dict[str, Any] = dict(atol=atol, rtol=rtol) if method == "adaptive" else {}
        return SolverOptions.of(
            order=order,
            method=method,
            algorithm=self.algorithm_type,
            lower_order_final=lower_order_final,
            denoise_to_zero=denoise_to_zero,
            lower_order_final_below=10,
            solver_type=solver_type,
            multistep3="damped",
            **grid,
            **tolerances,
        )


def _keep_defaults(what: str, **given: tuple[Any, Any]) -> None:
    """ValueError naming the arguments (name=(value, default)) changed from their defaults
    beside an argument that sets them (`what`)."""
    changed = [k for k, (value, default) in given.items() if value != default]
    if changed:
        raise ValueError(f"{what}; {', '.join(changed)} must keep their defaults with it")
