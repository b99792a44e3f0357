"""A diffusers scheduler running dpmsolver's update rules: `DPMSolverScheduler`.

    pipe.scheduler = DPMSolverScheduler.from_config(pipe.scheduler.config)

It implements the scheduler protocol that diffusers pipelines call (set_timesteps, timesteps,
scale_model_input, step, add_noise, order, set_begin_index). Every step applies a
coefficient rule from `dpmsolver.coefficients`, computed once in `set_timesteps` in float64,
so its trajectory is the one `dpmsolver.sample` computes on the same grid.

What it does differently from diffusers' DPMSolverMultistepScheduler:
  - the network is evaluated at the exact (fractional) timestep the solver assumes;
  - by default the run ends at the authors' end point t = 1/N (the training schedule's
    smallest noise level) instead of jumping to sigma = 0 from t ~ 90/1000 in one
    first-order step (`final_noise_level="zero"` gives that jump when asked);
  - `step` reads nothing back from the device and keeps only the last `solver_order`
    model outputs;
  - learned-variance outputs (twice the channels) are split at half their channels.
diffusers is an optional dependency, imported only by this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_dpmsolver_multistep import (
    betas_for_alpha_bar,
    rescale_zero_terminal_snr,
)
from diffusers.schedulers.scheduling_utils import (
    KarrasDiffusionSchedulers,
    SchedulerMixin,
    SchedulerOutput,
)
from torch import Tensor

from .checks import check_choice, check_int
from .core import (
    DPM_ALGORITHMS,
    SKIP_TYPES,
    DiscreteVPSchedule,
    DynamicThresholding,
    Level,
    Linear,
    SolverOptions,
    check_grid,
    combine,
    sigmas_to_times,
    time_grid,
    to_data,
    to_noise,
)
from .core.coefficients import jump_to_zero
from .core.kernel import remember
from .core.plan import (
    multistep_orders,
    multistep_plan,
    multistep_rule,
    singlestep_outer,
    singlestep_stage,
)

__all__ = ["DPMSolverScheduler"]

PREDICTION_TYPES = {"epsilon": "noise", "sample": "x0", "v_prediction": "v"}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


@dataclass(frozen=True)
class _Call:
    """What step() does with the model output at one timestep.

    The output m joins `history`; the returned sample is `rule` applied to the state
    saved at the start of the current step (singlestep) or the current sample (multistep).
    """

    level: Level
    rule: Linear
    starts_step: bool  # singlestep: this call begins a step (the state to keep)
    # First-order rule to the next call's level, used when sampling begins here
    # without the history the rule needs (img2img: set_begin_index inside the grid).
    restart: Linear | None
    # multistep with a corrector: re-does this call's step once the next call's output
    # (at the predicted state) arrives.
    correction: Linear | None = None


class DPMSolverScheduler(SchedulerMixin, ConfigMixin):  # type: ignore[misc]
    """DPM-Solver / DPM-Solver++ as a diffusers scheduler.

    Config (beyond the training schedule: num_train_timesteps, beta_start, beta_end,
    beta_schedule, trained_betas, rescale_betas_zero_snr):
        algorithm_type: 'dpmsolver++' (data form; use with guidance) or 'dpmsolver'.
        solver_order: 1, 2 or 3.
        method: 'multistep' (one call per step) or 'singlestep' (orders mixed so the
            number of calls is num_inference_steps).
        skip_type: 'time_uniform', 'logSNR', 'time_quadratic' or 'karras'.
        prediction_type: 'epsilon', 'sample' or 'v_prediction'.
        solver_type: 'dpmsolver' or 'taylor'.
        thresholding, dynamic_thresholding_ratio, sample_max_value: dynamic thresholding
            of x0_pred (dpmsolver++ only; pixel-space models).
        lower_order_final: multistep with fewer than 15 steps lowers the order at the end
            (the core's `lower_order_final_below`).
        final_step_first_order: take the last step with first order (DDIM).
        final_noise_level: 'last' ends at the training schedule's smallest noise level
            t = 1/N (the authors' end point); 'zero' makes the last step a jump to sigma = 0
            (returns x0_pred), as diffusers' schedulers do.
        denoise_to_zero: with final_noise_level='last', one more model call at t = 1/N
            returns its x0_pred.
        corrector: multistep only: the UniC corrector at no extra call ('off', 'all' or
            'low_noise', the second half of the steps); see `dpmsolver.sample`. With
            solver_order=2, corrector='all' and corrector_variant='bh2' this equals
            diffusers' UniPCMultistepScheduler (solver_type='bh2').
        corrector_variant: 'bh2' (B(h) = e^h - 1) or 'bh1' (B(h) = h).
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]  # noqa: RUF012 (diffusers' API)
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Any = None,
        prediction_type: str = "epsilon",
        algorithm_type: str = "dpmsolver++",
        solver_order: int = 2,
        method: str = "multistep",
        skip_type: str = "time_uniform",
        solver_type: str = "dpmsolver",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        lower_order_final: bool = True,
        final_step_first_order: bool = False,
        final_noise_level: str = "last",
        denoise_to_zero: bool = False,
        rescale_betas_zero_snr: bool = False,
        corrector: str = "off",
        corrector_variant: str = "bh2",
    ) -> None:
        check_int("num_train_timesteps", num_train_timesteps, 2)
        check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
        check_choice("prediction_type", prediction_type, tuple(PREDICTION_TYPES))
        check_choice("algorithm_type", algorithm_type, DPM_ALGORITHMS)
        check_int("solver_order", solver_order, 1, 3)
        check_choice("method", method, ("multistep", "singlestep"))
        check_choice("skip_type", skip_type, SKIP_TYPES)
        check_choice("final_noise_level", final_noise_level, ("last", "zero"))
        # The solver keys are the core's options (checked there, with the same messages).
        self._solver = SolverOptions.of(
            algorithm=algorithm_type,
            order=solver_order,
            method=method,
            skip_type=skip_type,
            solver_type=solver_type,
            lower_order_final=lower_order_final,
            corrector=corrector,
            corrector_variant=corrector_variant,
        )
        if thresholding and algorithm_type != "dpmsolver++":
            raise ValueError("thresholding needs algorithm_type='dpmsolver++'")
        if denoise_to_zero and final_noise_level == "zero":
            raise ValueError("denoise_to_zero needs final_noise_level='last'")
        n = num_train_timesteps
        if trained_betas is not None:
            betas = torch.as_tensor(trained_betas, dtype=torch.float64)
        elif beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
        elif beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
        else:
            betas = betas_for_alpha_bar(n).to(torch.float64)
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        alphas_cumprod = torch.cumprod(1.0 - betas, 0)
        # Zero terminal SNR makes alpha_T = 0; the lambda < -5.1 safeguard drops that tail.
        alphas_cumprod = alphas_cumprod.clamp(min=2.0**-24)
        self.noise_schedule = DiscreteVPSchedule(alphas_cumprod=alphas_cumprod)
        # The training schedule as diffusers' schedulers expose it (float32).
        self.betas = betas.to(torch.float32)
        self.alphas = (1.0 - betas).to(torch.float32)
        self.alphas_cumprod = alphas_cumprod.to(torch.float32)
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.timesteps = torch.zeros(0)
        self._host_timesteps: list[float] = []
        self.sigmas = torch.zeros(0)
        self._calls: list[_Call] = []
        self._history: list[Tensor] = []
        self._step_start: Tensor | None = None
        self._pending: tuple[Linear, Tensor] | None = None  # correction and its start
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self._thresholding = (
            DynamicThresholding(dynamic_thresholding_ratio, sample_max_value)
            if thresholding
            else None
        )

    @property
    def _cfg(self) -> Any:
        return self.config  # a FrozenDict with attribute access

    # -- the diffusers protocol -------------------------------------------------------------

    @property
    def step_index(self) -> int | None:
        """Index of the next call of step() in `timesteps`."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """Index of the first timestep, set by pipelines (img2img) with set_begin_index."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start sampling at timesteps[begin_index] (img2img / strength)."""
        check_int("begin_index", begin_index, 0)
        self._begin_index = begin_index

    def __len__(self) -> int:
        return int(self._cfg.num_train_timesteps)

    def scale_model_input(self, sample: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """VP models take x_t as it is."""
        return sample

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[float] | Tensor | None = None,
        sigmas: list[float] | Tensor | None = None,
    ) -> None:
        """Build the time grid and every step's coefficients.

        Give `num_inference_steps` (model calls), or custom `timesteps` (the training
        timesteps to evaluate the network at, descending) or `sigmas` (VE noise levels
        sigma_t / alpha_t, descending; a final 0 asks for the jump to sigma = 0).
        """
        cfg = self._cfg
        ns = self.noise_schedule
        given = [v is not None for v in (num_inference_steps, timesteps, sigmas)]
        if sum(given) != 1:
            raise ValueError("give exactly one of num_inference_steps, timesteps or sigmas")
        to_zero = cfg.final_noise_level == "zero"
        if timesteps is not None or sigmas is not None:
            if timesteps is not None:
                values = check_grid("timesteps", timesteps, min_len=1)
            elif sigmas is not None:
                values = check_grid("sigmas", sigmas, positive=True, final_zero=True, min_len=1)
            if sigmas is not None:
                to_zero = bool(values[-1] == 0)
                values = values[:-1] if to_zero else values
                times = sigmas_to_times(ns, values)
            else:
                times = (values + 1.0) / ns.total_n
            if not (ns.contains(float(times.max())) and ns.contains(float(times.min()))):
                raise ValueError(
                    f"timesteps / sigmas reach beyond the training schedule: times "
                    f"{float(times.max()):.6g} to {float(times.min()):.6g}, allowed "
                    f"{ns.time_range()}"
                )
            if not to_zero and float(times[-1]) <= ns.t_min:
                to_zero = True  # already at the smallest level: the last step goes to 0
            grid = times if to_zero else torch.cat([times, torch.tensor([ns.t_min])])
            self._plan(grid.tolist(), to_zero, [cfg.solver_order] * (grid.numel() - 1), True)
        else:
            check_int("num_inference_steps", num_inference_steps, 1)
            self._plan_by_count(int(num_inference_steps), to_zero)  # type: ignore[arg-type]
        if cfg.denoise_to_zero:
            level = ns.levels([ns.t_min])[0]
            self._calls.append(_Call(level, jump_to_zero(self._solver.form, level), True, None))
        # The network's time input at each call (levels always carry it once planned).
        model_times = [
            float(self.noise_schedule.model_time(c.level.t))
            if c.level.model_t is None
            else c.level.model_t
            for c in self._calls
        ]
        # float64 so the network sees the exact level the solver assumes (MPS has no float64).
        on_mps = torch.device(device).type == "mps" if device is not None else False
        self.timesteps = torch.tensor(
            model_times, dtype=torch.float32 if on_mps else torch.float64, device=device
        )
        self._host_timesteps = model_times
        # VE noise levels sigma_t / alpha_t of every call, then of where the run ends.
        ve = [c.level.sigma / c.level.alpha for c in self._calls]
        end = ns.levels([ns.t_min])[0]
        final = 0.0 if to_zero or cfg.denoise_to_zero else end.sigma / end.alpha
        self.sigmas = torch.tensor([*ve, final], dtype=torch.float64, device=device)
        self.num_inference_steps = len(self._calls)
        self._history = []
        self._step_start = None
        self._pending = None
        self._step_index = None
        self._begin_index = None

    def _plan_by_count(self, n: int, to_zero: bool) -> None:
        cfg = self._cfg
        ns = self.noise_schedule
        order = cfg.solver_order
        if cfg.method == "multistep":
            # With the jump to zero the last call sits at the end of an (n - 1)-step grid.
            intervals = n - 1 if to_zero else n
            grid = (
                time_grid(ns, cfg.skip_type, ns.t_max, ns.t_min, intervals).tolist()
                if intervals > 0
                else [ns.t_max]
            )
            self._plan(grid, to_zero, [order] * intervals, False)
            return
        steps = n - 1 if to_zero else n
        if steps == 0:
            self._plan([ns.t_max], to_zero, [], False)
            return
        outer, orders = singlestep_outer(
            ns, "singlestep", steps, order, cfg.skip_type, ns.t_max, ns.t_min
        )
        self._plan(outer, to_zero, orders, False)

    def _plan(self, grid: list[float], to_zero: bool, orders: list[int], given: bool) -> None:
        """Calls for a grid of step boundaries, planned by the core; a final jump to zero if
        `to_zero`. Each call also gets the first-order rule to the end of its step, for a
        run that begins there without the earlier outputs its rule needs."""
        cfg = self._cfg
        ns = self.noise_schedule
        solver = self._solver
        form = solver.form
        calls: list[_Call] = []
        if cfg.method == "multistep":
            steps = len(grid) - 1
            orders = multistep_orders(steps, solver.order, solver.lowers_final_order(steps))
            if cfg.final_step_first_order and steps > 0 and not to_zero:
                orders[-1] = 1
            # With the jump to zero another call follows the last step: it is corrected.
            plan = multistep_plan(ns, solver, grid, orders, correct_last=to_zero)
            levels = plan.levels
            for i, (rule, correction) in enumerate(zip(plan.rules, plan.corrections, strict=True)):
                restart = multistep_rule(solver, [levels[i], levels[i + 1]])
                calls.append(_Call(levels[i], rule, True, restart, correction))
        else:
            levels = ns.levels(grid)
            inner = "logSNR" if given else cfg.skip_type
            for i, k in enumerate(orders):
                stage_levels, rules = singlestep_stage(
                    ns, form, cfg.solver_type, inner, grid[i], grid[i + 1], k
                )
                ends = [lv.t for lv in stage_levels[1:]] + [grid[i + 1]]
                for j, (lvl, rule) in enumerate(zip(stage_levels, rules, strict=True)):
                    restart = None
                    if j > 0:  # first order to the next call's level
                        restart = singlestep_stage(
                            ns, form, cfg.solver_type, inner, lvl.t, ends[j], 1
                        )[1][0]
                    calls.append(_Call(lvl, rule, j == 0, restart))
        if to_zero:
            calls.append(_Call(levels[-1], jump_to_zero(form, levels[-1]), True, None))
        self._calls = calls

    def step(
        self,
        model_output: Tensor,
        timestep: float | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[Tensor]:
        """One model output at `timestep` in, the next sample out.

        The first call starts at `begin_index` if a pipeline set one, else at the index of
        `timestep` in `timesteps` (so a loop over `timesteps[k:]` starts at step k); every
        call checks that `timestep` is the one planned next. A timestep taken from
        `timesteps` (the usual `for t in scheduler.timesteps`) is recognised without
        reading the device; another device tensor is read once, at the first call only.
        """
        if not self._calls:
            raise ValueError("call set_timesteps before step")
        if self._step_index is None:
            if self._begin_index is None:
                self._step_index = self.index_for_timestep(timestep)
            else:
                self._step_index = self._begin_index
        i = self._step_index
        if i >= len(self._calls):
            raise ValueError(f"step called {i + 1} times; set_timesteps planned {len(self._calls)}")
        self._check_timestep(timestep, i)
        call = self._calls[i]
        if (
            model_output.shape[1] == 2 * sample.shape[1]
            and model_output.shape[2:] == sample.shape[2:]
        ):
            # Learned variance: keep the mean, contiguous so it rounds as an unsplit output
            # would (CPU half kernels round strided inputs differently).
            model_output = model_output[:, : sample.shape[1]].contiguous()
        if model_output.shape != sample.shape:
            raise ValueError(
                f"model_output has shape {tuple(model_output.shape)} at step {i}, expected "
                f"{tuple(sample.shape)}"
            )
        m = self._convert(model_output, sample, call.level)
        if self._cfg.method == "multistep":
            if self._pending is not None:
                # m was computed at the predicted state: correct the step that made it.
                correction, start = self._pending
                sample = combine(correction, start, [m, *self._history])
                self._pending = None
            remember(self._history, m, self._solver.order)
            rule = call.rule
            if len(self._history) < len(rule.cm) and call.restart is not None:
                rule = call.restart  # sampling began here: no earlier outputs yet
            elif call.correction is not None:
                self._pending = (call.correction, sample)
            prev = combine(rule, sample, self._history)
        else:
            rule = call.rule
            begin = self._step_start
            if call.starts_step or begin is None or len(self._history) + 1 < len(rule.cm):
                begin, self._history = sample, []
                if not call.starts_step and call.restart is not None:
                    # Sampling began inside this step: first order to the next call's level
                    # until the next step starts.
                    rule = call.restart
            self._step_start = begin
            self._history.append(m)
            prev = combine(rule, begin, self._history)
        self._step_index = i + 1
        if not return_dict:
            return (prev,)
        return SchedulerOutput(prev_sample=prev)

    def index_for_timestep(
        self, timestep: float | Tensor, schedule_timesteps: Tensor | None = None
    ) -> int:
        """The index of `timestep` in `schedule_timesteps` (default: `timesteps`): its
        position if it is an element of that tensor, else the nearest entry within one
        training step, else a ValueError naming the timestep and the grid's range."""
        grid = self.timesteps if schedule_timesteps is None else schedule_timesteps
        if grid.numel() == 0:
            raise ValueError("call set_timesteps before step")
        own = _position_in(timestep, grid)
        if own is not None:
            return own
        value = float(timestep)  # not an element of the grid: one read of its value
        host = self._host_timesteps if schedule_timesteps is None else grid.tolist()
        nearest = min(range(len(host)), key=lambda j: abs(host[j] - value))
        if not abs(host[nearest] - value) < 1.0:
            raise ValueError(
                f"timestep {value!r} is not one of the scheduler's timesteps (from "
                f"{host[0]:.6g} down to {host[-1]:.6g}); pass one of `scheduler.timesteps`"
            )
        return nearest

    def _check_timestep(self, timestep: float | Tensor, i: int) -> None:
        """Raise ValueError unless `timestep` is timesteps[i] (within one training step).
        Checked without reading the device: a device tensor that is not an element of
        `timesteps` is not checked after the first call."""
        expected = self._host_timesteps[i]
        own = _position_in(timestep, self.timesteps)
        if own is not None:
            if own == i:
                return
            got = self._host_timesteps[own]
        elif isinstance(timestep, Tensor) and timestep.device.type != "cpu":
            return  # reading its value would wait for the device
        else:
            got = float(timestep)
            if abs(got - expected) < 1.0:
                return
        raise ValueError(
            f"step {i} expects timestep {expected:.6g} (timesteps[{i}]), got {got:.6g}; "
            "call step once per entry of scheduler.timesteps, in order (set_begin_index or "
            "start the loop at the entry to begin from)"
        )

    def _convert(self, out: Tensor, x: Tensor, level: Level) -> Tensor:
        prediction = PREDICTION_TYPES[self._cfg.prediction_type]
        if self._cfg.algorithm_type == "dpmsolver":
            return to_noise(out, x, level.alpha, level.sigma, prediction)
        x0 = to_data(out, x, level.alpha, level.sigma, prediction)
        if self._thresholding is not None:
            x0 = self._thresholding(x0)
        return x0

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """x_t = alpha_t x_0 + sigma_t noise at (possibly fractional) training timesteps,
        which must lie in the training schedule's range (checked: one read of their ends)."""
        ns = self.noise_schedule
        t = (torch.as_tensor(timesteps, device=original_samples.device).double() + 1.0) / ns.total_n
        ends = torch.stack([t.min(), t.max()]).tolist() if t.numel() else []
        if not all(math.isfinite(v) and ns.contains(v) for v in ends):
            lo, hi = ns.model_time(ns.t_min), ns.model_time(ns.t_max)
            given = [v * ns.total_n - 1.0 for v in ends]
            raise ValueError(
                f"add_noise: timesteps must lie in [{float(lo):.6g}, {float(hi):.6g}] (the "
                f"training timesteps); got {given[0]:.6g} to {given[1]:.6g}"
            )
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        alpha = ns.alpha(t).to(original_samples.dtype).reshape(shape)
        sigma = ns.sigma(t).to(original_samples.dtype).reshape(shape)
        return alpha * original_samples + sigma * noise


def _position_in(timestep: float | Tensor, grid: Tensor) -> int | None:
    """The index of `timestep` in `grid` if it is one of its elements (a view into its
    memory, as iterating over the tensor gives), found from pointers alone; else None."""
    if (
        not isinstance(timestep, Tensor)
        or timestep.dtype != grid.dtype
        or timestep.device != grid.device
        or timestep.numel() != 1
        or grid.dim() != 1
        or not grid.is_contiguous()
    ):
        return None
    offset = timestep.data_ptr() - grid.data_ptr()
    size = grid.element_size()
    if offset % size or not 0 <= offset // size < grid.numel():
        return None
    return offset // size
