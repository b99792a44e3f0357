"""Tuned time grids shipped for the built-in models (from `dpmsolver bench --budget`).

For each model and budget the file holds the setting `dpmsolver bench --budget` chose on
tuning noises (solver options and grid), so `dpmsolver sample --tuned` and
`tuned_grid(name, nfe)` reuse it without re-tuning.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from ..tuned import TunedGrid

__all__ = ["TUNED_NFE", "tuned_grid"]

_FILE = Path(__file__).with_name("tuned_grids.json")
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
