"""What a diffusers scheduler config means for `DPMSolverScheduler`.

`read_config` takes every key of the configs of diffusers' schedulers (DPMSolverMultistep,
DPMSolverSinglestep, UniPCMultistep, DEISMultistep, DDIM, DDPM, PNDM, Euler,
EulerAncestral, Heun, LMS, KDPM2, FlowMatchEulerDiscrete) and of our own, and returns a
`Setup`: the noise schedule, what the network predicts, the solver options, how
`set_timesteps` places the calls (`Spacing`), where the run ends and how x0_pred is
corrected. Each key keeps diffusers' meaning; a value that cannot be honoured is a
ValueError naming the key; keys that say the same thing (ours and diffusers') must agree.

A key absent from a config takes our default, as diffusers' `from_config` gives the
target class's defaults; `None` means "not said".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.schedulers.scheduling_dpmsolver_multistep import (
    betas_for_alpha_bar,
    rescale_zero_terminal_snr,
)

from ..checks import check_bool, check_choice, check_float, check_int, check_tensor_values
from ..core import (
    SKIP_TYPES,
    DiscreteVPSchedule,
    DynamicThresholding,
    FlowSchedule,
    NoiseSchedule,
    SolverOptions,
)

__all__ = [
    "ALGORITHM_TYPES",
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "SIGMA_SPACINGS",
    "SOLVER_TYPES",
    "TIMESTEP_SPACINGS",
    "Setup",
    "Spacing",
    "read_config",
    "training_betas",
]

# diffusers' prediction_type -> the core's prediction
PREDICTION_TYPES = {
    "epsilon": "noise",
    "sample": "x0",
    "v_prediction": "v",
    "flow_prediction": "flow",
}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
# Keys that are booleans when given (None: not said).
BOOLEAN_KEYS = (
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "use_lu_lambdas",
    "use_flow_sigmas",
    "use_diffusers_grid",
    "lower_order_final",
    "final_step_first_order",
    "euler_at_final",
    "set_alpha_to_one",
    "predict_x0",
    "denoise_to_zero",
    "thresholding",
    "clip_sample",
    "rescale_betas_zero_snr",
    "use_dynamic_shifting",
    "invert_sigmas",
    "stochastic_sampling",
    "skip_prk_steps",
)
# The longest training table taken: released models use 1000 to 4000 steps, and a table is
# built in float64 on the host.
MAX_TRAIN_TIMESTEPS = 100_000
# algorithm_type -> (core algorithm, eta). 'deis' (a DEIS config) runs DPM-Solver++, as
# diffusers' DPMSolverMultistepScheduler does with it.
ALGORITHM_TYPES = {
    "dpmsolver++": ("dpmsolver++", 0.0),
    "dpmsolver": ("dpmsolver", 0.0),
    "sde-dpmsolver++": ("dpmsolver++", 1.0),
    "sde-dpmsolver": ("dpmsolver", 1.0),
    "deis": ("dpmsolver++", 0.0),
}
# solver_type -> (the core's second-order form, the UniC variant a UniPC config asks for).
# 'midpoint' / 'heun' are diffusers' names for the paper's two forms; 'logrho' (DEIS) runs
# the midpoint form, as diffusers does.
SOLVER_TYPES: dict[str, tuple[str, str | None]] = {
    "midpoint": ("dpmsolver", None),
    "dpmsolver": ("dpmsolver", None),
    "heun": ("taylor", None),
    "taylor": ("taylor", None),
    "logrho": ("dpmsolver", None),
    "bh1": ("dpmsolver", "bh1"),
    "bh2": ("dpmsolver", "bh2"),
}
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
# Our grids for flow configs: spaced in time from pure noise (t = 1, lambda = -inf).
FLOW_SKIP_TYPES = ("time_uniform", "time_quadratic")
VARIANCE_TYPES = (
    "learned",
    "learned_range",
    "fixed_small",
    "fixed_small_log",
    "fixed_large",
    "fixed_large_log",
)
# use_*_sigmas -> the sigma spacing it asks for ('logSNR': use_lu_lambdas, uniform in lambda)
SIGMA_SPACINGS = {
    "use_karras_sigmas": "karras",
    "use_exponential_sigmas": "exponential",
    "use_beta_sigmas": "beta",
    "use_lu_lambdas": "logSNR",
}


@dataclass(frozen=True)
class Spacing:
    """How `set_timesteps(n)` places the n model calls.

    kind:
        'skip_type': our time grid `name` between the schedule's ends (VP);
        'timestep_spacing': diffusers' integer training timesteps ('linspace', 'leading',
            'trailing'), as DPMSolverMultistepScheduler computes them (VP);
        'sigmas': n noise levels sigma_t / alpha_t spaced by `name` ('karras',
            'exponential', 'beta', 'logSNR') from sigma_max to sigma_min (VP);
        'flow_sigmas': a DPMSolverMultistep / UniPC config with `use_flow_sigmas`;
        'flow_match': a FlowMatchEulerDiscrete config (see `spacing.flow_calls` for where
            each places its calls).
    diffusers: flow configs: n calls where DPMSolverMultistepScheduler places them
        (`use_diffusers_grid`), instead of the flow default.
    """

    kind: str
    name: str = ""
    steps_offset: int = 0
    lambda_min_clipped: float = -math.inf
    sigma_min: float | None = None
    sigma_max: float | None = None
    shift: float = 1.0
    dynamic: bool = False
    time_shift_type: str = "exponential"
    shift_terminal: float | None = None
    skip: str = ""  # flow configs: our skip_type in the unshifted flow time, if given
    diffusers: bool = False

    @property
    def flow_default(self) -> bool:
        """Whether n calls go on the flow default grid (`spacing.flow_default_calls`): a
        flow config with no grid key of its own."""
        return self.kind in FLOW_KINDS and not (self.name or self.skip or self.diffusers)


FLOW_KINDS = ("flow_sigmas", "flow_match")


@dataclass(frozen=True)
class Setup:
    """Everything the scheduler needs from its config (see `read_config`)."""

    schedule: NoiseSchedule
    betas: torch.Tensor  # float64, the training schedule (VP; an empty tensor for flow)
    alphas_cumprod: torch.Tensor  # float64, as diffusers computes it (VP; empty for flow)
    flow: bool
    prediction: str
    options: SolverOptions
    spacing: Spacing
    to_zero: bool  # the last step jumps to sigma = 0
    final_step_first_order: bool
    denoise_to_zero: bool
    threshold: DynamicThresholding | None  # diffusers' rule: s in [1, sample_max_value]
    clip: float | None  # clip_sample_range when clip_sample
    split_variance: bool  # outputs of twice the channels carry a learned variance
    disable_corrector: tuple[int, ...]
    # timestep_type='continuous': the network's timestep is EDM's c_noise = log(sigma) / 4
    # of sigma = sigma_t / alpha_t (v-prediction configs, as EulerDiscreteScheduler).
    continuous: bool = False


def training_betas(
    n: int, beta_start: float, beta_end: float, beta_schedule: str, trained_betas: Any
) -> torch.Tensor:
    """The training betas (float64) as diffusers builds them."""
    if trained_betas is not None:
        # As in diffusers, the table sets the schedule's length.
        betas = check_tensor_values("trained_betas", trained_betas)
        if betas.dim() != 1:
            raise ValueError(
                f"trained_betas must be 1-D (one beta per training step); got shape "
                f"{tuple(betas.shape)}"
            )
        if betas.numel() < 2 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError(
                f"trained_betas must hold at least 2 values in (0, 1); got {betas.numel()} "
                f"values from {float(betas.min()):.6g} to {float(betas.max()):.6g}"
                if betas.numel()
                else "trained_betas must hold at least 2 values in (0, 1); got none"
            )
        return betas
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    # squaredcos_cap_v2: diffusers' own cosine table (Nichol & Dhariwal, betas capped at
    # 0.999), built in float32 as diffusers' schedulers hold it.
    return betas_for_alpha_bar(n).to(torch.float64)


def _said(keys: Mapping[str, Any], *names: str) -> list[str]:
    return [n for n in names if keys.get(n) is not None and keys.get(n) is not False]


def _agree(name_a: str, a: Any, name_b: str, b: Any) -> None:
    if a is not None and b is not None and a != b:
        raise ValueError(
            f"{name_a}={a!r} and {name_b}={b!r} say different things; give one of them"
        )


def read_config(keys: Mapping[str, Any]) -> Setup:
    """The `Setup` of a scheduler config (every key of `DPMSolverScheduler.__init__`), read
    section by section: the keys this scheduler refuses, what the network predicts, the
    solver, where the run ends, the grid, the training schedule, the x0 corrections."""
    k = dict(keys)
    for name in BOOLEAN_KEYS:  # "False" is truthy: a string is refused, not read as True
        if k.get(name) is not None:
            k[name] = check_bool(name, k[name])
    n = _refuse_unhonoured(k)
    prediction_type, flow, use_flow = _prediction(k)
    continuous = k["timestep_type"] == "continuous"
    if continuous and (prediction_type != "v_prediction" or flow):
        raise ValueError(
            "timestep_type='continuous' (the network gets EDM's c_noise = log(sigma) / 4) "
            "applies to VP configs with prediction_type='v_prediction', as in "
            f"EulerDiscreteScheduler; got prediction_type={prediction_type!r}"
        )
    spacing = _grid(k, flow, use_flow)
    options, final_first, disable = _solver(k, spacing.flow_default)
    to_zero, denoise = _end(k, flow)
    betas, alphas_cumprod, schedule = _training_schedule(k, n, flow, spacing.lambda_min_clipped)
    threshold, clip, split = _x0_corrections(k)
    return Setup(
        schedule=schedule,
        betas=betas,
        alphas_cumprod=alphas_cumprod,
        flow=flow,
        prediction=PREDICTION_TYPES[prediction_type],
        options=options,
        spacing=spacing,
        to_zero=to_zero,
        final_step_first_order=final_first,
        denoise_to_zero=denoise,
        threshold=threshold,
        clip=clip,
        split_variance=split,
        disable_corrector=tuple(disable),
        continuous=continuous,
    )


def _refuse_unhonoured(k: dict[str, Any]) -> int:
    """num_train_timesteps and the training keys checked; the keys no run of this
    scheduler can honour refused by name."""
    n = check_int("num_train_timesteps", k["num_train_timesteps"], 2, MAX_TRAIN_TIMESTEPS)
    check_choice("beta_schedule", k["beta_schedule"], BETA_SCHEDULES)
    check_float("beta_start", k["beta_start"])
    check_float("beta_end", k["beta_end"])
    check_choice("timestep_type", k["timestep_type"], ("discrete", "continuous"))
    if k["interpolation_type"] != "linear":
        raise ValueError(
            f"interpolation_type={k['interpolation_type']!r} cannot be honoured: this "
            "scheduler evaluates the network at the training timesteps of its schedule; "
            "allowed: 'linear'"
        )
    for name in ("invert_sigmas", "stochastic_sampling"):
        if check_bool(name, k[name]):
            raise ValueError(
                f"{name}=True cannot be honoured (it belongs to FlowMatchEulerDiscrete's own "
                "sampler); use algorithm_type='sde-dpmsolver++' for stochastic sampling"
            )
    if k["solver_p"] is not None:
        raise ValueError("solver_p (another scheduler as UniPC's predictor) cannot be honoured")
    return n


def _prediction(k: dict[str, Any]) -> tuple[str, bool, bool]:
    """(prediction_type, flow matching?, use_flow_sigmas?): what the network predicts, and
    whether the config is a flow-matching one (a FlowMatchEulerDiscrete config carries
    `shift`; from_config adds it from the class)."""
    flow_match = _said(k, "shift")
    use_flow = check_bool("use_flow_sigmas", k["use_flow_sigmas"] or False)
    prediction_type = k["prediction_type"]
    if prediction_type is None:
        prediction_type = "flow_prediction" if (flow_match or use_flow) else "epsilon"
    check_choice("prediction_type", prediction_type, tuple(PREDICTION_TYPES))
    flow = prediction_type == "flow_prediction"
    if (flow_match or use_flow) and not flow:
        said = flow_match[0] if flow_match else "use_flow_sigmas"
        raise ValueError(
            f"{said} (a flow-matching config) needs prediction_type='flow_prediction'; got "
            f"{prediction_type!r}"
        )
    if flow and not (flow_match or use_flow):
        raise ValueError(
            "prediction_type='flow_prediction' needs a flow grid: use_flow_sigmas=True (with "
            "flow_shift) or a FlowMatchEulerDiscrete config (shift)"
        )
    if flow_match and use_flow:
        # A FlowMatch config that says the scheduler places its own sigmas (ours, saved:
        # FluxPipeline then passes none): the FlowMatch grid, with its shift.
        if k["flow_shift"] not in (None, 1.0):
            raise ValueError(
                f"shift={k['shift']!r} (FlowMatchEulerDiscrete) and flow_shift="
                f"{k['flow_shift']!r} (use_flow_sigmas) give two shifts; give one of them"
            )
        use_flow = False
    return prediction_type, flow, use_flow


def _algorithm_type(k: dict[str, Any]) -> str | None:
    """algorithm_type, or what predict_x0 (DEIS / UniPC configs) says (they must agree)."""
    algorithm_type = k["algorithm_type"]
    if algorithm_type is not None:
        check_choice("algorithm_type", algorithm_type, tuple(ALGORITHM_TYPES))
    predict_x0 = k["predict_x0"]
    if predict_x0 is not None:
        form_of_x0 = "dpmsolver++" if check_bool("predict_x0", predict_x0) else "dpmsolver"
        if algorithm_type is not None and ALGORITHM_TYPES[algorithm_type][0] != form_of_x0:
            _agree("algorithm_type", algorithm_type, "predict_x0", predict_x0)
        algorithm_type = algorithm_type or form_of_x0
    return algorithm_type


def _corrector(k: dict[str, Any], solver_type: str) -> tuple[str | None, str | None, list[int]]:
    """(corrector, corrector_variant, disable_corrector): ours, or a UniPC config's (its
    solver_type names the corrector's B(h))."""
    unipc_variant = SOLVER_TYPES[solver_type][1]
    corrector, variant = k["corrector"], k["corrector_variant"]
    if unipc_variant is not None and corrector != "off":
        # A UniPC config: its corrector, with its B(h). An explicit corrector='off' (ours,
        # e.g. handed back by a UniPC scheduler made from our config) runs without it.
        if variant is not None and variant != unipc_variant:
            raise ValueError(
                f"solver_type={solver_type!r} and corrector_variant={variant!r} say "
                "different things; give one of them"
            )
        corrector = corrector or "all"
        variant = unipc_variant
    disable = k["disable_corrector"] or []
    if not isinstance(disable, list | tuple) or not all(
        isinstance(i, int) and i >= 0 for i in disable
    ):
        raise ValueError(f"disable_corrector must be a list of step indices >= 0; got {disable!r}")
    return corrector, variant, list(disable)


