"""k-diffusion-style samplers: drop-in functions for code that calls `k_diffusion.sampling`
(and for ComfyUI, which calls them with its model wrapper).

Every sampler has the signature `(model, x, sigmas, extra_args=None, callback=None,
disable=None, ..., model_sampling=None)`:
    model(x, sigma, **extra_args) -> denoised, a denoiser D(x, sigma) in VE scaling
        (x = x0 + sigma eps; `sigma` has shape (batch,)), or, with model_sampling='flow',
        on a flow-matching model as ComfyUI passes them (x = (1 - sigma) x0 + sigma eps,
        sigma in (0, 1], the denoiser still returning x0);
    sigmas: descending noise levels, normally ending in 0 (then the last step returns the
        model's denoised prediction, as k-diffusion does);
    callback: called once per sigma with {'x', 'i', 'sigma', 'sigma_hat', 'denoised'};
    disable: True hides the progress bar (shown with tqdm, when installed).
    model_sampling: 've' or 'flow'; None (default) reads it from a ComfyUI model wrapper
        (`model.inner_model.inner_model.model_sampling`, as ComfyUI's KSamplerX0Inpaint
        around its CFGGuider has it, or `model.inner_model.model_sampling`; of class
        CONST: flow) and is 've' otherwise.
They run the core sampler (`dpmsolver.sample`) on a `VESchedule` or a `FlowSchedule`, so
the update rules are the same as everywhere else in dpmsolver.

    sigmas     k-diffusion's sigma schedules
    denoiser   a denoiser as the core's model; VE or flow, from the model if not given
    run        `sample_dpm_solver`, the face's one bridge to the core
    samplers   the named samplers, each one call of `sample_dpm_solver`
    guidance   classifier-free guidance of a denoiser, and CFG++'s unconditional source
    tuned      tuned solvers' sigmas and settings
"""

from ..noise import BrownianTreeNoiseSampler
from .guidance import CFGDenoiser
from .run import sample_dpm_solver
from .samplers import (
    sample_deis,
    sample_dpm_adaptive,
    sample_dpm_fast,
    sample_dpmpp_2m,
    sample_dpmpp_2m_cfg_pp,
    sample_dpmpp_2m_sde,
    sample_dpmpp_2m_sde_heun,
    sample_dpmpp_2s,
    sample_dpmpp_2s_ancestral,
    sample_dpmpp_3m,
    sample_dpmpp_3m_sde,
    sample_dpmpp_sde,
    sample_euler_cfg_pp,
    sample_ipndm,
    sample_tuned,
)
from .sigmas import get_sigmas_exponential, get_sigmas_karras, get_sigmas_logsnr
from .tuned import tuned_sigmas

__all__ = [
    "BrownianTreeNoiseSampler",
    "CFGDenoiser",
    "get_sigmas_exponential",
    "get_sigmas_karras",
    "get_sigmas_logsnr",
    "sample_deis",
    "sample_dpm_adaptive",
    "sample_dpm_fast",
    "sample_dpm_solver",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_cfg_pp",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_2m_sde_heun",
    "sample_dpmpp_2s",
    "sample_dpmpp_2s_ancestral",
    "sample_dpmpp_3m",
    "sample_dpmpp_3m_sde",
    "sample_dpmpp_sde",
    "sample_euler_cfg_pp",
    "sample_ipndm",
    "sample_tuned",
    "tuned_sigmas",
]
