"""The `dpmsolver` command: `dpmsolver sample` draws a grid of digits from the built-in model."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .grids import SKIP_TYPES
from .sampler import ALGORITHMS, METHODS, sample


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dpmsolver", description="DPM-Solver and DPM-Solver++ samplers for diffusion models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "sample",
        help="sample digits from the built-in exact model and write a PNG grid",
        description="Sample from the built-in exact digits model (a Gaussian mixture fitted "
        "to scikit-learn's 8x8 digits, on DDPM's linear schedule) and write a PNG grid.",
    )
    p.add_argument("--model", default="digits-exact", choices=["digits-exact"])
    p.add_argument("--algorithm", "--solver", default="dpmsolver++", choices=ALGORITHMS)
    p.add_argument("--method", default="multistep", choices=METHODS)
    p.add_argument("--order", type=int, default=2, choices=[1, 2, 3])
    p.add_argument("--steps", type=int, default=10, help="model calls (default 10)")
    p.add_argument("--skip-type", default="logSNR", choices=SKIP_TYPES)
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nrow", type=int, default=8, help="images per row of the grid")
    p.add_argument("--out", type=Path, default=Path("out/digits.png"))
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu")
    return parser


def _sample(args: argparse.Namespace) -> int:
    from ._png import image_grid, write_png
    from .models import load

    if args.steps < 1 or args.n < 1:
        raise ValueError("--steps and --n must be >= 1")
    dtype = getattr(torch, args.dtype)
    model = load(args.model)
    generator = torch.Generator().manual_seed(args.seed)
    x_T = model.sample_noise(args.n, generator=generator, dtype=dtype).to(args.device)
    start = time.perf_counter()
    x0 = sample(
        model,
        x_T,
        steps=args.steps,
        order=args.order,
        method=args.method,
        algorithm=args.algorithm,
        skip_type=args.skip_type,
    )
    seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_png(args.out, image_grid(x0.cpu(), nrow=args.nrow))
    print(
        f"{args.algorithm} {args.method} order {args.order}: {args.n} samples, "
        f"{model.calls} model calls in {seconds:.2f} s -> {args.out}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dpmsolver` console script."""
    args = _parser().parse_args(argv)
    try:
        return _sample(args)
    except (ValueError, TypeError, OSError) as err:
        print(f"dpmsolver: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