def _solver(k: dict[str, Any], flow_default: bool) -> tuple[SolverOptions, bool, list[int]]:
    """(the solver options, final_step_first_order, disable_corrector). On the flow default
    grid the corrector is on unless the config says otherwise (the measured best there)."""
    algorithm_type = _algorithm_type(k)
    algorithm, eta = ALGORITHM_TYPES[algorithm_type or "dpmsolver++"]
    solver_type = k["solver_type"] or "midpoint"
    check_choice("solver_type", solver_type, tuple(SOLVER_TYPES))
    corrector, variant, disable = _corrector(k, solver_type)
    if flow_default and corrector is None:
        corrector = "all"
    method = k["method"] or "multistep"
    check_choice("method", method, ("multistep", "singlestep"))
    _agree(
        "final_step_first_order", k["final_step_first_order"], "euler_at_final", k["euler_at_final"]
    )
    final_first = check_bool(
        "final_step_first_order",
        k["final_step_first_order"]
        if k["final_step_first_order"] is not None
        else bool(k["euler_at_final"]),
    )
    lower_final = k["lower_order_final"]
    order = check_int("solver_order", k["solver_order"], 1, 3)
    if eta > 0 and method == "singlestep":
        if algorithm != "dpmsolver++":
            raise ValueError(
                f"algorithm_type={algorithm_type!r} with method='singlestep': only "
                "'sde-dpmsolver++' runs singlestep (as in DPMSolverSinglestepScheduler)"
            )
        if order > 2:
            raise ValueError(
                f"algorithm_type={algorithm_type!r} with method='singlestep' takes "
                f"solver_order 1 or 2; got {order}"
            )
        if SOLVER_TYPES[solver_type][0] != "dpmsolver":
            raise ValueError(
                f"algorithm_type={algorithm_type!r} with method='singlestep' combines its "
                f"stage in the midpoint form only; got solver_type={solver_type!r} (use "
                "'midpoint')"
            )
    options = SolverOptions.of(
        algorithm=algorithm,
        order=order,
        method=method,
        solver_type=SOLVER_TYPES[solver_type][0],
        # Unsaid, as in diffusers: on for multistep (below 15 steps), off for singlestep
        # (where diffusers forces it on unless the calls fill whole steps and end above 0).
        lower_order_final=method == "multistep" if lower_final is None else lower_final,
        corrector=corrector or "off",
        corrector_variant=variant or "bh2",
        eta=eta,
    )
    if disable and options.corrector == "off":
        raise ValueError("disable_corrector lists steps of a corrector that is off")
    return options, final_first, disable


