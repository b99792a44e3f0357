"""Inputs that used to pass silently or with a traceback: each is now a clear error at the
boundary, naming the argument. (Items of the bad-input review; the diffusers face's
timestep cases are in test_diffusers.py: test_step_refuses_a_timestep_off_the_grid and
test_step_starts_at_its_timestep.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

import dpmsolver as dpm
import dpmsolver.k_diffusion as K  # noqa: N812 (k-diffusion's own convention)
from dpmsolver.cli import main
from dpmsolver.models import ddpm_linear_schedule

SCHEDULE = ddpm_linear_schedule()
X = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def cond_net(x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
    # A per-sample shift by the label, so pairing a label with the wrong sample shows.
    return 0.1 * x + 0.01 * cond.reshape(-1, 1, 1, 1).to(x.dtype)


def labels(*values: int) -> Tensor:
    return torch.tensor(values, dtype=torch.float32)


@pytest.mark.parametrize(
    ("cond", "uncond", "name"),
    [
        (labels(1, 2), labels(0, 0, 0, 0, 0, 0), "cond has batch 2"),
        (labels(1, 2, 3, 4), labels(0, 0, 0, 0, 0, 0), "uncond has batch 6"),
        (labels(1, 2, 3, 4, 5), labels(0, 0, 0, 0), "cond has batch 5"),
    ],
)
def test_classifier_free_conditions_must_match_the_batch(cond, uncond, name) -> None:
    model = dpm.Denoiser(cond_net, SCHEDULE, guidance=dpm.ClassifierFree(3.0, cond, uncond))
    with pytest.raises(ValueError, match=rf"ClassifierFree {name} .* x has batch 4"):
        dpm.sample(model, X, steps=3)


def test_a_condition_of_batch_one_is_used_for_every_sample() -> None:
    one = dpm.Denoiser(cond_net, SCHEDULE, guidance=dpm.ClassifierFree(3.0, labels(7), labels(0)))
    four = dpm.Denoiser(
        cond_net, SCHEDULE, guidance=dpm.ClassifierFree(3.0, labels(7, 7, 7, 7), labels(0, 0, 0, 0))
    )
    assert torch.equal(dpm.sample(one, X, steps=3), dpm.sample(four, X, steps=3))


def log_prob(x: Tensor, t: Tensor, y: Tensor) -> Tensor:
    return -((x.flatten(1) - y[:, None]) ** 2).sum(1)


def test_classifier_guidance_condition_must_match_the_batch() -> None:
    net = dpm.Denoiser(lambda x, t: 0.1 * x, SCHEDULE)
    model = dpm.Denoiser(
        net.net, SCHEDULE, guidance=dpm.ClassifierGuidance(log_prob, 2.0, labels(1, 2, 3))
    )
    with pytest.raises(ValueError, match=r"ClassifierGuidance cond has batch 3 .* x has batch 4"):
        dpm.sample(model, X, steps=3)


def test_classifier_must_return_one_log_probability_per_sample() -> None:
    def logits(x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        return x.flatten(1)[:, :10]  # (B, K) logits, the labels unused

    model = dpm.Denoiser(
        lambda x, t: 0.1 * x,
        SCHEDULE,
        guidance=dpm.ClassifierGuidance(logits, 2.0, labels(1, 2, 3, 4)),
    )
    with pytest.raises(ValueError, match=r"classifier returned \(4, 10\); expected .* \(4,\)"):
        dpm.sample(model, X, steps=3)


@pytest.mark.parametrize("name", ["denoise_to_zero", "lower_order_final", "analytic_first_step"])
@pytest.mark.parametrize("value", ["False", 0, None])
def test_boolean_options_take_only_bools(name: str, value: object) -> None:
    model = dpm.Denoiser(lambda x, t: 0.1 * x, SCHEDULE)
    with pytest.raises(TypeError, match=rf"{name} must be a bool, got"):
        dpm.sample(model, X, steps=3, **{name: value})
    with pytest.raises(TypeError, match="check_finite must be a bool"):
        dpm.sample(model, X, steps=3, check_finite="yes")
    # NumPy bools are bools.
    assert dpm.SolverOptions(denoise_to_zero=np.bool_(True)).denoise_to_zero is True


@pytest.mark.parametrize("timesteps", [[-5, 3], [10, 1000], [float("nan"), 1]])
def test_diffusers_add_noise_refuses_timesteps_outside_the_training_range(timesteps) -> None:
    pytest.importorskip("diffusers")
    from dpmsolver.diffusers import DPMSolverScheduler

    scheduler = DPMSolverScheduler()
    x = torch.ones(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"add_noise: timesteps must lie in \[0, 999\]"):
        scheduler.add_noise(x, x, torch.tensor(timesteps, dtype=torch.float64))


@pytest.mark.parametrize(
    ("denoiser", "match"),
    [
        (lambda x, s: (x, x), "model returned tuple"),
        (lambda x, s: x[:, :, :4], "has shape"),
        (lambda x, s: torch.zeros(x.shape, dtype=torch.int64), "has dtype torch.int64"),
        (lambda x, s: torch.full_like(x, float("nan")), "NaN or Inf"),
    ],
    ids=["tuple", "shape", "int", "nan"],
)
def test_k_diffusion_single_level_checks_the_model(denoiser, match: str) -> None:
    with pytest.raises(dpm.ModelOutputError, match=match):
        K.sample_dpmpp_2m(denoiser, X * 5.0, torch.tensor([5.0, 0.0]))


def test_k_diffusion_single_level_returns_the_denoised_prediction() -> None:
    out = K.sample_dpmpp_2m(lambda x, s: 0.5 * x, X * 5.0, torch.tensor([5.0, 0.0]))
    assert torch.equal(out, 2.5 * X)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
@pytest.mark.parametrize("command", ["sample", "bench", "compare"])
def test_cli_refuses_a_missing_device_in_one_line(command: str, capsys, tmp_path) -> None:
    code = main([command, "--device", "cuda", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "--device cuda: this torch sees no CUDA device" in err
    assert main([command, "--device", "gpu0", "--out", str(tmp_path / "o")]) == 2
    assert "not a torch device name" in capsys.readouterr().err


@pytest.mark.parametrize(
    "value", [np.int64(4), np.int32(4), torch.tensor(4)], ids=["np.int64", "np.int32", "tensor"]
)
def test_numpy_and_tensor_integers_are_ints(value: object) -> None:
    model = dpm.Denoiser(lambda x, t: 0.1 * x, SCHEDULE)
    opts = dpm.SolverOptions(steps=value, order=value // 2)  # type: ignore[operator]
    assert type(opts.steps) is int and type(opts.order) is int
    assert opts == dpm.SolverOptions(steps=4, order=2)
    assert opts.changed() == {"steps": 4}  # a JSON record
    assert torch.equal(dpm.sample(model, X, opts), dpm.sample(model, X, steps=4))
    with pytest.raises(TypeError, match="steps must be an int, got bool"):
        dpm.SolverOptions(steps=np.bool_(True))
    with pytest.raises(ValueError, match="lower_order_final_below must be >= 1"):
        dpm.SolverOptions(lower_order_final_below=0)
    with pytest.raises(TypeError, match="lower_order_final_below must be an int"):
        dpm.SolverOptions(lower_order_final_below=10.5)


def test_diffusers_set_timesteps_takes_a_numpy_integer() -> None:
    pytest.importorskip("diffusers")
    from dpmsolver.diffusers import DPMSolverScheduler

    scheduler = DPMSolverScheduler()
    scheduler.set_timesteps(np.int64(10))
    assert len(scheduler.timesteps) == 10
