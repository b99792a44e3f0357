"""The samplers ComfyUI and A1111 users pick, through the k-diffusion face.

The "model" is the built-in exact digits mixture as a k-diffusion denoiser D(x, sigma) in VE
scaling, and as a flow-matching model (ComfyUI's convention: x = (1 - sigma) x0 + sigma eps,
sigmas in (0, 1]). It runs:
- "DPM++ 2M SDE Karras" and "DPM++ 3M SDE Exponential" with per-sample Brownian trees, and
  shows that sample 0 does not change when the batch does;
- "DPM++ SDE" and "DPM++ 2S a" on the flow model;
- "DPM++ 2M CFG++" through a k-diffusion-style CFG wrapper (a class-conditional model).
Needs torchsde (`pip install "dpmsolver[sde]"`) for the Brownian trees.
"""

import torch

import dpmsolver.k_diffusion as K  # noqa: N812 (k-diffusion's own convention)
from dpmsolver.models import load_digits_classes, load_digits_gmm

torch.set_num_threads(1)
gmm = load_digits_gmm()


def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return gmm.posterior_mean(x, 1.0, sigma)


x = 14.6 * torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
seeds = list(range(16))
for name, grid in (("sample_dpmpp_2m_sde", "karras"), ("sample_dpmpp_3m_sde", "exponential")):
    sigmas = getattr(K, f"get_sigmas_{grid}")(20, 0.03, 14.6)
    out = []
    for n in (16, 1):  # the whole batch, then sample 0 alone, each on its own Brownian path
        trees = K.BrownianTreeNoiseSampler(x[:n], 0.03, 14.6, seed=seeds[:n])
        out.append(getattr(K, name)(denoiser, x[:n], sigmas, disable=True, noise_sampler=trees))
    same = torch.equal(out[0][:1], out[1])
    print(
        f"{name} on {grid} sigmas: range [{out[0].min():.2f}, {out[0].max():.2f}], sample 0 "
        f"at batch 16 and 1 {'identical' if same else 'different'}"
    )


def flow_denoiser(x: torch.Tensor, sigma: torch.Tensor, seed: int | None = None) -> torch.Tensor:
    """(extra_args reach the model, as in ComfyUI, whose model takes the seed too)"""
    s = float(sigma[0])
    return gmm.posterior_mean(x, 1.0 - s, s)


flow_sigmas = torch.cat([torch.linspace(1.0, 0.02, 16), torch.zeros(1)])
noise = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
for name in ("sample_dpmpp_sde", "sample_dpmpp_2s_ancestral"):
    out = getattr(K, name)(
        flow_denoiser, noise, flow_sigmas, {"seed": 7}, disable=True, model_sampling="flow"
    )
    print(f"{name} on a flow model from sigma = 1: mean log p(x0) {gmm.log_prob(out).mean():.1f}")

classes = load_digits_classes()


def conditional(x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """E[x0 | x0 + sigma eps = x, class cond] (cond -1: unconditional)."""
    return classes.posterior_mean(x, 1.0, sigma.reshape(-1, 1, 1, 1), cond)


labels = torch.arange(16) % 10
extra = {"cond": labels, "uncond": torch.full_like(labels, -1), "cond_scale": 0.8}
sigmas = K.get_sigmas_karras(10, 0.03, 14.6)
out = K.sample_dpmpp_2m_cfg_pp(K.CFGDenoiser(conditional), x, sigmas, extra, disable=True)
hits = (classes.classify(out) == labels).float().mean()
print(f"DPM++ 2M CFG++ at scale 0.8, 10 steps: exact classifier agrees on {hits:.0%}")
print(f"samples: {tuple(out.shape)}")