# The keys that say where a run ends, and what each value means (True: the jump to 0).
END_WORDS: dict[str, dict[Any, bool]] = {
    "final_noise_level": {"last": False, "zero": True},
    "final_sigmas_type": {"sigma_min": False, "zero": True},
    "set_alpha_to_one": {False: False, True: True},
}


def _end(k: dict[str, Any], flow: bool) -> tuple[bool, bool]:
    """(the jump to sigma = 0 after the last call?, denoise_to_zero)."""
    to_zero: bool | None = None
    said_end = None
    for name, meaning in END_WORDS.items():
        value = k[name]
        if value is None:
            continue
        check_choice(name, value, tuple(meaning))
        if to_zero is not None and meaning[value] != to_zero:
            raise ValueError(
                f"{said_end}={k[str(said_end)]!r} and {name}={value!r} say different things about "
                "where the run ends; give one of them"
            )
        to_zero, said_end = meaning[value], name
    if flow:
        # A flow schedule has no smallest training level: every end is the jump to sigma = 0
        # after the last call (diffusers' 'sigma_min' there uses the VP table's value).
        to_zero = True
    to_zero = bool(to_zero)
    denoise = check_bool("denoise_to_zero", k["denoise_to_zero"])
    if denoise and to_zero:
        raise ValueError(
            "denoise_to_zero needs the run to end at the smallest training level "
            "(final_noise_level='last' / final_sigmas_type='sigma_min')"
        )
    return to_zero, denoise


