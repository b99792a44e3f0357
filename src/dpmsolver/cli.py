"""The `dpmsolver` command: sample, bench and compare on the built-in models.

dpmsolver sample  --model digits-exact --steps 10 --out grid.png
dpmsolver bench   --model digits-net --steps 4,5,6,8,10,15,20,25,50 --out bench/
dpmsolver bench   --model digits-exact --budget --out bench/       # best setting per budget
dpmsolver compare --steps 5,10,20 --solvers ddim,dpm++2m,dpm++3m --out compare.png  # labelled
dpmsolver generate --model digits-net --num 10000 --out gen/ --merge  # resumable shards
torchrun --nproc-per-node 4 -m dpmsolver generate --num-samples 10000 ...  # 4 ranks
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import torch

from .core import ALGORITHMS, CORRECTORS, METHODS, SKIP_TYPES, SolverOptions, sample
from .measure import counting, reference
from .models import MODELS
from .noise import sample_shape, start_noise
from .presets import SOLVERS
from .progress import Progress

if TYPE_CHECKING:
    import numpy as np

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _path(text: str) -> Path:
    """A path argument: not empty (Path('') would be the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got ''")
    return Path(text)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in SOLVERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown solver {', '.join(unknown) or text!r}; choose from {', '.join(SOLVERS)}"
        )
    return names


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="digits-exact",
        choices=MODELS,
        help="built-in model: the exact digits mixture or the trained digits network",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype of the samples")
    p.add_argument(
        "--skip-type", default=None, choices=SKIP_TYPES, help="time grid (default logSNR)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1: the built-in models are too small to gain)",
    )


def _solver_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--algorithm", "--solver", default=None, choices=ALGORITHMS, help="default dpmsolver++"
    )
    p.add_argument("--method", default=None, choices=METHODS, help="default multistep")
    p.add_argument(
        "--order",
        type=int,
        default=None,
        choices=[1, 2, 3, 4],
        help="default 2; 4: --algorithm ipndm only",
    )
    p.add_argument(
        "--corrector", default=None, choices=CORRECTORS, help="UniC corrector (default off)"
    )
    p.add_argument(
        "--eta",
        type=float,
        default=0.0,
        help="SDE noise >= 0 (0: the ODE; 1 with multistep: DPM++ 2M/3M SDE, with "
        "singlestep: DPM++ SDE)",
    )
    p.add_argument(
        "--ancestral",
        action="store_true",
        help="with --eta and singlestep: DPM++ 2S ancestral steps",
    )
    p.add_argument(
        "--analytic-first-step",
        action="store_true",
        help="multistep: first step without a model call (one more step for --steps calls)",
    )
    p.add_argument(
        "--tuned",
        action="store_true",
        help="use the model's shipped tuned solver (grid, solver and per-step "
        "coefficients) for --steps model calls (4, 5, 6, 8, 10)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="model calls (default 10; --method adaptive chooses its own)",
    )


