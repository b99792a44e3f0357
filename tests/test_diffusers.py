"""The diffusers face: DPMSolverScheduler in real pipelines (tiny random weights, offline),
against the core sampler, and on the configs diffusers users bring."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import tiny_pipelines as tp
from diffusers import (
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
)

import dpmsolver as dpm
from dpmsolver.diffusers import DPMSolverScheduler
from dpmsolver.models import ExactModel, load_digits_gmm

SD_SCHEDULER_CONFIG = dict(  # Stable Diffusion 1.x's scheduler config
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    clip_sample=False,
)
COMBOS = list(
    itertools.product(["dpmsolver++", "dpmsolver"], [1, 2, 3], ["multistep", "singlestep"])
)


def components() -> dict[str, object]:
    return tp.sd_components(
        scheduler_config=SD_SCHEDULER_CONFIG, block_out_channels=(4, 8), norm_num_groups=2
    )


@pytest.fixture(scope="module")
def parts() -> dict[str, object]:
    return components()


def count_unet_calls(pipe: StableDiffusionPipeline) -> list[int]:
    calls: list[int] = []
    pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize(("algorithm", "order", "method"), COMBOS)
def test_text_to_image_and_image_to_image(parts, algorithm: str, order: int, method: str):
    pipe = StableDiffusionPipeline(**parts)
    pipe.scheduler = DPMSolverScheduler.from_config(
        pipe.scheduler.config, algorithm_type=algorithm, solver_order=order, method=method
    )
    pipe.set_progress_bar_config(disable=True)
    calls = count_unet_calls(pipe)
    image = pipe(
        "a cat",
        num_inference_steps=6,
        height=32,
        width=32,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()
    assert len(calls) == 6
    img2img = StableDiffusionImg2ImgPipeline(**{**parts, "scheduler": pipe.scheduler})
    img2img.set_progress_bar_config(disable=True)
    calls = count_unet_calls(img2img)
    out = img2img(
        "a dog",
        image=torch.rand(1, 3, 32, 32),
        strength=0.5,
        num_inference_steps=10,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert out.shape == (1, 32, 32, 3) and np.isfinite(out).all()
    assert len(calls) == 5  # strength 0.5 of 10 steps


def exact_eps(schedule: dpm.DiscreteVPSchedule):
    gmm = load_digits_gmm()

    def unet(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        t = (torch.as_tensor(timestep).double() + 1) / schedule.total_n
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        return (x - alpha * gmm.posterior_mean(x, alpha, sigma)) / sigma

    return unet


def run_scheduler(scheduler, x: torch.Tensor, steps: int) -> torch.Tensor:
    scheduler.set_timesteps(steps)
    unet = (
        exact_eps(scheduler.noise_schedule) if isinstance(scheduler, DPMSolverScheduler) else None
    )
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t), t, x).prev_sample
    return x


@pytest.mark.parametrize(("algorithm", "order", "method"), COMBOS)
@pytest.mark.parametrize("skip_type", ["time_uniform", "logSNR", "karras"])
def test_trajectory_equals_the_core_sampler(
    algorithm: str, order: int, method: str, skip_type: str
) -> None:
    config = dict(
        SD_SCHEDULER_CONFIG,
        algorithm_type=algorithm,
        solver_order=order,
        method=method,
        skip_type=skip_type,
    )
    scheduler = DPMSolverScheduler.from_config(config)
    model = ExactModel(load_digits_gmm(), scheduler.noise_schedule)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for steps in (5, 10, 20):
        ours = run_scheduler(scheduler, x_T, steps)
        core = dpm.sample(
            model,
            x_T,
            steps=steps,
            order=order,
            method=method,
            algorithm=algorithm,
            skip_type=skip_type,
        )
        torch.testing.assert_close(ours, core, rtol=0, atol=1e-6)


def run_from(scheduler, x: torch.Tensor, k: int, timestep=lambda t: t) -> torch.Tensor:
    """A hand-written img2img loop: steps over timesteps[k:], no set_begin_index."""
    unet = exact_eps(scheduler.noise_schedule)
    for t in scheduler.timesteps[k:]:
        x = scheduler.step(unet(x, t), timestep(t), x).prev_sample
    return x


@pytest.mark.parametrize("method", ["multistep", "singlestep"])
def test_step_starts_at_its_timestep(method: str) -> None:
    scheduler = DPMSolverScheduler.from_config(SD_SCHEDULER_CONFIG, method=method, solver_order=3)
    x0 = load_digits_gmm().means[:2].reshape(2, 1, 8, 8)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    k = 4
    scheduler.set_timesteps(12)
    x_k = scheduler.add_noise(x0, noise, scheduler.timesteps[k : k + 1])
    scheduler.set_begin_index(k)  # what diffusers' img2img pipelines do
    begun = run_from(scheduler, x_k, k)
    for timestep in (lambda t: t, float, lambda t: t.to(torch.float32), int):
        scheduler.set_timesteps(12)
        torch.testing.assert_close(run_from(scheduler, x_k, k, timestep), begun, rtol=0, atol=0)
    # Before, a loop from k took step 0's coefficients: far from the run that begins at k.
    scheduler.set_timesteps(12)
    unet = exact_eps(scheduler.noise_schedule)
    wrong = x_k
    for i, t in enumerate(scheduler.timesteps[k:]):
        wrong = scheduler.step(unet(wrong, t), scheduler.timesteps[i], wrong).prev_sample
    assert float((wrong - begun).abs().max()) > 0.1


def test_training_schedule_attributes_match_diffusers() -> None:
    from diffusers import DPMSolverMultistepScheduler

    ours = DPMSolverScheduler.from_config(SD_SCHEDULER_CONFIG)
    theirs = DPMSolverMultistepScheduler.from_config(SD_SCHEDULER_CONFIG)
    for name in ("betas", "alphas", "alphas_cumprod"):
        torch.testing.assert_close(getattr(ours, name), getattr(theirs, name), rtol=1e-6, atol=0)


def test_step_refuses_a_timestep_off_the_grid() -> None:
    scheduler = DPMSolverScheduler.from_config(SD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(5)
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"timestep 123456\.0 is not one of the scheduler's"):
        scheduler.step(x, 123456, x)
    scheduler.step(x, scheduler.timesteps[0], x)
    with pytest.raises(ValueError, match=r"step 1 expects timestep .* \(timesteps\[1\]\), got 999"):
        scheduler.step(x, scheduler.timesteps[0], x)
    with pytest.raises(ValueError, match=r"step 1 expects timestep"):
        scheduler.step(x, 3.0, x)
    assert scheduler.index_for_timestep(scheduler.timesteps[3]) == 3
    assert scheduler.index_for_timestep(float(scheduler.timesteps[2]) + 0.4) == 2
    other = torch.tensor([900.0, 500.0, 100.0])
    assert scheduler.index_for_timestep(500.0, schedule_timesteps=other) == 1
    assert scheduler.index_for_timestep(other[2], schedule_timesteps=other) == 2


@pytest.mark.parametrize("algorithm", ["dpmsolver++", "dpmsolver"])
@pytest.mark.parametrize(
    "ending",
    ["final_noise_level", "denoise_to_zero", "sigmas", "timesteps"],
)
def test_runs_that_end_at_sigma_zero(algorithm: str, ending: str) -> None:
    keywords: dict[str, object] = {"algorithm_type": algorithm}
    if ending == "final_noise_level":
        keywords["final_noise_level"] = "zero"  # replaces the config's set_alpha_to_one
    if ending == "denoise_to_zero":
        keywords["denoise_to_zero"] = True
    scheduler = DPMSolverScheduler.from_config(SD_SCHEDULER_CONFIG, **keywords)
    if ending == "sigmas":
        scheduler.set_timesteps(sigmas=[14.0, 5.0, 1.0, 0.2, 0.0])
    elif ending == "timesteps":
        scheduler.set_timesteps(timesteps=[999, 700, 400, 150, 0])
    else:
        scheduler.set_timesteps(6)
    assert float(scheduler.sigmas[-1]) == 0.0
    unet = exact_eps(scheduler.noise_schedule)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for t in scheduler.timesteps[:-1]:
        x = scheduler.step(unet(x, t), t, x).prev_sample
    last = scheduler.timesteps[-1]
    out = scheduler.step(unet(x, last), last, x).prev_sample
    # The last step returns the model's x0 prediction at the last level (x_0 = x0_pred).
    level = scheduler.noise_schedule.levels([(float(last) + 1) / 1000])[0]
    x0_pred = (x - level.sigma * unet(x, last)) / level.alpha
    torch.testing.assert_close(out, x0_pred, rtol=0, atol=1e-10)
    assert bool(torch.isfinite(out).all())


def test_step_keeps_dtype_and_splits_learned_variance() -> None:
    scheduler = DPMSolverScheduler.from_config(SD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(4)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float16)
    eps = torch.randn(2, 3, 4, 4, dtype=torch.float16)
    with_variance = torch.cat([eps, torch.full_like(eps, 1e4)], dim=1)
    a = scheduler.step(with_variance, scheduler.timesteps[0], x).prev_sample
    scheduler.set_timesteps(4)
    b = scheduler.step(eps, scheduler.timesteps[0], x).prev_sample
    assert a.dtype == torch.float16
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(
    "config",
    [
        dict(beta_schedule="squaredcos_cap_v2", skip_type="karras"),
        dict(beta_schedule="squaredcos_cap_v2"),
        dict(SD_SCHEDULER_CONFIG, rescale_betas_zero_snr=True, prediction_type="v_prediction"),
        dict(SD_SCHEDULER_CONFIG, skip_type="karras", method="singlestep", solver_order=3),
    ],
    ids=["cosine-karras", "cosine", "zero-snr", "sd-karras-singlestep"],
)
def test_every_step_count_gives_distinct_finite_timesteps(config: dict) -> None:
    scheduler = DPMSolverScheduler.from_config(config)
    for steps in range(1, 51):
        scheduler.set_timesteps(steps)
        ts = scheduler.timesteps
        assert len(ts) == steps
        assert torch.isfinite(ts).all() and bool((ts[1:] < ts[:-1]).all())
        assert float(ts[-1]) >= 0 and float(ts[0]) <= config.get("num_train_timesteps", 1000)


@pytest.mark.parametrize("steps", [1, 2, 5, 10, 25])
def test_run_ends_at_the_smallest_training_noise_level_not_a_jump(steps: int) -> None:
    scheduler = DPMSolverScheduler.from_config(SD_SCHEDULER_CONFIG)
    end = scheduler.noise_schedule.levels([1 / 1000])[0]
    sigma_min = end.sigma / end.alpha  # about 0.029 for Stable Diffusion's schedule
    scheduler.set_timesteps(steps)
    assert len(scheduler.sigmas) == steps + 1
    assert float(scheduler.sigmas[-1]) == pytest.approx(sigma_min, rel=1e-12)
    # Asked for the jump to zero, it starts from that same smallest level.
    jump = DPMSolverScheduler.from_config(SD_SCHEDULER_CONFIG, final_noise_level="zero")
    jump.set_timesteps(steps)
    assert float(jump.sigmas[-1]) == 0.0
    assert float(jump.sigmas[-2]) == pytest.approx(
        sigma_min if steps > 1 else float(jump.sigmas[0]), rel=1e-12
    )


def test_custom_timesteps_and_sigmas() -> None:
    scheduler = DPMSolverScheduler.from_config(SD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(timesteps=[999, 800, 600, 400, 200, 100])
    torch.testing.assert_close(
        scheduler.timesteps, torch.tensor([999, 800, 600, 400, 200, 100.0], dtype=torch.float64)
    )
    scheduler.set_timesteps(sigmas=[14.0, 5.0, 1.0, 0.1, 0.0])
    assert len(scheduler.timesteps) == 4
    torch.testing.assert_close(
        scheduler.sigmas,
        torch.tensor([14.0, 5.0, 1.0, 0.1, 0.0], dtype=torch.float64),
        rtol=1e-12,
        atol=0,
    )
    with pytest.raises(ValueError, match="num_inference_steps=5 and 2 custom timesteps disagree"):
        scheduler.set_timesteps(5, timesteps=[999, 500])
    with pytest.raises(ValueError, match="strictly decreasing"):
        scheduler.set_timesteps(timesteps=[100, 500])


def test_add_noise_at_fractional_timesteps() -> None:
    scheduler = DPMSolverScheduler.from_config(SD_SCHEDULER_CONFIG)
    x0 = torch.randn(2, 4)
    noise = torch.randn(2, 4)
    out = scheduler.add_noise(x0, noise, torch.tensor([10, 10]))
    ac = scheduler.alphas_cumprod[10].double()
    torch.testing.assert_close(out, (ac.sqrt() * x0 + (1 - ac).sqrt() * noise).float())
    # Between two training steps alpha_t is interpolated (log-linearly), strictly between.
    ones, zeros = torch.ones(3, 1), torch.zeros(3, 1)
    alphas = scheduler.add_noise(ones, zeros, torch.tensor([10.0, 10.5, 11.0])).squeeze(1)
    assert alphas[0] > alphas[1] > alphas[2]
    log_mid = 0.5 * (alphas[0].double().log() + alphas[2].double().log())
    assert float(alphas[1].double().log()) == pytest.approx(float(log_mid), abs=1e-6)


def test_config_round_trip_through_a_saved_pipeline(parts, tmp_path: Path) -> None:
    pipe = StableDiffusionPipeline(**parts)
    pipe.scheduler = DPMSolverScheduler.from_config(
        pipe.scheduler.config, solver_order=3, skip_type="logSNR"
    )
    pipe.save_pretrained(tmp_path)
    loaded = DPMSolverScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(pipe.scheduler.config)
    reloaded = StableDiffusionPipeline.from_pretrained(tmp_path)
    assert isinstance(reloaded.scheduler, DPMSolverScheduler)
    assert reloaded.scheduler.config.solver_order == 3


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="solver_order must be between 1 and 3"):
        DPMSolverScheduler(solver_order=4)
    with pytest.raises(ValueError, match="skip_type must be one of"):
        DPMSolverScheduler(skip_type="uniform")
    with pytest.raises(ValueError, match="timestep_spacing must be one of"):
        DPMSolverScheduler(timestep_spacing="uniform")


PIPELINE_CONFIGS = {
    # The scheduler configs these pipelines ship (the keys that matter, plus some extras
    # that DPMSolverScheduler ignores).
    "sd2-v": dict(SD_SCHEDULER_CONFIG, prediction_type="v_prediction"),
    "sdxl": dict(
        SD_SCHEDULER_CONFIG,
        timestep_spacing="leading",
        interpolation_type="linear",
        use_karras_sigmas=False,
        sample_max_value=1.0,
    ),
    "deepfloyd-if": dict(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        variance_type="learned_range",
        thresholding=True,
        dynamic_thresholding_ratio=0.95,
        sample_max_value=1.5,
        clip_sample=True,
        clip_sample_range=1.0,
    ),
}


@pytest.mark.parametrize("name", PIPELINE_CONFIGS)
def test_from_pipeline_configs(name: str) -> None:
    scheduler = DPMSolverScheduler.from_config(PIPELINE_CONFIGS[name])
    scheduler.set_timesteps(8)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    channels = 6 if name == "deepfloyd-if" else 3  # IF predicts a learned variance too
    for t in scheduler.timesteps:
        out = torch.randn(1, channels, 8, 8, generator=torch.Generator().manual_seed(int(t)))
        x = scheduler.step(out, t, x).prev_sample
    assert torch.isfinite(x).all() and x.dtype == torch.float32
    if name == "deepfloyd-if":
        assert scheduler.config.thresholding and scheduler.config.sample_max_value == 1.5


def test_importing_dpmsolver_does_not_import_diffusers() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dpmsolver, dpmsolver.k_diffusion, dpmsolver.models; "
        "assert 'diffusers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_step_does_not_synchronise_on_cuda() -> None:
    scheduler = DPMSolverScheduler.from_config(SD_SCHEDULER_CONFIG, solver_order=3)
    scheduler.set_timesteps(10, device="cuda")
    x = torch.randn(2, 4, 16, 16, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        for t in scheduler.timesteps:
            x = scheduler.step(torch.randn_like(x), t, x).prev_sample
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.device.type == "cuda"


@pytest.mark.parametrize("n", [8, 11])
def test_final_step_first_order_on_our_singlestep_grid(n: int) -> None:
    """method='singlestep' on our grid (one step per interval): final_step_first_order
    makes the last step's calls first-order steps through the same points, as it does on
    diffusers' grid; it was ignored there. The calls and their times do not change."""
    import dpmsolver as dpm
    from dpmsolver.core import call_plan
    from dpmsolver.core.singlestep import singlestep_stage

    def run(**kw: object) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        s = DPMSolverScheduler(method="singlestep", solver_order=3, **kw)
        s.set_timesteps(n)
        x, seen = torch.ones(1, 1, 4, 4), []
        for t in s.timesteps:
            seen.append(float(t))
            x = s.step(0.1 * x + 0.01 * x**2, t, x).prev_sample
        return x, s.timesteps, seen

    first, times, seen = run(final_step_first_order=True)
    plain, plain_times, plain_seen = run()
    assert torch.equal(times, plain_times) and seen == plain_seen and len(seen) == n
    assert not torch.allclose(first, plain)
    # The core's plan: the last step's points become first-order steps.
    schedule = dpm.VPSchedule.discrete(betas=torch.linspace(1e-4, 2e-2, 1000))
    options = dpm.SolverOptions.of(order=2, method="singlestep")
    grid = [1.0, 0.5, 0.1]
    split = call_plan(schedule, options, grid, orders=[2, 2], final_first_order=True)
    stage = singlestep_stage(schedule, "data", "dpmsolver", "logSNR", 0.5, 0.1, 2)
    middle = stage[0][1].t
    same = call_plan(schedule, options, [1.0, 0.5, middle, 0.1], orders=[2, 1, 1])
    assert [c.level.t for c in split.calls] == [c.level.t for c in same.calls]
    assert split.rules == same.rules
