"""The training schedule of the built-in models."""

from __future__ import annotations

import torch

from ..core import VPSchedule

__all__ = ["ddpm_linear_schedule"]


def ddpm_linear_schedule(n: int = 1000) -> VPSchedule:
    """DDPM's discrete schedule: betas linear from 1e-4 to 0.02 over n steps."""
    return VPSchedule.discrete(betas=torch.linspace(1e-4, 0.02, n, dtype=torch.float64))