def _solver_options(args: argparse.Namespace) -> SolverOptions:
    """The solver options from the solver arguments; --steps counts model calls."""
    if args.tuned:  # the shipped multistep setting replaces the solver options
        from .models import tuned_solver

        if args.analytic_first_step:
            raise ValueError(
                "--tuned sets the solver, first step included; drop --analytic-first-step"
            )
        if args.eta or args.ancestral:
            raise ValueError("--tuned sets an ODE solver; drop --eta / --ancestral")
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("algorithm", "method", "order", "corrector", "skip_type")
            if getattr(args, name) is not None
        ]
        if given:
            raise ValueError(f"--tuned sets the solver and its grid; drop {', '.join(given)}")
        return tuned_solver(args.model, 10 if args.steps is None else args.steps).solver()
    options = SolverOptions.of(
        order=2 if args.order is None else args.order,
        method=args.method or "multistep",
        algorithm=args.algorithm or "dpmsolver++",
        skip_type=args.skip_type or "logSNR",
        corrector=args.corrector or "off",
        analytic_first_step=args.analytic_first_step,
        eta=args.eta,
        ancestral=args.ancestral,
    )
    if options.method == "adaptive":
        if args.steps is not None:
            raise ValueError(
                "--steps sets the model calls of the fixed-step methods; --method adaptive "
                "chooses its steps from its error tolerances"
            )
        return options
    calls = 10 if args.steps is None else args.steps
    return SolverOptions.of(options, steps=options.steps_for_calls(calls))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dpmsolver", description="DPM-Solver and DPM-Solver++ samplers for diffusion models."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser(
        "sample",
        help="sample a built-in model and write a PNG grid",
        description="Sample a built-in model and write the samples as a PNG grid.",
    )
    _common(p)
    _solver_args(p)
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--nrow", type=int, default=8, help="images per row of the grid")
    p.add_argument("--out", type=_path, default=Path("out/digits.png"), help="PNG to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    b = sub.add_parser(
        "bench",
        help="error of each solver against the exact ODE solution",
        description="For each solver and step count, the RMS error against a high-accuracy "
        "solution from the same x_T; writes bench.csv, bench.json and bench.png (error vs "
        "model calls, log-log, needs matplotlib) to --out and prints the table.",
    )
    _common(b)
    b.add_argument(
        "--steps",
        type=_int_list,
        default=[4, 5, 6, 8, 10, 15, 20, 25, 50],
        help="comma-separated step counts (default 4,5,6,8,10,15,20,25,50)",
    )
    b.add_argument(
        "--solvers",
        type=_names,
        default=["ddim", "dpm++2m", "dpm++3m", "dpm++3s", "dpm3s"],
        help=f"comma-separated, from: {', '.join(SOLVERS)}",
    )
    b.add_argument("--n", type=int, default=64, help="samples per run (default 64)")
    b.add_argument(
        "--reference-nfe",
        type=int,
        default=3000,
        help="model calls of the reference solve (default 3000)",
    )
    b.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip diffusers' schedulers even if diffusers is installed",
    )
    b.add_argument(
        "--budget",
        action="store_true",
        help="instead: for each budget of --budgets, the model's shipped tuned solver (or "
        "one tuned now by optimize_solver) against the best untuned setting, on held-out "
        "noises",
    )
    b.add_argument(
        "--budgets",
        type=_int_list,
        default=[4, 5, 6, 8, 10],
        help="model-call budgets for --budget (default 4,5,6,8,10)",
    )
    b.add_argument("--out", type=_path, default=Path("out/bench"), help="folder for the files")
    g = sub.add_parser(
        "generate",
        help="generate many samples into resumable shards (torchrun: several processes)",
        description="Generate --num samples of a built-in model into --out as shards "
        "written atomically, with a manifest; a second run resumes (finished shards are "
        "kept, partial or corrupted ones made again). Under torchrun every rank takes its "
        "share; sample i depends only on (--seed, i). --merge also writes samples.npz "
        "(arr_0: uint8 NHWC images).",
    )
    _common(g)
    _solver_args(g)
    g.add_argument(
        "--num",
        "--num-samples",
        dest="num",
        type=int,
        required=True,
        help="number of samples (under torchrun write --num-samples: torchrun's parser "
        "reads --num as an abbreviation of its --numa-binding)",
    )
    g.add_argument("--batch", type=int, default=64, help="samples per shard (default 64)")
    g.add_argument("--out", type=_path, required=True, help="output folder")
    g.add_argument("--merge", action="store_true", help="also write samples.npz at the end")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    c = sub.add_parser(
        "compare",
        help="one PNG: the same seeds by several solvers and step counts",
        description="Writes one labelled PNG: a row per solver, with --n samples for each "
        "step count side by side, and a last row with the reference solution of the same "
        "noises; the solvers are named left of the rows, the step counts and sample indices "
        "above the columns.",
    )
    _common(c)
    c.add_argument("--steps", type=_int_list, default=[5, 10, 20])
    c.add_argument("--solvers", type=_names, default=["ddim", "dpm++2m", "dpm++3m"])
    c.add_argument(
        "--n", type=int, default=4, help="samples (noises of --seed) per step count (default 4)"
    )
    c.add_argument("--out", type=_path, default=Path("out/compare.png"))
    return parser


