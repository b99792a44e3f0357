"""Tuned values: a time grid found for one model, solver and budget, with its provenance.

A plain value (a list of times and the solver options as a JSON record) that every face
can run: `sample(model, x, timesteps=g.times, **g.options)`. Made by
`dpmsolver.optimize_time_grid`; shipped ones are read by `dpmsolver.models.tuned_grid`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .core import SolverOptions

__all__ = ["TunedGrid"]


@dataclass
class TunedGrid:
    """An optimised time grid (`times`, a plain list of steps + 1 floats, t_start first) and
    how it was found: the solver options it was tuned for (those that differ from the
    defaults, by name), the pilots' RMS error of the first (dynamic-programme) grid and of
    the final one, and the model calls spent."""

    times: list[float]
    nfe: int
    options: dict[str, Any]
    pilot_error: float
    initial_error: float
    model_calls: int
    seed: int
    details: dict[str, Any] = field(default_factory=dict)

    def solver(self) -> SolverOptions:
        """The solver options with this grid: what `sample(model, x, g.solver())` runs."""
        return SolverOptions.of(timesteps=tuple(self.times), **self.options)

    def to_json(self, path: str | Path | None = None) -> str:
        """The grid and its provenance as JSON (written to `path` if given)."""
        text = json.dumps(asdict(self), indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> TunedGrid:
        """Read what `to_json` wrote (a path or the JSON text)."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text()
        return cls(**json.loads(text))