def _grid(k: dict[str, Any], flow: bool, use_flow: bool) -> Spacing:
    """How set_timesteps places the calls. As in diffusers, a use_*_sigmas flag (or
    use_flow_sigmas) replaces timestep_spacing; two flags, or our skip_type with any of
    them, are refused."""
    flags = _said(k, *SIGMA_SPACINGS)
    if k["use_diffusers_grid"]:
        flags = [*flags, "use_diffusers_grid"]
    if len(flags) > 1:
        raise ValueError(f"{' and '.join(flags)} each choose the time grid; give one of them")
    if k["skip_type"] is not None and (flags or (k["timestep_spacing"] is not None and not flow)):
        other = (flags or ["timestep_spacing"])[0]
        raise ValueError(
            f"skip_type and {other} each choose the time grid; give one of them (a keyword "
            "given to from_config replaces the config's grid keys)"
        )
    diffusers = bool(k["use_diffusers_grid"])
    if diffusers and not flow:
        raise ValueError(
            "use_diffusers_grid=True applies to flow-matching configs (VP configs place their "
            "calls as diffusers does through timestep_spacing)"
        )
    spacing_name = SIGMA_SPACINGS[flags[0]] if flags and not diffusers else ""
    steps_offset = check_int("steps_offset", k["steps_offset"], 0)
    clipped = k["lambda_min_clipped"]
    if clipped != -math.inf:
        clipped = check_float("lambda_min_clipped", clipped)
    for name in ("sigma_min", "sigma_max"):
        if k[name] is None:
            continue
        if not check_float(name, k[name]) > 0:
            raise ValueError(f"{name} must be > 0; got {k[name]!r}")
        # The ends of a sigma spacing of sigma_t / alpha_t (VP, or UniPC's flow sigmas);
        # elsewhere (as in diffusers' DPM-Solver) nothing would read them.
        if not flags or (flow and not use_flow):
            raise ValueError(
                f"{name}={k[name]!r} is read by use_karras_sigmas / use_exponential_sigmas / "
                "use_beta_sigmas (of a VP config or one with use_flow_sigmas) only"
            )
    shift_terminal = k["shift_terminal"]
    if shift_terminal is not None and not 0 < check_float("shift_terminal", shift_terminal) < 1:
        raise ValueError(f"shift_terminal must lie in (0, 1); got {shift_terminal!r}")
    check_choice("time_shift_type", k["time_shift_type"], ("exponential", "linear"))
    for name in ("base_shift", "max_shift"):
        check_float(name, k[name])
    for name in ("base_image_seq_len", "max_image_seq_len"):
        check_int(name, k[name], 1)
    if flow:
        return _flow_grid(k, use_flow, spacing_name, clipped, diffusers)
    if k["use_dynamic_shifting"] or shift_terminal is not None:
        raise ValueError(
            f"{'use_dynamic_shifting' if k['use_dynamic_shifting'] else 'shift_terminal'} "
            "applies to flow-matching configs (prediction_type='flow_prediction')"
        )
    if k["flow_shift"] not in (None, 1.0):  # saved DPMSolver configs carry 1.0
        raise ValueError(f"flow_shift={k['flow_shift']!r} needs use_flow_sigmas=True")
    if k["timestep_spacing"] is not None:
        check_choice("timestep_spacing", k["timestep_spacing"], TIMESTEP_SPACINGS)
    if spacing_name:
        return Spacing(
            "sigmas", spacing_name, steps_offset, clipped, k["sigma_min"], k["sigma_max"]
        )
    if k["timestep_spacing"] is not None:
        return Spacing("timestep_spacing", k["timestep_spacing"], steps_offset, clipped)
    skip = k["skip_type"] or "time_uniform"
    check_choice("skip_type", skip, SKIP_TYPES)
    return Spacing("skip_type", skip, steps_offset, clipped)


