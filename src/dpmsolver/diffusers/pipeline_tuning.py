"""Tuned solvers for a diffusers pipeline: `tune_pipeline` runs `optimize_solver` on the
pipeline's own denoiser, called exactly as the pipeline calls it.

    tuned = tune_pipeline(pipe, 8, prompt_embeds=embeds, negative_prompt_embeds=neg,
                          guidance_scale=5.0, height=512, width=512)
    pipe.scheduler = DPMSolverScheduler.from_tuned(tuned, pipe.scheduler.config)
    image = pipe(prompt_embeds=embeds, ..., num_inference_steps=tuned.model_calls())

Each model evaluation is one call of the pipeline itself, for one step, from the tuner's
latents at the tuner's time, with a scheduler that hands the pipeline that time and keeps
the output the pipeline gives it: so the denoiser sees its conditioning, classifier-free
guidance, scaling, packing (Flux) and timestep convention as in a normal run, and the
tuned solver is tuned on what the pipeline will feed the scheduler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..checks import check_int
from ..core import Level, NoiseSchedule, Target
from ..tuning import TunedSolver, optimize_solver
from ..tuning.solver_search import HELD_OUT, HELD_OUT_NOISES, held_out_count
from .outputs import model_mean, to_form
from .scheduler import DPMSolverScheduler

__all__ = ["PipelineModel", "tune_pipeline"]

# Pipeline arguments the tuning sets itself, and those that cut the run short (a tuned
# solver is tuned for the whole run from pure noise).
_SET_HERE = ("latents", "num_inference_steps", "timesteps", "sigmas", "output_type", "return_dict")
_WHOLE_RUN = ("denoising_start", "denoising_end", "strength", "image")
# Per-prompt conditioning tensors: tiled over the pilots, pilot j taking prompt j mod P.
_PER_PROMPT = (
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
)


class _Capture(DPMSolverScheduler):
    """A scheduler for one pipeline step: `set_timesteps` plans the one timestep it is
    told (`at`), whatever the pipeline asks, and `step` keeps the model output the
    pipeline hands it and returns the sample unchanged."""

    def at(self, timestep: float) -> None:
        self._timestep = timestep
        self.output: Tensor | None = None
        self.sample_seen: Tensor | None = None

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        timesteps: Any = None,
        sigmas: Any = None,
        mu: float | None = None,
    ) -> None:
        self.timesteps = torch.tensor([self._timestep], dtype=torch.float64, device=device)
        self.sigmas = torch.zeros(2, dtype=torch.float64, device=device)
        self.num_inference_steps = 1

    @property
    def setup(self) -> Any:
        """The config's reading (`config.Setup`): prediction type and x0 corrections."""
        return self._setup

    def step(
        self, model_output: Tensor, timestep: Any, sample: Tensor, *args: Any, **kwargs: Any
    ) -> Any:
        from diffusers.schedulers.scheduling_utils import SchedulerOutput

        self.output, self.sample_seen = model_output, sample
        if kwargs.get("return_dict", True) is False:
            return (sample,)
        return SchedulerOutput(prev_sample=sample)


class PipelineModel:
    """A diffusers pipeline's denoising step as a `DiffusionModel`: x is the pipeline's
    latents (packed, for Flux), the output is the model output the pipeline gives its
    scheduler (guided), in the form the solver asks for.

    `call` holds the pipeline's arguments (conditioning, guidance_scale, height, width,
    ...); the per-prompt tensors among them (`prompt_embeds`, `negative_prompt_embeds`,
    `pooled_prompt_embeds`, `negative_pooled_prompt_embeds`) and a list of prompts are
    tiled over the batch: row j gets prompt j mod P. `max_batch` (None: no bound) splits
    a larger batch into pipeline calls of at most that many latents, so that the held-out
    batch of a tuning (the held-out pilots and the extra held-out noises) needs no more
    memory than the pilots'. `calls` counts pipeline calls.
    """

    def __init__(self, pipe: Any, call: Mapping[str, Any], max_batch: int | None = None) -> None:
        if max_batch is not None:
            check_int("max_batch", max_batch, 1)
        self.max_batch = max_batch
        self.capture = _Capture.from_config(pipe.scheduler.config)
        self.capture.at(0.0)
        self.pipe = type(pipe)(**{**pipe.components, "scheduler": self.capture})
        self.pipe.set_progress_bar_config(disable=True)
        self.schedule: NoiseSchedule = self.capture.noise_schedule
        self.call = dict(call)
        self.prompts = _prompt_count(self.call)
        self.calls = 0
        level = self.schedule.levels([self.schedule.t_max])[0]
        probe = self._run(None, level, 1)
        self.sample_shape = tuple(probe.shape[1:])
        self.dtype = probe.dtype

    def __call__(self, x: Tensor, level: Level, target: Target) -> Tensor:
        size = x.shape[0] if self.max_batch is None else self.max_batch
        parts = [
            self._run(x[i : i + size].to(self.dtype), level, min(size, x.shape[0] - i), i)
            for i in range(0, x.shape[0], size)
        ]
        out = (parts[0] if len(parts) == 1 else torch.cat(parts)).to(x.dtype)
        out = model_mean(out, x, 0, self.capture.setup, None)
        return to_form(out, x, level, self.capture.setup, target)

    def _run(self, x: Tensor | None, level: Level, batch: int, first: int = 0) -> Tensor:
        """One pipeline step at `level` from latents `x` (None: the pipeline's own noise,
        for its latent shape), rows `first`.. of the batch; the model output it gives the
        scheduler."""
        self.calls += 1
        self.capture.at(self._timestep(level))
        rows = range(first, first + batch)
        call = {
            k: _tiled(v, rows, self.prompts) if k in _PER_PROMPT else v
            for k, v in self.call.items()
        }
        for key in ("prompt", "negative_prompt"):
            value = call.get(key)
            if isinstance(value, str):
                call[key] = [value] * batch
            elif isinstance(value, list | tuple):
                call[key] = [value[j % self.prompts] for j in rows]
        with torch.no_grad():
            self.pipe(**call, latents=x, num_inference_steps=1, output_type="latent")
        out = self.capture.output
        if out is None:
            raise RuntimeError("the pipeline did not call its scheduler's step()")
        self.capture.sample_seen = None
        return out

    def _timestep(self, level: Level) -> float:
        """The network's timestep at `level`, as the scheduler's `timesteps` give it."""
        if level.model_t is not None:
            return float(level.model_t)
        return float(self.schedule.model_time(level.t))


