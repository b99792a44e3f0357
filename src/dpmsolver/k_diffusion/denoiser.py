"""A k-diffusion denoiser D(x, sigma) as the core's `DiffusionModel`, on a VE or a flow
schedule whose time is the caller's sigma; and which of the two a model is (`sampling`:
given, or read from a ComfyUI model wrapper)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ..core import FlowSchedule, Level, ModelOutputError, NoiseSchedule, Target, VESchedule
from ..core.kernel import tensor_version
from ..tools.progress import Progress

__all__ = [
    "FLOW_SDE_START",
    "MODEL_SAMPLINGS",
    "KCallback",
    "KDenoiser",
    "check_callback",
    "extra_kwargs",
    "is_flow",
    "sampling",
    "schedule_for",
]

KCallback = Callable[[dict[str, Any]], None]


def extra_kwargs(extra_args: Any) -> dict[str, Any]:
    """extra_args as a dict of keyword arguments for the model (None: none)."""
    if extra_args is None:
        return {}
    if not isinstance(extra_args, Mapping) or not all(isinstance(k, str) for k in extra_args):
        raise TypeError(
            f"extra_args must be a dict of keyword arguments for the model (str keys); got "
            f"{type(extra_args).__name__} {extra_args!r:.60}"
        )
    return dict(extra_args)


def check_callback(callback: object) -> None:
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None; got {type(callback).__name__}")


class KDenoiser:
    """A k-diffusion denoiser seen as a dpmsolver DiffusionModel on a VE or flow schedule
    whose time is the caller's sigma (errors name it so)."""

    time_name = "sigma"

    def __init__(
        self,
        model: Callable[..., Tensor],
        schedule: NoiseSchedule,
        extra_args: dict[str, Any],
        index: dict[float, int],
        callback: KCallback | None,
        progress: Progress,
    ) -> None:
        self.model = model
        self.schedule: NoiseSchedule = schedule
        self.extra_args = extra_args
        self.index = index
        self.callback = callback
        self.progress = progress
        self.last: tuple[float, Tensor] | None = None
        # CFG++ runs: where the unconditional prediction of the last call is read from.
        self.uncond: Callable[[], Any] | None = None

    @property
    def gives_pair(self) -> bool:
        return self.uncond is not None

    def predict_pair(self, x: Tensor, level: Level) -> tuple[Tensor, Tensor]:
        """(guided, unconditional) denoised predictions of one model call (CFG++)."""
        guided = self(x, level, "data")
        uncond = self.uncond() if self.uncond is not None else None
        if not isinstance(uncond, Tensor):
            raise ModelOutputError(
                f"a CFG++ sampler found no unconditional prediction after the model call at "
                f"sigma={level.t:.6g} (got {type(uncond).__name__}): with ComfyUI's "
                "extra_args['model_options'] the post-CFG hook gives it; otherwise use "
                "dpmsolver.k_diffusion.CFGDenoiser (or a model that sets .uncond_denoised)"
            )
        return guided, uncond

    def __call__(self, x: Tensor, level: Level, target: Target) -> Tensor:
        # The grid's times are the sigmas the caller gave (VE: sigma; flow: the flow sigma),
        # in x's dtype, or float32 for half-precision x (whose range stops at 65504).
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        sigma_in = torch.full((x.shape[0],), level.t, dtype=dtype, device=x.device)
        denoised = self.model(x, sigma_in, **self.extra_args)
        if not isinstance(denoised, Tensor) or denoised.shape != x.shape:
            return denoised  # the sampler reports it with the step and time
        self.last = (level.t, denoised)
        i = self.index.get(level.t)
        if i is not None:
            self.progress.update()
            if self.callback is not None:
                sigma = x.new_tensor(level.t)
                versions = [tensor_version(x), tensor_version(denoised)]
                self.callback(
                    {"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised}
                )
                for name, v, value in (("x", versions[0], x), ("denoised", versions[1], denoised)):
                    if v is not None and value._version != v:
                        raise ValueError(
                            f"callback changed {name} in place at step {i} (sigma={level.t:.6g}); "
                            "the sampler still needs it: read it, or change a copy"
                        )
        if target == "data":
            return denoised
        return (x - level.alpha * denoised) / level.sigma


@functools.lru_cache(maxsize=16)
def _ve_schedule(sigma_min: float, sigma_max: float) -> VESchedule:
    """One schedule per sigma range, so repeated runs on the same grid reuse their plan
    (plans are cached per schedule object)."""
    return VESchedule(sigma_min, sigma_max)


@functools.lru_cache(maxsize=16)
def _flow_schedule(sigma_min: float, sigma_max: float) -> FlowSchedule:
    """The flow schedule whose time is the flow sigma (alpha = 1 - sigma), on this range."""
    return FlowSchedule(shift=1.0, t_min=sigma_min, t_max=sigma_max)


MODEL_SAMPLINGS = ("ve", "flow")
# Where the SDE samplers start a flow grid that starts at sigma = 1 (ComfyUI's
# offset_first_sigma_for_snr: its percent_to_sigma(1e-4) for flow models).
FLOW_SDE_START = 1.0 - 1e-4


def sampling(model: Any, model_sampling: str | None) -> str:
    """'ve' or 'flow': as given, else read from a ComfyUI model wrapper (its inner model's
    model_sampling of class CONST, ComfyUI's flow matching), else 've'."""
    if model_sampling is not None:
        if model_sampling not in MODEL_SAMPLINGS:
            raise ValueError(
                f"model_sampling must be one of 've', 'flow' or None; got {model_sampling!r}"
            )
        return model_sampling
    # ComfyUI hands samplers KSamplerX0Inpaint(CFGGuider(...)): the model sampling is on
    # the guider's inner model; simpler wrappers hold it one level up.
    inner = getattr(model, "inner_model", None)
    for holder in (getattr(inner, "inner_model", None), inner):
        found = getattr(holder, "model_sampling", None)
        if found is not None:
            return "flow" if is_flow(found) else "ve"
    return "ve"


def is_flow(model_sampling: Any) -> bool:
    """Whether ComfyUI's model sampling is flow matching (its CONST class)."""
    return "CONST" in {c.__name__ for c in type(model_sampling).__mro__}


def schedule_for(sampling: str, sigma_min: float, sigma_max: float) -> NoiseSchedule:
    """The schedule of a sigma range: VE (any sigma > 0) or flow (sigmas in (0, 1])."""
    if sampling == "ve":
        return _ve_schedule(sigma_min, sigma_max)
    if sigma_max > 1.0:
        raise ValueError(
            f"sigmas must lie in (0, 1] for a flow model (model_sampling='flow'); the grid "
            f"reaches {sigma_max!r}"
        )
    return _flow_schedule(sigma_min, sigma_max)