def _flow_grid(
    k: dict[str, Any], use_flow: bool, spacing_name: str, clipped: float, diffusers: bool
) -> Spacing:
    """The grid of a flow-matching config: DPMSolverMultistep's use_flow_sigmas
    (flow_shift) or FlowMatchEulerDiscrete's (shift, dynamic shifting, shift_terminal)."""
    if clipped != -math.inf:
        raise ValueError(
            f"lambda_min_clipped={clipped!r} clips VP tables; a flow-matching run starts at "
            "the flow grid's first sigma"
        )
    skip = k["skip_type"] or ""
    if skip:
        # Our grids in the unshifted flow time u (sigma = shift u / (1 + (shift - 1) u)),
        # from pure noise u = 1: those spaced in lambda cannot start there.
        check_choice("skip_type", skip, FLOW_SKIP_TYPES)
    if use_flow:
        if spacing_name == "logSNR":
            raise ValueError("use_lu_lambdas and use_flow_sigmas each choose the time grid")
        shift = check_float("flow_shift", 1.0 if k["flow_shift"] is None else k["flow_shift"])
        kind = "flow_sigmas"
    else:
        if k["flow_shift"] not in (None, 1.0):
            raise ValueError("flow_shift goes with use_flow_sigmas; a FlowMatch config uses shift")
        if spacing_name == "logSNR":
            raise ValueError("use_lu_lambdas applies to VP schedules; flow configs do not take it")
        shift = check_float("shift", 1.0 if k["shift"] is None else k["shift"])
        kind = "flow_match"
    if not (shift > 0 and math.isfinite(shift)):
        raise ValueError(f"{'flow_shift' if use_flow else 'shift'} must be > 0; got {shift!r}")
    return Spacing(
        kind,
        spacing_name,
        shift=shift,
        dynamic=check_bool("use_dynamic_shifting", k["use_dynamic_shifting"]),
        time_shift_type=k["time_shift_type"],
        shift_terminal=k["shift_terminal"],
        sigma_min=k["sigma_min"],
        sigma_max=k["sigma_max"],
        skip=skip,
        diffusers=diffusers,
    )


