"""Classifier-free guidance of a k-diffusion denoiser (`CFGDenoiser`), and where a CFG++
run reads each call's unconditional prediction from (ComfyUI's post-CFG hook, or the
model's `uncond_denoised`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ..checks import check_float
from ..core import ModelOutputError

__all__ = ["CFGDenoiser", "uncond_source"]


def uncond_source(model: Any, extra: dict[str, Any]) -> Callable[[], Any]:
    """Where a CFG++ run reads each call's unconditional prediction: ComfyUI's post-CFG
    hook when extra_args has 'model_options' (installed in a copy, with ComfyUI's cfg1
    shortcut off so the unconditional branch always runs), else the model's
    .uncond_denoised (`CFGDenoiser`)."""
    if "model_options" in extra:
        options = extra["model_options"]
        if not isinstance(options, Mapping):
            raise TypeError(
                f"extra_args['model_options'] must be a dict; got {type(options).__name__}"
            )
        seen: dict[str, Any] = {}

        def hook(args: dict[str, Any]) -> Any:
            seen["uncond"] = args["uncond_denoised"]
            return args["denoised"]

        options = dict(options)
        options["sampler_post_cfg_function"] = [
            *options.get("sampler_post_cfg_function", []),
            hook,
        ]
        options["disable_cfg1_optimization"] = True
        extra["model_options"] = options
        return lambda: seen.pop("uncond", None)
    return lambda: getattr(model, "uncond_denoised", None)


class CFGDenoiser:
    """Classifier-free guidance of a k-diffusion denoiser, one call on the doubled batch:
        D(x, sigma) = D_u + cond_scale (D_c - D_u),
    with D_u, D_c = inner_model([x, x], [sigma, sigma], cond=[uncond, cond], **kwargs).
    Called as model(x, sigma, cond=..., uncond=..., cond_scale=...), i.e. with
    extra_args={'cond': c, 'uncond': u, 'cond_scale': w}; cond and uncond are tensors with
    x's batch (concatenated on dim 0). After each call `uncond_denoised` holds D_u, which
    the CFG++ samplers read.
    """

    def __init__(self, inner_model: Callable[..., Tensor]) -> None:
        if not callable(inner_model):
            raise TypeError(f"inner_model must be callable; got {type(inner_model).__name__}")
        self.inner_model = inner_model
        self.uncond_denoised: Tensor | None = None

    def __call__(
        self,
        x: Tensor,
        sigma: Tensor,
        cond: Tensor,
        uncond: Tensor,
        cond_scale: float,
        **kwargs: Any,
    ) -> Tensor:
        scale = check_float("cond_scale", cond_scale)
        for name, c in (("cond", cond), ("uncond", uncond)):
            if not isinstance(c, Tensor) or c.dim() == 0 or c.shape[0] != x.shape[0]:
                got = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
                raise ValueError(
                    f"{name} must be a tensor with x's batch {x.shape[0]} on dim 0; got {got}"
                )
        out = self.inner_model(
            torch.cat([x, x]), torch.cat([sigma, sigma]), cond=torch.cat([uncond, cond]), **kwargs
        )
        if not isinstance(out, Tensor) or out.shape[0] != 2 * x.shape[0]:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ModelOutputError(
                f"inner_model returned {got} for the doubled batch of {2 * x.shape[0]}"
            )
        d_uncond, d_cond = out.chunk(2)
        self.uncond_denoised = d_uncond
        return d_uncond + scale * (d_cond - d_uncond)
