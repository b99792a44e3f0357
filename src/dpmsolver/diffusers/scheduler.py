"""`DPMSolverScheduler`: dpmsolver's update rules behind diffusers' scheduler protocol.

    pipe.scheduler = DPMSolverScheduler.from_config(pipe.scheduler.config)

It implements what pipelines call (set_timesteps, timesteps, sigmas, scale_model_input,
step, add_noise, scale_noise, index_for_timestep, order, set_begin_index, step_index,
begin_index). `set_timesteps` computes every call's coefficient rule once, in float64,
through the core's planning functions (`calls`), and `step` hands each model output to the
core's stepper with the run's state, which the scheduler holds between calls: a run is the
one `dpmsolver.sample` computes on the same grid. What each config key means is
`config.read_config` (saved and loaded as `config_io` says); where diffusers' schedulers
place their calls is `spacing`; a tuned solver is read by `tuned`.

What it does differently from diffusers' DPMSolverMultistepScheduler:
  - the network is evaluated at the exact (fractional) timestep the solver assumes;
  - without a diffusers grid key the calls follow our `skip_type` grid and the run ends at
    the training schedule's smallest noise level t = 1/N, the authors' end point
    (`final_noise_level="zero"` / `final_sigmas_type="zero"` jump to sigma = 0);
  - `step` reads nothing back from the device and keeps only `solver_order` outputs;
  - a timestep that is not one of `timesteps` is an error, not the last step.
diffusers is an optional dependency, imported only by this package.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import (
    KarrasDiffusionSchedulers,
    SchedulerMixin,
    SchedulerOutput,
)
from torch import Tensor

from ..checks import check_bool, check_device, check_float, check_int
from ..core import (
    Level,
    ModelOutputError,
    Plan,
    SolverOptions,
)
from ..core.kernel import finite_flag
from ..core.stepper import State
from ..core.stepper import step as take_step
from .calls import Planned, flow_grid, plan_calls, vp_plan
from .config import Setup, read_config
from .config_io import TUNED_KEEPS, config_for, json_without_none, resolved_keys
from .inputs import check_step_inputs, check_steps_count, position_in
from .noising import add_noise, scale_noise
from .outputs import model_mean, to_form
from .tuned import analytic_scale, analytic_state, tuned_options

__all__ = ["DPMSolverScheduler"]


def _defaults() -> dict[str, Any]:
    """Every key of the scheduler with its default value."""
    return {
        k: p.default
        for k, p in inspect.signature(DPMSolverScheduler.__init__).parameters.items()
        if k != "self"
    }


class DPMSolverScheduler(SchedulerMixin, ConfigMixin):  # type: ignore[misc]
    """DPM-Solver / DPM-Solver++ as a diffusers scheduler, for VP and flow-matching models.

    Every key of diffusers' scheduler configs is taken with diffusers' meaning (or refused
    by name, see `dpmsolver.diffusers.config`); ours add to them:
        method: 'multistep' (one call per step) or 'singlestep' (orders mixed so the
            number of calls is num_inference_steps); a DPMSolverSinglestep config means
            'singlestep'.
        skip_type: our time grid for VP configs ('time_uniform', 'logSNR',
            'time_quadratic', 'karras', 'exponential', 'beta'), used when no diffusers grid
            key (timestep_spacing, use_*_sigmas) is given.
        final_noise_level: 'last' (the smallest training level, default; =
            final_sigmas_type 'sigma_min') or 'zero' (a last jump to sigma = 0, returning
            x0_pred); flow-matching runs always end at 0.
        final_step_first_order: = euler_at_final.
        denoise_to_zero: one more call at t = 1/N returning its x0_pred.
        corrector: 'off', 'all' or 'low_noise': the UniC corrector (no extra call); a UniPC
            config (solver_type 'bh1' / 'bh2') turns it on with that B(h), and
            disable_corrector lists steps without it.
        corrector_variant: 'bh2' or 'bh1'.
    solver_type takes diffusers' names 'midpoint' / 'heun' and the core's 'dpmsolver' /
    'taylor' (the same two second-order forms); algorithm_type 'sde-dpmsolver++' and
    'sde-dpmsolver' run the SDE rules (step's generator / variance_noise draw the noise).
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
        rescale_betas_zero_snr: bool = False,
        prediction_type: str | None = None,
        algorithm_type: str | None = None,
        predict_x0: bool | None = None,
        solver_order: int = 2,
        solver_type: str | None = None,
        method: str | None = None,
        lower_order_final: bool | None = None,
        final_step_first_order: bool | None = None,
        euler_at_final: bool | None = None,
        skip_type: str | None = None,
        timestep_spacing: str | None = None,
        steps_offset: int = 0,
        use_karras_sigmas: bool | None = None,
        use_exponential_sigmas: bool | None = None,
        use_beta_sigmas: bool | None = None,
        use_lu_lambdas: bool | None = None,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        lambda_min_clipped: float = -math.inf,
        final_noise_level: str | None = None,
        final_sigmas_type: str | None = None,
        set_alpha_to_one: bool | None = None,
        denoise_to_zero: bool = False,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        clip_sample: bool | None = None,
        clip_sample_range: float = 1.0,
        variance_type: str | None = None,
        corrector: str | None = None,
        corrector_variant: str | None = None,
        disable_corrector: list[int] | None = None,
        solver_p: Any = None,
        use_flow_sigmas: bool | None = None,
        use_diffusers_grid: bool | None = None,
        flow_shift: float | None = None,
        shift: float | None = None,
        use_dynamic_shifting: bool = False,
        base_shift: float = 0.5,
        max_shift: float = 1.15,
        base_image_seq_len: int = 256,
        max_image_seq_len: int = 4096,
        time_shift_type: str = "exponential",
        shift_terminal: float | None = None,
        invert_sigmas: bool = False,
        stochastic_sampling: bool = False,
        timestep_type: str = "discrete",
        interpolation_type: str = "linear",
        skip_prk_steps: bool | None = None,
        tuned_solver: dict[str, Any] | None = None,
    ) -> None:
        keys = dict(locals())
        keys.pop("self")
        keys.pop("__class__", None)
        keys.pop("tuned_solver")
        setup = self._configure(read_config(keys), keys, tuned_solver)
        self._setup: Setup = setup
        self.noise_schedule = setup.schedule
        self._total = int(setup.betas.numel())  # N: trained_betas may set it
        if not setup.flow:
            # The training schedule as diffusers' schedulers expose it (float32).
            self.betas = setup.betas.to(torch.float32)
            self.alphas = (1.0 - setup.betas).to(torch.float32)
            self.alphas_cumprod = setup.alphas_cumprod.to(torch.float32)
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.timesteps = torch.zeros(0)
        self.sigmas = torch.zeros(0)
        self._plan = Plan(0.0, 0.0, setup.schedule.levels([setup.schedule.t_max])[0])
        self._host_timesteps: list[float] = []
        self._time_of: dict[float, float] = {}  # a planned call's timestep -> its time
        self._afs_scale: float | None = None  # x_1 = scale x_T after an analytic first step
        self._state: State | None = None  # the stepper's state between step() calls
        self._finite: list[tuple[int, Tensor]] = []  # (step, finiteness flag of its output)
        self._step_index: int | None = None
        self._begin_index: int | None = None

    def _configure(
        self, setup: Setup, keys: dict[str, Any], tuned_solver: dict[str, Any] | None
    ) -> Setup:
        """The run's setup: the config's, or a tuned solver's grid, options and coefficients
        (`from_tuned`); the keys the config saves as used registered."""
        self._tuned: SolverOptions | None = None
        if tuned_solver is not None:
            self._tuned = tuned_options(tuned_solver, keys, setup, _defaults())
            setup = Setup(
                **{
                    **setup.__dict__,
                    "options": self._tuned,
                    "denoise_to_zero": self._tuned.denoise_to_zero,
                }
            )
            if setup.flow:  # the tuned grid is the run's: FluxPipeline passes no sigmas
                self.register_to_config(use_flow_sigmas=True)
            return setup
        resolved = resolved_keys(setup.options, setup.prediction)
        if setup.flow and not setup.spacing.name:
            # The scheduler places its own flow sigmas: FluxPipeline then passes none (its
            # linspace sigmas would replace the grid), as for diffusers' own schedulers
            # with use_flow_sigmas.
            resolved["use_flow_sigmas"] = True
        self.register_to_config(**resolved)
        defaults = self.config.get("_use_default_values")
        if defaults is not None:  # our keys, as used, count as given (one order)
            kept = sorted(k for k in defaults if k not in resolved)
            self.register_to_config(_use_default_values=kept)
        return setup

    @classmethod
    def from_tuned(cls, tuned: Any, config: Any = None, **kwargs: Any) -> DPMSolverScheduler:
        """A scheduler that runs a tuned solver (`dpmsolver.optimize_solver`) on a
        pipeline: `pipe.scheduler = DPMSolverScheduler.from_tuned(tuned, pipe.scheduler.config)`.

        The config gives the training schedule and what the network predicts (its
        schedule, prediction, thresholding and variance keys are kept; its grid and solver
        keys are replaced by the tuned solver's). `set_timesteps(tuned.nfe)` then plans the
        tuned grid with its coefficients: the run equals `dpmsolver.sample(model, x,
        solver=tuned)` from x_T = the pipeline's initial noise, to rounding (the first
        correction starts from latents / init_noise_sigma). With an analytic first step
        (no model call) that step is a scaling of x_T, taken through `init_noise_sigma`:
        the pipeline must start from its initial noise drawn after `set_timesteps` (as
        diffusers' text-to-image pipelines do), not from a noised image at the first
        timestep (img2img at strength 1); a run that begins later in the grid
        (`set_begin_index`) starts without it. VP and flow-matching configs; the schedule
        must be the one the solver was tuned on (checked: its noise levels at the tuned
        times). A flow config's `mu` is not read: the tuned grid holds the shift it was
        tuned at.
        """
        record = tuned if isinstance(tuned, dict) else getattr(tuned, "__dict__", None)
        if not isinstance(record, dict) or "times" not in record:
            raise TypeError(
                f"tuned must be a TunedSolver (or its JSON record); got {type(tuned).__name__}"
            )
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(
                "config must be a scheduler config (a dict, e.g. pipe.scheduler.config) or "
                f"None; got {type(config).__name__}"
            )
        given = dict(config or {})
        kept = {k: v for k, v in given.items() if k in TUNED_KEEPS}
        record = json.loads(json.dumps(record))  # a plain, JSON-ready copy
        return cls(**kept, **kwargs, tuned_solver=record)

    @classmethod
    def from_config(
        cls, config: Any = None, return_unused_kwargs: bool = False, **kwargs: Any
    ) -> Any:
        """diffusers' from_config, for a config given as a mapping (`pipe.scheduler.config`,
        a dict) or a local folder saved with save_pretrained; anything else is refused by
        name (this face never downloads a config)."""
        if config is not None and not isinstance(config, Mapping):
            if not isinstance(config, str | os.PathLike) or not Path(config).is_dir():
                raise TypeError(
                    "config must be a scheduler config (a dict, e.g. pipe.scheduler.config) or "
                    f"a local folder saved by save_pretrained; got {type(config).__name__} "
                    f"{config!r:.80}"
                )
            config = cls.load_config(config)
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    def save_pretrained(
        self, save_directory: Any, push_to_hub: bool = False, **kwargs: Any
    ) -> None:
        """diffusers' save_pretrained, into a folder (created if missing); a path that is
        a file is refused by name."""
        if not isinstance(save_directory, str | os.PathLike):
            raise TypeError(
                f"save_directory must be a folder path; got {type(save_directory).__name__}"
            )
        if Path(save_directory).is_file():
            raise ValueError(
                f"save_directory={os.fspath(save_directory)!r} is a file; give a folder"
            )
        super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    @classmethod
    def extract_init_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """diffusers' reading of a config, plus what the config's class says (a
        DPMSolverSinglestep config means singlestep, a FlowMatch config flow matching, a
        UniPC config its corrector) and keyword precedence over the keys of the same group
        (`config_io.config_for`)."""
        config = config_for(cls.__name__, _defaults, config_dict, kwargs)
        return super().extract_init_dict(config, **kwargs)

    def to_json_string(self) -> str:
        """The config as JSON, without the keys that are None ("not said"), so that
        diffusers' own classes load it with their defaults."""
        return json_without_none(super().to_json_string())

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
        begin_index = check_int("begin_index", begin_index, 0)
        self._check_begin_index(begin_index)
        self._begin_index = begin_index

    def __len__(self) -> int:
        return self._total

    def scale_model_input(self, sample: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """VP and flow models take x_t as it is."""
        return sample

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[float] | Tensor | None = None,
        sigmas: list[float] | Tensor | None = None,
        mu: float | None = None,
    ) -> None:
        """Place the calls and compute every call's coefficients.

        Give `num_inference_steps`, or custom `timesteps` (the network's time inputs of the
        calls, descending) or `sigmas`: for VP configs noise levels sigma_t / alpha_t of the
        calls (a final 0 asks for the jump to sigma = 0), for flow-matching configs the
        unshifted flow sigmas that FlowMatchEulerDiscreteScheduler shifts. `mu` is the
        dynamic shift of Flux-like pipelines (use_dynamic_shifting); a flow config without
        dynamic shifting ignores it, as FlowMatchEulerDiscreteScheduler does.
        """
        setup = self._setup
        if mu is not None:
            if not setup.flow:
                raise ValueError(
                    "mu (the dynamic shift of Flux-like pipelines) applies to flow-matching "
                    "configs; this config is VP"
                )
            check_float("mu", mu)
            if not setup.spacing.dynamic or self._tuned is not None:
                # As FlowMatchEulerDiscreteScheduler: a config without dynamic shifting
                # keeps its static shift (FluxPipeline always passes mu); a tuned grid
                # holds the shift it was tuned at.
                mu = None
        if self._tuned is not None:
            self._plan_tuned(num_inference_steps, timesteps, sigmas)
            self._expose(device)
            return
        if timesteps is not None and setup.continuous:
            raise ValueError(
                "custom timesteps cannot be given with timestep_type='continuous' (as in "
                "EulerDiscreteScheduler); give sigmas or num_inference_steps"
            )
        given = [v is not None for v in (timesteps, sigmas)]
        if sum(given) > 1 or (num_inference_steps is None and not any(given)):
            raise ValueError("give one of num_inference_steps, timesteps or sigmas")
        custom = timesteps if timesteps is not None else sigmas
        if custom is not None and num_inference_steps is not None:
            count = len(custom)
            if count != num_inference_steps:
                raise ValueError(
                    f"num_inference_steps={num_inference_steps} and {count} custom "
                    f"{'timesteps' if timesteps is not None else 'sigmas'} disagree"
                )
        if num_inference_steps is not None:
            check_steps_count(num_inference_steps)
        if setup.flow:
            grid = flow_grid(setup, num_inference_steps, timesteps, sigmas, mu)
            self._set_plan(plan_calls(setup, grid, True, count_jump=True))
        else:
            self._set_plan(vp_plan(setup, num_inference_steps, timesteps, sigmas, self._time_of))
        self._expose(device)

    def _plan_tuned(
        self,
        n: int | None,
        timesteps: list[float] | Tensor | None,
        sigmas: list[float] | Tensor | None,
    ) -> None:
        """The tuned solver's grid and rules (its own times: no other grid is taken). With
        an analytic first step (no model call), the pipeline starts at x_1 = c x_T: its
        initial noise is scaled by init_noise_sigma = c."""
        tuned = self._tuned
        if tuned is None:  # internal
            raise TypeError("no tuned solver")
        if timesteps is not None or sigmas is not None:
            raise ValueError(
                "a tuned solver runs on its own grid; call set_timesteps(num_inference_steps) "
                "without timesteps or sigmas"
            )
        calls = tuned.model_calls()
        if n is not None and check_steps_count(n) != calls:
            raise ValueError(
                f"num_inference_steps={n}, but the tuned solver takes {calls} model calls"
            )
        self._set_plan(plan_calls(self._setup, list(tuned.timesteps or ()), False))
        self._afs_scale = analytic_scale(self._plan) if self._plan.first else None
        self.init_noise_sigma = 1.0 if self._afs_scale is None else self._afs_scale

    def _set_plan(self, planned: Planned) -> None:
        """The run's plan, and the noise level where it ends (the last entry of sigmas)."""
        self._plan = planned.plan
        self._final = 0.0 if planned.final_zero else self._noise_level(planned.end)
        self._afs_scale = None
        self.init_noise_sigma = 1.0

    def _noise_level(self, level: Level) -> float:
        """What diffusers calls sigma: sigma_t / alpha_t (VP), the flow sigma (flow)."""
        return level.sigma if self._setup.flow else level.sigma / level.alpha

    def _calls(self) -> tuple[Any, ...]:
        """The plan's calls that the model makes (after an analytic first step: from the
        second), one per step()."""
        return self._plan.calls[self._plan.first :]

    def _expose(self, device: str | torch.device | None) -> None:
        """timesteps (the network's time input at each call, float64 so it sees the exact
        level the solver assumes; float32 on MPS) and sigmas (each call's noise level, then
        the end's: sigma_t / alpha_t for VP, the flow sigma for flow matching)."""
        if device is not None:
            device = check_device("device", device)
        ns = self.noise_schedule
        calls = self._calls()
        if self._setup.continuous:  # EDM's c_noise = log(sigma) / 4 = -lambda / 4
            model_times = [-0.25 * c.level.lambda_ for c in calls]
        else:
            model_times = [
                float(ns.model_time(c.level.t)) if c.level.model_t is None else c.level.model_t
                for c in calls
            ]
        on_mps = torch.device(device).type == "mps" if device is not None else False
        self.timesteps = torch.tensor(
            model_times, dtype=torch.float32 if on_mps else torch.float64, device=device
        )
        self._host_timesteps = model_times
        self._time_of = {m: c.level.t for m, c in zip(model_times, calls, strict=True)}
        levels = [self._noise_level(c.level) for c in calls]
        self.sigmas = torch.tensor([*levels, self._final], dtype=torch.float64, device=device)
        self.num_inference_steps = len(calls)
        self._state = None
        self._finite = []
        self._step_index = None
        self._begin_index = None

    def step(
        self,
        model_output: Tensor,
        timestep: float | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
        variance_noise: Tensor | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[Tensor]:
        """One model output at `timestep` in, the next sample out.

        The first call starts at `begin_index` if a pipeline set one, else at the index of
        `timestep` in `timesteps` (so a loop over `timesteps[k:]` starts at step k); every
        call checks that `timestep` is the one planned next. A timestep taken from
        `timesteps` (the usual `for t in scheduler.timesteps`) is recognised without
        reading the device; another device tensor is read once, at the first call only.
        The SDE algorithms draw their noise from `generator`, or take `variance_noise`.
        The update is the core stepper's (`stepper.step`), on the run's state that the
        scheduler holds between calls; a run that begins inside the grid takes first-order
        steps until it has the outputs its rules need.
        """
        calls = self._calls()
        if not calls:
            raise ValueError("call set_timesteps before step")
        check_step_inputs(model_output, timestep, sample, variance_noise, generator)
        return_dict = check_bool("return_dict", return_dict)
        if self._step_index is None:
            if self._begin_index is None:
                self._step_index = self.index_for_timestep(timestep)
            else:
                self._step_index = self._begin_index
                self._check_begin_index(self._begin_index)
        i = self._step_index
        if i >= len(calls):
            raise ValueError(f"step called {i + 1} times; set_timesteps planned {len(calls)}")
        self._check_timestep(timestep, i)
        model_output = model_mean(
            model_output, sample, i, self._setup, self.config["variance_type"]
        )
        if variance_noise is not None and variance_noise.shape != sample.shape:
            raise ValueError(
                f"variance_noise has shape {tuple(variance_noise.shape)}, expected "
                f"{tuple(sample.shape)}"
            )
        self._note_finite(model_output, i)
        m = to_form(model_output, sample, calls[i].level, self._setup)
        plan = self._plan
        if self._state is not None:
            state = self._state._replace(x=sample)  # the pipeline's sample, as it passes it
        elif i == 0 and self._afs_scale is not None and not self._begin_index:
            state = analytic_state(plan, sample, self._afs_scale)
        else:
            state = State(sample)  # the run begins here
        # Handed over with no reference left here (as `run_plan` does): the stepper frees
        # the outputs no rule needs before it makes the next sample.
        self._state, box = None, [state]
        del state
        self._state = take_step(
            plan, box.pop(), plan.first + i, m, generator=generator, noise=variance_noise
        )
        prev = self._state.x
        self._step_index = i + 1
        if self._step_index == len(calls):
            self._raise_if_nonfinite()
            self._state = None
        if not return_dict:
            return (prev,)
        return SchedulerOutput(prev_sample=prev)

    def _note_finite(self, model_output: Tensor, i: int) -> None:
        """Keep a device-side finiteness flag of this step's model output (read once, at
        the last step)."""
        self._finite.append((i, finite_flag(model_output)))

    def _raise_if_nonfinite(self) -> None:
        """The run's one read-back, after its last step: a ModelOutputError naming the
        first step whose model output had NaN or Inf. Skipped on CUDA while
        torch.cuda.set_sync_debug_mode asks to hear of any sync."""
        found, self._finite = self._finite, []
        if not found:
            return
        flags = torch.stack([flag for _, flag in found])
        if flags.device.type == "cuda" and torch.cuda.get_sync_debug_mode() != 0:
            return
        ok = torch.isfinite(flags).cpu()
        if not bool(ok.all()):
            i = found[int((~ok).nonzero()[0, 0])][0]
            raise ModelOutputError(
                f"model_output had NaN or Inf at step {i} (timestep "
                f"{self._host_timesteps[i]:.6g}); check the network and its inputs (dtype, "
                "conditioning)"
            )

    def _check_begin_index(self, begin_index: int) -> None:
        count = len(self._calls())
        if count and begin_index >= count:
            raise ValueError(
                f"begin_index={begin_index} is past the last step: set_timesteps planned "
                f"{count} (indices 0 to {count - 1})"
            )

    def index_for_timestep(
        self, timestep: float | Tensor, schedule_timesteps: Tensor | None = None
    ) -> int:
        """The index of `timestep` in `schedule_timesteps` (default: `timesteps`): its
        position if it is an element of that tensor, else the nearest entry within one
        training step, else a ValueError naming the timestep and the grid's range."""
        grid = self.timesteps if schedule_timesteps is None else schedule_timesteps
        if grid.numel() == 0:
            raise ValueError("call set_timesteps before step")
        own = position_in(timestep, grid)
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
        own = position_in(timestep, self.timesteps)
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

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """x_t = alpha_t x_0 + sigma_t noise at (possibly fractional) timesteps of the
        network's time input, which must lie in the schedule's range (checked: one read of
        their ends). For flow matching alpha_t = 1 - sigma_t, sigma_t = timestep / N."""
        return add_noise(self._setup, original_samples, noise, timesteps)

    def scale_noise(
        self, sample: Tensor, timestep: float | Tensor, noise: Tensor | None = None
    ) -> Tensor:
        """The forward process at `timestep` (flow img2img pipelines such as SD3's): for
        flow matching sigma noise + (1 - sigma) sample, for VP models `add_noise`."""
        return scale_noise(self._setup, sample, timestep, noise)