def _prompt_count(call: Mapping[str, Any]) -> int:
    """P: the prompts of the pipeline's arguments (a list of prompts, or the batch of the
    per-prompt tensors; they must agree)."""
    counts = {}
    for key in ("prompt", "negative_prompt"):
        value = call.get(key)
        if isinstance(value, list | tuple):
            counts[key] = len(value)
        elif value is not None and not isinstance(value, str):
            raise TypeError(f"{key} must be a str or a list of str; got {type(value).__name__}")
    for key in _PER_PROMPT:
        value = call.get(key)
        if value is not None:
            if not isinstance(value, Tensor) or value.dim() < 1:
                raise TypeError(f"{key} must be a tensor with a batch dimension; got {value!r:.60}")
            counts[key] = int(value.shape[0])
    if len(set(counts.values())) > 1:
        raise ValueError(f"the prompts and their embeddings disagree on their number: {counts}")
    return next(iter(counts.values()), 1)


def _tiled(value: Any, rows: range, prompts: int) -> Any:
    """A per-prompt tensor over the batch's `rows`: row j is prompt j mod P."""
    if not isinstance(value, Tensor):
        return value
    index = torch.arange(rows.start, rows.stop, device=value.device) % prompts
    return value[index]


def tune_pipeline(
    pipe: Any,
    num_inference_steps: int,
    *,
    prompt: str | list[str] | None = None,
    negative_prompt: str | list[str] | None = None,
    prompt_embeds: Tensor | None = None,
    negative_prompt_embeds: Tensor | None = None,
    guidance_scale: float | None = None,
    height: int | None = None,
    width: int | None = None,
    pilots: int = 16,
    seed: int = 0,
    max_batch: int | None = 16,
    call_kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> TunedSolver:
    """A solver tuned for a diffusers pipeline and `num_inference_steps` model calls
    (`optimize_solver` on `PipelineModel(pipe, ...)`): run it with
    `pipe.scheduler = DPMSolverScheduler.from_tuned(tuned, pipe.scheduler.config)`.

    The denoiser is called as the pipeline calls it, with the given prompts (or their
    embeddings; other pipeline arguments such as `pooled_prompt_embeds` in `call_kwargs`),
    `guidance_scale`, `height` and `width`: classifier-free guidance, Flux's packing and
    resolution-dependent shift included. With P prompts, pilot j is conditioned on prompt
    j mod P, and the tuning pilots and (with extra held-out noises) the held-out pilots
    must each be a multiple of P (at the defaults, pilots = 16 suits P = 1, 2, 4).
    `pilots`, `seed` and `**options` (families, max_calls, held_out_noises, ...) are
    `optimize_solver`'s; the pilot noises are drawn in the pipeline's latent shape. The
    pipeline is called on at most `max_batch` latents at once (None: on the whole batch;
    see `PipelineModel`). The pipeline itself is not changed.
    """
    check_int("num_inference_steps", num_inference_steps, 2)
    call = dict(call_kwargs or {})
    for key in _SET_HERE:
        if key in call:
            raise ValueError(f"call_kwargs: {key} is set by tune_pipeline")
    for key in _WHOLE_RUN:
        if call.get(key) is not None:
            raise ValueError(
                f"call_kwargs: {key} runs part of the grid; a tuned solver is tuned for the "
                "whole run from the initial noise (text-to-image)"
            )
    given = dict(
        prompt=prompt,
        negative_prompt=negative_prompt,
        prompt_embeds=prompt_embeds,
        negative_prompt_embeds=negative_prompt_embeds,
        guidance_scale=guidance_scale,
        height=height,
        width=width,
    )
    call.update({k: v for k, v in given.items() if v is not None})
    model = PipelineModel(pipe, call, max_batch)
    n = check_int("pilots", pilots, 2)
    held = held_out_count(n, options.get("held_out", HELD_OUT))
    # The reference solves the pilots in one batch and the extra held-out noises in
    # another; the search runs the tuning pilots alone and the held-out pilots before the
    # extras. Each row keeps its prompt only if both parts are multiples of P.
    extras = options.get("held_out_noises", HELD_OUT_NOISES)
    if (n - held) % model.prompts or (extras and held % model.prompts):
        parts = f"{n - held} tuning pilots" + (f" and {held} held-out pilots" if extras else "")
        raise ValueError(
            f"pilots={n}: its {parts} must be a multiple of the {model.prompts} prompts "
            "(pilot j is conditioned on prompt j mod P)"
        )
    name = options.pop("name", None) or type(pipe).__name__
    return optimize_solver(model, num_inference_steps, pilots=n, seed=seed, name=name, **options)
