"""Measuring solvers: the high-accuracy reference, the RMS error (plain and trimmed),
counting model calls."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..core import DiffusionModel, Level, SolverOptions, Target, sample

__all__ = ["Counted", "counting", "frechet_distance", "reference", "rms", "trimmed_rms"]


def rms(a: Tensor, b: Tensor) -> float:
    """RMS of a - b over every element, in float64."""
    return float((a - b).double().pow(2).mean().sqrt())


def trimmed_rms(a: Tensor, b: Tensor, trim: float) -> float:
    """RMS of a - b over the samples (the first dimension) without the worst int(trim * n)
    of them (none of fewer than 1 / trim samples), in float64; inf if any sample's error is
    not finite (a lost sample is never trimmed away)."""
    if not 0.0 <= trim < 1.0:
        raise ValueError(f"trim must be a fraction in [0, 1); got {trim}")
    per = (a - b).double().pow(2).reshape(a.shape[0], -1).mean(1)
    if not bool(torch.isfinite(per).all()):
        return math.inf
    kept = per.sort().values[: per.numel() - int(trim * per.numel())]
    return float(kept.mean().sqrt())


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """The Frechet distance between Gaussians fitted to two sample sets (rows are samples,
    flattened; what FID computes on features): |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a^1/2
    S_b S_a^1/2)^1/2), in float64. Each set needs 2 samples at least (a covariance)."""
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, Tensor):
            raise TypeError(f"frechet_distance: {name} must be a tensor; got {type(t).__name__}")
        if t.dim() < 1 or t.shape[0] < 2:
            raise ValueError(
                f"frechet_distance: {name} must hold 2 samples at least (rows), to fit a "
                f"covariance; got shape {tuple(t.shape)}"
            )
    xa, xb = (t.reshape(t.shape[0], -1).double() for t in (a, b))
    mu_a, mu_b = xa.mean(0), xb.mean(0)
    s_a, s_b = torch.cov(xa.T), torch.cov(xb.T)
    vals, vecs = torch.linalg.eigh(s_a)
    root_a = (vecs * vals.clamp_min(0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + s_a.trace() + s_b.trace() - 2 * cross)


def reference(
    model: DiffusionModel, x_T: Tensor, nfe: int = 3000, skip_type: str = "logSNR"
) -> Tensor:
    """A high-accuracy solution: DPM-Solver-3 singlestep with `nfe` model calls."""
    options = SolverOptions.of(steps=nfe, order=3, method="singlestep_fixed", skip_type=skip_type)
    return sample(model, x_T, options)


class Counted:
    """A model that counts its calls in `calls[0]` and its evaluations (calls times the
    batch) in `calls[1]` (a list, so a caller can reset it)."""

    def __init__(
        self,
        model: DiffusionModel,
        calls: list[int],
        on_call: Callable[[], object] | None = None,
    ) -> None:
        self.model = model
        self.on_call = on_call
        self.schedule = model.schedule
        self.calls = calls
        # What the model says of itself, passed on: its sample shape, and the name of its
        # time in error messages.
        for name in ("sample_shape", "time_name"):
            value = getattr(model, name, None)
            if value is not None:
                setattr(self, name, value)

    def __call__(self, x: Tensor, level: Level, target: Target) -> Tensor:
        self.calls[0] += 1
        self.calls[1] += int(x.shape[0]) if x.dim() else 1
        if self.on_call is not None:
            self.on_call()
        return self.model(x, level, target)


def counting(
    model: DiffusionModel, on_call: Callable[[], object] | None = None
) -> tuple[Any, list[int]]:
    """The model wrapped to count its calls and evaluations in the returned list
    ([calls, evaluations]), calling `on_call()` at each call (a progress bar's update)."""
    calls = [0, 0]
    return Counted(model, calls, on_call), calls
