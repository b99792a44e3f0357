"""ComfyUI's model sampling classes, as far as the tests use them: EPS and V_PREDICTION
(VP models) and CONST (flow matching) predictions, a discrete VP table of sigmas and a
shifted flow."""

from __future__ import annotations

import torch


def _per_row(sigma, ndim):
    """sigma broadcastable against a batch of `ndim` dimensions (one value or one per row)."""
    return sigma.reshape(()) if sigma.numel() == 1 else sigma.reshape(-1, *[1] * (ndim - 1))


class EPS:
    # The network sees x / sqrt(sigma^2 + sigma_data^2) and predicts eps: x0 = x - sigma eps.
    def calculate_input(self, sigma, noise):
        s = _per_row(sigma, noise.ndim)
        return noise * (s * s + self.sigma_data**2) ** -0.5

    def calculate_denoised(self, sigma, model_output, model_input):
        return model_input - _per_row(sigma, model_output.ndim) * model_output

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        noise = noise * torch.sqrt(1.0 + sigma**2.0) if max_denoise else noise * sigma
        return noise + latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent


class V_PREDICTION(EPS):
    # The network predicts v (Salimans and Ho, 2022); in VE terms with c^2 = sigma^2 +
    # sigma_data^2: x0 = x sigma_data^2 / c^2 - v sigma sigma_data / c.
    def calculate_denoised(self, sigma, model_output, model_input):
        s, d = _per_row(sigma, model_output.ndim), self.sigma_data
        c2 = s * s + d * d
        return model_input * (d * d / c2) - model_output * (s * d * c2**-0.5)


class CONST:
    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return sigma * noise + (1.0 - sigma) * latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent / (1.0 - sigma)


class ModelSamplingDiscrete(EPS):
    """SD 1.5's table: scaled-linear betas 0.00085..0.012 over 1000 steps, as sigmas."""

    def __init__(self) -> None:
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        ac = torch.cumprod(1.0 - betas, 0)
        self.sigmas = (((1 - ac) / ac) ** 0.5).float()
        self.sigma_data = 1.0

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        t = (1.0 - percent) * 999.0
        low = int(t)
        high = min(low + 1, 999)
        w = t - low
        log = (1 - w) * self.sigmas[low].log() + w * self.sigmas[high].log()
        return float(log.exp())


def time_snr_shift(alpha: float, t):
    if alpha == 1.0:
        return t
    return alpha * t / (1 + (alpha - 1) * t)


class ModelSamplingDiscreteFlow(CONST):
    """SD3's flow sampling: shift 3, 1000 timesteps, multiplier 1000."""

    def __init__(self, shift: float = 3.0) -> None:
        self.shift, self.multiplier = shift, 1000
        self.sigmas = time_snr_shift(shift, torch.arange(1, 1001) / 1000)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return time_snr_shift(self.shift, 1.0 - percent)
