"""Named solver settings: the names the CLI, the bench and the budget search take.

Each preset is a description and a `SolverOptions` value; the run's step count and grid
are applied on top (`SolverOptions.of(preset.options, steps=..., skip_type=...)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core import SolverOptions

__all__ = ["RECOMMENDED", "SOLVERS", "Preset"]


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
RECOMMENDED = "dpm++3m"
