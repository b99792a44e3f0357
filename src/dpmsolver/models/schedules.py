"""The training schedules of the built-in models."""

from __future__ import annotations

import torch

from ..core import FlowSchedule, VPSchedule

__all__ = ["ddpm_linear_schedule", "rectified_flow_schedule"]


def ddpm_linear_schedule(n: int = 1000) -> VPSchedule:
    """DDPM's discrete schedule: betas linear from 1e-4 to 0.02 over n steps."""
    return VPSchedule.discrete(betas=torch.linspace(1e-4, 0.02, n, dtype=torch.float64))


def rectified_flow_schedule() -> FlowSchedule:
    """Rectified flow as the flow built-ins use it: sigma = t (no shift), the network's time
    input 1000 sigma, runs from t = 0.999 to 1e-3 by default (FlowSchedule's ends)."""
    return FlowSchedule(shift=1.0, time_scale=1000.0)
