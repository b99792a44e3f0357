"""The commands: `sample` (a PNG grid of a built-in model's samples), `bench` (error
against the exact ODE solution), `generate` (resumable shards) and `compare` (one
labelled picture of several solvers), and `comfyui install` (our node folder in ComfyUI)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

import torch

from ..core import SolverOptions, sample
from ..noise.start import sample_shape, start_noise
from ..tools.measure import counting, reference
from ..tools.presets import SOLVERS
from ..tools.progress import Progress

if TYPE_CHECKING:
    import numpy as np

from .arguments import DTYPES, parser, solver_options


def run_sample(args: argparse.Namespace) -> int:
    from ..models import load
    from ..tools.generation import check_batch_memory
    from ..tools.png import image_grid, write_image

    if args.n < 1:
        raise ValueError(f"--n must be >= 1; got {args.n}")
    options = solver_options(args)  # before the model loads: its checks need none
    model, calls = counting(load(args.model, device=args.device))
    dtype = DTYPES[args.dtype]
    check_batch_memory(args.n, sample_shape(model), dtype, torch.device(args.device), "--n")
    x_T = start_noise(model, args.n, args.seed).to(args.device, dtype)
    # The bar counts model calls: --steps says calls, and steps differ from them (an
    # analytic first step makes none, a singlestep step several).
    bar = Progress(options.model_calls(), args.quiet, desc="sampling", unit="call", leave=False)
    shown = 0

    def advance(step: int, t: float, x: torch.Tensor) -> None:
        nonlocal shown
        bar.update(calls[0] - shown)
        shown = calls[0]

    start = time.perf_counter()
    try:
        # The SDE noise (--eta) comes from its own generator, seeded from --seed too.
        gen = torch.Generator().manual_seed(args.seed ^ 0x5DE)
        x0 = sample(model, x_T, options, callback=advance, generator=gen)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    solver = f"{options.algorithm} {options.method} order {options.order}" + (
        f" SDE eta={options.eta:g}{' ancestral' if options.ancestral else ''}"
        if options.eta
        else ""
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_image(
        args.out,
        image_grid(x0.float().cpu(), nrow=args.nrow),
        text=sample_caption(args, options, solver, calls[0]),
    )
    print(
        f"{args.model}: {solver}, {args.n} samples, "
        f"{calls[0]} model calls in {seconds:.2f} s -> {args.out}"
    )
    return 0


def sample_caption(
    args: argparse.Namespace, options: SolverOptions, solver: str, calls: int
) -> dict[str, str]:
    """What `sample` drew, for the PNG's tEXt chunks: the model, the solver and its grid,
    the model calls and the seed."""
    grid = "given grid" if options.has_grid else f"{options.skip_type} grid"
    return {
        "Title": f"{args.n} samples of {args.model}",
        "Description": f"model {args.model}, solver {'tuned ' if args.tuned else ''}{solver}, "
        f"{grid}, {calls} model calls, seed {args.seed}",
        "Software": "dpmsolver sample",
    }


def run_bench(args: argparse.Namespace) -> int:
    from ..models import load
    from ..tools import bench

    if args.budget:
        # The budget search sets its own steps, settings, grids and dtype.
        defaults = parser().parse_args(["bench"])
        ignored = [
            "--" + key.replace("_", "-")
            for key in ("steps", "solvers", "skip_type", "dtype", "no_baselines")
            if getattr(args, key) != getattr(defaults, key)
        ]
        if ignored:
            raise ValueError(
                f"bench --budget chooses its own settings, grids and step counts "
                f"(--budgets); drop {', '.join(ignored)}"
            )
    model = load(args.model, device=args.device)
    start = time.perf_counter()
    if args.budget:
        from ..models import TUNED_NFE, tuned_solver
        from ..tuning.budget import budget

        shipped = {b: tuned_solver(args.model, b) for b in args.budgets if b in TUNED_NFE}
        found = budget(
            model,
            budgets=args.budgets,
            tuned=shipped,
            grid_only=False,
            n=args.n,
            seed=args.seed + 1,
            tune_seed=args.seed,
            reference_nfe=args.reference_nfe,
        )
        args.out.mkdir(parents=True, exist_ok=True)
        found.to_json(args.out / "budget.json")
        print(found.table())
        print(f"{time.perf_counter() - start:.1f} s; wrote budget.json to {args.out}")
        return 0
    result = bench.run(
        model,
        steps=args.steps,
        solvers=args.solvers,
        n=args.n,
        seed=args.seed,
        skip_type=args.skip_type or "logSNR",
        reference_nfe=args.reference_nfe,
        dtype=DTYPES[args.dtype],
        device=args.device,
        baselines=not args.no_baselines,
    )
    result.extra["model"] = args.model
    if not result.rows:
        print("dpmsolver bench: error: no solver ran (no rows to write)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    result.to_csv(args.out / "bench.csv")
    result.to_json(args.out / "bench.json")
    print(result.table())
    try:
        result.plot(args.out / "bench.png")
        plotted = ", bench.png"
    except ImportError:
        plotted = " (no plot: matplotlib is not installed)"
    print(
        f"{time.perf_counter() - start:.1f} s; wrote bench.csv, bench.json{plotted} to {args.out}"
    )
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from ..models import load
    from ..tools.generation import check_batch_memory, generate

    shape = sample_shape(load(args.model))
    batch = min(args.batch, args.num) if args.batch >= 1 and args.num >= 1 else args.batch
    if batch >= 1:  # (bad values are reported by generate, naming them)
        check_batch_memory(batch, shape, DTYPES[args.dtype], torch.device(args.device), "--batch")
    start = time.perf_counter()
    result = generate(
        args.model,
        args.num,
        args.out,
        batch=args.batch,
        seed=args.seed,
        device=args.device,
        dtype=DTYPES[args.dtype],
        merge=args.merge,
        progress=not args.quiet,
        options=solver_options(args),
    )
    if int(os.environ.get("RANK", "0")) == 0:
        merged = f"; merged into {result.merged}" if result.merged else ""
        print(
            f"{args.model}: {result.num} samples in {result.shards} shards in {args.out} "
            f"({len(result.generated)} made, {len(result.skipped)} kept by this process) "
            f"in {time.perf_counter() - start:.1f} s{merged}"
        )
    return 0


# compare's image_grid: 8x upscaling (an 8x8 digit is 64 pixels), 1-pixel gaps; labels
# drawn 4x, or 2x where only that fits.
_TILE_SCALE, _TILE_PADDING = 8, 1
_LABEL_SCALES = (4, 2)


def compare_picture(
    grid: np.ndarray, args: argparse.Namespace, cell: tuple[int, int]
) -> np.ndarray:
    """The compare grid framed with its labels: the solvers (and `reference`) left of the
    rows; above the columns each step count and, per column, the sample's index in the
    noise of --seed. Labels are drawn 4x unless they only fit 2x, each header in its
    longest form that fits: `5 steps`, `5 st` or `5` over a step count's columns, `#3` or
    `3` over a tile (a label no wider than its tile keeps neighbours apart)."""
    from .labels import fit_label, label_grid, text_width

    gap = _TILE_PADDING * _TILE_SCALE
    run = args.n * (cell[1] + gap) - gap  # the width of one step count's --n tiles
    for scale in _LABEL_SCALES:
        last = fit_label([f"#{args.n - 1}", f"{args.n - 1}"], cell[1], scale)
        columns = [f"{'#' if last[0] == '#' else ''}{i}" for i in range(args.n)]
        steps = [fit_label([f"{s} steps", f"{s} st", f"{s}"], run, scale) for s in args.steps]
        if text_width(last, scale) <= cell[1] and all(text_width(t, scale) <= run for t in steps):
            break
    return label_grid(
        grid,
        [*args.solvers, "reference"],
        columns * len(args.steps),
        cell=cell,
        gap=gap,
        group_labels=steps,
        corner=f"seed {args.seed}",
        scale=scale,
    )


def run_compare(args: argparse.Namespace) -> int:
    from ..models import load
    from ..tools.png import image_grid, write_image

    model = load(args.model, device=args.device)
    x_T = start_noise(model, args.n, args.seed).to(args.device, DTYPES[args.dtype])
    skip_type = args.skip_type or "logSNR"
    columns = args.n * len(args.steps)
    cell = (x_T.shape[-2] * _TILE_SCALE, x_T.shape[-1] * _TILE_SCALE)

    def picture(images: torch.Tensor) -> np.ndarray:
        grid = image_grid(images, nrow=columns, padding=_TILE_PADDING, scale=_TILE_SCALE)
        return compare_picture(grid, args, cell)

    # Label a blank picture first, so that labels that cannot fit fail before any sampling.
    picture(torch.zeros(((len(args.solvers) + 1) * columns, *x_T.shape[1:])))
    cells = []
    for name in args.solvers:
        for calls in args.steps:  # model calls: one step more with an analytic first step
            options = SOLVERS[name].options
            steps = options.steps_for_calls(calls)
            cells.append(
                sample(model, x_T, options, steps=steps, skip_type=skip_type).float().cpu()
            )
    ref = reference(model, x_T.double(), skip_type=skip_type).float().cpu()
    cells += [ref] * len(args.steps)  # under every step count, to compare column by column
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_image(args.out, picture(torch.cat(cells)))
    samples = "#0" if args.n == 1 else f"#0-#{args.n - 1}"
    print(
        f"rows: {', '.join(args.solvers)}, reference; columns: samples {samples} of seed "
        f"{args.seed} at each of {', '.join(map(str, args.steps))} steps; labelled -> {args.out}"
    )
    return 0


def run_comfyui(args: argparse.Namespace) -> int:
    from ..tools.comfyui_install import install_node_folder

    try:
        target = install_node_folder(args.path)
    except (ValueError, OSError) as err:
        print(f"dpmsolver: error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {target}; restart ComfyUI (its Python needs dpmsolver installed: "
        f"pip install dpmsolver into the Python that runs ComfyUI)"
    )
    return 0
