"""Train the shipped digits networks: the noise-prediction net (``digits_net.pt``) and,
with ``--flow``, the rectified-flow velocity net (``digits_flow.pt``), both in
``src/dpmsolver/models/``.

Run by a developer (needs the fit extra, scikit-learn)::

    PYTHONPATH=src python tools/train_digits_net.py [--flow] [--steps N] [--out PATH]

Data: the 1797 images of ``sklearn.datasets.load_digits`` (bundled with scikit-learn),
pixels scaled to [-1, 1] by ``x / 8 - 1``, shape (N, 1, 8, 8); no augmentation (flipped
digits are not digits). Objective: DDPM epsilon prediction on the discrete linear schedule
(betas 1e-4..0.02 over 1000 steps, ``ac = cumprod(1 - betas)``): n ~ U{0..999},
``x_n = sqrt(ac_n) x0 + sqrt(1 - ac_n) eps``, loss = mean((net(x_n, n) - eps)^2).
Optimiser: AdamW with a linear warm-up and cosine decay, batch 256, and an EMA of the
weights, which is what gets saved (in float16 unless ``--float32``). Deterministic: seeded
generators and one CPU thread, so a rerun on the same machine gives the same tensors (the
file's bytes also record its name). Defaults: 2000 steps, about 5 minutes on one CPU thread,
final training loss ~0.08.

``--flow``: the same network and optimiser on rectified flow (flow matching with straight
paths): s ~ U(0, 1), ``x_s = (1 - s) x0 + s eps``, the network gets ``1000 s`` (as SD3 and
Flux transformers get their timesteps) and learns the velocity ``eps - x0``.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dpmsolver.extras import needs_extra
from dpmsolver.models.digits_net import DigitsNet

MODELS = Path(__file__).resolve().parents[1] / "src/dpmsolver/models"
DEFAULT_OUT = MODELS / "digits_net.pt"
DEFAULT_FLOW_OUT = MODELS / "digits_flow.pt"
NUM_STEPS = 1000  # diffusion steps of the schedule, not optimiser steps
FLOW_TIME_SCALE = 1000.0  # the flow net's time input is 1000 s


def load_images() -> Tensor:
    """Digits as float32 (1797, 1, 8, 8) in [-1, 1]."""
    with needs_extra("fit", "tools/train_digits_net.py"):
        from sklearn.datasets import load_digits

    data = load_digits().data.astype(np.float32) / 8.0 - 1.0
    return torch.from_numpy(data).reshape(-1, 1, 8, 8)


def alphas_cumprod() -> Tensor:
    """DDPM's linear schedule, cumulated in float64 and stored as float32 (NUM_STEPS,)."""
    betas = torch.linspace(1e-4, 0.02, NUM_STEPS, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0).float()


def noisy_batch(
    x0: Tensor, ac: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """(x_n, n as float, eps) for uniformly drawn step indices n."""
    n = torch.randint(0, NUM_STEPS, (x0.shape[0],), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    a = ac[n].reshape(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1.0 - a).sqrt() * eps, n.float(), eps


def flow_batch(x0: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(x_s, the net's time input 1000 s, the velocity eps - x0) for s ~ U(0, 1)."""
    s = torch.rand((x0.shape[0],), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    s4 = s.reshape(-1, 1, 1, 1)
    return (1.0 - s4) * x0 + s4 * eps, FLOW_TIME_SCALE * s, eps - x0


def batch_for(
    flow: bool, x0: Tensor, ac: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """(network input, its time input, the target) of the chosen objective."""
    return flow_batch(x0, generator) if flow else noisy_batch(x0, ac, generator)


@torch.no_grad()
def eval_loss(
    net: DigitsNet, x0: Tensor, ac: Tensor, repeats: int = 4, seed: int = 1, flow: bool = False
) -> float:
    """The objective on a fixed draw of the noise over every image, for comparing weights."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(repeats):
        x, t, target = batch_for(flow, x0, ac, g)
        total += float((net(x, t) - target).pow(2).mean())
    return total / repeats


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(
    steps: int, batch: int, lr: float, ema_decay: float, seed: int, log_every: int, flow: bool
) -> tuple[DigitsNet, float]:
    """Train and return (EMA net, mean training loss over the last `log_every` steps)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    data = load_images()
    ac = alphas_cumprod()
    net = DigitsNet()
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    warmup = min(200, steps // 10 + 1)
    print(f"{sum(p.numel() for p in net.parameters())} parameters, {len(data)} images")

    order = torch.randperm(len(data), generator=g)
    pos = 0
    recent: list[float] = []
    start = time.perf_counter()
    for step in range(steps):
        # Epoch-wise shuffling: every image is seen once per pass.
        if pos + batch > len(order):
            order, pos = torch.randperm(len(data), generator=g), 0
        x0 = data[order[pos : pos + batch]]
        pos += batch
        x, t, target = batch_for(flow, x0, ac, g)
        loss = (net(x, t) - target).pow(2).mean()
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # Short warm-up of the EMA decay, so early weights do not linger in a short run.
        decay = min(ema_decay, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), net.parameters(), strict=True):
                p_ema.lerp_(p, 1.0 - decay)
        recent = [*recent[-(log_every - 1) :], loss.item()]
        if (step + 1) % log_every == 0 or step + 1 == steps:
            elapsed = time.perf_counter() - start
            print(
                f"step {step + 1:5d}  loss {sum(recent) / len(recent):.4f}  "
                f"lr {opt.param_groups[0]['lr']:.2e}  {elapsed:.0f}s",
                flush=True,
            )
    ema.eval()
    return ema, sum(recent) / len(recent)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the shipped digits networks.")
    parser.add_argument(
        "--flow", action="store_true", help="the rectified-flow velocity net (digits_flow.pt)"
    )
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--ema", type=float, default=0.998, help="EMA decay")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument(
        "--out", type=Path, default=None, help="state dict path (default: the shipped file)"
    )
    parser.add_argument("--float32", action="store_true", help="save float32, not float16")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.log_every < 1:
        parser.error("--steps, --batch and --log-every must be >= 1")

    # One thread: deterministic, and the build machine's other cores stay free.
    torch.set_num_threads(1)
    start = time.perf_counter()
    out = args.out or (DEFAULT_FLOW_OUT if args.flow else DEFAULT_OUT)
    ema, final = train(
        args.steps, args.batch, args.lr, args.ema, args.seed, args.log_every, args.flow
    )
    minutes = (time.perf_counter() - start) / 60.0
    print(f"final training loss (last {args.log_every} steps) {final:.4f}, {minutes:.1f} min")

    data, ac = load_images(), alphas_cumprod()
    dtype = torch.float32 if args.float32 else torch.float16
    state = {k: v.to(dtype) for k, v in ema.state_dict().items()}
    # Reload through the stored dtype to check that the rounding costs nothing measurable.
    rounded = DigitsNet()
    rounded.load_state_dict(state)
    rounded.eval()
    print(
        f"EMA eval loss: float32 {eval_loss(ema, data, ac, flow=args.flow):.4f}, "
        f"stored {dtype} {eval_loss(rounded, data, ac, flow=args.flow):.4f}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    print(f"saved {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
