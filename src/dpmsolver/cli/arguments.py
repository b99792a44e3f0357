"""The command line's arguments: the parser of every subcommand, the solver options they
name, and the checks made before any work (seed, output path, device)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, NoReturn

import torch

from ..core import ALGORITHMS, CORRECTORS, METHODS, SKIP_TYPES, SolverOptions
from ..models import MODELS
from ..tools.presets import SOLVERS, Resolved, preset_name, resolve
from ..version import VERSION

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, where its text does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False  # a flag: off unless given
            or default == argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, list) else "%(default)s"
        return f"{text} (default: {shown})".strip()


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2) and the defaults in the help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

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
    """Comma-separated solver names, each in any vocabulary (`presets.resolve`)."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated solver names, got {text!r}")
    try:
        # ODE solvers only: these runs draw no seeded SDE noise and are compared with the
        # ODE's solution.
        return [preset_name(n, "solver", ode=True) for n in names]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _solver(text: str) -> Resolved:
    """One solver name in any vocabulary, with the grid an A1111 suffix gives."""
    try:
        return resolve(text.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="digits-exact",
        choices=MODELS,
        help="built-in model: the digits mixture, exact or a trained network, on a VP "
        "schedule or as rectified flow",
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
        "--solver",
        type=_solver,
        default=None,
        metavar="NAME",
        help=f"a solver by any of its names, case-insensitive: ours ({', '.join(SOLVERS)}), "
        "ComfyUI's (dpmpp_2m, dpmpp_3m_sde, ipndm, deis, ...), A1111's ('DPM++ 2M Karras': "
        "the grid too) or diffusers' scheduler class; the options below change it "
        "(default: dpm++2m)",
    )
    p.add_argument(
        "--algorithm",
        default=None,
        choices=ALGORITHMS,
        help="the predictor (default: the solver's, dpmsolver++)",
    )
    p.add_argument(
        "--method", default=None, choices=METHODS, help="(default: the solver's, multistep)"
    )
    p.add_argument(
        "--order",
        type=int,
        default=None,
        choices=[1, 2, 3, 4],
        help="(default: the solver's, 2); 4: iPNDM only (--solver ipndm4)",
    )
    p.add_argument(
        "--corrector",
        default=None,
        choices=CORRECTORS,
        help="UniC corrector (default: the solver's, off)",
    )
    p.add_argument(
        "--eta",
        type=float,
        default=None,
        help="SDE noise >= 0 (0: the ODE; 1 with multistep: DPM++ 2M/3M SDE, with "
        "singlestep: DPM++ SDE) (default: the solver's, 0)",
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


def solver_options(args: argparse.Namespace) -> SolverOptions:
    """The solver options from the solver arguments; --steps counts model calls."""
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1 (model calls); got {args.steps}")
    if args.tuned:  # the shipped multistep setting replaces the solver options
        from ..models import tuned_solver

        if args.analytic_first_step:
            raise ValueError(
                "--tuned sets the solver, first step included; drop --analytic-first-step"
            )
        if args.eta or args.ancestral:
            raise ValueError("--tuned sets an ODE solver; drop --eta / --ancestral")
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("solver", "algorithm", "method", "order", "corrector", "skip_type")
            if getattr(args, name) is not None
        ]
        if given:
            raise ValueError(f"--tuned sets the solver and its grid; drop {', '.join(given)}")
        return tuned_solver(args.model, 10 if args.steps is None else args.steps).solver()
    named: Resolved = args.solver or Resolved("dpm++2m", None)
    changes: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("order", "method", "algorithm", "corrector", "eta")
        if getattr(args, key) is not None
    }
    flags = ("analytic_first_step", "ancestral")
    changes.update({key: True for key in flags if getattr(args, key)})
    base = SOLVERS[named.name].options
    algorithm = changes.get("algorithm", base.algorithm)
    if changes.get("order") == 4 and algorithm != "ipndm":
        raise ValueError(
            f"--order 4: only iPNDM has a fourth order (--solver ipndm4, or --algorithm "
            f"ipndm); {algorithm} takes orders 1 to 3"
        )
    grid = args.skip_type or named.skip_type or "logSNR"
    options = SolverOptions.of(base, skip_type=grid, **changes)
    if options.method == "adaptive":
        if args.steps is not None:
            raise ValueError(
                "--steps sets the model calls of the fixed-step methods; --method adaptive "
                "chooses its steps from its error tolerances"
            )
        return options
    calls = 10 if args.steps is None else args.steps
    return SolverOptions.of(options, steps=options.steps_for_calls(calls))


def parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per command."""
    top = Parser(
        prog="dpmsolver", description="DPM-Solver and DPM-Solver++ samplers for diffusion models."
    )
    top.add_argument("--version", action="version", version=f"dpmsolver {VERSION}")
    sub = top.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in (
        _sample_command,
        _bench_command,
        _generate_command,
        _compare_command,
        _comfyui_command,
    ):
        add(sub)
    return top


def _comfyui_command(sub: Any) -> None:
    c = sub.add_parser(
        "comfyui",
        help="install dpmsolver's nodes and samplers into ComfyUI",
        description="Set up dpmsolver inside ComfyUI (dpmsolver must be installed into "
        "ComfyUI's own Python).",
    )
    actions = c.add_subparsers(dest="action", required=True, parser_class=Parser)
    i = actions.add_parser(
        "install",
        help="write custom_nodes/dpmsolver into a ComfyUI folder",
        description="Write custom_nodes/dpmsolver/__init__.py into the ComfyUI folder PATH: "
        "ComfyUI then loads dpmsolver.comfyui at start (restart it). Running it again "
        "updates the file; a custom_nodes/dpmsolver holding anything else is refused.",
    )
    i.add_argument("path", metavar="PATH", type=_path, help="ComfyUI's folder (holds main.py)")


def _sample_command(sub: Any) -> None:
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


def _bench_command(sub: Any) -> None:
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


def _generate_command(sub: Any) -> None:
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


def _compare_command(sub: Any) -> None:
    c = sub.add_parser(
        "compare",
        help="one PNG: the same seeds by several solvers and step counts",
        description="Writes one labelled PNG: a row per solver, with --n samples for each "
        "step count side by side, and a last row with the reference solution of the same "
        "noises; the solvers are named left of the rows, the step counts and sample indices "
        "above the columns.",
    )
    _common(c)
    c.add_argument(
        "--steps",
        type=_int_list,
        default=[5, 10, 20],
        help="comma-separated model-call counts, one column group each",
    )
    c.add_argument(
        "--solvers",
        type=_names,
        default=["ddim", "dpm++2m", "dpm++3m"],
        help="comma-separated solver names, one row each (any name --solver takes, without a "
        "grid: the grid is --skip-type)",
    )
    c.add_argument(
        "--n", type=int, default=4, help="samples (noises of --seed) per step count (default 4)"
    )
    c.add_argument(
        "--out", type=_path, default=Path("out/compare.png"), help="the PNG file to write"
    )


MAX_SEED = 2**63 - 1  # torch's generators take 64-bit seeds; +1 is used for tuning seeds


def argument_problem(args: argparse.Namespace) -> str:
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
        from ..tools.png import image_problem

        problem = image_problem(out)
        if problem:
            return f"--out {out}: {problem}"
    parent = out if folder else out.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
        return f"--out {out}: cannot be written ({existing} is not a writable folder)"
    return ""


def device_problem(name: str) -> str:
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
