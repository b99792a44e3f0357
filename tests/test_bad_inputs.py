"""Bad inputs on every public surface: one row per case, each a clear exception naming what
the user passed (the native API, the official-compatible API, both faces, generate).

Each row: an id, a call, the exception type, and a fragment of the message that names the
argument (and, where it helps, the value or what is allowed). The CLI's cases are in
`tests/test_cli.py` and `test_cli_refuses_bad_arguments_before_any_work` below.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import dpmsolver as dpm
from dpmsolver import k_diffusion as kd
from dpmsolver.models import load
from dpmsolver.tools.generation import merge_shards

MODEL = load("digits-exact")
SCHEDULE = MODEL.schedule
X = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def sample(**kw: Any) -> Callable[[], Any]:
    return lambda: dpm.sample(MODEL, X, **kw)


def from_pure_noise(**kw: Any) -> Callable[[], Any]:
    """A run of a flow model from t = 1 (alpha = 0) with these options."""
    model = dpm.Denoiser(lambda x, t: 0 * x, dpm.FlowSchedule(t_max=1.0), prediction="flow")
    return lambda: dpm.sample(model, X, **kw)


def net(fn: Callable[..., Any], **kw: Any) -> Callable[[], Any]:
    return lambda: dpm.sample(dpm.Denoiser(fn, SCHEDULE, **kw), X, steps=3)


def cond_net(x: torch.Tensor, t: torch.Tensor, c: Any = None) -> torch.Tensor:
    return 0 * x


def classifier(x: torch.Tensor, t: torch.Tensor, c: Any) -> torch.Tensor:
    return x.flatten(1).sum(1)


def denoiser(x: torch.Tensor, sigma: torch.Tensor, **kw: Any) -> torch.Tensor:
    return x / (1 + sigma.reshape(-1, *[1] * (x.dim() - 1)) ** 2)


KARRAS = kd.get_sigmas_karras(5, 0.1, 10.0)
XK = torch.randn(2, 3, 4, 4)


def k_run(fn: Callable[..., Any] = kd.sample_dpmpp_2m, **kw: Any) -> Callable[[], Any]:
    args: dict[str, Any] = dict(model=denoiser, x=XK, sigmas=KARRAS, disable=True)
    args.update(kw)
    return lambda: fn(**args)


def scheduler(**config: Any) -> Callable[[], Any]:
    from dpmsolver.diffusers import DPMSolverScheduler

    return lambda: DPMSolverScheduler(**config)


def scheduler_call(method: str, *args: Any, **kw: Any) -> Callable[[], Any]:
    def call() -> Any:
        from dpmsolver.diffusers import DPMSolverScheduler

        s = DPMSolverScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
        s.set_timesteps(5)
        return getattr(s, method)(*args, **kw)

    return call


def compat(**kw: Any) -> Callable[[], Any]:
    def call() -> Any:
        ns = dpm.NoiseScheduleVP("discrete", betas=torch.linspace(1e-4, 0.02, 1000))
        model = dpm.model_wrapper(lambda x, t: 0 * x, ns)
        solver = dpm.DPM_Solver(model, ns)
        return solver.sample(X.float(), **kw)

    return call


def scheduler_run(output: Callable[[int, torch.Tensor], torch.Tensor]) -> Callable[[], Any]:
    """A whole 5-step run of the scheduler whose model output at step i is output(i, x)."""

    def call() -> Any:
        from dpmsolver.diffusers import DPMSolverScheduler

        s = DPMSolverScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
        s.set_timesteps(5)
        x = torch.ones(1, 3)
        for i, t in enumerate(s.timesteps):
            x = s.step(output(i, x), t, x).prev_sample
        return x

    return call


def flux_mu(mu: Any, **config: Any) -> Callable[[], Any]:
    """set_timesteps(10, mu=mu) on a Flux-like flow config (dynamic shifting)."""

    def call() -> Any:
        from dpmsolver.diffusers import DPMSolverScheduler

        keys = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
        s = DPMSolverScheduler.from_config({**keys, **config})
        s.set_timesteps(10, mu=mu)
        return s.sigmas

    return call


BETAS = torch.linspace(1e-4, 0.02, 1000)


def compat_call(method: str, *args: Any) -> Callable[[], Any]:
    def call() -> Any:
        ns = dpm.NoiseScheduleVP("discrete", betas=BETAS)
        solver = dpm.DPM_Solver(dpm.model_wrapper(lambda x, t: 0 * x, ns), ns)
        return getattr(solver, method)(*args)

    return call


class MetaModel:
    """A DiffusionModel whose outputs are meta tensors."""

    schedule = SCHEDULE

    def __call__(self, x: torch.Tensor, level: Any, target: Any) -> torch.Tensor:
        return torch.empty_like(x, device="meta")


class TupleModel:
    """A DiffusionModel that returns a tuple."""

    schedule = SCHEDULE

    def __call__(self, x: torch.Tensor, level: Any, target: Any) -> Any:
        return (x,)


class NoRange(dpm.NoiseSchedule):
    """A schedule that forgot its time range."""

    def log_alpha(self, t: Any) -> torch.Tensor:
        return torch.zeros(())

    def sigma(self, t: Any) -> torch.Tensor:
        return torch.ones(())

    def inverse_lambda(self, lambda_: Any) -> torch.Tensor:
        return torch.zeros(())


def generate_into(out: Any) -> Callable[[], Any]:
    return lambda: dpm.generate("digits-exact", 4, out, batch=2, steps=3, progress=False)


def truncated_job() -> Path:
    """A finished job's folder whose manifest was cut short."""
    import tempfile

    folder = Path(tempfile.mkdtemp()) / "job"
    dpm.generate("digits-exact", 4, folder, batch=2, steps=3, progress=False)
    manifest = folder / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:30])
    return folder


def flow_call(method: str, *args: Any, **kw: Any) -> Callable[[], Any]:
    """A method of a scheduler made from an SD3-like FlowMatch config."""

    def call() -> Any:
        from dpmsolver.diffusers import DPMSolverScheduler

        return getattr(DPMSolverScheduler.from_config({"shift": 3.0}), method)(*args, **kw)

    return call


def compat_model(fn: Callable[..., Any], **solver_kw: Any) -> Callable[[], Any]:
    """DPM_Solver(fn, ns).sample(x): fn is a model_fn(x, t_continuous)."""

    def call() -> Any:
        ns = dpm.NoiseScheduleVP("discrete", betas=BETAS)
        return dpm.DPM_Solver(fn, ns, **solver_kw).sample(X.float(), steps=3)

    return call


SHIPPED = __import__("dpmsolver.models", fromlist=["tuned_solver"]).tuned_solver("digits-exact", 10)


def generate_into_folder_with_a_shard_dir() -> Callable[[], Any]:
    """generate into a folder whose shard-000000.npz is a folder (a job's, or not)."""

    def call() -> Any:
        import tempfile

        folder = Path(tempfile.mkdtemp()) / "job"
        (folder / "shard-000000.npz").mkdir(parents=True)
        return dpm.generate("digits-exact", 4, folder, batch=2, steps=3, progress=False)

    return call


