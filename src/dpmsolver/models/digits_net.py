"""Small trained networks for scikit-learn's 8x8 digits: noise prediction on DDPM's
schedule (`load_digits_net`) and rectified-flow velocity prediction (`load_digits_flow`),
one architecture.

Architecture (`DigitsNet`, 93,777 parameters at the default width 16): a U-Net with one
resolution level. The time input n (the DDPM step index, 0..999) gets a 64-dim sinusoidal
embedding and a 2-layer SiLU MLP (width 128) whose output is added, per channel, inside every
residual block. Residual blocks are GroupNorm(8) -> SiLU -> 3x3 conv, twice, with a 1x1
shortcut when the width changes. Layout::

    (B, 1, 8, 8) -> 3x3 conv 16 -> res 16 ---------------------------------- skip --+
                 -> 3x3 stride-2 conv 32 (4x4) -> res 32 -> res 32                  |
                 -> 2x2 stride-2 transposed conv 16 (8x8) -> concat skip (32) <-----+
                 -> res 16 -> GroupNorm, SiLU, 3x3 conv -> eps (B, 1, 8, 8)

Training (``tools/train_digits_net.py``): the 1797 images of ``sklearn.datasets.load_digits``
scaled to [-1, 1] by ``x / 8 - 1`` (no flips: digits are not symmetric), the DDPM
epsilon-prediction objective on the discrete linear schedule (betas 1e-4..0.02 over 1000
steps, n uniform in 0..999, loss = mean squared error of eps), AdamW with a cosine learning
rate, batch 256, 2000 steps (about 5 minutes on one CPU thread, final training loss ~0.08)
and an EMA of the weights. The EMA weights are shipped in float16 as ``digits_net.pt`` (~200 KB;
rounding changes the loss by < 1e-4) and loaded into float32 parameters. Retrain with::

    PYTHONPATH=src python tools/train_digits_net.py [--steps N] [--out PATH]

The flow network (``digits_flow.pt``, ``--flow``) is the same U-Net trained on rectified
flow: s ~ U(0, 1), ``x_s = (1 - s) x0 + s eps``, time input ``1000 s`` (as SD3 and Flux
transformers get theirs), target the velocity ``eps - x0``; the same optimiser, steps and
EMA.

Unlike the exact mixture denoiser of :mod:`dpmsolver.models.exact`, these are real, imperfect
networks, as stand-ins for trained models in examples and tests; their samples are
recognisable digits with some malformed ones and faint background noise.
"""

from __future__ import annotations

import io
import math
from importlib import resources

import torch
from torch import Tensor, nn

from ..core import Denoiser, NoiseSchedule
from .schedules import ddpm_linear_schedule, rectified_flow_schedule

__all__ = ["DigitsNet", "load_digits_flow", "load_digits_net"]

_WEIGHTS = "digits_net.pt"
_FLOW_WEIGHTS = "digits_flow.pt"


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of times t (B,) in step units, shape (B, dim)."""
    half = dim // 2
    # Periods from 2*pi to ~2*pi*10^4 steps cover both single steps and the whole 0..999 range.
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=t.dtype, device=t.device) / half
    )
    args = t[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm/SiLU/conv residual block with an additive per-channel time embedding."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int = 8) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip: nn.Module = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)
        # A zero last conv makes every block start as the identity, which steadies early training.
        nn.init.zeros_(self.conv2.weight)
        if self.conv2.bias is not None:
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return self.skip(x) + h


class DigitsNet(nn.Module):
    """eps-prediction U-Net for (B, 1, 8, 8) images; called as net(x, t) with t (B,) in 0..999.

    The input is cast to the weights' dtype and the output back to the input's dtype, so
    float64 sampling works with float32 weights.
    """

    def __init__(self, width: int = 16, emb_dim: int = 64) -> None:
        super().__init__()
        self.emb_dim = emb_dim
        hidden = 2 * emb_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        self.conv_in = nn.Conv2d(1, width, 3, padding=1)
        self.down_block = ResBlock(width, width, hidden)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.mid1 = ResBlock(2 * width, 2 * width, hidden)
        self.mid2 = ResBlock(2 * width, 2 * width, hidden)
        # A 2x2 stride-2 transposed conv costs a ninth of upsample + 3x3 conv, and CPU
        # training time is the budget here.
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.up_block = ResBlock(2 * width, width, hidden)
        self.norm_out = nn.GroupNorm(8, width)
        self.conv_out = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"x must have shape (B, 1, 8, 8), got {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {t.shape}")
        dtype = self.conv_in.weight.dtype
        h0 = x.to(dtype)
        emb = self.time_mlp(timestep_embedding(t.to(dtype), self.emb_dim))
        skip = self.down_block(self.conv_in(h0), emb)
        h = self.mid2(self.mid1(self.down(skip), emb), emb)
        h = self.up_block(torch.cat([self.up(h), skip], dim=1), emb)
        out = self.conv_out(nn.functional.silu(self.norm_out(h)))
        return out.to(x.dtype)


def _shipped(name: str) -> DigitsNet:
    """A shipped `DigitsNet` (eval mode, float32) from its float16 state dict."""
    blob = resources.files("dpmsolver.models").joinpath(name).read_bytes()
    state = torch.load(io.BytesIO(blob), weights_only=True)
    net = DigitsNet()
    # The file holds float16; load_state_dict copies into the float32 parameters.
    net.load_state_dict(state)
    net.eval()
    return net


def _check_schedule(schedule: object) -> None:
    if schedule is not None and not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule or None, got {type(schedule).__name__}")


def load_digits_net(schedule: NoiseSchedule | None = None) -> Denoiser:
    """The shipped `DigitsNet` (eval mode, float32) as a `Denoiser` predicting noise.

    `schedule` defaults to DDPM's linear schedule, the one the net was trained on; the net
    reads the schedule's model time, so another schedule must also map to steps 0..999.
    """
    _check_schedule(schedule)
    return Denoiser(
        _shipped(_WEIGHTS),
        schedule or ddpm_linear_schedule(),
        prediction="noise",
        sample_shape=(1, 8, 8),
    )


def load_digits_flow(schedule: NoiseSchedule | None = None) -> Denoiser:
    """The shipped rectified-flow `DigitsNet` (eval mode, float32) as a `Denoiser`
    predicting the flow velocity eps - x0.

    `schedule` defaults to `rectified_flow_schedule()` (sigma = t, time input 1000 sigma),
    the one the net was trained on; another schedule must give the net 1000 sigma too.
    """
    _check_schedule(schedule)
    return Denoiser(
        _shipped(_FLOW_WEIGHTS),
        schedule or rectified_flow_schedule(),
        prediction="flow",
        sample_shape=(1, 8, 8),
    )
