"""The built-in models by name: `load("digits-exact")`, `load("digits-net")`,
`load("digits-flow")`, `load("digits-exact-flow")`."""

from __future__ import annotations

from typing import Any

import torch

from ..checks import check_choice, check_device
from ..core import NoiseSchedule
from .digits_net import load_digits_flow, load_digits_net
from .exact import ExactModel
from .gmm import load_digits_gmm
from .schedules import ddpm_linear_schedule, rectified_flow_schedule

__all__ = ["FLOW_MODELS", "MODELS", "load"]

MODELS = ("digits-exact", "digits-net", "digits-flow", "digits-exact-flow")
# The built-in models on a flow-matching schedule.
FLOW_MODELS = ("digits-flow", "digits-exact-flow")


def load(
    name: str = "digits-exact",
    schedule: NoiseSchedule | None = None,
    device: str | torch.device | None = None,
) -> Any:
    """A built-in model by name, with its schedule as `.schedule`.

    'digits-exact': the Gaussian mixture fitted to scikit-learn's 8x8 digits (pixels in
    [-1, 1]), whose denoiser is exact; 'digits-net': a small network trained on the same
    digits (a `Denoiser`). Both use DDPM's linear schedule unless `schedule` is given.
    'digits-flow': a network of the same size trained on rectified flow (it predicts the
    velocity); 'digits-exact-flow': the exact mixture on that schedule. Both use
    `rectified_flow_schedule()` unless `schedule` is given.
    `device`: where the network's weights go (the exact model follows its input's device).
    """
    check_choice("name", name, MODELS)
    if schedule is not None and not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule or None; got {type(schedule).__name__}")
    dev = None if device is None else check_device("device", device)
    if name in ("digits-exact", "digits-exact-flow"):
        # The exact model computes on its input's device: nothing to move.
        default = ddpm_linear_schedule() if name == "digits-exact" else rectified_flow_schedule()
        return ExactModel(load_digits_gmm(), schedule or default)
    model = load_digits_flow(schedule) if name == "digits-flow" else load_digits_net(schedule)
    if dev is not None and isinstance(model.net, torch.nn.Module):
        model.net.to(dev)
    return model