def _training_schedule(
    k: dict[str, Any], n: int, flow: bool, clipped: float
) -> tuple[torch.Tensor, torch.Tensor, NoiseSchedule]:
    """(betas, alphas_cumprod, the noise schedule): the VP training table as diffusers
    builds it (a flow config's use_*_sigmas take their default ends from it), and the
    schedule the run is planned on."""
    betas = training_betas(
        n, k["beta_start"], k["beta_end"], k["beta_schedule"], k["trained_betas"]
    )
    if k["trained_betas"] is None and not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError(
            f"beta_start={k['beta_start']!r} and beta_end={k['beta_end']!r} give betas outside "
            f"(0, 1) with beta_schedule={k['beta_schedule']!r}"
        )
    if check_bool("rescale_betas_zero_snr", k["rescale_betas_zero_snr"]):
        betas = rescale_zero_terminal_snr(betas)  # diffusers' own (Lin et al. 2024)
    alphas_cumprod = torch.cumprod(1.0 - betas, 0)
    # Beyond zero terminal SNR (a last entry of 0): a table that underflows before its end,
    # where it stops decreasing.
    flat = (alphas_cumprod[1:-1] >= alphas_cumprod[:-2]) | (alphas_cumprod[:-1] == 0)[:-1]
    if bool(flat.any()):
        first = int(flat.nonzero()[0, 0]) + 1
        raise ValueError(
            f"the training schedule's alphas_cumprod reaches 0 at step {first} of {len(betas)} "
            f"(num_train_timesteps={n}, beta_schedule={k['beta_schedule']!r}, "
            f"beta_end={k['beta_end']!r}): no model is trained on such a table; check those keys"
        )
    if float(alphas_cumprod[-1]) == 0.0:
        # Zero terminal SNR: alpha_T = 0 exactly; diffusers makes it 2^-24 (float16's
        # smallest positive). That breaks monotonicity when the entry before is smaller, so
        # the schedule gets half the previous entry: both lie in the tail with lambda < -5.1
        # that the core drops, so neither value reaches a run.
        alphas_cumprod[-1] = 2.0**-24
    if flow:
        # time = flow sigma; the network gets N sigma (diffusers' flow timesteps).
        schedule: NoiseSchedule = FlowSchedule(
            shift=1.0, t_min=1.0 / (16 * n), t_max=1.0, time_scale=float(n)
        )
        return betas, alphas_cumprod, schedule
    table = alphas_cumprod.clone()
    if float(table[-1]) >= float(table[-2]):
        table[-1] = 0.5 * float(table[-2])
    # lambda_min_clipped is where the schedule stops (diffusers' default -inf keeps the
    # whole table, where the core's own default drops a cosine tail below -5.1).
    clip = None if clipped == -math.inf else clipped
    if clip is not None:
        lam = 0.5 * (torch.log(table) - torch.log1p(-table))
        if int((lam >= clip).sum()) < 2:
            raise ValueError(
                f"lambda_min_clipped={clip!r} clips all but {int((lam >= clip).sum())} "
                f"entries of the training schedule (its lambda lies in "
                f"[{float(lam.min()):.4g}, {float(lam.max()):.4g}]); at least 2 must stay"
            )
    return betas, alphas_cumprod, DiscreteVPSchedule(alphas_cumprod=table, clip_lambda=clip)


