"""Named solver settings: the one vocabulary of the CLI, the bench and the tuners.

Each preset is a description and a `SolverOptions` value; the run's step count and grid
are applied on top (`SolverOptions.of(preset.options, steps=..., skip_type=...)`).
`resolve` also takes the names users already know for the same settings: ComfyUI's
(`dpmpp_2m`), A1111's ("DPM++ 2M Karras", the grid suffix included), diffusers' class names
where one maps to one preset, and the algorithm names of the `--solver` flag of old.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..core import SolverOptions

__all__ = ["RECOMMENDED", "SOLVERS", "Preset", "Resolved", "preset_name", "resolve"]


@dataclass(frozen=True)
class Preset:
    """A named solver setting: what it is, in words, and its options."""

    description: str
    options: SolverOptions


def _preset(description: str, **options: Any) -> Preset:
    return Preset(description, SolverOptions.of(**options))


SOLVERS: dict[str, Preset] = {
    "ddim": _preset("DDIM (DPM-Solver-1)", order=1),
    "dpm++2m": _preset("DPM-Solver++(2M)", order=2),
    "dpm++3m": _preset("DPM-Solver++(3M)", order=3),
    "dpm++3s": _preset("DPM-Solver++ singlestep 3", order=3, method="singlestep"),
    "dpm2m": _preset("DPM-Solver(2M), noise form", order=2, algorithm="dpmsolver"),
    "dpm3s": _preset(
        "DPM-Solver-3 singlestep (DPM-Solver-fast)",
        order=3,
        method="singlestep",
        algorithm="dpmsolver",
    ),
    "dpm++2m+c": _preset("DPM-Solver++(2M) with the UniC corrector", order=2, corrector="all"),
    "dpm++3m+c": _preset("DPM-Solver++(3M) with the UniC corrector", order=3, corrector="all"),
    "dpm++2m+c-taylor": _preset(
        "DPM-Solver++(2M), Taylor form, with the UniC corrector",
        order=2,
        corrector="all",
        solver_type="taylor",
    ),
    "dpm++3m+c-taylor": _preset(
        "DPM-Solver++(3M), Taylor form, with the UniC corrector",
        order=3,
        corrector="all",
        solver_type="taylor",
    ),
    "ipndm3": _preset("iPNDM, third order", algorithm="ipndm", order=3, lower_order_final=False),
    "ipndm4": _preset("iPNDM, fourth order", algorithm="ipndm", order=4, lower_order_final=False),
    "deis3": _preset(
        "DEIS, third order (ComfyUI's deis, tab mode)",
        algorithm="deis",
        order=3,
        lower_order_final=False,
    ),
}
# The same solvers with the analytic first step: one more step for the same model calls.
SOLVERS.update(
    {
        f"{name}+afs": Preset(
            f"{p.description}, analytic first step",
            SolverOptions.of(p.options, analytic_first_step=True),
        )
        for name, p in list(SOLVERS.items())
        if name in ("dpm++2m", "dpm++3m", "dpm++2m+c", "dpm++3m+c", "ipndm3", "ipndm4", "deis3")
    }
)
# The SDE samplers under their k-diffusion names (one model call per step; noise eta = 1).
SOLVERS.update(
    {
        "dpm++2m-sde": _preset("DPM-Solver++(2M) SDE", order=2, eta=1.0),
        "dpm++3m-sde": _preset("DPM-Solver++(3M) SDE", order=3, eta=1.0),
        "dpm++sde": _preset(
            "DPM-Solver++ SDE (singlestep 2)", order=2, method="singlestep", eta=1.0
        ),
        "dpm++2s-a": _preset(
            "DPM-Solver++(2S) ancestral",
            order=2,
            method="singlestep",
            eta=1.0,
            ancestral=True,
        ),
    }
)
RECOMMENDED = "dpm++3m"

# Other names of presets, written as users know them (matched as `_key` normalizes).
ALIASES: dict[str, str] = {
    # ComfyUI's sampler list (dpmpp_* normalizes to dpm++*, so dpmpp_2m needs no entry)
    "ipndm": "ipndm4",  # ComfyUI's ipndm: order 4
    "deis": "deis3",  # ComfyUI's deis: tab mode, max_order 3
    "dpm_fast": "dpm3s",  # k-diffusion's and ComfyUI's DPM-Solver-fast, A1111's "DPM fast"
    "dpmpp_2s_ancestral": "dpm++2s-a",
    # diffusers' schedulers whose defaults are one preset
    "DDIMScheduler": "ddim",
    "DPMSolverMultistepScheduler": "dpm++2m",
    "UniPCMultistepScheduler": "dpm++2m+c",  # bh2, order 2, x0 form: 2M + UniC
    # the algorithm names `dpmsolver sample --solver` took before it took presets
    "dpmsolver++": "dpm++2m",
    "dpmsolver": "dpm2m",
}
# Names users know that are not presets, and where they are.
ELSEWHERE: dict[str, str] = {
    "DPM++ 2M SDE Heun": "the Heun SDE step: dpmsolver.k_diffusion.sample_dpmpp_2m_sde_heun",
    "DPM++ 2M CFG++": "needs a guided model: dpm.sample(..., cfg_pp=True) or "
    "dpmsolver.k_diffusion.sample_dpmpp_2m_cfg_pp",
    "dpm_adaptive": "DPM-Solver-12/23 to a tolerance: --method adaptive",
    "uni_pc": "ComfyUI's UniPC runs order 3 with its own update; the closest preset is dpm++3m+c",
    "dpmpp_2m_cfg_pp": "needs a guided model: dpm.sample(..., cfg_pp=True) or "
    "dpmsolver.k_diffusion.sample_dpmpp_2m_cfg_pp",
    **{
        grid: f"a grid, not a solver: --skip-type {grid} (skip_type={grid!r} in Python)"
        for grid in ("karras", "exponential", "kl_optimal", "beta", "logSNR", "time_uniform")
    },
}
# Grid suffixes of A1111's names ("DPM++ 2M Karras"), each our skip_type of that name.
GRID_SUFFIXES = ("karras", "exponential")


class Resolved(NamedTuple):
    """A name resolved: the preset's own name, and the grid its suffix gave (or None)."""

    name: str
    skip_type: str | None


