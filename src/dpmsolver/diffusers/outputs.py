"""A pipeline's model output as the solver needs it: without a learned variance's
channels, checked against the sample, and converted to eps_pred or x0_pred with the
config's x0 corrections (thresholding, clip_sample) applied as diffusers applies them."""

from __future__ import annotations

from torch import Tensor

from ..core import Level, to_data
from .config import Setup

__all__ = ["model_mean", "to_form"]


def model_mean(out: Tensor, sample: Tensor, i: int, setup: Setup, variance_type: object) -> Tensor:
    """The model output without its learned variance channels (twice the sample's
    channels, unless variance_type is a fixed one), checked against the sample."""
    doubled = out.dim() >= 2 and out.shape[1] == 2 * sample.shape[1]
    doubled = doubled and out.shape[2:] == sample.shape[2:]
    if doubled and setup.split_variance:
        # Keep the mean, contiguous so it rounds as an unsplit output would (CPU half
        # kernels round strided inputs differently).
        out = out[:, : sample.shape[1]].contiguous()
    elif doubled:
        raise ValueError(
            f"model_output has twice the sample's channels at step {i} "
            f"({tuple(out.shape)}), but variance_type={variance_type!r} is a "
            "fixed variance; a learned one is 'learned' or 'learned_range'"
        )
    if out.shape != sample.shape:
        raise ValueError(
            f"model_output has shape {tuple(out.shape)} at step {i}, expected {tuple(sample.shape)}"
        )
    return out


def to_form(out: Tensor, x: Tensor, level: Level, setup: Setup, form: str | None = None) -> Tensor:
    """eps_pred or x0_pred (`form`, default the algorithm's), with thresholding /
    clip_sample applied to x0_pred as diffusers does (in the noise form eps is
    recomputed)."""
    x0 = to_data(out, x, level.alpha, level.sigma, setup.prediction)
    corrected = setup.threshold is not None or setup.clip is not None
    if setup.threshold is not None:
        x0 = setup.threshold(x0)
    elif setup.clip is not None:
        x0 = x0.clamp(-setup.clip, setup.clip)
    if (form or setup.options.form) == "data":
        return x0
    if not corrected and setup.prediction == "noise":
        return out
    return (x - level.alpha * x0) / level.sigma
