"""The registry surface of ComfyUI's comfy/samplers.py and KSAMPLER's sampling call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

import comfy.k_diffusion.sampling as k_diffusion_sampling

KSAMPLER_NAMES = ["euler", "dpm_fast", "dpmpp_2m", "dpmpp_3m_sde"]
SAMPLER_NAMES = [*KSAMPLER_NAMES, "ddim", "uni_pc", "uni_pc_bh2"]


class SchedulerHandler(NamedTuple):
    handler: Callable[..., torch.Tensor]
    use_ms: bool = True


def _karras(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / 7), sigma_max ** (1 / 7)
    return torch.cat([(hi + ramp * (lo - hi)) ** 7, torch.zeros(1)])


SCHEDULER_HANDLERS = {"karras": SchedulerHandler(_karras, use_ms=False)}
SCHEDULER_NAMES = list(SCHEDULER_HANDLERS)


def calculate_sigmas(model_sampling: Any, scheduler_name: str, steps: int) -> torch.Tensor:
    handler = SCHEDULER_HANDLERS.get(scheduler_name)
    if handler is None:
        raise ValueError(f"invalid scheduler {scheduler_name}")
    if handler.use_ms:
        return handler.handler(model_sampling, steps)
    return handler.handler(
        n=steps,
        sigma_min=float(model_sampling.sigma_min),
        sigma_max=float(model_sampling.sigma_max),
    )


class _X0Inpaint:
    """KSamplerX0Inpaint without a mask: the sampler's model, calling the guider."""

    def __init__(self, model: Any) -> None:
        self.inner_model = model

    def __call__(self, x, sigma, denoise_mask=None, model_options={}, seed=None):
        return self.inner_model(x, sigma, model_options=model_options, seed=seed)


class KSAMPLER:
    def __init__(
        self, sampler_function: Callable[..., Any], extra_options: dict | None = None
    ) -> None:
        self.sampler_function = sampler_function
        self.extra_options = extra_options or {}

    def sample(
        self,
        model_wrap,
        sigmas,
        extra_args,
        callback,
        noise,
        latent_image=None,
        denoise_mask=None,
        disable_pbar=False,
    ):
        extra_args["denoise_mask"] = denoise_mask
        model_k = _X0Inpaint(model_wrap)
        ms = model_wrap.inner_model.model_sampling
        max_denoise = float(sigmas[0]) >= float(ms.sigma_max) * 0.9999
        noise = ms.noise_scaling(sigmas[0], noise, latent_image, max_denoise)
        total = len(sigmas) - 1
        k_callback = None
        if callback is not None:
            k_callback = lambda d: callback(d["i"], d["denoised"], d["x"], total)  # noqa: E731
        samples = self.sampler_function(
            model_k, noise, sigmas, extra_args=extra_args, callback=k_callback,
            disable=disable_pbar, **self.extra_options,
        )  # fmt: skip
        return ms.inverse_noise_scaling(sigmas[-1], samples)


def ksampler(sampler_name: str, extra_options: dict | None = None) -> KSAMPLER:
    return KSAMPLER(getattr(k_diffusion_sampling, f"sample_{sampler_name}"), extra_options)


def sampler_object(name: str) -> KSAMPLER:
    return ksampler(name)
