"""The node pack's nodes (ComfyUI's classic node API): a DPM-Solver SAMPLER, a SIGMAS node
for our grids, and a node that tunes a sampler for the loaded model."""

from __future__ import annotations

from typing import Any

import torch

from ..core import SolverOptions
from ..k_diffusion import tuned_sigmas
from ..tools.generation.files import write_atomic
from ..tuning import TunedSolver
from .samplers import GRIDS, grid_sigmas, is_flow, sampler_function
from .surface import comfy
from .tune import MAX_EVALUATIONS, cache_path, max_calls_for, tune_in_sampler

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

CATEGORY = "sampling/custom_sampling"
# Where tuning pays (benchmarks/comfyui_samplers.py): above 10 calls the tuned sampler was
# mostly worse than ComfyUI's best sampler, and our untuned dpmsolver_ipndm as good.
MAX_TUNED_STEPS = 10
# A round cap on the pilots whose reference leaves the search, within MAX_EVALUATIONS, the
# calls its screening needs at MAX_TUNED_STEPS (tested; a few more would still fit).
MAX_PILOTS = 32


class DPMSolverSampler:
    """A SAMPLER running DPM-Solver(++) with the options users tune."""

    DESCRIPTION = (
        "DPM-Solver(++), iPNDM or DEIS with the UniC corrector, the analytic first step, "
        "SDE noise (eta, scaled by s_noise) or CFG++: one model call per sigma (none at the "
        "first with the analytic first step). Works on VP models (SD 1.5, "
        "SDXL) and flow models (SD3, Flux, Wan), detected from the model."
    )
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"
    CATEGORY = f"{CATEGORY}/samplers"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "algorithm": (["dpmsolver++", "dpmsolver", "ipndm", "deis"],),
                "order": ("INT", {"default": 2, "min": 1, "max": 4}),
                "method": (["multistep", "singlestep"],),
                "corrector": (["off", "all", "low_noise"],),
                "analytic_first_step": ("BOOLEAN", {"default": False}),
                "eta": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "s_noise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.01}),
                "cfg_pp": ("BOOLEAN", {"default": False}),
            }
        }

    def get_sampler(self, s_noise: float, **options: Any) -> tuple[Any]:
        SolverOptions.of(**options)  # every option checked now, with its allowed values
        return (comfy().samplers.KSAMPLER(sampler_function(dict(options, s_noise=s_noise))),)


class DPMSolverSigmas:
    """SIGMAS of our grids for the model (logSNR, time-uniform, time-quadratic)."""

    DESCRIPTION = (
        "Our time grids as SIGMAS: logSNR (uniform in log sigma), time-uniform and "
        "time-quadratic in the model's own time (flow models: the unshifted flow time)."
    )
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"
    CATEGORY = f"{CATEGORY}/schedulers"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "grid": (list(GRIDS.values()),),
                "steps": ("INT", {"default": 10, "min": 1, "max": 1000}),
            }
        }

    def get_sigmas(self, model: Any, grid: str, steps: int) -> tuple[torch.Tensor]:
        return (grid_sigmas(model.get_model_object("model_sampling"), grid, steps),)


