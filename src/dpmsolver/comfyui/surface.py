"""The part of ComfyUI the node pack uses, found and checked once: one clear ImportError
when ComfyUI is missing or lacks it (ComfyUI reports a node pack that fails to import and
starts without it)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import NamedTuple

__all__ = ["Comfy", "comfy"]

# (module, the names it must have): the registry surface of comfy/samplers.py, the
# k-diffusion sampler module that ksampler() reads sample_<name> from, and the model
# sampling classes that tell flow models (CONST) from the others.
NEEDED = (
    (
        "comfy.samplers",
        ("KSAMPLER", "SAMPLER_NAMES", "KSAMPLER_NAMES", "SCHEDULER_HANDLERS", "SchedulerHandler"),
    ),
    ("comfy.k_diffusion.sampling", ()),
    ("comfy.model_sampling", ("CONST",)),
)


class Comfy(NamedTuple):
    samplers: ModuleType
    k_sampling: ModuleType
    model_sampling: ModuleType


_FOUND: list[Comfy] = []


def comfy() -> Comfy:
    """ComfyUI's modules, checked: ImportError naming what is missing (ComfyUI is not on
    the path, or is older than the version whose scheduler registry this pack uses)."""
    if _FOUND:
        return _FOUND[0]
    modules = []
    for name, attributes in NEEDED:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise ImportError(
                f"dpmsolver.comfyui runs inside ComfyUI: it could not import {name} "
                f"({error}). Install dpmsolver into ComfyUI's Python and run "
                "`dpmsolver comfyui install /path/to/ComfyUI`"
            ) from error
        missing = [a for a in attributes if not hasattr(module, a)]
        if missing:
            raise ImportError(
                f"dpmsolver.comfyui needs a ComfyUI whose {name} has {', '.join(missing)} "
                "(ComfyUI 0.3.x from 2025 or newer); update ComfyUI"
            )
        modules.append(module)
    found = Comfy(*modules)
    _FOUND.append(found)
    return found
