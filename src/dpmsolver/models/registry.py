"""The built-in models by name: `load("digits-exact")`, `load("digits-net")`."""

from __future__ import annotations

from typing import Any

import torch

from ..core import NoiseSchedule
from .digits_net import load_digits_net
from .exact import ExactModel
from .gmm import load_digits_gmm
from .schedules import ddpm_linear_schedule

__all__ = ["MODELS", "load"]

MODELS = ("digits-exact", "digits-net")


def load(
    name: str = "digits-exact",
    schedule: NoiseSchedule | None = None,
    device: str | torch.device | None = None,
) -> Any:
    """A built-in model by name, with its schedule as `.schedule`.

    'digits-exact': the Gaussian mixture fitted to scikit-learn's 8x8 digits (pixels in
    [-1, 1]), whose denoiser is exact; 'digits-net': a small network trained on the same
    digits (a `Denoiser`). Both use DDPM's linear schedule unless `schedule` is given.
    `device`: where the network's weights go (the exact model follows its input's device).
    """
    if name == "digits-exact":
        return ExactModel(load_digits_gmm(), schedule or ddpm_linear_schedule())
    if name == "digits-net":
        model = load_digits_net(schedule)
        if device is not None and isinstance(model.net, torch.nn.Module):
            model.net.to(device)
        return model
    raise ValueError(f"name must be one of {', '.join(repr(m) for m in MODELS)}; got {name!r}")