class DPMSolverTuneSampler:
    """A sampler tuned for the loaded model, its conditioning, guidance, size and step
    count (`optimize_solver`), as SAMPLER + SIGMAS for SamplerCustom; cached."""

    DESCRIPTION = (
        "Tunes a DPM-Solver sampler for this model, conditioning, cfg, latent size and "
        f"number of model calls. Costs at most {MAX_EVALUATIONS} model evaluations (one "
        "latent through the model with guidance each) the first time; the result is cached "
        "on disk and later runs cost nothing. Outputs the SAMPLER and SIGMAS to use in "
        "SamplerCustom with the same model, conditioning and cfg. For 2 to "
        f"{MAX_TUNED_STEPS} steps; above, the untuned dpmsolver_ipndm is as good."
    )
    RETURN_TYPES = ("SAMPLER", "SIGMAS")
    FUNCTION = "tune"
    CATEGORY = f"{CATEGORY}/samplers"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.1}),
                "latent_image": ("LATENT",),
                "steps": ("INT", {"default": 8, "min": 2, "max": MAX_TUNED_STEPS}),
                "pilots": ("INT", {"default": 16, "min": 4, "max": MAX_PILOTS}),
                # Not "seed": ComfyUI's frontend would randomize a "seed" after every run,
                # and each new seed would tune again.
                "pilot_seed": ("INT", {"default": 0, "min": 0, "max": 2**32 - 1}),
            }
        }

    def tune(
        self,
        model: Any,
        positive: Any,
        negative: Any,
        cfg: float,
        latent_image: dict[str, Any],
        steps: int,
        pilots: int,
        pilot_seed: int,
    ) -> tuple[Any, torch.Tensor]:
        ms = model.get_model_object("model_sampling")
        latent = latent_image["samples"]
        path = cache_path(
            dict(
                model=model_identity(model),
                positive=positive,
                negative=negative,
                cfg=cfg,
                shape=list(latent.shape[1:]),
                steps=steps,
                pilots=pilots,
                seed=pilot_seed,
            )
        )
        if path.exists():
            tuned = TunedSolver.from_json(path)
        else:
            tuned = run_tuning(model, positive, negative, cfg, latent, steps, pilots, pilot_seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written whole, then renamed: a second ComfyUI never reads half a file.
            write_atomic(path, tuned.to_json().encode())
        kind = "flow" if is_flow(ms) else "ve"
        sampler = comfy().samplers.KSAMPLER(sampler_function(dict(solver=tuned)))
        return sampler, tuned_sigmas(tuned, kind).float()


def run_tuning(
    model: Any,
    positive: Any,
    negative: Any,
    cfg: float,
    latent: torch.Tensor,
    steps: int,
    pilots: int,
    seed: int,
) -> TunedSolver:
    """`optimize_solver` on the model as ComfyUI samples it: a CFGGuider runs a sampler
    whose function tunes on its batch of `pilots` noised latents (ComfyUI loads the model,
    prepares the conditioning and applies the guidance as for any sampling)."""
    samplers = comfy().samplers
    ms = model.get_model_object("model_sampling")
    guider = samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    shape = (pilots, *latent.shape[1:])
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    sigmas = torch.tensor([float(ms.sigma_max), float(ms.sigma_min), 0.0])
    found: list[TunedSolver] = []
    bar = _progress_bar()
    sampler = samplers.KSAMPLER(
        tune_in_sampler,
        extra_options=dict(
            nfe=steps, found=found, progress=bar, max_calls=max_calls_for(pilots), seed=seed
        ),
    )
    guider.sample(noise, torch.zeros(shape), sampler, sigmas, seed=seed, disable_pbar=True)
    return found[0]


def model_identity(model: Any) -> dict[str, Any]:
    """What identifies a ComfyUI model for the cache: its class, weights' names, shapes and
    a few values of each (two fine-tunes of one architecture differ there, not in their
    names), patches (LoRA) and model sampling (a ModelSampling* node changes it)."""
    base = model.model
    ms = model.get_model_object("model_sampling")
    state = sorted(base.state_dict().items())[:4096]
    return dict(
        model=type(base).__name__,
        weights=[[k, list(v.shape)] for k, v in state],
        values=[_spread(v) for _, v in state],
        patches=str(getattr(model, "patches_uuid", "")) if getattr(model, "patches", None) else "",
        sampling=[c.__name__ for c in type(ms).__mro__[:4]],
        range=[float(ms.sigma_min), float(ms.sigma_max)],
        shift=float(getattr(ms, "shift", 0.0)),
    )


def _spread(weight: torch.Tensor, count: int = 8) -> torch.Tensor:
    """`count` values spread over a weight (all of a smaller one), on the CPU."""
    flat = weight.detach().flatten()
    return flat[:: max(1, flat.numel() // count)][:count].to("cpu", torch.float32)


def _progress_bar() -> Any:
    """ComfyUI's progress bar as a (done, total) callback, if ComfyUI has one."""
    try:
        import comfy.utils

        bars: list[Any] = []

        def update(done: int, total: int) -> None:
            if not bars:
                bars.append(comfy.utils.ProgressBar(total))
            bars[0].update_absolute(done, total)

        return update
    except ImportError:
        return None


NODE_CLASS_MAPPINGS = {
    "DPMSolverSampler": DPMSolverSampler,
    "DPMSolverSigmas": DPMSolverSigmas,
    "DPMSolverTuneSampler": DPMSolverTuneSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DPMSolverSampler": "DPM-Solver",
    "DPMSolverSigmas": "DPM-Solver Sigmas",
    "DPMSolverTuneSampler": "DPM-Solver Tune Sampler",
}