def _x0_corrections(k: dict[str, Any]) -> tuple[DynamicThresholding | None, float | None, bool]:
    """(thresholding, clip_sample_range, a learned variance to split off): what corrects
    x0_pred, and whether outputs of twice the sample's channels carry a variance."""
    threshold = None
    if check_bool("thresholding", k["thresholding"]):
        ratio = check_float("dynamic_thresholding_ratio", k["dynamic_thresholding_ratio"])
        top = check_float("sample_max_value", k["sample_max_value"])
        if not 0 <= ratio <= 1:
            raise ValueError(f"dynamic_thresholding_ratio must lie in [0, 1]; got {ratio!r}")
        if not top > 0:
            raise ValueError(f"sample_max_value must be > 0; got {top!r}")
        threshold = DynamicThresholding(ratio, 1.0, ceiling=top)
    clip = None
    if k["clip_sample"] is not None and check_bool("clip_sample", k["clip_sample"]):
        clip = check_float("clip_sample_range", k["clip_sample_range"])
        if not clip > 0:
            raise ValueError(f"clip_sample_range must be > 0; got {clip!r}")
    # A learned variance (or an unsaid variance_type, e.g. an IF UNet under a DDPM config
    # without the key) makes outputs of twice the channels: their first half is kept, as
    # diffusers does; the fixed variances of DDPM make outputs of the sample's shape.
    variance_type = k["variance_type"]
    if variance_type is not None:
        check_choice("variance_type", variance_type, VARIANCE_TYPES)
    return threshold, clip, variance_type is None or variance_type in ("learned", "learned_range")