def _key(name: str) -> str:
    """A name as compared: case, spaces, '_' and '-' ignored, ComfyUI's 'dpmpp' = 'dpm++'."""
    key = "".join(c for c in name.lower() if c not in " _-")
    return "dpm++" + key[5:] if key.startswith("dpmpp") else key


def _table() -> dict[str, str]:
    table = {_key(n): n for n in SOLVERS}
    table.update({_key(alias): name for alias, name in ALIASES.items()})
    return table


def resolve(name: str, what: str = "solver") -> Resolved:
    """The preset that `name` names, in any of the vocabularies above (case-insensitive),
    with the grid of an A1111 suffix ('Karras', 'Exponential'). ValueError naming `what`,
    the value, where a known non-preset name lives, and the closest names."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a solver name (str); got {type(name).__name__}")
    table = _table()
    key, grid = _key(name), None
    for suffix in GRID_SUFFIXES:
        if key.endswith(suffix) and key[: -len(suffix)] in table:
            key, grid = key[: -len(suffix)], suffix
    if key in table:
        return Resolved(table[key], grid)
    prefix = "" if what == "solver" else f"{what}: "  # the argument, where it is one
    for known, where in ELSEWHERE.items():
        if _key(known) == key or any(_key(known) + s == key for s in GRID_SUFFIXES):
            raise ValueError(f"{prefix}solver {name!r} is not a preset here; {where}")
    close = [table[c] for c in difflib.get_close_matches(key, list(table), n=3, cutoff=0.6)]
    hint = ""
    if close:
        names = ", ".join(map(repr, close[:-1])) + " or " * (len(close) > 1) + repr(close[-1])
        hint = f" (did you mean {names}?)"
    raise ValueError(
        f"{prefix}unknown solver {name!r}{hint}; choose from {', '.join(SOLVERS)}, or the ComfyUI, "
        "A1111 and diffusers names of the same settings"
    )


def preset_name(name: str, what: str, ode: bool = False) -> str:
    """The preset `name` names (see `resolve`), for a list whose grid is set elsewhere: a
    grid suffix is refused, and with `ode` an SDE preset too (tuning and the budget search
    compare against the ODE's solution)."""
    found = resolve(name, what)
    if found.skip_type is not None:
        raise ValueError(
            f"{what}: {name!r} names a grid ({found.skip_type}) as well; give the solver "
            f"{found.name!r} here and the grid where the grid is set"
        )
    if ode and SOLVERS[found.name].options.eta > 0:
        raise ValueError(
            f"{what}: {name!r} is an SDE sampler ({found.name}); only ODE solvers can be "
            "tuned or compared with the ODE's solution here"
        )
    return found.name
