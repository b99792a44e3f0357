"""`DPMSolverScheduler`: dpmsolver's update rules behind diffusers' scheduler protocol.

    pipe.scheduler = DPMSolverScheduler.from_config(pipe.scheduler.config)

It implements what pipelines call (set_timesteps, timesteps, sigmas, scale_model_input,
step, add_noise, scale_noise, index_for_timestep, order, set_begin_index, step_index,
begin_index). `set_timesteps` computes every call's coefficient rule once, in float64,
through the core's planning functions, so a run is the one `dpmsolver.sample` computes on
the same grid. What each config key means is `config.read_config`; where diffusers'
schedulers place their calls is `spacing`.

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

import dataclasses
import inspect
import json
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
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

from ..checks import check_bool, check_device, check_int
from ..core import (
    MAX_STEPS,
    DiscreteVPSchedule,
    Level,
    Linear,
    ModelOutputError,
    SolverOptions,
    check_grid,
    check_noise_levels,
    combine,
    sigmas_to_times,
    singlestep_orders,
    time_grid,
    to_data,
)
from ..core.coefficients import jump_to_zero, unic_correction
from ..core.kernel import finite_flag, remember
from ..core.plan import (
    multistep_orders,
    multistep_plan,
    multistep_rule,
    singlestep_outer,
    singlestep_stage,
)
from ..tuned import check_solver_record
from .config import PREDICTION_TYPES, Setup, read_config
from .spacing import (
    flow_calls,
    last_timestep,
    sigma_calls,
    timestep_calls,
)

__all__ = ["DPMSolverScheduler"]

# Keys that say the same thing: a keyword given to from_config replaces the config's
# other keys of its group (the caller's word is the later one).
SYNONYMS = (
    (
        "skip_type",
        "timestep_spacing",
        "use_karras_sigmas",
        "use_exponential_sigmas",
        "use_beta_sigmas",
        "use_lu_lambdas",
    ),
    ("final_noise_level", "final_sigmas_type", "set_alpha_to_one"),
    ("final_step_first_order", "euler_at_final"),
    ("algorithm_type", "predict_x0"),
    ("corrector", "corrector_variant", "solver_type", "disable_corrector"),
)
# What a config's class says that its keys do not (the keys it would carry if saved).
CLASS_KEYS: dict[str, dict[str, Any]] = {
    "DPMSolverSinglestepScheduler": {"method": "singlestep"},
    "UniPCMultistepScheduler": {"solver_type": "bh2"},
    "FlowMatchEulerDiscreteScheduler": {"shift": 1.0},
    "FlowMatchHeunDiscreteScheduler": {"shift": 1.0},
}
# Our own keys, saved with the value in use so that a round trip through another class
# (which keeps them as hidden keys) comes back to the same run.
RESOLVED_KEYS = (
    "prediction_type",
    "algorithm_type",
    "solver_type",
    "method",
    "corrector",
    "corrector_variant",
)


_IDENTITY = Linear(1.0, (0.0,))  # a step of length 0: x as it is


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
    # (at the predicted state) arrives; `restart_correction` re-does the `restart` step.
    correction: Linear | None = None
    restart_correction: Linear | None = None


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
        self._setup: Setup = read_config(keys)
        # A tuned solver (from_tuned): its grid, solver options and coefficients; the
        # first step's rule when it is analytic (no call), applied through init_noise_sigma.
        self._tuned: SolverOptions | None = None
        # (its correction, its scale c of x_1 = c x_T, its start level)
        self._afs: tuple[Linear | None, float, Level] | None = None
        if tuned_solver is not None:
            self._tuned = _tuned_options(tuned_solver, keys, self._setup)
            self._setup = dataclasses.replace(
                self._setup, options=self._tuned, denoise_to_zero=self._tuned.denoise_to_zero
            )
        setup = self._setup
        if self._tuned is None:
            self._save_resolved(setup)
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
        self._host_timesteps: list[float] = []
        self._time_of: dict[float, float] = {}  # a planned call's timestep -> its time
        self.sigmas = torch.zeros(0)
        self._calls: list[_Call] = []
        self._final = 0.0  # the noise level where the run ends (the last entry of sigmas)
        self._history: list[Tensor] = []
        self._step_start: Tensor | None = None
        self._pending: tuple[Linear, Tensor] | None = None  # correction and its start
        self._finite: list[tuple[int, Tensor]] = []  # (step, finiteness flag of its output)
        self._step_index: int | None = None
        self._begin_index: int | None = None

    def _save_resolved(self, setup: Setup) -> None:
        """Save our keys as used (diffusers' names where it has them) and mark them given,
        so another class keeps them and hands them back (see `RESOLVED_KEYS`)."""
        options = setup.options
        form = {"dpmsolver": "midpoint", "taylor": "heun"}[options.solver_type]
        # With the corrector on, the midpoint form is saved under UniPC's name for its B(h).
        variant = options.corrector_variant
        algorithm = options.algorithm if options.eta == 0 else f"sde-{options.algorithm}"
        prediction = {v: k for k, v in PREDICTION_TYPES.items()}[setup.prediction]
        self.register_to_config(
            prediction_type=prediction,
            algorithm_type=algorithm,
            solver_type=form if options.corrector == "off" or form == "heun" else variant,
            method=options.method,
            corrector=options.corrector,
            corrector_variant=options.corrector_variant,
        )
        defaults = self.config.get("_use_default_values")
        if defaults is not None:
            kept = sorted(k for k in defaults if k not in RESOLVED_KEYS)  # one order
            self.register_to_config(_use_default_values=kept)

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
        (`set_begin_index`) starts without it. VP configs only; the schedule must be the
        one the solver was tuned on (checked).
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
        UniPC config its corrector) and keyword precedence over the keys of the same group."""
        config = dict(config_dict)
        defaults = set(config.get("_use_default_values", []))
        given = {k for k in config if not k.startswith("_") and k not in defaults}
        for group in SYNONYMS:
            if any(k in kwargs for k in group):
                for k in group:
                    if k not in kwargs:
                        config.pop(k, None)
                        given.discard(k)
        source = _source_class(config, defaults)
        if source == cls.__name__:
            # A config we saved (None values left out): the keys it lacks are ours at their
            # defaults, passed as given so the loaded config equals the saved one.
            for key, param in inspect.signature(cls.__init__).parameters.items():
                if key != "self" and key not in config and key not in kwargs:
                    config[key] = param.default
        added = []
        for key, value in CLASS_KEYS.get(source, {}).items():
            if key not in given and key not in kwargs:
                config[key] = value
                added.append(key)
        if "_use_default_values" in config:
            config["_use_default_values"] = [k for k in defaults if k not in added]
        return super().extract_init_dict(config, **kwargs)

    def to_json_string(self) -> str:
        """The config as JSON, without the keys that are None ("not said"), so that
        diffusers' own classes load it with their defaults."""
        text = super().to_json_string()
        data = {k: v for k, v in json.loads(text).items() if v is not None}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

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
        dynamic shift of Flux-like pipelines (use_dynamic_shifting).
        """
        setup = self._setup
        if self._tuned is not None:
            self._plan_tuned(num_inference_steps, timesteps, sigmas)
            self._expose(device)
            return
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
        if mu is not None and not (
            setup.spacing.dynamic and setup.spacing.kind in ("flow_match", "flow_sigmas")
        ):
            raise ValueError("mu needs a flow-matching config with use_dynamic_shifting=True")
        if setup.flow:
            self._plan_flow(num_inference_steps, timesteps, sigmas, mu)
        else:
            self._plan_vp(num_inference_steps, timesteps, sigmas)
        self._expose(device)

    def _plan_flow(
        self,
        n: int | None,
        timesteps: list[float] | Tensor | None,
        sigmas: list[float] | Tensor | None,
        mu: float | None,
    ) -> None:
        setup = self._setup
        ts = None if timesteps is None else check_grid("timesteps", timesteps, min_len=1).tolist()
        if ts is not None and not (ts[-1] > 0 and ts[0] <= self._total):
            raise ValueError(
                f"timesteps from {ts[0]:.6g} to {ts[-1]:.6g} leave (0, {self._total}]: a flow "
                f"model's timesteps are its sigma times num_train_timesteps={self._total}"
            )
        sg = None if sigmas is None else check_grid("sigmas", sigmas, positive=True, min_len=1)
        calls = flow_calls(
            setup.alphas_cumprod,
            setup.spacing,
            n,
            None if sg is None else sg.tolist(),
            ts,
            mu,
        )
        grid = check_grid("sigmas", calls, positive=True, min_len=1)
        if float(grid[0]) > 1.0:
            raise ValueError(
                f"flow sigmas must lie in (0, 1]; the grid starts at {float(grid[0]):.6g}"
            )
        self._plan(grid.tolist(), True, count_jump=True)

    def _plan_vp(
        self,
        n: int | None,
        timesteps: list[float] | Tensor | None,
        sigmas: list[float] | Tensor | None,
    ) -> None:
        setup = self._setup
        ns = self._vp()
        to_zero = setup.to_zero
        if timesteps is not None or sigmas is not None:
            if timesteps is not None:
                values = check_grid("timesteps", timesteps, min_len=1)
                times = torch.tensor(
                    [self._time_of.get(v, (v + 1.0) / ns.total_n) for v in values.tolist()],
                    dtype=torch.float64,
                )
            else:
                values = check_grid("sigmas", sigmas, positive=True, final_zero=True, min_len=1)  # type: ignore[arg-type]
                if float(values[-1]) == 0.0:
                    to_zero, values = True, values[:-1]
                times = sigmas_to_times(ns, values)
            if not (ns.contains(float(times.max())) and ns.contains(float(times.min()))):
                # Reported in the units given: training timesteps, or sigma_t / alpha_t.
                ends = ns.levels([ns.t_min, ns.t_max])
                if timesteps is not None:
                    name, lo, hi = "timesteps", ends[0].model_t, ends[1].model_t
                else:
                    name = "sigmas"
                    lo, hi = (e.sigma / e.alpha for e in ends)
                raise ValueError(
                    f"{name} from {float(values.max()):.6g} to {float(values.min()):.6g} reach "
                    f"beyond the training schedule: allowed [{lo:.6g}, {hi:.6g}]"
                )
            self._plan_calls(times.tolist(), to_zero, custom=True)
            return
        count = int(n)  # type: ignore[arg-type]
        spacing = setup.spacing
        if spacing.kind == "timestep_spacing":
            self._plan_calls(timestep_calls(ns, spacing, count), to_zero, custom=False)
        elif spacing.kind == "sigmas":
            self._plan_calls(sigma_calls(ns, spacing, count), to_zero, custom=False)
        else:
            self._plan_by_count(count, to_zero)

    def _plan_tuned(
        self,
        n: int | None,
        timesteps: list[float] | Tensor | None,
        sigmas: list[float] | Tensor | None,
    ) -> None:
        """The tuned solver's grid and rules (its own times: no other grid is taken)."""
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
        self._plan(list(tuned.timesteps or ()), False)
        self._afs = None
        self.init_noise_sigma = 1.0
        if tuned.analytic_first_step:
            # The first step has no call: x_1 = c x_T with c from its rule (x0_pred = 0, or
            # eps_pred = x_T / sigma_T). Pipelines draw latents * init_noise_sigma, so they
            # start at x_1; its correction (if any) waits for the first call's output.
            first = self._calls.pop(0)
            level = first.level
            scale = first.rule.cx
            if tuned.form == "noise":
                scale += first.rule.cm[0] / level.sigma
            self._afs = (first.correction, scale, level)
            self.init_noise_sigma = scale

    def _vp(self) -> DiscreteVPSchedule:
        ns = self.noise_schedule
        if not isinstance(ns, DiscreteVPSchedule):  # internal: read_config builds it
            raise TypeError(f"a VP config has a DiscreteVPSchedule; got {type(ns).__name__}")
        return ns

    def _plan_calls(self, calls: list[float], to_zero: bool, custom: bool) -> None:
        """Calls at `calls`, then the end: the jump to sigma = 0, or a step to the smallest
        training level. When the last call is already there, diffusers' grids end with a
        step of length 0 (as diffusers does: that call's output only corrects the step
        before it), and custom timesteps with that call's x0_pred."""
        t_min = self.noise_schedule.t_min
        at_end = calls[-1] <= t_min * (1 + 1e-12)
        if to_zero or (at_end and custom):
            self._plan(calls, True, count_jump=not custom)
        elif at_end:
            self._plan(calls, False, identity_end=True)
        else:
            self._plan([*calls, t_min], False)

    def _plan_by_count(self, n: int, to_zero: bool) -> None:
        """Our skip_type grid with n calls (multistep: n steps, or n - 1 and the jump)."""
        options = self._setup.options
        ns = self._vp()
        t_start = last_timestep(ns, self._setup.spacing.lambda_min_clipped) / ns.total_n
        skip = self._setup.spacing.name
        steps = n - 1 if to_zero else n
        if steps == 0:
            self._plan([t_start], True)
            return
        if options.method == "multistep":
            self._plan(time_grid(ns, skip, t_start, ns.t_min, steps).tolist(), to_zero)
            return
        outer, orders = singlestep_outer(
            ns, "singlestep", steps, options.order, skip, t_start, ns.t_min
        )
        self._plan(outer, to_zero, orders=orders, inner=skip)

    def _plan(
        self,
        grid: list[float],
        to_zero: bool,
        *,
        count_jump: bool = False,
        identity_end: bool = False,
        orders: list[int] | None = None,
        inner: str | None = None,
    ) -> None:
        """The calls for step boundaries `grid`, planned by the core, then the jump to zero if
        `to_zero` (`count_jump`: the jump counts as a step where orders are lowered at the
        end). Each call also gets the first-order rule to the end of its step, for a
        run that begins there without the earlier outputs its rule needs.

        Singlestep: with `orders` the steps are those of the core's `singlestep_outer`
        (intermediate points by `inner`); otherwise each step of order k spans k intervals
        of `grid`, whose points inside it are its intermediate calls (as diffusers' singlestep
        scheduler uses its timesteps)."""
        setup = self._setup
        ns = self.noise_schedule
        options = setup.options
        form = options.form
        calls: list[_Call] = []
        steps = len(grid) - 1
        if options.method == "multistep":
            # On diffusers' grids the jump to zero counts as a step when orders are lowered
            # at the end (it is the last of num_inference_steps steps there); on ours the
            # steps before it are lowered too (the authors' rule, lower error).
            counted = steps + 1 if (to_zero and count_jump) or identity_end else steps
            step_orders = multistep_orders(
                counted, options.order, options.lowers_final_order(counted)
            )[:steps]
            if setup.final_step_first_order and steps > 0 and not to_zero:
                step_orders[-1] = 1
            # With the jump to zero another call follows the last step: it is corrected.
            plan = multistep_plan(
                ns, options, grid, step_orders, correct_last=to_zero or identity_end
            )
            levels = plan.levels
            corrections = list(plan.corrections)
            for j in setup.disable_corrector:
                if j < len(corrections):
                    corrections[j] = None
            for i, (rule, correction) in enumerate(zip(plan.rules, corrections, strict=True)):
                pair = [levels[i], levels[i + 1]]
                restart = multistep_rule(options, pair)
                restart_correction = (
                    unic_correction(form, pair, options.corrector_variant)
                    if correction is not None
                    else None
                )
                calls.append(_Call(levels[i], rule, True, restart, correction, restart_correction))
        else:
            levels = ns.levels(grid)
            if orders is None:
                orders = singlestep_orders(steps, options.order) if steps else []
                if steps and levels[0].alpha == 0.0 and orders[0] > 1:
                    orders = [1, *singlestep_orders(steps - 1, options.order)]
                if setup.final_step_first_order and orders and orders[-1] > 1:
                    orders = [*orders[:-1], *([1] * orders[-1])]
                bounds = [0]
                for k in orders:
                    bounds.append(bounds[-1] + k)
            else:  # one step per interval of `grid`
                bounds = list(range(len(orders) + 1))
            for i, k in enumerate(orders):
                s_t, t_t = grid[bounds[i]], grid[bounds[i + 1]]
                r = None
                if inner is None:
                    lam = [lv.lambda_ for lv in levels[bounds[i] : bounds[i + 1] + 1]]
                    r = [(lj - lam[0]) / (lam[-1] - lam[0]) for lj in lam[1:-1]]
                stage_levels, rules = singlestep_stage(
                    ns, form, options.solver_type, inner or "logSNR", s_t, t_t, k, r
                )
                ends = [lv.t for lv in stage_levels[1:]] + [t_t]
                for j, (lvl, rule) in enumerate(zip(stage_levels, rules, strict=True)):
                    restart = None
                    if j > 0:  # first order to the next call's level
                        restart = singlestep_stage(
                            ns, form, options.solver_type, "logSNR", lvl.t, ends[j], 1
                        )[1][0]
                    calls.append(_Call(lvl, rule, j == 0, restart))
            levels = ns.levels([grid[-1]])
        end = levels[-1]
        if to_zero:
            calls.append(_Call(end, jump_to_zero(form, end), True, None))
        elif identity_end:
            calls.append(_Call(end, _IDENTITY, True, _IDENTITY))
        if setup.denoise_to_zero and not to_zero:
            calls.append(_Call(end, jump_to_zero(form, end), True, None))
        self._calls = calls
        ends_at_zero = to_zero or setup.denoise_to_zero
        self._final = 0.0 if ends_at_zero else self._noise_level(end)

    def _noise_level(self, level: Level) -> float:
        """What diffusers calls sigma: sigma_t / alpha_t (VP), the flow sigma (flow)."""
        return level.sigma if self._setup.flow else level.sigma / level.alpha

    def _expose(self, device: str | torch.device | None) -> None:
        if device is not None:
            device = check_device("device", device)
        """timesteps (the network's time input at each call, float64 so it sees the exact
        level the solver assumes; float32 on MPS) and sigmas (each call's noise level, then
        the end's: sigma_t / alpha_t for VP, the flow sigma for flow matching)."""
        ns = self.noise_schedule
        model_times = [
            float(ns.model_time(c.level.t)) if c.level.model_t is None else c.level.model_t
            for c in self._calls
        ]
        on_mps = torch.device(device).type == "mps" if device is not None else False
        self.timesteps = torch.tensor(
            model_times, dtype=torch.float32 if on_mps else torch.float64, device=device
        )
        self._host_timesteps = model_times
        self._time_of = {m: c.level.t for m, c in zip(model_times, self._calls, strict=True)}
        levels = [self._noise_level(c.level) for c in self._calls]
        self.sigmas = torch.tensor([*levels, self._final], dtype=torch.float64, device=device)
        self.num_inference_steps = len(self._calls)
        self._history = []
        self._step_start = None
        self._pending = None
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
        """
        if not self._calls:
            raise ValueError("call set_timesteps before step")
        _check_step_inputs(model_output, timestep, sample, variance_noise, generator)
        return_dict = check_bool("return_dict", return_dict)
        if self._step_index is None:
            if self._begin_index is None:
                self._step_index = self.index_for_timestep(timestep)
            else:
                self._step_index = self._begin_index
                self._check_begin_index(self._begin_index)
        i = self._step_index
        if i >= len(self._calls):
            raise ValueError(f"step called {i + 1} times; set_timesteps planned {len(self._calls)}")
        self._check_timestep(timestep, i)
        call = self._calls[i]
        model_output = self._mean_of(model_output, sample, i)
        if variance_noise is not None and variance_noise.shape != sample.shape:
            raise ValueError(
                f"variance_noise has shape {tuple(variance_noise.shape)}, expected "
                f"{tuple(sample.shape)}"
            )
        self._note_finite(model_output, i)
        m = self._convert(model_output, sample, call.level)
        if i == 0 and self._afs is not None and not self._begin_index:
            # After the analytic first step: its output (x0_pred = 0 or eps_pred = x_T /
            # sigma_T) heads the history, and its correction starts from x_T.
            correction, scale, level = self._afs
            start = sample * (1.0 / scale)
            self._history = [
                torch.zeros_like(sample)
                if self._setup.options.form == "data"
                else start * (1.0 / level.sigma)
            ]
            if correction is not None:
                self._pending = (correction, start)
        if self._setup.options.method == "multistep":
            if self._pending is not None:
                # m was computed at the predicted state: correct the step that made it.
                correction, start = self._pending
                sample = combine(correction, start, [m, *self._history])
                self._pending = None
            remember(self._history, m, self._setup.options.order)
            rule = call.rule
            if len(self._history) < len(rule.cm) and call.restart is not None:
                rule = call.restart  # sampling began here: no earlier outputs yet
                if call.restart_correction is not None:  # corrected as diffusers' UniPC does
                    self._pending = (call.restart_correction, sample)
            elif call.correction is not None:
                self._pending = (call.correction, sample)
            prev = combine(rule, sample, self._history, generator, variance_noise)
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
        if self._step_index == len(self._calls):
            self._raise_if_nonfinite()
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
        if self._calls and begin_index >= len(self._calls):
            raise ValueError(
                f"begin_index={begin_index} is past the last step: set_timesteps planned "
                f"{len(self._calls)} (indices 0 to {len(self._calls) - 1})"
            )

    def _mean_of(self, out: Tensor, sample: Tensor, i: int) -> Tensor:
        """The model output without its learned variance channels (twice the sample's
        channels, unless variance_type is a fixed one), checked against the sample."""
        doubled = out.dim() >= 2 and out.shape[1] == 2 * sample.shape[1]
        doubled = doubled and out.shape[2:] == sample.shape[2:]
        if doubled and self._setup.split_variance:
            # Keep the mean, contiguous so it rounds as an unsplit output would (CPU half
            # kernels round strided inputs differently).
            out = out[:, : sample.shape[1]].contiguous()
        elif doubled:
            raise ValueError(
                f"model_output has twice the sample's channels at step {i} "
                f"({tuple(out.shape)}), but variance_type={self.config['variance_type']!r} is a "
                "fixed variance; a learned one is 'learned' or 'learned_range'"
            )
        if out.shape != sample.shape:
            raise ValueError(
                f"model_output has shape {tuple(out.shape)} at step {i}, expected "
                f"{tuple(sample.shape)}"
            )
        return out

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
        """eps_pred or x0_pred (the algorithm's form), with thresholding / clip_sample
        applied to x0_pred as diffusers does (in the noise form eps is recomputed)."""
        setup = self._setup
        x0 = to_data(out, x, level.alpha, level.sigma, setup.prediction)
        corrected = setup.threshold is not None or setup.clip is not None
        if setup.threshold is not None:
            x0 = setup.threshold(x0)
        elif setup.clip is not None:
            x0 = x0.clamp(-setup.clip, setup.clip)
        if setup.options.form == "data":
            return x0
        if not corrected and setup.prediction == "noise":
            return out
        return (x - level.alpha * x0) / level.sigma

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """x_t = alpha_t x_0 + sigma_t noise at (possibly fractional) timesteps of the
        network's time input, which must lie in the schedule's range (checked: one read of
        their ends). For flow matching alpha_t = 1 - sigma_t, sigma_t = timestep / N."""
        _check_samples("original_samples", original_samples)
        _check_samples("noise", noise)
        if noise.shape != original_samples.shape:
            raise ValueError(
                f"add_noise: noise has shape {tuple(noise.shape)}; it must have "
                f"original_samples' shape {tuple(original_samples.shape)}"
            )
        if not isinstance(timesteps, Tensor | numbers.Real | list | tuple) or isinstance(
            timesteps, bool
        ):
            raise TypeError(
                "add_noise: timesteps must be a tensor, a number or a list of numbers (the "
                f"network's time inputs); got {type(timesteps).__name__} {timesteps!r:.40}"
            )
        if isinstance(timesteps, Tensor) and timesteps.device.type == "meta":
            raise ValueError("add_noise: timesteps is a meta tensor (a shape without data)")
        steps = torch.as_tensor(timesteps, device=original_samples.device)
        if not (steps.is_floating_point() or steps.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"add_noise: timesteps must be numbers; got dtype {steps.dtype}")
        if steps.numel() not in (1, original_samples.shape[0]) or steps.dim() > 1:
            raise ValueError(
                f"add_noise: timesteps has shape {tuple(steps.shape)}; give one timestep, or "
                f"one per sample ({original_samples.shape[0]},)"
            )
        ns = self.noise_schedule
        t = self._times_of(steps.double().reshape(-1))
        ends = torch.stack([t.min(), t.max()]).tolist() if t.numel() else []
        if not all(math.isfinite(v) and ns.contains(v) for v in ends):
            lo, hi = float(ns.model_time(ns.t_min)), float(ns.model_time(ns.t_max))
            given = [self._timestep_of(v) for v in ends]
            raise ValueError(
                f"add_noise: timesteps must lie in [{lo:.6g}, {hi:.6g}] (the network's time "
                f"inputs); got {given[0]:.6g} to {given[1]:.6g}"
            )
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        alpha = ns.alpha(t).to(original_samples.dtype).reshape(shape)
        sigma = ns.sigma(t).to(original_samples.dtype).reshape(shape)
        return alpha * original_samples + sigma * noise

    def scale_noise(
        self, sample: Tensor, timestep: float | Tensor, noise: Tensor | None = None
    ) -> Tensor:
        """The forward process at `timestep` (flow img2img pipelines such as SD3's): for
        flow matching sigma noise + (1 - sigma) sample, for VP models `add_noise`."""
        if noise is None:
            raise ValueError("scale_noise needs noise")
        _check_samples("sample", sample)
        if isinstance(timestep, bool) or not isinstance(timestep, Tensor | numbers.Real):
            raise TypeError(
                f"scale_noise: timestep must be a number or a tensor; got "
                f"{type(timestep).__name__} {timestep!r:.40}"
            )
        ts = torch.as_tensor(timestep, device=sample.device).reshape(-1)
        if ts.numel() == 1 and sample.shape[0] != 1:
            ts = ts.expand(sample.shape[0])
        return self.add_noise(sample, noise, ts)

    def _times_of(self, timesteps: Tensor) -> Tensor:
        n = float(self._total)
        return timesteps / n if self._setup.flow else (timesteps + 1.0) / n

    def _timestep_of(self, t: float) -> float:
        n = float(self._total)
        return t * n if self._setup.flow else t * n - 1.0


def check_steps_count(n: object) -> int:
    """num_inference_steps as an int in [1, MAX_STEPS], or a clear error."""
    n = check_int("num_inference_steps", n, 1)
    if n > MAX_STEPS:
        raise ValueError(
            f"num_inference_steps={n} is more than {MAX_STEPS}: planning costs host time and "
            "memory per step before the first model call, and the ODE solution is converged "
            "long before"
        )
    return n


def _check_samples(name: str, value: object) -> None:
    """Raise TypeError unless `value` is a floating tensor (named `name`)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype; got {value.dtype}")
    if value.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (a shape without data)")


def _check_step_inputs(
    model_output: object,
    timestep: object,
    sample: object,
    variance_noise: object,
    generator: object,
) -> None:
    """The types step() takes: tensors for the model output and the sample, one timestep
    (a number or a one-element tensor), and optional noise and generator."""
    if not isinstance(model_output, Tensor):
        hint = ""
        if isinstance(model_output, tuple | list) or hasattr(model_output, "sample"):
            hint = " (a model's output object or tuple: pass its .sample or [0])"
        raise TypeError(
            f"model_output must be a torch.Tensor; got {type(model_output).__name__}{hint}"
        )
    _check_samples("model_output", model_output)
    _check_samples("sample", sample)
    if isinstance(timestep, Tensor):
        if timestep.device.type == "meta":
            raise ValueError("timestep is a meta tensor (a shape without data)")
        if timestep.numel() != 1:
            raise ValueError(
                f"timestep must be one timestep (a number, or a tensor of one element); got a "
                f"tensor of shape {tuple(timestep.shape)}: step() moves the whole batch from "
                "one timestep"
            )
    elif isinstance(timestep, bool) or not isinstance(timestep, numbers.Real):
        raise TypeError(
            f"timestep must be a number or a one-element tensor (an entry of "
            f"scheduler.timesteps); got {type(timestep).__name__} {timestep!r}"
        )
    if variance_noise is not None:
        _check_samples("variance_noise", variance_noise)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")


def _source_class(config: dict[str, Any], defaults: set[str]) -> str:
    """The diffusers class a config belongs to: its `_class_name` (saved configs, and
    schedulers loaded from them), else the class in `CLASS_KEYS` whose __init__ takes
    exactly the config's keys (given or left at their defaults), else ''."""
    name = config.get("_class_name")
    if isinstance(name, str):
        return name
    import diffusers

    keys = {k for k in config if not k.startswith("_")} | defaults
    for candidate in CLASS_KEYS:
        cls = getattr(diffusers, candidate, None)
        if cls is not None and set(inspect.signature(cls.__init__).parameters) - {"self"} == keys:
            return candidate
    return ""


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


# The config keys from_tuned keeps: the training schedule and what the network predicts;
# every other key (grid, solver) comes from the tuned solver.
TUNED_KEEPS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "rescale_betas_zero_snr",
    "prediction_type",
    "thresholding",
    "dynamic_thresholding_ratio",
    "sample_max_value",
    "clip_sample",
    "clip_sample_range",
    "variance_type",
    "steps_offset",
    "set_alpha_to_one",
)


def _tuned_options(record: dict[str, Any], keys: dict[str, Any], setup: Setup) -> SolverOptions:
    """The solver options of a tuned solver's JSON record, checked against the config: no
    grid or solver key besides it, a VP schedule, and the schedule it was tuned on."""
    if setup.flow:
        raise ValueError("tuned_solver needs a VP config (a flow-matching config was given)")
    defaults = {
        k: p.default
        for k, p in inspect.signature(DPMSolverScheduler.__init__).parameters.items()
        if k != "self"
    }
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
