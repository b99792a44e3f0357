"""What the solver costs beside the network: time per run against a floor, and memory.

The model is near-free (`net(x, t) = 0.5 * x`), so everything but one pass over x per call
is solver overhead. The floor is the least any sampler can do with the same model calls:
call the network with a precomputed time input, then one fused axpy (`torch.add(x, m,
alpha=c)`) per step. Every sampler below makes the same 20 network calls from the same x
on Stable Diffusion's training schedule (scaled-linear betas, 1000 steps).

Timing: single thread; in each round the floor and every sampler run back to back (so
drift in the machine's speed hits all of them alike); each figure is the median over rounds
of the sampler's time divided by that round's floor. Memory: the peak bytes of tensors
the run allocates and holds at once, in units of x's size
(`dpmsolver.tools.memory.peak_live_bytes`).

`--compile` also compiles the 2M loop with `torch.compile(fullgraph=True)` (the net is
traced with it) and reports whether that succeeded and its ratio to the eager floor. (The
floor itself is not compiled: with an elementwise net every step reads x twice, and
inductor's inlining of the 20-step chain grows without bound.)

Run: python benchmarks/overhead.py [--shapes 1,4,8,8 4,4,64,64 2,4,128,128] [--rounds 15]
     [--compile]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

import dpmsolver as dpm
from dpmsolver.diffusers import DPMSolverScheduler
from dpmsolver.tools.memory import peak_live_bytes

STEPS = 20
SD_BETAS = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
)


def net(x: Tensor, t: Tensor) -> Tensor:
    return 0.5 * x


def sd_schedule() -> dpm.DiscreteVPSchedule:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return dpm.VPSchedule.discrete(betas=betas)


def floor_loop(x: Tensor, t_in: list[Tensor], coeffs: list[float]) -> Tensor:
    for t, c in zip(t_in, coeffs, strict=True):
        m = net(x, t)
        x = torch.add(x, m, alpha=c)
    return x


def diffusers_loop(scheduler: object, x: Tensor) -> Tensor:
    """A pipeline's denoising loop; set_timesteps is part of every run, as in a pipeline."""
    scheduler.set_timesteps(STEPS)  # type: ignore[attr-defined]
    for t in scheduler.timesteps:  # type: ignore[attr-defined]
        x = scheduler.step(net(x, t), t, x).prev_sample  # type: ignore[attr-defined]
    return x


def samplers(x: Tensor) -> dict[str, Callable[[], Tensor]]:
    schedule = sd_schedule()
    eps_model = dpm.Denoiser(net, schedule, prediction="noise")
    x0_model = dpm.Denoiser(net, schedule, prediction="x0")

    def ours(model: dpm.Denoiser, **options: object) -> Callable[[], Tensor]:
        sampler = dpm.Sampler(model, steps=STEPS, **options)  # type: ignore[arg-type]
        return lambda: sampler(x)

    runs = {
        "dpmsolver 2M (++, x0 model)": ours(x0_model, order=2),
        "dpmsolver 2M (++, eps model)": ours(eps_model, order=2),
        "dpmsolver 3M (++, x0 model)": ours(x0_model, order=3),
        "dpmsolver 2M (noise form, eps)": ours(eps_model, order=2, algorithm="dpmsolver"),
        "dpmsolver 3M (noise form, eps)": ours(eps_model, order=3, algorithm="dpmsolver"),
        "dpmsolver 3S singlestep (++, x0)": ours(x0_model, order=3, method="singlestep"),
        "dpmsolver 2M, check_finite=False": ours(x0_model, order=2, check_finite=False),
        "dpmsolver.sample() 2M (++, x0)": lambda: dpm.sample(x0_model, x, steps=STEPS),
    }
    face = DPMSolverScheduler(**SD_BETAS)
    runs["dpmsolver diffusers face (eps)"] = lambda: diffusers_loop(face, x)
    try:
        from diffusers import DPMSolverMultistepScheduler
    except ImportError:
        print("diffusers is not installed: its scheduler is left out")
    else:
        theirs = DPMSolverMultistepScheduler(**SD_BETAS)
        runs["diffusers DPMSolverMultistep (eps)"] = lambda: diffusers_loop(theirs, x)
    return runs


def seconds(fn: Callable[[], object], inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def measure(shape: tuple[int, ...], rounds: int, compile_loop: bool) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    t_in = [torch.full((shape[0],), float(999 - 50 * i)) for i in range(STEPS)]
    coeffs = [0.01 * (i + 1) for i in range(STEPS)]
    floor = lambda: floor_loop(x, t_in, coeffs)  # noqa: E731
    runs = samplers(x)
    if compile_loop:
        model = dpm.Denoiser(net, sd_schedule(), prediction="x0")
        try:
            fast = dpm.Sampler(model, steps=STEPS, order=2).compile()
            fast(x)
        except Exception as err:  # report, do not hide: the run goes on without it
            print(f"torch.compile(fullgraph=True) failed: {type(err).__name__}: {err}")
        else:
            print("torch.compile(fullgraph=True) of the 2M loop: succeeded")
            runs["dpmsolver 2M compiled (x0 model)"] = lambda: fast(x)
    base = seconds(floor, 3)
    inner = max(1, int(0.005 / base))  # each timing spans >= 5 ms
    for fn in runs.values():
        fn()  # warm up
    ratios: dict[str, list[float]] = {name: [] for name in runs}
    floors = []
    for _ in range(rounds):
        f = seconds(floor, inner)
        floors.append(f)
        for name, fn in runs.items():
            ratios[name].append(seconds(fn, inner) / f)
    floor_ms = statistics.median(floors) * 1e3
    print(f"\nshape {shape}, {STEPS} model calls, floor {floor_ms:.3f} ms per run")
    print(f"{'sampler':38s} {'ms/run':>8s} {'x floor':>8s} {'peak mem (x size)':>18s}")
    for name, fn in runs.items():
        r = statistics.median(ratios[name])
        if "compiled" in name:  # a dispatch mode cannot watch a compiled graph
            print(f"{name:38s} {r * floor_ms:8.3f} {r:8.2f} {'-':>18s}")
            continue
        mem = peak_live_bytes(fn) / (x.numel() * x.element_size())
        print(f"{name:38s} {r * floor_ms:8.3f} {r:8.2f} {mem:18.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["1,4,8,8", "4,4,64,64", "2,4,128,128"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--compile", action="store_true", help="also time the compiled loop")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}, 1 thread"
    )
    for spec in args.shapes:
        measure(tuple(int(s) for s in spec.split(",")), args.rounds, args.compile)


if __name__ == "__main__":
    main()