def _sample(args: argparse.Namespace) -> int:
    from .generation import check_batch_memory
    from .models import load
    from .png import image_grid, write_image

    if args.n < 1:
        raise ValueError(f"--n must be >= 1; got {args.n}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1; got {args.steps}")
    model, calls = counting(load(args.model, device=args.device))
    dtype = DTYPES[args.dtype]
    check_batch_memory(args.n, sample_shape(model), dtype, torch.device(args.device), "--n")
    x_T = start_noise(model, args.n, args.seed).to(args.device, dtype)
    options = _solver_options(args)
    bar = Progress(options.num_steps(), args.quiet, desc="sampling", unit="step", leave=False)

    def advance(step: int, t: float, x: torch.Tensor) -> None:
        if step > 0:
            bar.update()

    start = time.perf_counter()
    try:
        # The SDE noise (--eta) comes from its own generator, seeded from --seed too.
        gen = torch.Generator().manual_seed(args.seed ^ 0x5DE)
        x0 = sample(model, x_T, options, callback=advance, generator=gen)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_image(args.out, image_grid(x0.float().cpu(), nrow=args.nrow))
    print(
        f"{args.model}: {options.algorithm} {options.method} order {options.order}"
        + (
            f" SDE eta={options.eta:g}{' ancestral' if options.ancestral else ''}"
            if options.eta
            else ""
        )
        + f", {args.n} samples, "
        f"{calls[0]} model calls in {seconds:.2f} s -> {args.out}"
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import bench
    from .models import load

    model = load(args.model, device=args.device)
    start = time.perf_counter()
    if args.budget:
        from .models import TUNED_NFE, tuned_solver

        shipped = {b: tuned_solver(args.model, b) for b in args.budgets if b in TUNED_NFE}
        found = bench.budget(
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


def _generate(args: argparse.Namespace) -> int:
    from .generation import check_batch_memory, generate
    from .models import load

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
        options=_solver_options(args),
    )
    if int(os.environ.get("RANK", "0")) == 0:
        merged = f"; merged into {result.merged}" if result.merged else ""
        print(
            f"{args.model}: {result.num} samples in {result.shards} shards in {args.out} "
            f"({len(result.generated)} made, {len(result.skipped)} kept by this process) "
            f"in {time.perf_counter() - start:.1f} s{merged}"
        )
    return 0


_TILE_SCALE, _TILE_PADDING = 4, 1  # compare's image_grid: 4x upscaling, 1-pixel gaps


def _compare_picture(
    grid: np.ndarray, args: argparse.Namespace, cell: tuple[int, int]
) -> np.ndarray:
    """The compare grid framed with its labels: the solvers (and `reference`) left of the
    rows; above the columns each step count and, per column, the sample's index in the
    noise of --seed. Labels are drawn 2x unless they only fit 1x, each header in its
    longest form that fits: `5 steps`, `5 st` or `5` over a step count's columns, `#3` or
    `3` over a tile (a label no wider than its tile keeps neighbours apart)."""
    from .labels import fit_label, label_grid, text_width

    gap = _TILE_PADDING * _TILE_SCALE
    run = args.n * (cell[1] + gap) - gap  # the width of one step count's --n tiles
    for scale in (2, 1):
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


def _compare(args: argparse.Namespace) -> int:
    from .models import load
    from .png import image_grid, write_image

    model = load(args.model, device=args.device)
    x_T = start_noise(model, args.n, args.seed).to(args.device, DTYPES[args.dtype])
    skip_type = args.skip_type or "logSNR"
    columns = args.n * len(args.steps)
    cell = (x_T.shape[-2] * _TILE_SCALE, x_T.shape[-1] * _TILE_SCALE)

    def picture(images: torch.Tensor) -> np.ndarray:
        grid = image_grid(images, nrow=columns, padding=_TILE_PADDING, scale=_TILE_SCALE)
        return _compare_picture(grid, args, cell)

    # Label a blank picture first, so that labels that cannot fit fail before any sampling.
    picture(torch.zeros(((len(args.solvers) + 1) * columns, *x_T.shape[1:])))
    cells = []
    for name in args.solvers:
        for steps in args.steps:
            options = SOLVERS[name].options
            cells.append(
                sample(model, x_T, options, steps=steps, skip_type=skip_type).float().cpu()
            )
    ref = reference(model, x_T.double(), skip_type=skip_type).float().cpu()
    blank = torch.full_like(ref, float("nan"))  # drawn mid-grey, like the gaps
    cells += [ref] + [blank] * (len(args.steps) - 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_image(args.out, picture(torch.cat(cells)))
    samples = "#0" if args.n == 1 else f"#0-#{args.n - 1}"
    print(
        f"rows: {', '.join(args.solvers)}, reference; columns: samples {samples} of seed "
        f"{args.seed} at each of {', '.join(map(str, args.steps))} steps; labelled -> {args.out}"
    )
    return 0


MAX_SEED = 2**63 - 1  # torch's generators take 64-bit seeds; +1 is used for tuning seeds


def _argument_problem(args: argparse.Namespace) -> str:
    """What is wrong with --seed or --out, or '' (checked before any work, so a bench
    does not run for minutes to fail at writing its results)."""
    if not 0 <= args.seed < MAX_SEED:
        return f"--seed {args.seed}: must lie in [0, {MAX_SEED - 1}] (a 63-bit seed)"
    out = Path(args.out)
    folder = args.command in ("bench", "generate")
    if folder and out.exists() and not out.is_dir():
        return f"--out {out}: is a file; {args.command} writes a folder"
    if not folder and out.is_dir():
        return f"--out {out}: is a folder; {args.command} writes a PNG file"
    if not folder:
        from .png import image_problem

        problem = image_problem(out)
        if problem:
            return f"--out {out}: {problem}"
    parent = out if folder else out.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
        return f"--out {out}: cannot be written ({existing} is not a writable folder)"
    return ""


def _device_problem(name: str) -> str:
    """Why `name` cannot be used as the device here, or '' (checked before any work)."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return "not a torch device name (e.g. cpu, cuda, cuda:1, mps)"
    if device.type == "meta":
        return "the meta device holds shapes without data; sampling needs a real device"
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return "this torch sees no CUDA device (torch.cuda.is_available() is False)"
        if device.index is not None and device.index >= count:
            return f"there are {count} CUDA devices (cuda:0 to cuda:{count - 1})"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return "this torch has no MPS device"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dpmsolver` console script."""
    args = _parser().parse_args(argv)
    if args.threads < 1:
        print("dpmsolver: error: --threads must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    problem = _device_problem(args.device)
    if problem:
        print(f"dpmsolver: error: --device {args.device}: {problem}", file=sys.stderr)
        return 2
    problem = _argument_problem(args)
    if problem:
        print(f"dpmsolver: error: {problem}", file=sys.stderr)
        return 2
    run = {"sample": _sample, "bench": _bench, "generate": _generate, "compare": _compare}[
        args.command
    ]
    try:
        return run(args)
    except (ValueError, TypeError, OSError, RuntimeError) as err:
        print(f"dpmsolver: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
