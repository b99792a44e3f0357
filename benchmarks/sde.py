"""SDE samplers on the exact digits mixture: how close their samples are in distribution,
and how fast they converge on one Brownian path.

    python benchmarks/sde.py [--n 4096] [--steps 10,20,50] [--strong-steps 25,50,100,200]
        [--reference-steps 2000]

1. Distribution: n samples of each k-diffusion-face SDE sampler (default noise, karras
   grid sigma 80 -> 0.002 -> 0) against n exact mixture samples: the distance of the means,
   the Frobenius distance of the covariances and a sliced 2-Wasserstein distance (64 fixed
   directions). Each is printed with its ratio to the two-sample noise level, the same
   distance between two independent exact sample sets of n (1.0: as close as exact
   samples get). DPM-Solver++(2M) (the ODE) is the baseline row.
2. Strong convergence: the RMS end-point error of each solver (2 samples, sigma 20 -> 0.05
   uniform in lambda) against the 2000-step DPM-Solver++(2M) SDE solution on the same
   Brownian tree, and the slope fitted to log error against log steps.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from torch import Tensor

import dpmsolver.k_diffusion as K  # noqa: N812 (k-diffusion's own convention)
from dpmsolver.models import load_digits_gmm

SAMPLERS = {
    "DPM++ 2M (ODE)": ("sample_dpmpp_2m", {}),
    "DPM++ 2M SDE": ("sample_dpmpp_2m_sde", {}),
    "DPM++ 2M SDE heun": ("sample_dpmpp_2m_sde_heun", {}),
    "DPM++ 3M SDE": ("sample_dpmpp_3m_sde", {}),
    "DPM++ SDE": ("sample_dpmpp_sde", {}),
    # The stage's and the step's noise drawn independently (the default links them).
    "DPM++ SDE unlinked": ("sample_dpmpp_sde", {"unlinked": True}),
    "DPM++ 2S a": ("sample_dpmpp_2s_ancestral", {}),
}

GMM = load_digits_gmm()


def model(x: Tensor, sigma: Tensor) -> Tensor:
    return GMM.posterior_mean(x, 1.0, sigma)


def distances(a: Tensor, b: Tensor, directions: Tensor) -> tuple[float, float, float]:
    """(|mean_a - mean_b|, |cov_a - cov_b|_F, sliced W2) of two (n, D) sample sets."""
    mean = float((a.mean(0) - b.mean(0)).norm())
    cov = float((torch.cov(a.T) - torch.cov(b.T)).norm())
    pa, pb = (a @ directions).sort(0).values, (b @ directions).sort(0).values
    return mean, cov, float((pa - pb).pow(2).mean().sqrt())


def distribution(n: int, steps: list[int]) -> None:
    exact = [
        GMM.sample(n, generator=torch.Generator().manual_seed(s)).reshape(n, -1).double()
        for s in (1, 2)
    ]
    directions = torch.randn(64, 64, generator=torch.Generator().manual_seed(3))
    directions = (directions / directions.norm(dim=0)).double()
    noise = distances(exact[0], exact[1], directions)
    print(f"Distribution: {n} samples vs {n} exact samples (karras grid, 80 -> 0.002 -> 0)")
    print(
        f"two-sample noise level: mean {noise[0]:.4f}, covariance {noise[1]:.4f}, "
        f"sliced W2 {noise[2]:.4f}"
    )
    heads = ("mean (x noise)", "cov (x noise)", "SW2 (x noise)")
    print(f"{'sampler':<20}{'steps':>6}" + "".join(f"{h:>18}" for h in heads))
    gen = torch.Generator().manual_seed(4)
    x_T = 80.0 * torch.randn(n, *GMM.sample_shape, generator=gen, dtype=torch.float64)
    for label, (name, kwargs) in SAMPLERS.items():
        for k in steps:
            torch.manual_seed(5)
            sigmas = K.get_sigmas_karras(k, 0.002, 80.0).double()
            extra = dict(kwargs)
            if extra.pop("unlinked", False):
                extra["noise_sampler"] = lambda s, t: torch.randn_like(x_T)
            out = getattr(K, name)(model, x_T, sigmas, disable=True, **extra)
            d = distances(out.reshape(n, -1), exact[0], directions)
            cells = "".join(f"{v:>10.4f} ({v / z:4.2f})" for v, z in zip(d, noise, strict=True))
            print(f"{label:<20}{k:>6}{cells}")


def strong(steps: list[int], reference_steps: int) -> None:
    low, high = 0.05, 20.0
    x = 20.0 * torch.randn(2, *GMM.sample_shape, generator=torch.Generator().manual_seed(0))
    x = x.double()

    def solve(name: str, k: int) -> Tensor:
        tree = K.BrownianTreeNoiseSampler(x, low, high, seed=[1, 2], transform=math.log)
        sigmas = K.get_sigmas_exponential(k + 1, low, high).double()[:-1]
        return getattr(K, name)(model, x, sigmas, disable=True, noise_sampler=tree)

    reference = solve("sample_dpmpp_2m_sde", reference_steps)
    print()
    print("Strong convergence on one Brownian path (tree in log sigma, seeds 1, 2)")
    print(f"RMS error vs the {reference_steps}-step DPM++ 2M SDE solution, sigma 20 -> 0.05")
    print(f"{'sampler':<20}" + "".join(f"{k:>10}" for k in steps) + f"{'slope':>8}")
    for label, (name, kwargs) in SAMPLERS.items():
        if name == "sample_dpmpp_2m" or kwargs:
            continue
        errors = [float((solve(name, k) - reference).pow(2).mean().sqrt()) for k in steps]
        slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
        print(f"{label:<20}" + "".join(f"{e:>10.2e}" for e in errors) + f"{slope:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--steps", default="10,20,50")
    parser.add_argument("--strong-steps", default="25,50,100,200")
    parser.add_argument("--reference-steps", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    distribution(args.n, [int(s) for s in args.steps.split(",")])
    strong([int(s) for s in args.strong_steps.split(",")], args.reference_steps)


if __name__ == "__main__":
    main()
