"""The `dpmsolver` command: sample, bench and compare on the built-in models.

dpmsolver sample  --model digits-exact --steps 10 --out grid.png
dpmsolver bench   --model digits-net --steps 4,5,6,8,10,15,20,25,50 --out bench/
dpmsolver bench   --model digits-exact --budget --out bench/       # best setting per budget
dpmsolver compare --steps 5,10,20 --solvers ddim,dpm++2m,dpm++3m --out compare.png  # labelled
dpmsolver generate --model digits-net --num 10000 --out gen/ --merge  # resumable shards
torchrun --nproc-per-node 4 -m dpmsolver generate --num-samples 10000 ...  # 4 ranks
dpmsolver comfyui install /path/to/ComfyUI   # our nodes and samplers in ComfyUI
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from .arguments import argument_problem, device_problem, parser
from .commands import run_bench, run_comfyui, run_compare, run_generate, run_sample


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dpmsolver` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # a bare `dpmsolver`: what it does and its subcommands
        parser().print_help()
        return 0
    args = parser().parse_args(argv)
    if args.command == "comfyui":
        return run_comfyui(args)
    if args.threads < 1:
        print("dpmsolver: error: --threads must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    problem = device_problem(args.device)
    if problem:
        print(f"dpmsolver: error: --device {args.device}: {problem}", file=sys.stderr)
        return 2
    problem = argument_problem(args)
    if problem:
        print(f"dpmsolver: error: {problem}", file=sys.stderr)
        return 2
    run = {
        "sample": run_sample,
        "bench": run_bench,
        "generate": run_generate,
        "compare": run_compare,
    }[args.command]
    try:
        return run(args)
    except (ValueError, TypeError, OSError, RuntimeError) as err:
        print(f"dpmsolver: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
