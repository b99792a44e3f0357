"""The scheduler's config as diffusers round-trips it: which keys say the same thing,
what a config's class says that its keys do not, which of our keys are saved as used, and
the JSON written without unsaid (None) keys.

`DPMSolverScheduler.extract_init_dict` and `to_json_string` are these functions; what each
key means is `config.read_config`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

from ..core import SolverOptions
from .config import PREDICTION_TYPES

__all__ = [
    "CLASS_KEYS",
    "SYNONYMS",
    "TUNED_KEEPS",
    "config_for",
    "json_without_none",
    "resolved_keys",
    "source_class",
]

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
        "use_diffusers_grid",
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
# The config keys from_tuned keeps: the training schedule, what the network predicts and
# whether it is a flow-matching model; every other key (grid, solver) comes from the tuned
# solver.
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
    # What makes a config flow matching (the tuned grid holds the shift it was tuned at).
    "use_flow_sigmas",
    "flow_shift",
    "shift",
    "use_dynamic_shifting",
    "base_shift",
    "max_shift",
    "base_image_seq_len",
    "max_image_seq_len",
    "time_shift_type",
)


def config_for(
    cls_name: str,
    defaults_of: Callable[[], dict[str, Any]],
    config_dict: dict[str, Any],
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    """The config diffusers' `extract_init_dict` should read for our class: keyword
    arguments replace the config's other keys of their group (`SYNONYMS`), what the
    config's class says is added (`CLASS_KEYS`), and a config we saved gets our keys it
    lacks at their defaults (`defaults_of()`), marked as given."""
    config = dict(config_dict)
    defaults = set(config.get("_use_default_values", []))
    given = {k for k in config if not k.startswith("_") and k not in defaults}
    for group in SYNONYMS:
        if any(k in kwargs for k in group):
            for k in group:
                if k not in kwargs:
                    config.pop(k, None)
                    given.discard(k)
    source = source_class(config, defaults)
    if source == cls_name:
        # A config we saved (None values left out): the keys it lacks are ours at their
        # defaults, passed as given so the loaded config equals the saved one.
        for key, value in defaults_of().items():
            if key not in config and key not in kwargs:
                config[key] = value
    added = []
    for key, value in CLASS_KEYS.get(source, {}).items():
        if key not in given and key not in kwargs:
            config[key] = value
            added.append(key)
    if "_use_default_values" in config:
        config["_use_default_values"] = [k for k in defaults if k not in added]
    return config


def resolved_keys(options: SolverOptions, prediction: str) -> dict[str, Any]:
    """Our own keys with the values in use (prediction, algorithm and solver type, method,
    corrector and its variant), under diffusers' names where it has them: a
    round trip through another class, which keeps them as hidden keys, comes back to the
    same run."""
    form = {"dpmsolver": "midpoint", "taylor": "heun"}[options.solver_type]
    algorithm = options.algorithm if options.eta == 0 else f"sde-{options.algorithm}"
    # With the corrector on, the midpoint form is saved under UniPC's name for its B(h).
    solver_type = (
        form if options.corrector == "off" or form == "heun" else options.corrector_variant
    )
    return dict(
        prediction_type={v: k for k, v in PREDICTION_TYPES.items()}[prediction],
        algorithm_type=algorithm,
        solver_type=solver_type,
        method=options.method,
        corrector=options.corrector,
        corrector_variant=options.corrector_variant,
    )


def json_without_none(text: str) -> str:
    """A config's JSON without the keys that are None ("not said"), so that diffusers'
    own classes load it with their defaults."""
    data = {k: v for k, v in json.loads(text).items() if v is not None}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def source_class(config: dict[str, Any], defaults: set[str]) -> str:
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