CASES: list[tuple[str, Callable[[], Any], type[BaseException], str]] = [
    # -- native: the options -----------------------------------------------------------
    ("steps=0", sample(steps=0), ValueError, "steps must be between 1 and"),
    ("steps=1e6", sample(steps=10**6), ValueError, "steps must be between 1 and 100000"),
    ("steps=2.5", sample(steps=2.5), TypeError, "steps must be an int"),
    ("steps='10'", sample(steps="10"), TypeError, "steps must be an int"),
    ("steps=True", sample(steps=True), TypeError, "steps must be an int"),
    ("order=0", sample(order=0), ValueError, "order must be between 1 and 3"),
    ("order=4", sample(order=4), ValueError, "order must be between 1 and 3"),
    ("order=4 ipndm singlestep", sample(order=4, method="singlestep"), ValueError, "order"),
    ("method", sample(method="rk4"), ValueError, "method must be one of"),
    ("algorithm", sample(algorithm="ddpm"), ValueError, "algorithm must be one of"),
    ("skip_type", sample(skip_type="uniform"), ValueError, "skip_type must be one of"),
    ("solver_type", sample(solver_type="heun"), ValueError, "solver_type must be one of"),
    ("multistep3", sample(multistep3="x"), ValueError, "multistep3 must be one of"),
    ("corrector", sample(corrector="yes"), ValueError, "corrector must be one of"),
    ("corrector_variant", sample(corrector_variant="bh3"), ValueError, "corrector_variant"),
    ("corrector+singlestep", sample(corrector="all", method="singlestep"), ValueError, "corrector"),
    ("corrector+ipndm", sample(corrector="all", algorithm="ipndm"), ValueError, "corrector"),
    ("ipndm+singlestep", sample(algorithm="ipndm", method="singlestep"), ValueError, "ipndm"),
    ("eta=-0.1", sample(eta=-0.1), ValueError, "eta must be >= 0"),
    (
        "eta singlestep taylor",
        sample(eta=1, method="singlestep", solver_type="taylor"),
        ValueError,
        "midpoint",
    ),
    ("eta='a'", sample(eta="a"), TypeError, "eta must be a float"),
    ("eta order3 noise", sample(eta=1.0, order=3, algorithm="dpmsolver"), ValueError, "eta > 0"),
    ("eta singlestep 3", sample(eta=1.0, order=3, method="singlestep"), ValueError, "eta > 0"),
    ("ancestral no eta", sample(method="singlestep", ancestral=True), ValueError, "ancestral=True"),
    (
        "ancestral='yes'",
        sample(eta=1, method="singlestep", ancestral="y"),
        TypeError,
        "ancestral must",
    ),
    ("eta=0.5 noise form", sample(eta=0.5, algorithm="dpmsolver"), ValueError, "eta > 0"),
    ("eta+corrector", sample(eta=0.5, corrector="all"), ValueError, "needs eta=0"),
    ("t_start nan", sample(t_start=float("nan")), ValueError, "t_start must be a finite"),
    ("t_start=2", sample(t_start=2.0), ValueError, "t_start=2.0 is outside"),
    ("t_end=-1", sample(t_end=-1.0), ValueError, "t_end=-1.0 is outside"),
    ("t_start=t_end", sample(t_start=0.5, t_end=0.5), ValueError, "t_start and t_end must differ"),
    ("t_start str", sample(t_start="1"), TypeError, "t_start must be a float"),
    ("timesteps+sigmas", sample(timesteps=[1.0, 0.5], sigmas=[5.0, 1.0]), ValueError, "not both"),
    ("timesteps+t_start", sample(timesteps=[0.9, 0.1], t_start=0.9), ValueError, "t_start=0.9"),
    ("sigmas+t_end", sample(sigmas=[10.0, 0.5], t_end=0.01), ValueError, "t_end=0.01"),
    ("timesteps unsorted", sample(timesteps=[0.5, 0.9, 0.1]), ValueError, "timesteps must be"),
    ("timesteps nan", sample(timesteps=[0.9, float("nan")]), ValueError, "timesteps must be"),
    ("timesteps 2-D", sample(timesteps=[[0.9, 0.1]]), ValueError, "timesteps must be 1-D"),
    ("timesteps one", sample(timesteps=[0.9]), ValueError, "timesteps must be 1-D"),
    ("timesteps str", sample(timesteps="0.9,0.1"), ValueError, "timesteps must be"),
    ("timesteps out", sample(timesteps=[1.5, 0.1]), ValueError, "timesteps entry 1.5"),
    ("sigmas out", sample(sigmas=[1e6, 0.5]), ValueError, "sigmas entry 1000000.0"),
    ("sigmas negative", sample(sigmas=[5.0, -1.0]), ValueError, "sigmas must be"),
    ("sigmas+adaptive", sample(sigmas=[5.0, 1.0], method="adaptive"), ValueError, "sigmas cannot"),
    ("atol+multistep", sample(atol=0.01), ValueError, "atol=0.01 is the tolerance"),
    ("rtol+multistep", sample(rtol=0.1), ValueError, "rtol=0.1 is the tolerance"),
    ("adaptive order 1", sample(method="adaptive", order=1), ValueError, "adaptive needs order"),
    ("adaptive atol=0", sample(method="adaptive", atol=0.0), ValueError, "atol must be"),
    ("lower_order_final str", sample(lower_order_final="False"), TypeError, "lower_order_final"),
    ("denoise_to_zero int", sample(denoise_to_zero=1), TypeError, "denoise_to_zero must be"),
    ("analytic_first_step None", sample(analytic_first_step=None), TypeError, "analytic_first"),
    ("analytic 1 step", sample(analytic_first_step=True, steps=1), ValueError, "steps >= 2"),
    (
        "analytic singlestep",
        sample(analytic_first_step=True, method="singlestep"),
        ValueError,
        "analytic",
    ),
    ("lofb=2.5", sample(lower_order_final_below=2.5), TypeError, "lower_order_final_below"),
    ("lofb=0", sample(lower_order_final_below=0), ValueError, "lower_order_final_below"),
    ("unknown option", sample(stepz=10), TypeError, "stepz"),
    (
        "multistep steps<order",
        sample(steps=2, order=3),
        ValueError,
        "multistep needs steps >= order",
    ),
    ("check_finite str", sample(check_finite="yes"), TypeError, "check_finite must be a bool"),
    ("generator int", sample(generator=0, eta=1.0), TypeError, "generator must be"),
    (
        "noise_sampler no eta",
        sample(steps=3, noise_sampler=lambda s, t: X),
        ValueError,
        "needs eta > 0",
    ),
    (
        "noise_sampler int",
        sample(steps=3, eta=1.0, noise_sampler=3),
        TypeError,
        "noise_sampler must be callable",
    ),
    (
        "noise_sampler shape",
        sample(steps=3, eta=1.0, noise_sampler=lambda s, t: X[:1]),
        ValueError,
        "noise_sampler returned (1, 1, 8, 8)",
    ),
    # -- native: x and the callables ---------------------------------------------------
    ("x numpy", lambda: dpm.sample(MODEL, np.zeros((2, 1, 8, 8))), TypeError, "x must be a torch"),
    (
        "x int",
        lambda: dpm.sample(MODEL, torch.zeros(2, 1, 8, 8, dtype=torch.long)),
        TypeError,
        "x must have a floating",
    ),
    ("x 0-d", lambda: dpm.sample(MODEL, torch.tensor(1.0)), ValueError, "x must have a batch"),
    (
        "x NaN",
        lambda: dpm.sample(MODEL, X * float("nan"), steps=3),
        ValueError,
        "x (the starting sample)",
    ),
    (
        "model not a model",
        lambda: dpm.sample(lambda x: x, X),
        TypeError,
        "model must be a DiffusionModel: a dpmsolver.Denoiser",
    ),
    ("net returns tuple", net(lambda x, t: (x, x)), dpm.ModelOutputError, "net returned tuple"),
    (
        "net returns shape",
        net(lambda x, t: x[:2]),
        dpm.ModelOutputError,
        "net returned shape (2, 1, 8, 8)",
    ),
    (
        "net returns int",
        net(lambda x, t: x.long()),
        dpm.ModelOutputError,
        "net returned dtype torch.int64",
    ),
    (
        "net returns NaN",
        net(lambda x, t: x * float("nan")),
        dpm.ModelOutputError,
        "NaN or Inf at step 0",
    ),
    (
        "net returns numpy",
        net(lambda x, t: x.numpy()),
        dpm.ModelOutputError,
        "net returned ndarray",
    ),
    ("net not callable", lambda: dpm.Denoiser(3, SCHEDULE), TypeError, "net must be callable"),
    (
        "schedule wrong",
        lambda: dpm.Denoiser(cond_net, "vp"),
        TypeError,
        "schedule must be a NoiseSchedule",
    ),
    (
        "prediction",
        lambda: dpm.Denoiser(cond_net, SCHEDULE, prediction="eps"),
        ValueError,
        "prediction must be one of",
    ),
    (
        "model_kwargs int",
        lambda: dpm.Denoiser(cond_net, SCHEDULE, model_kwargs=3),
        TypeError,
        "model_kwargs must be a mapping",
    ),
    (
        "guidance wrong",
        lambda: dpm.Denoiser(cond_net, SCHEDULE, guidance=7.5),
        TypeError,
        "guidance must be",
    ),
    (
        "x0_correction",
        lambda: dpm.Denoiser(cond_net, SCHEDULE, x0_correction=3),
        TypeError,
        "x0_correction must be",
    ),
    ("callback int", sample(steps=3, callback=5), TypeError, "callback must be callable"),
    (
        "xt_fn int",
        sample(steps=3, correcting_xt_fn=3),
        TypeError,
        "correcting_xt_fn must be callable",
    ),
    (
        "xt_fn shape",
        sample(steps=3, correcting_xt_fn=lambda x, t, s: x[:1]),
        ValueError,
        "correcting_xt_fn returned (1, 1, 8, 8)",
    ),
    (
        "xt_fn None",
        sample(steps=3, correcting_xt_fn=lambda x, t, s: None),
        ValueError,
        "correcting_xt_fn returned NoneType",
    ),
    (
        "xt_fn adaptive",
        sample(method="adaptive", correcting_xt_fn=lambda x, t, s: x),
        ValueError,
        "correcting_xt_fn is not supported",
    ),
    # -- native: guidance ----------------------------------------------------------------
    (
        "cfg cond None",
        lambda: dpm.Denoiser(cond_net, SCHEDULE, guidance=dpm.ClassifierFree(7.5, None)),
        ValueError,
        "needs cond",
    ),
    (
        "cfg scale without uncond",
        lambda: dpm.Denoiser(cond_net, SCHEDULE, guidance=dpm.ClassifierFree(7.5, torch.zeros(4))),
        ValueError,
        "ClassifierFree(scale=7.5) needs uncond",
    ),
    (
        "cfg cond list",
        lambda: dpm.Denoiser(cond_net, SCHEDULE, guidance=dpm.ClassifierFree(7.5, [1], [0])),
        TypeError,
        "cond and uncond must be tensors",
    ),
    (
        "cfg cond batch",
        net(cond_net, guidance=dpm.ClassifierFree(2.0, torch.zeros(2), torch.zeros(4))),
        ValueError,
        "ClassifierFree cond",
    ),
    (
        "cfg uncond batch",
        net(cond_net, guidance=dpm.ClassifierFree(2.0, torch.zeros(4), torch.zeros(6))),
        ValueError,
        "ClassifierFree uncond",
    ),
    (
        "cg cond None",
        lambda: dpm.Denoiser(
            cond_net, SCHEDULE, guidance=dpm.ClassifierGuidance(classifier, 1.0, None)
        ),
        ValueError,
        "needs cond",
    ),
    (
        "cg classifier",
        lambda: dpm.Denoiser(
            cond_net, SCHEDULE, guidance=dpm.ClassifierGuidance(3, 1.0, torch.zeros(4))
        ),
        TypeError,
        "classifier must be callable",
    ),
    (
        "cg kwargs",
        lambda: dpm.Denoiser(
            cond_net, SCHEDULE, guidance=dpm.ClassifierGuidance(classifier, 1.0, torch.zeros(4), 3)
        ),
        TypeError,
        "classifier_kwargs must be a mapping",
    ),
    (
        "cg cond batch",
        net(lambda x, t: 0 * x, guidance=dpm.ClassifierGuidance(classifier, 1.0, torch.zeros(3))),
        ValueError,
        "ClassifierGuidance cond",
    ),
    (
        "cg logits",
        net(
            lambda x, t: 0 * x,
            guidance=dpm.ClassifierGuidance(lambda x, t, c: x.flatten(1), 1.0, torch.zeros(4)),
        ),
        ValueError,
        "ClassifierGuidance.classifier returned",
    ),
    # -- native: schedules -----------------------------------------------------------------
    ("flow shift 0", lambda: dpm.FlowSchedule(shift=0.0), ValueError, "shift must be"),
    (
        "flow time_scale nan",
        lambda: dpm.FlowSchedule(time_scale=float("nan")),
        ValueError,
        "time_scale must be",
    ),
    ("flow t_max 1.5", lambda: dpm.FlowSchedule(t_max=1.5), ValueError, "t_max <= 1"),
    ("ve sigma order", lambda: dpm.VESchedule(80.0, 0.002), ValueError, "sigma_min < sigma_max"),
    (
        "discrete both",
        lambda: dpm.VPSchedule.discrete(
            betas=torch.ones(3) * 0.1, alphas_cumprod=torch.ones(3) * 0.5
        ),
        ValueError,
        "exactly one of betas",
    ),
    (
        "discrete betas 1",
        lambda: dpm.VPSchedule.discrete(betas=torch.ones(3)),
        ValueError,
        "betas must lie in (0, 1)",
    ),
    (
        "custom not callable",
        lambda: dpm.CustomSchedule(1.0, torch.sin, 0.1, 0.9),
        TypeError,
        "alpha and sigma must be callables",
    ),
    (
        "custom returns list",
        lambda: dpm.CustomSchedule(lambda t: [1.0], torch.sin, 0.1, 0.9),
        TypeError,
        "alpha(t) must return a floating tensor",
    ),
    (
        "custom returns shape",
        lambda: dpm.CustomSchedule(torch.cos, lambda t: torch.ones(3), 0.1, 0.9),
        ValueError,
        "sigma(t) must return a tensor of t's shape",
    ),
    (
        "custom model_time",
        lambda: dpm.CustomSchedule(torch.cos, torch.sin, 0.1, 0.9, model_time=3),
        TypeError,
        "model_time must be a callable",
    ),
    (
        "flow from noise logSNR",
        from_pure_noise(skip_type="logSNR"),
        ValueError,
        "skip_type='logSNR' spaces the grid in lambda",
    ),
    (
        "flow from noise dpmsolver",
        from_pure_noise(algorithm="dpmsolver"),
        ValueError,
        "algorithm='dpmsolver' cannot start at alpha_t = 0",
    ),
    # -- guidance values and noise, in every face alike -----------------------------------
    (
        "cfg scale nan",
        lambda: dpm.ClassifierFree(float("nan"), torch.ones(4), torch.zeros(4)),
        ValueError,
        "ClassifierFree scale must be a finite number; got nan",
    ),
    (
        "cfg scale inf",
        lambda: dpm.ClassifierFree(float("inf"), torch.ones(4), torch.zeros(4)),
        ValueError,
        "ClassifierFree scale must be a finite number; got inf",
    ),
    (
        "cfg scale str",
        lambda: dpm.ClassifierFree("7.5", torch.ones(4), torch.zeros(4)),
        TypeError,
        "ClassifierFree scale must be a number (or a tensor of per-sample scales); got str",
    ),
    (
        "cfg scale 2-D",
        lambda: dpm.ClassifierFree(torch.ones(4, 1), torch.ones(4), torch.zeros(4)),
        TypeError,
        "of shape (batch,); got a torch.float32 tensor of shape (4, 1)",
    ),
    (
        "cfg scale tensor nan",
        lambda: dpm.ClassifierFree(torch.tensor([1.0, float("nan")]), torch.ones(2), torch.ones(2)),
        ValueError,
        "ClassifierFree scale must be finite",
    ),
    (
        "cfg scale per sample batch",
        net(cond_net, guidance=dpm.ClassifierFree(torch.ones(3), torch.ones(4), torch.zeros(4))),
        ValueError,
        "the guidance scale has 3 per-sample values but x has batch 4",
    ),
    (
        "cg scale nan",
        lambda: dpm.ClassifierGuidance(classifier, float("nan"), torch.zeros(4)),
        ValueError,
        "ClassifierGuidance scale must be a finite number",
    ),
    (
        "compat guidance_scale nan",
        lambda: dpm.model_wrapper(
            cond_net,
            dpm.NoiseScheduleVP("linear"),
            guidance_type="classifier-free",
            condition=torch.ones(4),
            unconditional_condition=torch.zeros(4),
            guidance_scale=float("nan"),
        ),
        ValueError,
        "guidance_scale must be a finite number; got nan",
    ),
    (
        "compat guidance_scale str without uncond",
        lambda: dpm.model_wrapper(
            cond_net,
            dpm.NoiseScheduleVP("linear"),
            guidance_type="classifier-free",
            condition=torch.ones(4),
            guidance_scale="7.5",
        ),
        TypeError,
        "guidance_scale must be a float, got str '7.5'",
    ),
    (
        "noise_sampler nan",
        sample(steps=3, eta=1.0, noise_sampler=lambda s, t: torch.full_like(X, float("nan"))),
        ValueError,
        "noise_sampler returned NaN or Inf at step 1 (t=",
    ),
    (
        "kd noise_sampler nan",
        k_run(kd.sample_dpmpp_2m_sde, noise_sampler=lambda s, t: torch.full_like(XK, float("nan"))),
        ValueError,
        "noise_sampler returned NaN or Inf at step 1 (sigma=",
    ),
    (
        "kd cond_scale nan",
        lambda: kd.CFGDenoiser(denoiser)(
            XK, torch.ones(2), torch.ones(2), torch.zeros(2), float("nan")
        ),
        ValueError,
        "cond_scale must be a finite number",
    ),
    # -- devices and dtypes ----------------------------------------------------------------
    ("x meta", lambda: dpm.sample(MODEL, X.to("meta"), steps=3), ValueError, "x is a meta tensor"),
    (
        "kd sigmas meta",
        k_run(sigmas=KARRAS.to("meta")),
        ValueError,
        "sigmas is a meta tensor (a shape without data)",
    ),
    (
        "kd x meta",
        k_run(x=XK.to("meta")),
        ValueError,
        "x is a meta tensor",
    ),
    (
        "model returns meta",
        lambda: dpm.sample(MetaModel(), X, steps=3),
        dpm.ModelOutputError,
        "is on meta",
    ),
    (
        "net returns meta",
        net(lambda x, t: torch.empty_like(x, device="meta")),
        dpm.ModelOutputError,
        "net returned a tensor on meta",
    ),
    (
        "model returns tuple",
        lambda: dpm.sample(TupleModel(), X, steps=3),
        dpm.ModelOutputError,
        "model returned tuple at step 0 (t=1); expected a tensor",
    ),
    (
        "dif step int output",
        scheduler_call("step", torch.ones(1, 3, dtype=torch.int64), 999.0, torch.zeros(1, 3)),
        TypeError,
        "model_output must have a floating dtype; got torch.int64",
    ),
    (
        "dif step int sample",
        scheduler_call("step", torch.ones(1, 3), 999.0, torch.zeros(1, 3, dtype=torch.int64)),
        TypeError,
        "sample must have a floating dtype; got torch.int64",
    ),
    (
        "dif step tuple output",
        scheduler_call("step", (torch.ones(1, 3),), 999.0, torch.zeros(1, 3)),
        TypeError,
        "model_output must be a torch.Tensor; got tuple (a model's output object or tuple",
    ),
    (
        "dif step meta sample",
        scheduler_call("step", torch.ones(1, 3), 999.0, torch.zeros(1, 3, device="meta")),
        ValueError,
        "sample is a meta tensor",
    ),
    (
        "dif step NaN output",
        scheduler_run(lambda i, x: torch.full_like(x, float("nan")) if i == 2 else 0.1 * x),
        dpm.ModelOutputError,
        "model_output had NaN or Inf at step 2 (timestep",
    ),
    # -- the diffusers face's inputs ---------------------------------------------------------
    (
        "dif add_noise noise batch",
        scheduler_call("add_noise", torch.zeros(4, 3), torch.zeros(2, 3), torch.tensor([999])),
        ValueError,
        "add_noise: noise has shape (2, 3); it must have original_samples' shape (4, 3)",
    ),
    (
        "dif add_noise timesteps batch",
        scheduler_call("add_noise", torch.zeros(4, 3), torch.zeros(4, 3), torch.tensor([999, 1])),
        ValueError,
        "add_noise: timesteps has shape (2,); give one timestep, or one per sample (4,)",
    ),
    (
        "dif add_noise int",
        scheduler_call("add_noise", torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 3), 9),
        TypeError,
        "original_samples must have a floating dtype",
    ),
    (
        "dif step batched timestep",
        scheduler_call("step", torch.ones(2, 3), torch.tensor([999.0, 999.0]), torch.ones(2, 3)),
        ValueError,
        "timestep must be one timestep (a number, or a tensor of one element); got a tensor of "
        "shape (2,)",
    ),
    (
        "dif step timestep str",
        scheduler_call("step", torch.ones(2, 3), "abc", torch.ones(2, 3)),
        TypeError,
        "timestep must be a number or a one-element tensor (an entry of scheduler.timesteps); "
        "got str 'abc'",
    ),
    (
        "dif set_begin_index past",
        scheduler_call("set_begin_index", 50),
        ValueError,
        "begin_index=50 is past the last step: set_timesteps planned 5 (indices 0 to 4)",
    ),
    ("dif mu nan", flux_mu(float("nan")), ValueError, "mu must be a finite number; got nan"),
    ("dif mu 1e6", flux_mu(1e6), ValueError, "mu=1000000.0 gives the shift e^mu"),
    ("dif mu str", flux_mu("1"), TypeError, "mu must be a float, got str '1'"),
    ("dif mu -50", flux_mu(-50.0), ValueError, "mu=-50.0 gives the shift e^mu = 1.93e-22"),
    (
        "dif mu linear 0",
        flux_mu(0.0, time_shift_type="linear"),
        ValueError,
        "mu=0.0 is the shift itself under time_shift_type='linear'",
    ),
    # -- the official-compatible API -------------------------------------------------------
    (
        "compat betas and alphas_cumprod",
        lambda: dpm.NoiseScheduleVP(
            "discrete", betas=BETAS, alphas_cumprod=torch.cumprod(1 - BETAS, 0)
        ),
        ValueError,
        "give betas= or alphas_cumprod=, not both",
    ),
    (
        "compat get_time_steps N=0",
        compat_call("get_time_steps", "time_uniform", 1.0, 1e-3, 0, "cpu"),
        ValueError,
        "N must be >= 1; got 0",
    ),
    (
        "compat get_time_steps t_T=5",
        compat_call("get_time_steps", "time_uniform", 5.0, 1e-3, 5, "cpu"),
        ValueError,
        "t_T=5 lies outside the schedule's time range [0.001, 1]",
    ),
    (
        "compat get_time_steps t_T=t_0",
        compat_call("get_time_steps", "time_uniform", 0.5, 0.5, 5, "cpu"),
        ValueError,
        "t_T and t_0 must differ",
    ),
    (
        "compat add_noise t=5",
        compat_call("add_noise", X.float(), torch.tensor([5.0])),
        ValueError,
        "t=5 lies outside the schedule's time range",
    ),
    (
        "compat add_noise noise shape",
        compat_call("add_noise", X.float(), torch.tensor([0.5]), torch.zeros(3)),
        ValueError,
        "noise must have shape (1, 4, 1, 8, 8)",
    ),
    (
        "compat marginal_std(-1)",
        lambda: dpm.NoiseScheduleVP("discrete", betas=BETAS).marginal_std(torch.tensor([-1.0])),
        ValueError,
        "t=-1 lies outside the schedule's time range [0.001, 1]",
    ),
    (
        "compat marginal_lambda(2)",
        lambda: dpm.NoiseScheduleVP("linear").marginal_lambda(torch.tensor([0.5, 2.0])),
        ValueError,
        "t=from 0.5 to 2 lies outside the schedule's time range (0, 1]",
    ),
    (
        "compat adaptive steps",
        compat(method="adaptive", steps=0),
        ValueError,
        "steps must be >= 1; got 0",
    ),
    # -- schedules and tuners as users write them ------------------------------------------
    (
        "from_table negative alpha",
        lambda: dpm.CustomSchedule.from_table(
            torch.tensor([0.0, 0.5, 1.0]), torch.tensor([1.0, -0.5, 0.1]), torch.ones(3)
        ),
        ValueError,
        "alpha must be > 0; entry 1 is -0.5",
    ),
    (
        "custom alpha not a function of times",
        lambda: dpm.CustomSchedule(lambda t: "x", torch.sin, 0.1, 0.9),
        TypeError,
        "alpha(t) must return a floating tensor of t's shape",
    ),
    (
        "EDM sigma_min str",
        lambda: dpm.EDMSchedule(sigma_min="0.002"),
        TypeError,
        "sigma_min must be a float, got str '0.002'",
    ),
    (
        "VE sigma_max nan",
        lambda: dpm.VESchedule(0.1, float("nan")),
        ValueError,
        "sigma_max must be a finite",
    ),
    (
        "linear beta_1 str",
        lambda: dpm.VPSchedule.linear(beta_1="20"),
        TypeError,
        "beta_1 must be a float",
    ),
    (
        "cosine s nan",
        lambda: dpm.VPSchedule.cosine(s=float("nan")),
        ValueError,
        "s must be a finite",
    ),
    ("flow t_min str", lambda: dpm.FlowSchedule(t_min="0"), TypeError, "t_min must be a float"),
    (
        "schedule without time range",
        lambda: dpm.sample(dpm.Denoiser(cond_net, NoRange()), X, steps=3),
        TypeError,
        "model.schedule (NoRange) must set its time range as finite numbers t_min < t_max",
    ),
    (
        "otg function",
        lambda: dpm.optimize_time_grid(cond_net, 4, shape=(1, 8, 8)),
        TypeError,
        "model must be a DiffusionModel: a dpmsolver.Denoiser around your network",
    ),
    (
        "os function",
        lambda: dpm.optimize_solver(cond_net, 4, shape=(1, 8, 8)),
        TypeError,
        "model must be a DiffusionModel",
    ),
    (
        "pilot_reference function",
        lambda: dpm.pilot_reference(cond_net, shape=(1, 8, 8)),
        TypeError,
        "model must be a DiffusionModel",
    ),
    (
        "otg shape=64",
        lambda: dpm.optimize_time_grid(MODEL, 4, shape=64),
        TypeError,
        "shape must be a sequence of ints (one sample's shape, without the batch",
    ),
    (
        "os shape=(1, 0)",
        lambda: dpm.optimize_solver(MODEL, 4, shape=(1, 0)),
        ValueError,
        "shape must hold ints >= 1; entry 1 is 0",
    ),
    (
        "otg nfe=1e6",
        lambda: dpm.optimize_time_grid(MODEL, 10**6, shape=(1, 8, 8)),
        ValueError,
        "nfe=1000000 needs 1000000 steps, more than candidates=64",
    ),
    (
        "os families str",
        lambda: dpm.optimize_solver(MODEL, 4, families="dpm++3m"),
        TypeError,
        "families must be a list of preset names",
    ),
    (
        "adaptive steps=-5",
        sample(method="adaptive", steps=-5),
        ValueError,
        "steps=-5 is the step count of the fixed-step methods",
    ),
    (
        "timesteps strings",
        sample(timesteps=["1.0", "0.5"]),
        TypeError,
        "timesteps must be numbers; got str '1.0' among them",
    ),
    (
        "timesteps fewer than order",
        sample(timesteps=[1.0, 0.5], order=2),
        ValueError,
        "the timesteps give 1 step(s), fewer than order=2",
    ),
    # -- outputs ---------------------------------------------------------------------------
    ("generate out ''", generate_into(""), ValueError, "out must name a folder; got ''"),
    ("generate out None", generate_into(None), TypeError, "out must be a folder path (str or"),
    ("generate out file", generate_into(Path(__file__)), ValueError, "is a file; generate"),
    (
        "merge_shards truncated manifest",
        lambda: merge_shards(truncated_job()),
        ValueError,
        "holds no readable dpmsolver generate manifest",
    ),
    # -- a second hostile probe: options beside others, callers' functions, constructors ----
    (
        "timesteps+steps",
        sample(timesteps=[1.0, 0.5, 0.1, 0.001], steps=10),
        ValueError,
        "steps=10 cannot be given with timesteps: the given grid sets the steps",
    ),
    (
        "timesteps+skip_type",
        sample(timesteps=[1.0, 0.5, 0.1, 0.001], skip_type="logSNR"),
        ValueError,
        "skip_type='logSNR' cannot be given with timesteps",
    ),
    (
        "tuned solver+steps",
        lambda: dpm.sample(MODEL, X, solver=SHIPPED, steps=3),
        ValueError,
        "solver (a tuned solver) sets the grid; steps cannot be given with it",
    ),
    (
        "tuned solver on another schedule",
        lambda: dpm.sample(
            dpm.Denoiser(cond_net, dpm.VPSchedule.discrete(betas=torch.linspace(1e-4, 0.04, 1000))),
            X,
            solver=SHIPPED,
        ),
        ValueError,
        "this model's schedule gives",
    ),
    (
        "xt_fn dtype",
        sample(steps=3, correcting_xt_fn=lambda x, t, s: x.float()),
        ValueError,
        "correcting_xt_fn returned a torch.float32 tensor on cpu at step 0 (t=1); expected x's",
    ),
    (
        "xt_fn meta",
        sample(steps=3, correcting_xt_fn=lambda x, t, s: x.to("meta")),
        ValueError,
        "correcting_xt_fn returned a meta tensor (a shape without data) at step 0",
    ),
    (
        "xt_fn NaN",
        sample(steps=4, correcting_xt_fn=lambda x, t, s: x * float("nan") if s == 2 else x),
        ValueError,
        "correcting_xt_fn returned NaN or Inf at step 2",
    ),
    (
        "x0_correction None",
        net(lambda x, t: 0 * x, x0_correction=lambda x0, t: None),
        ValueError,
        "x0_correction returned NoneType at t=1; expected x0_pred's shape (4, 1, 8, 8)",
    ),
    (
        "x0_correction shape",
        net(lambda x, t: 0 * x, x0_correction=lambda x0, t: x0[:1]),
        ValueError,
        "x0_correction returned a torch.float64 tensor of shape (1, 1, 8, 8)",
    ),
    (
        "sample_shape str",
        lambda: dpm.Denoiser(cond_net, SCHEDULE, sample_shape="abc"),
        TypeError,
        "sample_shape must be a sequence of ints",
    ),
    (
        "sample_shape negative",
        lambda: dpm.Denoiser(cond_net, SCHEDULE, sample_shape=(-1, 8)),
        ValueError,
        "sample_shape must hold ints >= 1; entry 0 is -1",
    ),
    (
        "discrete time_input_scale nan",
        lambda: dpm.DiscreteVPSchedule(betas=BETAS, time_input_scale=float("nan")),
        ValueError,
        "time_input_scale must be a finite number > 0; got nan",
    ),
    (
        "discrete time_input_scale negative",
        lambda: dpm.DiscreteVPSchedule(betas=BETAS, time_input_scale=-1000),
        ValueError,
        "time_input_scale must be a finite number > 0",
    ),
    (
        "discrete respace str",
        lambda: dpm.DiscreteVPSchedule(betas=BETAS, respace_after_clip="False"),
        TypeError,
        "respace_after_clip must be a bool",
    ),
    (
        "discrete clip_lambda str",
        lambda: dpm.DiscreteVPSchedule(betas=BETAS, clip_lambda="x"),
        TypeError,
        "clip_lambda must be a float",
    ),
    (
        "discrete clip_lambda 100",
        lambda: dpm.DiscreteVPSchedule(betas=BETAS, clip_lambda=100),
        ValueError,
        "clip_lambda=100.0 keeps 0 of the table's 1000 entries",
    ),
    (
        "discrete betas strings",
        lambda: dpm.DiscreteVPSchedule(betas=["a", "b"]),
        TypeError,
        "betas must be numbers; got str 'a' among them",
    ),
    (
        "discrete betas meta",
        lambda: dpm.DiscreteVPSchedule(betas=BETAS.to("meta")),
        ValueError,
        "betas is a meta tensor",
    ),
    (
        "time_grid steps 0",
        lambda: dpm.time_grid(SCHEDULE, "logSNR", 1.0, 1e-3, 0),
        ValueError,
        "steps must be >= 1; got 0",
    ),
    (
        "time_grid steps str",
        lambda: dpm.time_grid(SCHEDULE, "logSNR", 1.0, 1e-3, "5"),
        TypeError,
        "steps must be an int",
    ),
    (
        "time_grid t_start nan",
        lambda: dpm.time_grid(SCHEDULE, "time_uniform", float("nan"), 1e-3, 5),
        ValueError,
        "t_start must be a finite number",
    ),
    (
        "time_grid t_start out",
        lambda: dpm.time_grid(SCHEDULE, "logSNR", 5.0, 1e-3, 5),
        ValueError,
        "t_start=5.0 is outside the schedule's time range",
    ),
    (
        "time_grid schedule str",
        lambda: dpm.time_grid("VP", "logSNR", 1.0, 1e-3, 5),
        TypeError,
        "schedule must be a NoiseSchedule; got str",
    ),
    (
        "thresholding ratio str",
        lambda: dpm.DynamicThresholding(ratio="0.9"),
        TypeError,
        "ratio must be a float",
    ),
    (
        "thresholding max_val str",
        lambda: dpm.DynamicThresholding(max_val="1"),
        TypeError,
        "max_val must be a float",
    ),
    (
        "classifier ignores x",
        net(
            lambda x, t: 0 * x,
            guidance=dpm.ClassifierGuidance(
                lambda x, t, c: torch.zeros(x.shape[0]), 1.0, torch.zeros(4)
            ),
        ),
        ValueError,
        "returned log-probabilities that do not depend on x",
    ),
    (
        "to_noise shapes",
        lambda: dpm.to_noise(torch.zeros(3, 2), torch.zeros(2, 2), 0.5, 0.5, "x0"),
        ValueError,
        "out and x must be tensors of one shape",
    ),
    (
        "adaptive NaN x",
        lambda: dpm.sample(MODEL, X * float("nan"), method="adaptive"),
        ValueError,
        "x (the starting sample) contains NaN",
    ),
    (
        "from_json broken",
        lambda: dpm.TunedSolver.from_json("{not json"),
        ValueError,
        "TunedSolver.from_json: not valid JSON",
    ),
    (
        "from_json array",
        lambda: dpm.TunedSolver.from_json("[1, 2]"),
        ValueError,
        "needs a JSON object (what to_json writes); got a list",
    ),
    (
        "from_json blank",
        lambda: dpm.TunedSolver.from_json("  "),
        ValueError,
        "text_or_path is empty",
    ),
    (
        "from_json fields",
        lambda: dpm.TunedSolver.from_json('{"times": [1.0]}'),
        ValueError,
        "missing fields [",
    ),
    (
        "generate device bogus",
        lambda: dpm.generate("digits-exact", 4, "unused", device="bogus"),
        ValueError,
        "device='bogus' is not a torch device",
    ),
    (
        "generate device meta",
        lambda: dpm.generate("digits-exact", 4, "unused", device="meta"),
        ValueError,
        "device='meta' holds shapes without data",
    ),
    (
        "generate merge str",
        lambda: dpm.generate("digits-exact", 4, "unused", merge="False"),
        TypeError,
        "merge must be a bool",
    ),
    (
        "generate shards",
        lambda: dpm.generate("digits-exact", 10**12, "unused", batch=1),
        ValueError,
        "makes 1000000000000 shards, more than 1000000",
    ),
    (
        "compat dtype str",
        lambda: dpm.NoiseScheduleVP("discrete", betas=BETAS, dtype="float32"),
        TypeError,
        "dtype must be a floating torch.dtype",
    ),
    (
        "compat classifier_kwargs int",
        lambda: dpm.model_wrapper(
            cond_net,
            dpm.NoiseScheduleVP("linear"),
            guidance_type="classifier",
            classifier_fn=classifier,
            condition=torch.zeros(4),
            classifier_kwargs=3,
        ),
        TypeError,
        "classifier_kwargs must be a dict",
    ),
    (
        "compat thresholding_max_val",
        lambda: dpm.DPM_Solver(
            lambda x, t: x,
            dpm.NoiseScheduleVP("linear"),
            correcting_x0_fn="dynamic_thresholding",
            thresholding_max_val=-1,
        ),
        ValueError,
        "thresholding_max_val must be > 0; got -1.0",
    ),
    (
        "compat thresholding ratio str",
        lambda: dpm.DPM_Solver(
            lambda x, t: x, dpm.NoiseScheduleVP("linear"), dynamic_thresholding_ratio="0.9"
        ),
        TypeError,
        "dynamic_thresholding_ratio must be a float",
    ),
    (
        "compat return_intermediate str",
        compat(return_intermediate="False"),
        TypeError,
        "return_intermediate must be a bool",
    ),
    (
        "compat timesteps+steps",
        compat(steps=7, timesteps=[1.0, 0.5, 0.1, 0.001]),
        ValueError,
        "timesteps sets the grid; steps must keep their defaults with it",
    ),
    (
        "compat int eps",
        compat_model(lambda x, t: x.long()),
        dpm.ModelOutputError,
        "dtype torch.int64, expected a floating dtype",
    ),
    (
        "compat meta eps",
        compat_model(lambda x, t: x.to("meta")),
        dpm.ModelOutputError,
        "is on meta",
    ),
    (
        "compat correcting_x0_fn None",
        compat_model(lambda x, t: 0 * x, correcting_x0_fn=lambda x0, t: None),
        ValueError,
        "correcting_x0_fn returned NoneType",
    ),
    (
        "compat get_time_steps device",
        compat_call("get_time_steps", "logSNR", 1.0, 1e-3, 5, "bogus"),
        ValueError,
        "device='bogus' is not a torch device",
    ),
    (
        "dif num_train_timesteps huge",
        scheduler(num_train_timesteps=10**10),
        ValueError,
        "num_train_timesteps must be between 2 and 100000",
    ),
    (
        "dif alphas_cumprod underflow",
        scheduler(num_train_timesteps=100000),
        ValueError,
        "alphas_cumprod reaches 0 at step",
    ),
    (
        "dif trained_betas str",
        scheduler(trained_betas="abc"),
        TypeError,
        "trained_betas must be a tensor, an array or a list of numbers; got str",
    ),
    (
        "dif trained_betas 2-D",
        scheduler(trained_betas=[[0.01, 0.02], [0.03, 0.04]]),
        ValueError,
        "trained_betas must be 1-D",
    ),
    (
        "dif lambda_min_clipped 100",
        scheduler(lambda_min_clipped=100),
        ValueError,
        "lambda_min_clipped=100.0 clips all but 0 entries",
    ),
    (
        "dif from_config str",
        lambda: __import__("dpmsolver.diffusers", fromlist=["x"]).DPMSolverScheduler.from_config(
            "not a dict"
        ),
        TypeError,
        "config must be a scheduler config (a dict",
    ),
    (
        "dif save_pretrained file",
        scheduler_call("save_pretrained", __file__),
        ValueError,
        "is a file; give a folder",
    ),
    (
        "dif set_timesteps device",
        scheduler_call("set_timesteps", 5, "bogus"),
        ValueError,
        "device='bogus' is not a torch device",
    ),
    (
        "dif flow timesteps out",
        flow_call("set_timesteps", timesteps=[5000, 500]),
        ValueError,
        "timesteps from 5000 to 500 leave (0, 1000]",
    ),
    (
        "dif add_noise timesteps str",
        scheduler_call("add_noise", torch.zeros(2, 3), torch.zeros(2, 3), "abc"),
        TypeError,
        "add_noise: timesteps must be a tensor, a number or a list",
    ),
    ("kd callback int", k_run(callback=5), TypeError, "callback must be callable or None; got int"),
    (
        "kd callback changes x",
        k_run(callback=lambda d: d["x"].mul_(0)),
        ValueError,
        "callback changed x in place at step 0 (sigma=10)",
    ),
    (
        "kd solver str",
        k_run(kd.sample_dpm_solver, solver="abc"),
        TypeError,
        "solver must be a TunedSolver",
    ),
    (
        "kd ipndm order 7",
        k_run(kd.sample_ipndm, order=7),
        ValueError,
        "order must be between 1 and 4; got 7",
    ),
    (
        "kd order 10",
        k_run(kd.sample_dpm_solver, order=10),
        ValueError,
        "order must be between 1 and 3; got 10",
    ),
    (
        "kd adaptive callback int",
        lambda: kd.sample_dpm_adaptive(denoiser, XK, 0.1, 10.0, callback=5, disable=True),
        TypeError,
        "callback must be callable",
    ),
    (
        "kd karras device",
        lambda: kd.get_sigmas_karras(5, 0.1, 10.0, device="bogus"),
        ValueError,
        "device='bogus' is not a torch device",
    ),
    # -- a third probe: meta scalars, booleans as numbers, records, devices, the CLI -----
    (
        "steps meta",
        sample(steps=torch.tensor(5, device="meta")),
        ValueError,
        "steps is a meta tensor",
    ),
    ("eta meta", sample(eta=torch.tensor(1.0, device="meta")), ValueError, "eta is a meta tensor"),
    (
        "timesteps bool",
        sample(timesteps=[True, 0.5, 0.1]),
        TypeError,
        "timesteps must be numbers; got bool True",
    ),
    (
        "kd sigmas bool",
        k_run(sigmas=[True, False]),
        TypeError,
        "sigmas must be numbers; got bool True",
    ),
    (
        "kd sigmas complex",
        k_run(sigmas=KARRAS * (1 + 1j)),
        TypeError,
        "sigmas must hold real numbers; got a torch.complex64",
    ),
    (
        "multistep3 singlestep",
        sample(method="singlestep", multistep3="exact"),
        ValueError,
        "multistep3='exact' is the form of DPM-Solver's third-order multistep rule",
    ),
    (
        "corrector_variant off",
        sample(corrector_variant="bh1"),
        ValueError,
        "corrector_variant='bh1' is B(h) of the UniC corrector, which is off",
    ),
    (
        "cfg scale meta",
        lambda: dpm.ClassifierFree(torch.tensor(2.0, device="meta"), torch.ones(4), torch.zeros(4)),
        ValueError,
        "ClassifierFree scale is a meta tensor",
    ),
    (
        "cfg cond meta",
        lambda: dpm.Denoiser(
            cond_net,
            SCHEDULE,
            guidance=dpm.ClassifierFree(2.0, torch.ones(4, device="meta"), torch.zeros(4)),
        ),
        ValueError,
        "ClassifierFree cond is a meta tensor",
    ),
    (
        "model_kwargs int keys",
        lambda: dpm.Denoiser(cond_net, SCHEDULE, model_kwargs={1: 2}),
        TypeError,
        "model_kwargs must be a mapping of keyword arguments (str keys)",
    ),
    (
        "kd extra_args int keys",
        k_run(extra_args={1: 2}),
        TypeError,
        "extra_args must be a dict of keyword arguments for the model (str keys)",
    ),
    (
        "callback changes x",
        sample(steps=3, callback=lambda i, t, x: x.mul_(0)),
        ValueError,
        "callback changed x in place at step 0 (t=1)",
    ),
    (
        "kd callback changes denoised",
        k_run(callback=lambda d: d["denoised"].mul_(0)),
        ValueError,
        "callback changed denoised in place at step 0",
    ),
    (
        "kd adaptive callback changes x",
        lambda: kd.sample_dpm_adaptive(
            denoiser, XK, 0.1, 10.0, callback=lambda d: d["x"].mul_(0), disable=True
        ),
        ValueError,
        "callback changed x in place at step 1 (sigma=",
    ),
    (
        "noise_sampler meta",
        sample(steps=3, eta=1.0, noise_sampler=lambda s, t: torch.zeros_like(X, device="meta")),
        ValueError,
        "noise_sampler returned a meta tensor",
    ),
    (
        "betas bfloat16 is fine",
        lambda: dpm.DiscreteVPSchedule(betas=BETAS.bfloat16(), clip_lambda=100),
        ValueError,
        "clip_lambda=100.0 keeps 0 of the table's 1000 entries",
    ),
    (
        "singlestep_orders str",
        lambda: dpm.singlestep_orders("5", 2),
        TypeError,
        "steps must be an int",
    ),
    (
        "singlestep_orders order 4",
        lambda: dpm.singlestep_orders(5, 4),
        ValueError,
        "order must be between 1 and 3; got 4",
    ),
    (
        "singlestep_orders 0",
        lambda: dpm.singlestep_orders(0, 3),
        ValueError,
        "steps must be >= 1; got 0",
    ),
    (
        "to_data alpha str",
        lambda: dpm.to_data(torch.zeros(2), torch.zeros(2), "0.5", 0.5, "noise"),
        TypeError,
        "alpha must be a number or a tensor; got str",
    ),
    (
        "brownian meta x",
        lambda: dpm.BrownianTreeNoiseSampler(XK.to("meta"), 0.1, 10.0),
        ValueError,
        "x is a meta tensor",
    ),
    (
        "brownian cpu str",
        lambda: dpm.BrownianTreeNoiseSampler(XK, 0.1, 10.0, cpu="no"),
        TypeError,
        "cpu must be a bool",
    ),
    (
        "compile mode",
        lambda: dpm.Sampler(MODEL, steps=3).compile(mode="bogus"),
        ValueError,
        "torch.compile refused the options {'mode': 'bogus'}",
    ),
    (
        "load device bogus",
        lambda: load("digits-net", device="bogus"),
        ValueError,
        "device='bogus' is not a torch device",
    ),
    (
        "load device meta",
        lambda: load("digits-net", device="meta"),
        ValueError,
        "device='meta' holds shapes without data",
    ),
    (
        "load device cuda",
        lambda: load("digits-exact", device="cuda:99"),
        ValueError,
        "device='cuda:99'",
    ),
    (
        "load schedule str",
        lambda: load("digits-exact", schedule="vp"),
        TypeError,
        "schedule must be a NoiseSchedule or None; got str",
    ),
    (
        "generate model_name int",
        lambda: dpm.generate(MODEL, 4, "unused", model_name=5),
        TypeError,
        "model_name must be a non-empty str",
    ),
    (
        "generate model_name empty",
        lambda: dpm.generate(MODEL, 4, "unused", model_name=""),
        TypeError,
        "model_name must be a non-empty str",
    ),
    ("to_json int", lambda: SHIPPED.to_json(5), TypeError, "path must be a file path"),
    (
        "to_json folder",
        lambda: SHIPPED.to_json(str(Path(__file__).parent)),
        ValueError,
        "is a folder; give a file name",
    ),
    (
        "from_json not JSON",
        lambda: dpm.TunedSolver.from_json("5x"),
        ValueError,
        "is neither a file nor JSON text",
    ),
    (
        "from_json binary file",
        lambda: dpm.TunedSolver.from_json(Path(__file__).parent / "data" / "official_parity.npz"),
        ValueError,
        "cannot read",
    ),
    (
        "tuned options list",
        lambda: dpm.TunedSolver(**{**SHIPPED.__dict__, "options": [1]}),
        TypeError,
        "options must be a dict of solver options by name",
    ),
    (
        "tuned sigmas short",
        lambda: dpm.TunedSolver(**{**SHIPPED.__dict__, "sigmas": SHIPPED.sigmas[:-1]}),
        ValueError,
        "sigmas must be a list of 12 noise levels",
    ),
    (
        "tuned times None",
        lambda: dpm.TunedSolver(**{**SHIPPED.__dict__, "times": None}),
        TypeError,
        "times must be a list of times; got NoneType",
    ),
    (
        "tuned times str",
        lambda: dpm.TunedSolver(**{**SHIPPED.__dict__, "times": "abc"}),
        TypeError,
        "times must be a list of times; got str",
    ),
    (
        "tuned nfe str",
        lambda: dpm.TunedSolver(**{**SHIPPED.__dict__, "nfe": "ten"}),
        TypeError,
        "nfe must be an int",
    ),
    (
        "pilot x_T empty",
        lambda: dpm.pilot_reference(MODEL, x_T=X[:0]),
        ValueError,
        "x_T must hold at least one pilot state",
    ),
    (
        "otg x_T empty",
        lambda: dpm.optimize_time_grid(MODEL, 4, x_T=X[:0]),
        ValueError,
        "x_T must hold at least one pilot state",
    ),
    (
        "compat device cuda",
        compat_call("get_time_steps", "logSNR", 1.0, 1e-3, 5, "cuda:99"),
        ValueError,
        "device='cuda:99'",
    ),
    (
        "dif use_karras_sigmas str",
        scheduler(use_karras_sigmas="False"),
        TypeError,
        "use_karras_sigmas must be a bool",
    ),
    (
        "dif return_dict str",
        scheduler_call("step", torch.ones(1, 3), 999.0, torch.ones(1, 3), return_dict="False"),
        TypeError,
        "return_dict must be a bool",
    ),
    (
        "dif step meta timestep",
        scheduler_call(
            "step", torch.ones(1, 3), torch.tensor(999.0, device="meta"), torch.ones(1, 3)
        ),
        ValueError,
        "timestep is a meta tensor",
    ),
    (
        "dif add_noise meta timesteps",
        scheduler_call(
            "add_noise", torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([500.0], device="meta")
        ),
        ValueError,
        "add_noise: timesteps is a meta tensor",
    ),
    (
        "dif scale_noise str",
        scheduler_call("scale_noise", torch.zeros(1, 3), "abc", torch.zeros(1, 3)),
        TypeError,
        "scale_noise: timestep must be a number or a tensor; got str",
    ),
    (
        "dif from_tuned config str",
        lambda: __import__("dpmsolver.diffusers", fromlist=["x"]).DPMSolverScheduler.from_tuned(
            SHIPPED, "abc"
        ),
        TypeError,
        "config must be a scheduler config (a dict",
    ),
    (
        "dif tuned record short sigmas",
        scheduler(
            beta_schedule="linear", tuned_solver={**SHIPPED.__dict__, "sigmas": SHIPPED.sigmas[:-1]}
        ),
        ValueError,
        "sigmas must be a list of 12 noise levels",
    ),
    (
        "dif tuned record options None",
        scheduler(beta_schedule="linear", tuned_solver={**SHIPPED.__dict__, "options": None}),
        TypeError,
        "options must be a dict of solver options",
    ),
    (
        "kd tuned_sigmas device",
        lambda: kd.tuned_sigmas(SHIPPED, device="bogus"),
        ValueError,
        "device='bogus' is not a torch device",
    ),
    (
        "kd tuned_sigmas final_zero str",
        lambda: kd.tuned_sigmas(SHIPPED, final_zero="no"),
        TypeError,
        "final_zero must be a bool",
    ),
    (
        "kd karras cuda",
        lambda: kd.get_sigmas_karras(5, 0.1, 10.0, device="cuda:99"),
        ValueError,
        "device='cuda:99'",
    ),
    (
        "generate shard folder",
        generate_into_folder_with_a_shard_dir(),
        ValueError,
        "shard-000000.npz exists and is not a file",
    ),
    # -- official-compatible ---------------------------------------------------------------
    ("compat schedule", lambda: dpm.NoiseScheduleVP("foo"), ValueError, "schedule must be one of"),
    (
        "compat model_type",
        lambda: dpm.model_wrapper(cond_net, dpm.NoiseScheduleVP("linear"), model_type="eps"),
        ValueError,
        "model_type must be one of",
    ),
    (
        "compat guidance_type",
        lambda: dpm.model_wrapper(cond_net, dpm.NoiseScheduleVP("linear"), guidance_type="cfg"),
        ValueError,
        "guidance_type must be one of",
    ),
    (
        "compat classifier None",
        lambda: dpm.model_wrapper(
            cond_net, dpm.NoiseScheduleVP("linear"), guidance_type="classifier", condition=1
        ),
        ValueError,
        "needs classifier_fn",
    ),
    ("compat steps", compat(steps=0), ValueError, "steps must be"),
    ("compat skip_type", compat(skip_type="x"), ValueError, "skip_type must be one of"),
    ("compat method", compat(method="x"), ValueError, "method must be one of"),
    ("compat order", compat(order=5), ValueError, "order must be between"),
    (
        "compat adaptive intermediate",
        compat(method="adaptive", return_intermediate=True),
        ValueError,
        "return_intermediate=True is not supported",
    ),
    # -- k-diffusion face ------------------------------------------------------------------
    (
        "kd sigmas increasing",
        k_run(sigmas=torch.tensor([0.5, 1.0, 0.0])),
        ValueError,
        "sigmas must be strictly decreasing",
    ),
    (
        "kd sigmas negative",
        k_run(sigmas=torch.tensor([1.0, -1.0])),
        ValueError,
        "sigmas must be > 0",
    ),
    ("kd sigmas 2-D", k_run(sigmas=KARRAS[None]), ValueError, "sigmas must be 1-D"),
    ("kd extra_args int", k_run(extra_args=3), TypeError, "extra_args must be a dict"),
    (
        "kd model tuple",
        k_run(model=lambda x, s: (x, x)),
        dpm.ModelOutputError,
        "model returned tuple",
    ),
    (
        "kd model shape",
        k_run(model=lambda x, s: x[:1]),
        dpm.ModelOutputError,
        "has shape (1, 3, 4, 4)",
    ),
    (
        "kd one level tuple",
        k_run(model=lambda x, s: (x,), sigmas=torch.tensor([5.0, 0.0])),
        dpm.ModelOutputError,
        "model returned tuple",
    ),
    (
        "kd one level NaN",
        k_run(model=lambda x, s: x * float("nan"), sigmas=torch.tensor([5.0, 0.0])),
        dpm.ModelOutputError,
        "NaN or Inf",
    ),
    ("kd karras n=0", lambda: kd.get_sigmas_karras(0, 0.1, 10.0), ValueError, "n must be >= 1"),
    (
        "kd karras range",
        lambda: kd.get_sigmas_karras(5, 10.0, 0.1),
        ValueError,
        "need sigma_min < sigma_max",
    ),
    (
        "kd karras rho",
        lambda: kd.get_sigmas_karras(5, 0.1, 10.0, rho=-1.0),
        ValueError,
        "rho must be",
    ),
    ("kd method", k_run(kd.sample_dpm_solver, method="rk4"), ValueError, "method must be one of"),
    (
        "kd adaptive range",
        lambda: kd.sample_dpm_adaptive(denoiser, XK, 10.0, 0.1, disable=True),
        ValueError,
        "sigma_min < sigma_max",
    ),
    # -- diffusers face --------------------------------------------------------------------
    (
        "dif beta_start nan",
        scheduler(beta_start=float("nan")),
        ValueError,
        "beta_start must be a finite",
    ),
    ("dif beta_end 2", scheduler(beta_end=2.0), ValueError, "beta_end=2.0 give betas outside"),
    (
        "dif beta_schedule",
        scheduler(beta_schedule="cosine"),
        ValueError,
        "beta_schedule must be one of",
    ),
    (
        "dif trained_betas",
        scheduler(trained_betas=[0.5, 1.5]),
        ValueError,
        "trained_betas must hold",
    ),
    (
        "dif num_train_timesteps",
        scheduler(num_train_timesteps=1),
        ValueError,
        "num_train_timesteps must be",
    ),
    (
        "dif solver_order",
        scheduler(solver_order=4),
        ValueError,
        "solver_order must be between 1 and 3",
    ),
    (
        "dif prediction_type",
        scheduler(prediction_type="eps"),
        ValueError,
        "prediction_type must be one of",
    ),
    (
        "dif algorithm_type",
        scheduler(algorithm_type="unipc"),
        ValueError,
        "algorithm_type must be one of",
    ),
    (
        "dif timestep_spacing",
        scheduler(timestep_spacing="uniform"),
        ValueError,
        "timestep_spacing must be one of",
    ),
    ("dif steps_offset", scheduler(steps_offset=-1), ValueError, "steps_offset must be"),
    (
        "dif lambda_min_clipped nan",
        scheduler(lambda_min_clipped=float("nan")),
        ValueError,
        "lambda_min_clipped must be",
    ),
    (
        "dif thresholding str",
        scheduler(thresholding="yes"),
        TypeError,
        "thresholding must be a bool",
    ),
    (
        "dif two grids",
        scheduler(use_karras_sigmas=True, use_exponential_sigmas=True),
        ValueError,
        "use_karras_sigmas and use_exponential_sigmas",
    ),
    (
        "dif timestep_type",
        scheduler(timestep_type="continuous"),
        ValueError,
        "timestep_type='continuous' (the network gets EDM's c_noise = log(sigma) / 4) applies",
    ),
    (
        "dif interpolation_type",
        scheduler(interpolation_type="log_linear"),
        ValueError,
        "interpolation_type='log_linear'",
    ),
    (
        "dif invert_sigmas",
        scheduler(shift=3.0, invert_sigmas=True),
        ValueError,
        "invert_sigmas=True cannot be honoured",
    ),
    (
        "dif stochastic_sampling",
        scheduler(shift=3.0, stochastic_sampling=True),
        ValueError,
        "stochastic_sampling=True",
    ),
    ("dif solver_p", scheduler(solver_p="x"), ValueError, "solver_p"),
    (
        "dif set_timesteps 0",
        scheduler_call("set_timesteps", 0),
        ValueError,
        "num_inference_steps must be",
    ),
    (
        "dif set_timesteps none",
        scheduler_call("set_timesteps"),
        ValueError,
        "give one of num_inference_steps",
    ),
    (
        "dif set_timesteps mu",
        scheduler_call("set_timesteps", 5, mu=0.5),
        ValueError,
        "mu (the dynamic shift of Flux-like pipelines) applies to flow-matching",
    ),
    (
        "dif timesteps unsorted",
        scheduler_call("set_timesteps", timesteps=[100, 500]),
        ValueError,
        "timesteps must be strictly decreasing",
    ),
    (
        "dif sigmas out",
        scheduler_call("set_timesteps", sigmas=[1e5, 1.0]),
        ValueError,
        "sigmas from 100000 to 1 reach beyond the training schedule",
    ),
    (
        "dif step timestep",
        scheduler_call("step", torch.zeros(1, 3), 123456, torch.zeros(1, 3)),
        ValueError,
        "timestep 123456",
    ),
    (
        "dif step shape",
        scheduler_call("step", torch.zeros(1, 4), 999.0, torch.zeros(1, 3)),
        ValueError,
        "model_output has shape (1, 4)",
    ),
    (
        "dif add_noise out",
        scheduler_call("add_noise", torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([-5, 3])),
        ValueError,
        "add_noise: timesteps must lie in",
    ),
    ("dif begin_index", scheduler_call("set_begin_index", -1), ValueError, "begin_index must be"),
    (
        "dif scale_noise",
        scheduler_call("scale_noise", torch.zeros(2, 3), torch.tensor(999.0)),
        ValueError,
        "scale_noise needs noise",
    ),
]


