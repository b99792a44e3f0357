"""Our ComfyUI samplers and schedulers against ComfyUI's own, run through ComfyUI itself.

Needs a ComfyUI checkout: COMFYUI_DIR=/path/to/ComfyUI python benchmarks/comfyui_samplers.py

The exact digits mixture is the model, as ComfyUI's samplers see one (a CFGGuider-like
callable returning the denoised prediction, with `inner_model.model_sampling`), under two
of ComfyUI's model samplings: Stable Diffusion 1.5's (EPS, scaled-linear betas) and SD3's
(CONST flow matching, shift 3). Every sampler runs through `KSAMPLER.sample` (ComfyUI's
noise scaling around the sampler function) on the sigmas of a scheduler from
`calculate_sigmas`, from the same noises; its model calls are counted, and it is scored by
the RMS distance of its sample to the converged answer (our DPM-Solver-3 on 500 logSNR
steps; its distance to a 250-step run is printed). Samplers with the analytic first step
(`_afs`) get one sigma more, for the same calls. ComfyUI's rows are its deterministic
samplers of one call per step; ours are those the pack registers, deterministic ones. For
each model and call budget the table gives the best of ComfyUI's samplers x schedulers, the
best of ours x our grids and ComfyUI's, and the tuned sampler of the DPM-Solver Tune
Sampler node (tuned inside a sampler call on 16 pilot noises, as the node does; its cost in
model evaluations).

Run: COMFYUI_DIR=... python benchmarks/comfyui_samplers.py [--steps 5,8,10,15,20] [--n 256]
    [--no-tune]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.machinery
import io
import os
import sys
import time
from types import SimpleNamespace
from typing import Any
from unittest import mock

import torch
from low_budget import THROUGHPUT

from dpmsolver.models import load_digits_gmm

COMFY_SAMPLERS = [
    "euler",
    "lms",
    "dpmpp_2m",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "gradient_estimation",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
]
OURS = [
    "dpmsolver_2m",
    "dpmsolver_3m",
    "dpmsolver_2m_unic",
    "dpmsolver_3m_unic",
    "dpmsolver_ipndm",
    "dpmsolver_3m_unic_afs",
    "dpmsolver_ipndm_afs",
]


def load_comfyui(root: str) -> SimpleNamespace:
    """ComfyUI's sampling modules from a checkout, on the CPU, and our pack registered."""
    sys.path.insert(0, root)
    for name in ("torchvision", "torchvision.transforms"):
        try:
            importlib.import_module(name)
        except Exception:  # a CUDA wheel on a CPU torch: ComfyUI imports it for other models
            module = mock.MagicMock(name=name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
            module.__path__ = []
            sys.modules[name] = module
    from comfy.cli_args import args

    args.cpu = True
    return SimpleNamespace(
        samplers=importlib.import_module("comfy.samplers"),
        model_sampling=importlib.import_module("comfy.model_sampling"),
        pack=importlib.import_module("dpmsolver.comfyui"),
    )


class Model:
    """The exact digits mixture as ComfyUI's samplers call a model: (x, sigma) -> the
    posterior mean E[x_0 | x_sigma], in ComfyUI's scaling (VE x = x_0 + sigma eps for EPS
    models, x = (1 - sigma) x_0 + sigma eps for flow models). Counts its calls."""

    def __init__(self, model_sampling: Any, flow: bool) -> None:
        self.inner_model = SimpleNamespace(model_sampling=model_sampling)
        self.flow, self.calls = flow, 0
        self.gmm = load_digits_gmm()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        self.calls += 1
        s = float(sigma.double().reshape(-1)[0])
        if self.flow:
            alpha, scale = 1.0 - s, 1.0
        else:
            alpha, scale = 1.0 / (1 + s * s) ** 0.5, (1 + s * s) ** 0.5
        out = self.gmm.posterior_mean(x.double() / scale, max(alpha, 1e-12), s / scale)
        return out.to(x.dtype)


def model_samplings(ms: Any) -> dict[str, Any]:
    class VP(ms.ModelSamplingDiscrete, ms.EPS):
        pass

    class Flow(ms.ModelSamplingDiscreteFlow, ms.CONST):
        pass

    flow = Flow()
    flow.set_parameters(shift=3.0)
    return {"SD 1.5 (EPS)": VP(), "SD3 (flow, shift 3)": flow}


def run(
    comfy: SimpleNamespace, sampler: Any, ms: Any, flow: bool, sigmas: torch.Tensor, noise: Any
) -> tuple[torch.Tensor, int]:
    model = Model(ms, flow)
    latent = torch.zeros_like(noise)
    extra = {"seed": 0, "model_options": {}}
    out = sampler.sample(model, sigmas, extra, None, noise, latent, disable_pbar=True)
    return out, model.calls


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean().sqrt())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="5,8,10,15,20")
    parser.add_argument("--n", type=int, default=256, help="noises scored (default 256)")
    parser.add_argument("--pilots", type=int, default=16, help="tune node pilots (default 16)")
    parser.add_argument("--no-tune", action="store_true", help="skip the tune node's rows")
    args = parser.parse_args()
    root = os.environ.get("COMFYUI_DIR")
    if not root:
        parser.error("set COMFYUI_DIR to a ComfyUI checkout (this benchmark runs ComfyUI)")
    torch.set_num_threads(1)
    comfy = load_comfyui(root)
    samplers = comfy.samplers
    from dpmsolver.comfyui.samplers import sampler_function
    from dpmsolver.comfyui.tune import max_calls_for, tune_in_sampler
    from dpmsolver.k_diffusion import tuned_sigmas

    theirs_grids = [g for g in samplers.SCHEDULER_HANDLERS if not g.startswith("dpmsolver_")]
    ours_grids = list(comfy.pack.GRIDS)
    budgets = [int(s) for s in args.steps.split(",")]
    noise = torch.randn(args.n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for title, ms in model_samplings(comfy.model_sampling).items():
        flow = "flow" in title
        start = time.perf_counter()
        fine = samplers.calculate_sigmas(ms, "dpmsolver_logsnr", 500)
        coarse = samplers.calculate_sigmas(ms, "dpmsolver_logsnr", 250)
        exact, _ = run(comfy, samplers.ksampler("dpmsolver_3m"), ms, flow, fine, noise)
        check, _ = run(comfy, samplers.ksampler("dpmsolver_3m"), ms, flow, coarse, noise)
        print(f"== {title}: {args.n} noises; reference 500 vs 250 steps: {rms(exact, check):.1e}")
        print(
            f"{'calls':>5}  {'best of ComfyUI':<34}{'error':>9}  {'best of ours':<42}"
            f"{'error':>9}  {'ours/CUI':>8}"
            + ("" if args.no_tune else f"  {'tuned':>9} {'tuned/CUI':>9} {'evals':>7}")
        )
        for steps in budgets:
            best: dict[str, tuple[float, str]] = {}
            for group, names, grids in (
                ("comfy", COMFY_SAMPLERS, theirs_grids),
                ("ours", OURS, ours_grids + theirs_grids),
            ):
                for name in names:
                    for grid in grids:
                        # `steps` calls: as many sigmas, one more with the analytic first step
                        sigmas = samplers.calculate_sigmas(ms, grid, steps + name.endswith("_afs"))
                        try:
                            out, calls = run(
                                comfy, samplers.sampler_object(name), ms, flow, sigmas, noise
                            )
                        except Exception as error:  # a sampler that cannot run this grid
                            print(f"   ({name} on {grid}: {type(error).__name__})")
                            continue
                        if calls != steps or not bool(torch.isfinite(out).all()):
                            continue
                        err = rms(out, exact)
                        if group not in best or err < best[group][0]:
                            best[group] = (err, f"{name}, {grid}")
            line = (
                f"{steps:>5}  {best['comfy'][1]:<34}{best['comfy'][0]:>9.2e}  "
                f"{best['ours'][1]:<42}{best['ours'][0]:>9.2e}  "
                f"{best['ours'][0] / best['comfy'][0]:>8.2f}"
            )
            if not args.no_tune:
                found: list[Any] = []
                tuner = samplers.KSAMPLER(
                    tune_in_sampler,
                    extra_options=dict(
                        nfe=steps, found=found, max_calls=max_calls_for(args.pilots), seed=0
                    ),
                )
                pilots = torch.randn(
                    args.pilots, 1, 8, 8, generator=torch.Generator().manual_seed(2)
                )
                ends = torch.tensor([float(ms.sigma_max), float(ms.sigma_min), 0.0])
                with contextlib.redirect_stdout(io.StringIO()):  # the node's progress lines
                    run(comfy, tuner, ms, flow, ends, pilots)
                (tuned,) = found
                grid = tuned_sigmas(tuned, "flow" if flow else "ve").float()
                sampler = samplers.KSAMPLER(sampler_function(dict(solver=tuned)))
                out, calls = run(comfy, sampler, ms, flow, grid, noise)
                err = rms(out, exact)
                evals = tuned.model_calls["evaluations"]
                line += f"  {err:>9.2e} {err / best['comfy'][0]:>9.2f} {evals:>7}"
            print(line)
        print(f"({time.perf_counter() - start:.0f} s)")
    from dpmsolver.comfyui.tune import MAX_EVALUATIONS

    estimate = ", ".join(
        f"{model} {MAX_EVALUATIONS / rate / 60:.0f} min" for model, rate in THROUGHPUT.items()
    )
    print(
        f"the tune node's cap of {MAX_EVALUATIONS} evaluations at published batch-1 "
        f"throughput: {estimate}"
    )
    print(
        "(calls: model calls of every run; best of ComfyUI: its deterministic one-call-per-"
        f"step samplers ({', '.join(COMFY_SAMPLERS)}) x its schedulers "
        f"({', '.join(theirs_grids)}); best of ours: {', '.join(OURS)} x our schedulers "
        f"({', '.join(ours_grids)}) and ComfyUI's; tuned: the Tune Sampler "
        f"node's sampler + sigmas, tuned on {args.pilots} pilot noises apart from the scored "
        "ones; evals: its model evaluations, reference included)"
    )


if __name__ == "__main__":
    main()
