"""Tuned solvers for diffusers pipelines: `tune_pipeline` on tiny random-weight SD 1.5,
SDXL, SD3 and Flux pipelines (built offline), run back through the pipeline with
`DPMSolverScheduler.from_tuned`, and saved and loaded with the scheduler."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import tiny_pipelines as tp

import dpmsolver as dpm
from dpmsolver.diffusers import DPMSolverScheduler, PipelineModel, tune_pipeline
from dpmsolver.tuning.refinement import HELD_OUT_MEASURE

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
# A small search, enough to run every stage: a coarse reference, four extra held-out
# noises, two families, one Levenberg-Marquardt iteration.
SMALL = dict(
    pilots=8,
    held_out_noises=4,
    families=["dpm++2m", "dpm++2m+c"],
    iterations=1,
    finalists=1,
    max_calls=400,
    candidates=8,
    substeps=1,
)
PIPELINES = {
    "sd15": tp.sd15_txt2img,
    "sdxl": tp.sdxl_txt2img,
    "sd3": tp.sd3_txt2img,
    "flux": tp.flux_txt2img,
}


def call_of(tiny: tp.Tiny) -> dict[str, Any]:
    return {k: v for k, v in tiny.kwargs.items() if k != "denoising_end"}


@pytest.fixture(scope="module", params=list(PIPELINES))
def tuned(request: pytest.FixtureRequest) -> tuple[tp.Tiny, Any, dpm.TunedSolver]:
    tiny = PIPELINES[request.param]()
    pipe = tiny.make(tiny.scheduler)
    return tiny, pipe, tune_pipeline(pipe, 4, call_kwargs=call_of(tiny), **SMALL)


def test_the_tuned_run_through_the_pipeline_is_the_native_run(tuned: Any, tmp_path: Path) -> None:
    """The pipeline with DPMSolverScheduler.from_tuned, from latents x, makes the promised
    calls and returns dpmsolver.sample(model, x, solver=tuned) on the same denoiser; the
    scheduler saved and loaded runs the same, bit for bit."""
    tiny, pipe, solver = tuned
    call = call_of(tiny)
    model = PipelineModel(pipe, call)
    x = torch.randn(1, *model.sample_shape, generator=torch.Generator().manual_seed(3))
    native = dpm.sample(model, x, solver=solver)
    scheduler = DPMSolverScheduler.from_tuned(solver, pipe.scheduler.config)
    scheduler.save_pretrained(tmp_path)
    for sched in (scheduler, DPMSolverScheduler.from_pretrained(tmp_path)):
        run = tiny.make(sched)
        run.set_progress_bar_config(disable=True)
        calls: list[int] = []
        hook = getattr(run, tiny.denoiser).register_forward_hook(lambda *a, c=calls: c.append(1))
        try:
            out = run(
                **call, latents=x.clone(), num_inference_steps=solver.nfe, output_type="latent"
            )
        finally:
            hook.remove()
        assert len(calls) == solver.nfe == 4
        assert torch.equal(out.images, native)


def test_the_tuning_is_recorded(tuned: Any) -> None:
    _, pipe, solver = tuned
    assert solver.model == type(pipe).__name__
    assert (solver.pilots, solver.held_out) == (6, 2 + 4)  # the extra noises are held out
    assert solver.details["held_out_measure"] == HELD_OUT_MEASURE
    flow = pipe.scheduler.config.get("shift") is not None
    assert (solver.sigmas[0] == math.inf) == flow  # flow pipelines start at pure noise
    # The reference: 3 calls per candidate interval and 1 per candidate; from pure noise
    # its first step is of first order (1 call, not 3). The extra noises' end states: 3
    # calls per interval of half as many candidates.
    calls = solver.model_calls
    assert calls["reference"] == 8 * 3 + 8 - (2 if flow else 0)
    assert calls["held_out_reference"] == 4 * 3 - (2 if flow else 0)
    assert 0 < calls["search"] <= 400
    # Every call on the pilots (8) or on the extra noises (4); the search's on 6 or 6.
    searched = calls["evaluations"] - 8 * calls["reference"] - 4 * calls["held_out_reference"]
    assert 6 * calls["search"] == searched


def test_prompts_are_tiled_over_the_pilots() -> None:
    """Pilot j is conditioned on prompt j mod P: a batch's rows take the embeddings in that
    order, whatever the batch; the tuning pilots must be a multiple of P."""
    tiny = tp.sd15_txt2img()
    pipe = tiny.make(tiny.scheduler)
    embeds = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(0))
    seen: list[torch.Tensor] = []
    pipe.unet.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["encoder_hidden_states"]), with_kwargs=True
    )
    model = PipelineModel(
        pipe, dict(prompt_embeds=embeds, negative_prompt_embeds=-embeds, guidance_scale=2.0)
    )
    level = model.schedule.levels([0.5])[0]
    model(torch.randn(3, *model.sample_shape), level, "data")
    uncond, cond = seen[-1].chunk(2)
    assert torch.equal(cond, embeds[[0, 1, 0]]) and torch.equal(uncond, -embeds[[0, 1, 0]])
    # With max_batch the pipeline is called on parts of the batch, the rows keeping their
    # prompts, and the output is the whole batch's.
    x = torch.randn(5, *model.sample_shape, generator=torch.Generator().manual_seed(1))
    whole = model(x, level, "data")
    parted = PipelineModel(
        pipe,
        dict(prompt_embeds=embeds, negative_prompt_embeds=-embeds, guidance_scale=2.0),
        max_batch=2,
    )
    seen.clear()
    before = parted.calls
    got = parted(x, level, "data")  # float32: the kernels may differ with the batch size
    assert torch.allclose(got, whole, atol=1e-5, rtol=0)
    assert parted.calls - before == 3 and [len(s) for s in seen] == [4, 4, 2]
    cond = torch.cat([s.chunk(2)[1] for s in seen])
    assert torch.equal(cond, embeds[[0, 1, 0, 1, 0]])
    with pytest.raises(ValueError, match="max_batch must be >= 1; got 0"):
        PipelineModel(pipe, dict(prompt_embeds=embeds), max_batch=0)
    with pytest.raises(ValueError, match="must be a multiple of the 2 prompts"):
        tune_pipeline(pipe, 4, prompt_embeds=embeds, negative_prompt_embeds=-embeds, pilots=9)
    # The extra held-out noises are solved in a batch of their own and scored after the
    # held-out pilots: with 3 prompts, 12 tuning pilots and 4 held-out ones would move
    # their prompts.
    three = torch.randn(3, 77, 32, generator=torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="12 tuning pilots and 4 held-out pilots must be a"):
        tune_pipeline(pipe, 4, prompt_embeds=three, negative_prompt_embeds=-three, pilots=16)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(call_kwargs={"latents": 1}), "latents is set by tune_pipeline"),
        (dict(call_kwargs={"denoising_end": 0.8}), "denoising_end runs part of the grid"),
        (dict(prompt=3), "prompt must be a str or a list of str"),
    ],
)
def test_tune_pipeline_refuses(kwargs: dict[str, Any], message: str) -> None:
    tiny = tp.sd15_txt2img()
    with pytest.raises((ValueError, TypeError), match=message):
        tune_pipeline(tiny.make(tiny.scheduler), 4, **kwargs)
