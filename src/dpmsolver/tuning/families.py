"""What `optimize_solver` searches: the predictor families (preset names) that agree with
the caller's options and can run a budget, and the grids each is screened on (the GITS
dynamic-programme grid of the pilot reference, and the standard grids that can start
where the pilots do)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from ..core import NoiseSchedule, SolverOptions, time_grid
from ..core.options import MULTISTEP3, VARIANTS
from ..core.plan import AFS_MAX_SNR
from ..tools.presets import SOLVERS, preset_name
from .pilots import PilotReference

__all__ = [
    "FAMILY_KEYS",
    "PER_FAMILY",
    "SEARCHED_FAMILIES",
    "STANDARD_GRIDS",
    "proposals",
    "search_families",
]

# The predictor families searched by default (preset names, see `presets.SOLVERS`).
SEARCHED_FAMILIES = (
    "dpm++2m",
    "dpm++3m",
    "dpm++2m+c",
    "dpm++3m+c",
    "ipndm3",
    "ipndm4",
    "dpm++2m+afs",
    "dpm++3m+afs",
    "dpm++2m+c+afs",
    "dpm++3m+c+afs",
    "ipndm3+afs",
    "ipndm4+afs",
    "deis3",
    "deis3+afs",
)
STANDARD_GRIDS = ("time_uniform", "time_quadratic", "logSNR", "karras")
# The options that tell the families apart: a caller's value of one of them keeps only the
# families that have it; its other options apply to every family.
FAMILY_KEYS = ("algorithm", "order", "method", "corrector", "analytic_first_step")
# Options that only some families have: applied to those, checked alone.
PER_FAMILY = {"corrector_variant": VARIANTS, "multistep3": MULTISTEP3}
# Which families have each of them, and the family options that, given by the caller,
# make it apply as given to every family searched (one that refuses it is passed over).
_HAS: dict[str, Callable[[SolverOptions], bool]] = {
    "corrector_variant": lambda o: o.corrector != "off",
    "multistep3": lambda o: o.order == 3 and o.algorithm in ("dpmsolver++", "dpmsolver"),
}
_DECIDED_BY = {"corrector_variant": ("corrector",), "multistep3": ("algorithm", "order")}


def search_families(
    names: Sequence[str] | None,
    given: SolverOptions,
    options: dict[str, Any],
    nfe: int,
    schedule: NoiseSchedule,
    t_start: float,
) -> list[tuple[str, SolverOptions]]:
    """(name, options) of the families to search that agree with the caller's options
    and can run `nfe` calls from `t_start` (the pilots' start)."""
    if isinstance(names, str) or not (names is None or isinstance(names, Sequence)):
        raise TypeError(
            f"families must be a list of preset names (e.g. ['dpm++3m', 'ipndm4']); got "
            f"{type(names).__name__} {names!r}"
        )
    chosen = SEARCHED_FAMILIES if names is None else tuple(names)
    if not chosen:
        raise ValueError("families is empty; give preset names to search, or None for the default")
    chosen = tuple(preset_name(label, "families", ode=True) for label in chosen)
    found: list[tuple[str, SolverOptions]] = []
    for label in chosen:
        opts = SOLVERS[label].options
        # What makes a family (its predictor, order, corrector, first step) must agree with
        # the caller's options; the others (lower_order_final, corrector_variant, ...)
        # apply on top of it.
        if any(getattr(opts, key) != getattr(given, key) for key in options if key in FAMILY_KEYS):
            continue
        # Options that only some families have (the corrector's B(h), the third-order
        # rule's form) apply to those that have them.
        own = {
            key: value
            for key, value in options.items()
            if key not in _HAS or _HAS[key](opts) or any(k in options for k in _DECIDED_BY[key])
        }
        try:
            merged = SolverOptions.of(opts, **own) if own else opts
        except ValueError:
            continue  # e.g. a corrector_variant on a family whose corrector is off is fine,
            # but a combination the options refuse is not a family to search
        if all(merged != other for _, other in found):
            found.append((label, merged))
    if not found and options:
        found = [("given", given)]
    for key, has in _HAS.items():
        if key in options and not any(has(o) for _, o in found):
            raise ValueError(
                f"{key}={options[key]!r} applies to families that have it; none of those "
                f"searched ({', '.join(label for label, _ in found)}) does"
            )
    snr = math.exp(schedule.levels([t_start])[0].lambda_)
    usable = []
    for label, opts in found:
        if opts.method != "multistep" or opts.eta != 0 or opts.cfg_pp:
            raise ValueError(
                "optimize_solver tunes multistep ODE solvers; got "
                f"method={opts.method!r}, eta={opts.eta}, cfg_pp={opts.cfg_pp}"
            )
        if opts.steps_for_calls(nfe) < opts.order:
            continue
        if opts.analytic_first_step and snr > AFS_MAX_SNR:
            continue
        usable.append((label, opts))
    if not usable:
        raise ValueError(f"no searched family can run nfe={nfe} with options {options}")
    return usable


def proposals(
    schedule: NoiseSchedule, reference: PilotReference, steps: int
) -> dict[str, list[float]]:
    """The GITS dynamic-programme grid of `steps` steps on the reference's candidate times
    (a first-order step's error from reference state i to j, the cheapest path) and the
    standard grids that can start where the pilots do."""
    t_s, t_e = reference.times[0], reference.times[-1]
    out = {}
    for g in STANDARD_GRIDS:
        try:
            out[g] = time_grid(schedule, g, t_s, t_e, steps).tolist()
        except ValueError:
            continue  # a grid spaced in lambda cannot start at pure noise (lambda = -inf)
    if steps < len(reference.times):
        out["dp"] = reference.dp_grid(steps)
    return out
