"""k-diffusion's own samplers, loaded as the reference for the k-diffusion face.

`k-diffusion` is installed without its dependencies (its package `__init__` imports
training code: CLIP, kornia, wandb...), so its `sampling.py` is loaded alone, with the one
helper it takes from `k_diffusion.utils` (`append_dims`). It needs torchsde, torchdiffeq,
scipy and tqdm, which the test extra installs.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import types
from typing import Any

import torch


def _append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    return x[(...,) + (None,) * (target_dims - x.ndim)]


def load() -> Any:
    """The module `k_diffusion.sampling` of the installed k-diffusion distribution."""
    name = "_k_reference"
    if name + ".sampling" in sys.modules:
        return sys.modules[name + ".sampling"]
    files = importlib.metadata.files("k-diffusion") or []
    path = next(f for f in files if str(f).replace("\\", "/") == "k_diffusion/sampling.py")
    package = types.ModuleType(name)
    package.__path__ = []
    utils = types.ModuleType(name + ".utils")
    utils.append_dims = _append_dims  # type: ignore[attr-defined]
    sys.modules[name] = package
    sys.modules[name + ".utils"] = utils
    package.utils = utils  # type: ignore[attr-defined]
    spec = importlib.util.spec_from_file_location(name + ".sampling", str(path.locate()))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name + ".sampling"] = module
    spec.loader.exec_module(module)
    return module


VERSION = importlib.metadata.version("k-diffusion")
