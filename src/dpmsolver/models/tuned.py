"""Tuned solvers and grids shipped for the built-in models, reused without re-tuning.

- `tuned_solver(name, nfe)`: the `TunedSolver` that `optimize_solver` found (grid, base
  solver and per-step coefficients; `tuned_solvers.json`, written by
  `benchmarks/low_budget.py --write-solvers`). `dpmsolver sample --tuned` and
  `dpmsolver bench --budget` use them.
- `tuned_grid(name, nfe)`: the grid-only setting an earlier budget search chose
  (`tuned_grids.json`), kept for callers of `TunedGrid`.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from ..tuning.values import TunedGrid, TunedSolver

__all__ = ["TUNED_NFE", "tuned_grid", "tuned_solver"]

_FILE = Path(__file__).with_name("tuned_grids.json")
_SOLVERS = Path(__file__).with_name("tuned_solvers.json")
TUNED_NFE = (4, 5, 6, 8, 10)


@cache
def _table() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_FILE.read_text())
    return data


def tuned_grid(name: str, nfe: int) -> TunedGrid:
    """The shipped grid of built-in model `name` for `nfe` model calls, with the solver
    options it was chosen with: `sample(model, x, timesteps=g.times, **g.options)`."""
    table = _table()
    if name not in table:
        raise ValueError(f"name must be one of {', '.join(map(repr, table))}; got {name!r}")
    grids = table[name]
    if str(nfe) not in grids:
        raise ValueError(f"no tuned grid of {name!r} for nfe={nfe!r}; shipped: {', '.join(grids)}")
    return TunedGrid(**grids[str(nfe)])


@cache
def _solvers() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_SOLVERS.read_text())
    return data


def tuned_solver(name: str, nfe: int) -> TunedSolver:
    """The shipped tuned solver of built-in model `name` for `nfe` model calls:
    `sample(model, x, solver=tuned_solver(name, nfe))`."""
    table = _solvers()
    if name not in table:
        raise ValueError(f"name must be one of {', '.join(map(repr, table))}; got {name!r}")
    solvers = table[name]
    if str(nfe) not in solvers:
        shipped = ", ".join(solvers)
        raise ValueError(f"no tuned solver of {name!r} for nfe={nfe!r}; shipped: {shipped}")
    return TunedSolver(**solvers[str(nfe)])