def test_at_least_100_cases() -> None:
    assert len(CASES) >= 100
    assert len({name for name, *_ in CASES}) == len(CASES)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(("name", "call", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(
    name: str, call: Callable[[], Any], error: type[BaseException], message: str
) -> None:
    if name.startswith("dif"):
        pytest.importorskip("diffusers")
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value), str(info.value)


# -- generate: a failing setting writes nothing; another job's folder is left as it is ---


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(shape=(3, 8, 8)), ValueError, "the model fails on one sample of shape=(3, 8, 8)"),
        (dict(dtype=torch.int64), TypeError, "dtype must be a floating torch.dtype"),
        (dict(dtype="float32"), TypeError, "dtype must be a floating torch.dtype"),
        (dict(seed=-1), ValueError, "seed must be >= 0"),
    ],
)
def test_generate_checks_shape_and_dtype_before_writing(
    tmp_path: Path, kwargs: dict[str, Any], error: type[BaseException], message: str
) -> None:
    fresh, other = tmp_path / "fresh", tmp_path / "other"
    dpm.generate("digits-exact", 4, other, batch=2, steps=3, progress=False)
    before = {p.name: p.read_bytes() for p in sorted(other.iterdir())}
    for folder in (fresh, other):
        # (another job's folder may be refused as such first: the shape is a setting)
        with pytest.raises(error) as info:
            dpm.generate("digits-exact", 4, folder, batch=2, steps=3, progress=False, **kwargs)
        assert message in str(info.value) or (
            folder is other and "other settings" in str(info.value)
        )
    assert not fresh.exists() or not any(fresh.iterdir())
    assert {p.name: p.read_bytes() for p in sorted(other.iterdir())} == before
    # The corrected rerun into the fresh folder is not refused.
    dpm.generate("digits-exact", 4, fresh, batch=2, steps=3, progress=False)


