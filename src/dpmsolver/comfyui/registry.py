"""Our samplers in ComfyUI's KSampler list and our grids in its scheduler list.

ComfyUI's KSampler node reads its lists (`comfy.samplers.SAMPLER_NAMES`,
`SCHEDULER_NAMES`) when its inputs are asked for, and finds a sampler's function as
`comfy.k_diffusion.sampling.sample_<name>`; a scheduler's handler in `SCHEDULER_HANDLERS`.
`register` adds ours to those (in place: the lists are the node's own objects), once, and
changes none of ComfyUI's own entries.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import Tensor

from .samplers import GRIDS, SAMPLERS, grid_sigmas, sampler_function
from .surface import comfy

__all__ = ["register"]


def register() -> None:
    """Add our samplers and schedulers to ComfyUI's lists (idempotent)."""
    found = comfy()
    samplers, k_sampling = found.samplers, found.k_sampling
    for name, options in SAMPLERS.items():
        setattr(k_sampling, f"sample_{name}", sampler_function(options))
        for names in (samplers.KSAMPLER_NAMES, samplers.SAMPLER_NAMES):
            if name not in names:
                names.append(name)
    for name, grid in GRIDS.items():
        if name not in samplers.SCHEDULER_HANDLERS:
            handler = functools.partial(_grid_handler, grid)
            samplers.SCHEDULER_HANDLERS[name] = samplers.SchedulerHandler(handler, use_ms=True)
        names = getattr(samplers, "SCHEDULER_NAMES", None)
        if isinstance(names, list) and name not in names:
            names.append(name)


def _grid_handler(grid: str, model_sampling: Any, steps: int) -> Tensor:
    return grid_sigmas(model_sampling, grid, steps)