# -- k-diffusion accepts what k-diffusion accepts ------------------------------------------


@pytest.mark.parametrize("fn", [kd.sample_dpmpp_2m, kd.sample_dpmpp_3m, kd.sample_dpmpp_2s])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_k_diffusion_short_grids_lower_the_order(fn: Callable[..., Any], n: int) -> None:
    """get_sigmas_karras(n) with n = 1, 2, 3 under 2M / 3M: k-diffusion runs them (its
    multistep warms up); so does this face, at the order the grid has room for."""
    sigmas = kd.get_sigmas_karras(n, 0.1, 10.0)
    out = fn(denoiser, XK * 10.0, sigmas, disable=True)
    assert out.shape == XK.shape and bool(torch.isfinite(out).all())
    if fn is not kd.sample_dpmpp_2s:
        euler = kd.sample_dpm_solver(denoiser, XK * 10.0, sigmas, disable=True, order=1)
        if n <= 2:  # one step and the jump to zero: first order is all there is
            torch.testing.assert_close(out, euler)


def test_compat_classifier_free_without_uncond_is_the_conditional_model() -> None:
    """The reference calls the conditional model alone when unconditional_condition is
    None, whatever guidance_scale says; the official-compatible face does the same."""
    ns = dpm.NoiseScheduleVP("discrete", betas=torch.linspace(1e-4, 0.02, 1000))

    def net(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return 0.1 * x + c.reshape(-1, 1, 1, 1)

    cond = torch.arange(4.0)
    runs = []
    for scale in (1.0, 7.5):
        model = dpm.model_wrapper(
            net, ns, guidance_type="classifier-free", condition=cond, guidance_scale=scale
        )
        runs.append(dpm.DPM_Solver(model, ns).sample(X.float(), steps=4))
    assert torch.equal(runs[0], runs[1])


# -- must not happen again: each its own test -------------------------------------------


def folder_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def user_files(folder: Path) -> dict[str, bytes]:
    """A user's own files, named as the job's could be: a samples.npz, a manifest.json of
    another program and a .tmp file."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "samples.npz": b"my own samples",
        "manifest.json": json.dumps({"settings": {"lr": 0.1}, "epochs": 3}).encode(),
        "notes.tmp": b"draft",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


@pytest.mark.parametrize("manifest", [True, False], ids=["their-manifest", "no-manifest"])
def test_generate_never_touches_a_users_files(tmp_path: Path, manifest: bool) -> None:
    """A folder is a job's only when its own manifest says so: any other non-empty folder
    is refused before any work, and nothing in it is written, replaced or removed."""
    folder = tmp_path / "mine"
    user_files(folder)
    if not manifest:
        (folder / "manifest.json").unlink()
    before = folder_hashes(folder)
    calls = []

    def counted(x: torch.Tensor, level: Any, target: Any) -> torch.Tensor:
        calls.append(1)
        return MODEL(x, level, target)

    counted.schedule = SCHEDULE  # type: ignore[attr-defined]
    counted.sample_shape = (1, 8, 8)  # type: ignore[attr-defined]
    expected = "not a dpmsolver generate manifest" if manifest else "holds no dpmsolver"
    with pytest.raises(ValueError, match=expected):
        dpm.generate(
            counted, 8, folder, model_name="g", batch=4, steps=5, merge=True, progress=False
        )
    assert folder_hashes(folder) == before
    assert len(calls) <= 1  # at most the one-sample shape check: no sampling
    with pytest.raises(ValueError, match=expected):
        dpm.generate("digits-exact", 8, folder, batch=4, steps=5, merge=True, progress=False)
    assert folder_hashes(folder) == before


def test_a_users_files_in_a_jobs_folder_survive_its_reruns(tmp_path: Path) -> None:
    job = tmp_path / "job"
    dpm.generate("digits-exact", 8, job, batch=4, steps=5, progress=False)
    (job / "notes.tmp").write_bytes(b"draft")
    (job / "README").write_bytes(b"what this is")
    dpm.generate("digits-exact", 8, job, batch=4, steps=5, merge=True, progress=False)
    dpm.generate("digits-exact", 8, job, batch=4, steps=5, progress=False)
    assert (job / "notes.tmp").read_bytes() == b"draft"
    assert (job / "README").read_bytes() == b"what this is"
    # A samples.npz the job's manifest does not record is not replaced by a merge.
    other = tmp_path / "other"
    dpm.generate("digits-exact", 8, other, batch=4, steps=5, progress=False)
    (other / "samples.npz").write_bytes(b"mine")
    with pytest.raises(ValueError, match="does not record writing it"):
        dpm.generate("digits-exact", 8, other, batch=4, steps=5, merge=True, progress=False)
    assert (other / "samples.npz").read_bytes() == b"mine"


GENERATE = [sys.executable, "-m", "dpmsolver", "generate", "--quiet", "--model", "digits-exact"]


# The CLI's job below, in Python: many small shards, so that a second run meets it.
SLOW: dict[str, Any] = dict(batch=2, steps=200, skip_type="logSNR", progress=False)


def test_two_runs_of_one_job_into_one_folder(tmp_path: Path) -> None:
    """The second run says clearly that the folder is busy, touches nothing, and the
    first finishes as if alone; a lock left by a process that is gone is taken over."""
    out = tmp_path / "job"
    job = ["--num-samples", "64", "--batch", "2", "--steps", "200", "--out", str(out)]
    first = subprocess.Popen(
        [*GENERATE, *job, "--merge"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120
    lock = out / ".dpmsolver-generate.lock"
    while not list(out.glob("shard-*.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lock.exists()
    with pytest.raises(ValueError, match=r"is busy: another generate \(pid \d+"):
        dpm.generate("digits-exact", 64, out, merge=True, **SLOW)
    assert not list(out.glob(f".dpmsolver-tmp-{os.getpid()}-*"))  # it wrote nothing
    log, _ = first.communicate(timeout=300)
    assert first.returncode == 0, log
    assert not lock.exists() and not list(out.glob(".dpmsolver-tmp-*"))
    alone = tmp_path / "alone"
    dpm.generate("digits-exact", 64, alone, merge=True, **SLOW)
    assert (out / "samples.npz").read_bytes() == (alone / "samples.npz").read_bytes()
    # A lock whose process has ended (a killed run) is stale: the next run takes it over.
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    lock.write_text(
        json.dumps({"pid": int(ended.stdout), "host": socket.gethostname(), "start": None})
    )
    result = dpm.generate("digits-exact", 64, out, **SLOW)
    assert result.generated == {} and not lock.exists()
    # One held on another machine (a shared file system) cannot be checked: busy.
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "start": None}))
    with pytest.raises(ValueError, match="is busy"):
        dpm.generate("digits-exact", 64, out, **SLOW)
    assert lock.exists()
    # An empty lock is one being written by a run that has just created it: busy; only an
    # old one is taken to be torn by a crash, and taken over.
    lock.write_text("")
    with pytest.raises(ValueError, match="is busy: another generate is taking its lock"):
        dpm.generate("digits-exact", 64, out, **SLOW)
    old = time.time() - 60
    os.utime(lock, (old, old))
    assert dpm.generate("digits-exact", 64, out, **SLOW).generated == {}
    assert not lock.exists()


def halving(x: torch.Tensor, *args: Any) -> torch.Tensor:
    """A network that changes its input in place (the hostile probe's)."""
    out = 0.1 * x.clone()
    x.mul_(0.5)
    return out


@pytest.mark.parametrize("face", ["native", "official", "k-diffusion", "compiled-input"])
def test_a_model_that_changes_its_input_is_caught(face: str) -> None:
    """Raised at the first call, naming the step and the time in the caller's units; the
    caller's x is never changed."""
    x = X.clone()
    if face == "native":
        run = lambda: dpm.sample(dpm.Denoiser(halving, SCHEDULE), x, steps=5)  # noqa: E731
        when = r"step 0 \(t=1\)"
    elif face == "official":
        ns = dpm.NoiseScheduleVP("discrete", betas=torch.linspace(1e-4, 0.02, 1000))
        solver = dpm.DPM_Solver(dpm.model_wrapper(halving, ns), ns)
        x = X.float()
        run = lambda: solver.sample(x, steps=5)  # noqa: E731
        when = r"step 0 \(t=1\)"
    elif face == "k-diffusion":
        x = XK * 10.0
        run = lambda: kd.sample_dpmpp_2m(halving, x, KARRAS, disable=True)  # noqa: E731
        when = r"step 0 \(sigma=10\)"
    else:  # the caller's tensor is safe even where the check cannot run
        sampler = dpm.Sampler(dpm.Denoiser(halving, SCHEDULE), steps=3)
        before = x.clone()
        with torch.inference_mode():
            inference_x = x.clone()
            sampler(inference_x)
            assert torch.equal(inference_x, before)
        return
    before = x.clone()
    with pytest.raises(dpm.ModelOutputError, match=f"changed its input x in place at {when}"):
        run()
    assert torch.equal(x, before)


def test_work_is_bounded_before_it_starts(tmp_path: Path) -> None:
    """What cannot be meant is refused at once, with the limit and why."""
    from dpmsolver.diffusers import DPMSolverScheduler

    with pytest.raises(ValueError, match=r"max_calls=3500 is below the least this search costs"):
        dpm.optimize_solver(MODEL, 10**6, pilots=4)
    with pytest.raises(ValueError, match=r"max_calls=0 is below the least .* \d+ calls"):
        dpm.optimize_solver(MODEL, 4, pilots=4, max_calls=0)
    with pytest.raises(
        ValueError, match=r"nfe=1000000 needs 1000000 steps, more than candidates=64"
    ):
        dpm.optimize_time_grid(MODEL, 10**6, shape=(1, 8, 8))
    huge = 10**9
    with pytest.raises(ValueError, match=r"batch=1000000000: .* GiB .* lower batch"):
        dpm.generate("digits-exact", huge, tmp_path / "g", batch=huge, progress=False)
    assert not (tmp_path / "g").exists()
    proc = subprocess.run(
        [*GENERATE, "--num", str(huge), "--batch", str(huge), "--out", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        proc.returncode == 2
        and "--batch=1000000000" in proc.stderr
        and "lower --batch" in proc.stderr
    )
    scheduler = DPMSolverScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    )
    with pytest.raises(ValueError, match=r"num_inference_steps=200000 is more than 100000"):
        scheduler.set_timesteps(200000)
    with pytest.raises(ValueError, match=r"sigmas has 1000000 entries; at most 100002"):
        kd.sample_dpmpp_2m(denoiser, XK, torch.linspace(10.0, 0.0, 10**6), disable=True)
