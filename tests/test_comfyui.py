"""dpmsolver.comfyui through ComfyUI's own machinery.

With COMFYUI_DIR naming a ComfyUI checkout, the tests import its real comfy.samplers
(torchvision, which ComfyUI imports for models these tests do not use, is stubbed when its
wheel cannot load; ComfyUI runs with --cpu); otherwise they run against
tests/comfy_standin, a stand-in of only the surface the node pack uses. The mode is in
every test id: [real-comfyui] or [stand-in].
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, ClassVar
from unittest import mock

import pytest
import torch

import dpmsolver as dpm
from dpmsolver.models import load_digits_gmm

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
MODE = "real-comfyui" if COMFYUI_DIR else "stand-in"
STANDIN = Path(__file__).resolve().parent / "comfy_standin"


def _stub(name: str) -> None:
    module = mock.MagicMock(name=name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = []
    sys.modules[name] = module


@pytest.fixture(scope="module", params=[MODE])
def comfy(request: pytest.FixtureRequest) -> SimpleNamespace:
    """ComfyUI's modules (real or the stand-in), with the original lists copied before
    dpmsolver.comfyui registers ours."""
    root = COMFYUI_DIR or str(STANDIN)
    sys.path.insert(0, root)
    if COMFYUI_DIR:
        for name in ("torchvision", "torchvision.transforms"):
            try:
                importlib.import_module(name)
            except Exception:  # a CUDA wheel on a CPU torch: only imported by ComfyUI
                _stub(name)
        from comfy.cli_args import args

        args.cpu = True
    samplers = importlib.import_module("comfy.samplers")
    before = SimpleNamespace(
        samplers=list(samplers.SAMPLER_NAMES),
        schedulers=list(samplers.SCHEDULER_HANDLERS),
    )
    pack = importlib.import_module("dpmsolver.comfyui")
    return SimpleNamespace(
        samplers=samplers,
        k_sampling=importlib.import_module("comfy.k_diffusion.sampling"),
        model_sampling=importlib.import_module("comfy.model_sampling"),
        pack=pack,
        before=before,
        real=bool(COMFYUI_DIR),
    )


def test_importing_the_pack_registers_ours_and_keeps_comfyuis(comfy: SimpleNamespace) -> None:
    samplers, pack = comfy.samplers, comfy.pack
    names = list(samplers.SAMPLER_NAMES)
    assert names[: len(comfy.before.samplers)] == comfy.before.samplers
    assert [n for n in names if n not in comfy.before.samplers] == list(pack.SAMPLERS)
    assert set(comfy.before.schedulers) < set(samplers.SCHEDULER_HANDLERS)
    assert set(pack.GRIDS) <= set(samplers.SCHEDULER_HANDLERS)
    for name in pack.SAMPLERS:
        assert callable(getattr(comfy.k_sampling, f"sample_{name}"))
    assert set(pack.SAMPLERS) == set(PROMISED)  # each is run against its promised options
    pack.register()  # again: nothing twice
    assert list(samplers.SAMPLER_NAMES) == names
    if comfy.real:  # the KSampler node's inputs are these lists (the same objects)
        ksampler = samplers.KSampler
        assert ksampler.SAMPLERS is samplers.SAMPLER_NAMES
        assert set(pack.SAMPLERS) <= set(ksampler.SAMPLERS)
        assert set(pack.GRIDS) <= set(ksampler.SCHEDULERS)


# -- a model as ComfyUI's samplers see it ------------------------------------------------------


class Guider:
    """What KSAMPLER.sample gets as model_wrap (ComfyUI's CFGGuider): called with
    (x, sigma, model_options, seed), returns the denoised prediction of the exact digits
    mixture; `.inner_model.model_sampling` is the model's sampling. Counts its calls."""

    def __init__(self, model_sampling: Any, flow: bool) -> None:
        self.inner_model = SimpleNamespace(model_sampling=model_sampling)
        self.flow, self.calls = flow, 0
        self.gmm = load_digits_gmm()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        self.calls += 1
        s = sigma.double().reshape(-1)[0]
        if self.flow:
            alpha, scale = 1.0 - s, 1.0
        else:  # VE scaling x = x0 + sigma eps
            alpha, scale = 1.0 / (1 + s * s) ** 0.5, (1 + s * s) ** 0.5
        out = self.gmm.posterior_mean(
            x.double() / scale, max(float(alpha), 1e-12), float(s) / scale
        )
        return out.to(x.dtype)


def model_samplings(comfy: SimpleNamespace) -> dict[str, Any]:
    ms = comfy.model_sampling
    if comfy.real:

        class VP(ms.ModelSamplingDiscrete, ms.EPS):
            pass

        class Flow(ms.ModelSamplingDiscreteFlow, ms.CONST):
            pass

        flow = Flow()
        flow.set_parameters(shift=3.0)
        return {"vp": VP(), "flow": flow}
    return {"vp": ms.ModelSamplingDiscrete(), "flow": ms.ModelSamplingDiscreteFlow(3.0)}


def noise(batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(0))


# What each KSampler entry promises, written here independently of the pack's table.
PROMISED: dict[str, dict[str, Any]] = {
    "dpmsolver_2m": dict(order=2),
    "dpmsolver_3m": dict(order=3),
    "dpmsolver_2m_unic": dict(order=2, corrector="all"),
    "dpmsolver_3m_unic": dict(order=3, corrector="all"),
    "dpmsolver_ipndm": dict(order=4, algorithm="ipndm"),
    "dpmsolver_3m_sde": dict(order=3, eta=1.0),
    "dpmsolver_3m_unic_afs": dict(order=3, corrector="all", analytic_first_step=True),
    "dpmsolver_ipndm_afs": dict(order=4, algorithm="ipndm", analytic_first_step=True),
}


@pytest.mark.parametrize("kind", ["vp", "flow"])
@pytest.mark.parametrize("name", list(PROMISED))
def test_each_sampler_runs_through_ksampler_as_the_k_diffusion_face(
    comfy: SimpleNamespace, name: str, kind: str
) -> None:
    """KSampler's path (ksampler(name).sample, ComfyUI's noise scaling around the sampler
    function) with the promised calls, equal to dpmsolver.k_diffusion's run of the same
    options on the same scaled noise (1e-6)."""
    from dpmsolver.k_diffusion import sample_dpm_solver

    ms = model_samplings(comfy)[kind]
    sigmas = comfy.samplers.calculate_sigmas(ms, "dpmsolver_time_uniform", 8)
    guider = Guider(ms, kind == "flow")
    x = noise()
    latent = torch.zeros_like(x)
    extra = {"seed": 3, "model_options": {}}
    out = comfy.samplers.ksampler(name).sample(guider, sigmas, dict(extra), None, x, latent)
    # One call per sigma (the last is the denoised), none at the first with the analytic
    # first step.
    assert guider.calls == len(sigmas) - 1 - name.endswith("_afs")
    reference = Guider(ms, kind == "flow")
    start = ms.noise_scaling(sigmas[0], x, latent, True)  # max_denoise: from the top sigma
    wrapped = lambda z, s, **kw: reference(z, s, **kw)  # noqa: E731
    wrapped.inner_model = reference  # type: ignore[attr-defined]
    expected = sample_dpm_solver(
        wrapped, start, sigmas, dict(extra), disable=True, **PROMISED[name]
    )
    expected = ms.inverse_noise_scaling(sigmas[-1], expected)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_the_2m_sampler_is_comfyuis_dpmpp_2m(comfy: SimpleNamespace) -> None:
    """dpmsolver_2m and ComfyUI's own dpmpp_2m on karras sigmas of a VP model: the same
    method, once ours keeps its order to the end as dpmpp_2m does (lower_order_final=False;
    only in the real ComfyUI, which has the sampler)."""
    if not comfy.real:
        pytest.skip("the stand-in has no ComfyUI sampler to compare with")
    ms = model_samplings(comfy)["vp"]
    sigmas = comfy.samplers.calculate_sigmas(ms, "karras", 10)
    x, latent = noise(), torch.zeros(4, 1, 8, 8)
    ours = comfy.samplers.ksampler("dpmsolver_2m", {"lower_order_final": False})
    theirs = comfy.samplers.ksampler("dpmpp_2m")
    runs = [s.sample(Guider(ms, False), sigmas, {}, None, x, latent) for s in (ours, theirs)]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "grid", ["dpmsolver_logsnr", "dpmsolver_time_uniform", "dpmsolver_time_quadratic"]
)
def test_our_grids_are_comfyui_schedulers(comfy: SimpleNamespace, grid: str) -> None:
    """calculate_sigmas with our scheduler names: steps sigmas, descending, then 0;
    VP models: our grid on the discrete schedule of the model's table, as sigma / alpha;
    flow models: from pure noise (time grids) through the model's shift."""
    skip = comfy.pack.GRIDS[grid]
    for kind, ms in model_samplings(comfy).items():
        sigmas = comfy.samplers.calculate_sigmas(ms, grid, 10)
        assert sigmas.shape == (11,) and float(sigmas[-1]) == 0.0
        assert bool((sigmas[:-1].diff() < 0).all())
        if kind == "vp":
            table = ms.sigmas.double()
            schedule = dpm.VPSchedule.discrete(alphas_cumprod=1 / (1 + table**2))
            times = dpm.time_grid(schedule, skip, 1.0, schedule.t_min, 9)
            want = [lv.sigma / lv.alpha for lv in schedule.levels(times)]
            torch.testing.assert_close(
                sigmas[:-1].double(), torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=0
            )
        elif skip != "logSNR":
            assert float(sigmas[0]) == 1.0
            assert float(sigmas[-2]) == pytest.approx(float(ms.sigma_min), rel=1e-5)
        else:  # uniform in lambda = log((1 - s) / s), from just below pure noise
            s = sigmas[:-1].double()
            steps = torch.log((1 - s) / s).diff()
            torch.testing.assert_close(steps, steps.mean().expand(9), rtol=1e-4, atol=0)
            assert float(sigmas[0]) < 1.0


class VGuider(Guider):
    """A v-prediction model as ComfyUI's BaseModel.apply_model runs it: the network sees
    model_sampling.calculate_input(sigma, x) and predicts v = alpha eps - sigma_vp x0 of the
    digits mixture; the model sampling's calculate_denoised turns v into the denoised
    prediction (in float64). Through V_PREDICTION's that is the mixture's x0 (the plain
    Guider's), through EPS's not."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        self.calls += 1
        ms = self.inner_model.model_sampling
        s, z = sigma.double(), x.double()
        xc = ms.calculate_input(s, z)  # alpha x0 + sigma_vp eps
        level = float(s.reshape(-1)[0])
        alpha = 1.0 / (1.0 + level * level) ** 0.5
        sigma_vp = level * alpha
        x0 = self.gmm.posterior_mean(xc, alpha, sigma_vp)
        v = alpha * (xc - alpha * x0) / sigma_vp - sigma_vp * x0
        return ms.calculate_denoised(s, v, z).to(x.dtype)


def v_model_sampling(comfy: SimpleNamespace) -> Any:
    """A V-prediction model's sampling (SD 2.x-v): real ComfyUI's own composition of
    ModelSamplingDiscrete with V_PREDICTION (model_base.model_sampling), or the stand-in's
    classes composed the same way."""
    ms = comfy.model_sampling
    if comfy.real:
        import comfy.model_base as model_base  # `as`: keeps `comfy`, the fixture

        return model_base.model_sampling(None, model_base.ModelType.V_PREDICTION)

    class V(ms.ModelSamplingDiscrete, ms.V_PREDICTION):
        pass

    return V()


@pytest.mark.parametrize("name", ["dpmsolver_2m", "dpmsolver_ipndm"])
def test_v_prediction_models_sample_through_ksampler(comfy: SimpleNamespace, name: str) -> None:
    """A V-prediction model (ModelSamplingDiscrete with V_PREDICTION): not a flow model;
    our grids give it the sigmas of the EPS model with the same table; KSampler with a
    v-predicting network equals dpmsolver.k_diffusion's run on the mixture's x0 prediction
    (1e-6), one call per sigma, and the same network read as EPS gives another sample."""
    from dpmsolver.comfyui.samplers import is_flow
    from dpmsolver.k_diffusion import sample_dpm_solver

    v_ms, eps_ms = v_model_sampling(comfy), model_samplings(comfy)["vp"]
    if comfy.real:  # ComfyUI's own composition (the stand-in's is made above)
        assert comfy.model_sampling.V_PREDICTION in type(v_ms).__mro__
        assert torch.equal(v_ms.sigmas, eps_ms.sigmas)
    assert not is_flow(v_ms)
    for grid in comfy.pack.GRIDS:
        sigmas = comfy.samplers.calculate_sigmas(v_ms, grid, 10)
        assert torch.equal(sigmas, comfy.samplers.calculate_sigmas(eps_ms, grid, 10)), grid
    model = SimpleNamespace(get_model_object=lambda name: v_ms)
    (node_sigmas,) = comfy.pack.NODE_CLASS_MAPPINGS["DPMSolverSigmas"]().get_sigmas(
        model, "logSNR", 8
    )
    sigmas = comfy.samplers.calculate_sigmas(v_ms, "dpmsolver_logsnr", 8)
    assert torch.equal(node_sigmas, sigmas)
    assert float(sigmas[0]) == pytest.approx(float(v_ms.sigma_max), rel=1e-6)  # max_denoise
    x, latent = noise(), torch.zeros(4, 1, 8, 8)
    extra = {"seed": 3, "model_options": {}}
    guider = VGuider(v_ms, False)
    out = comfy.samplers.ksampler(name).sample(guider, sigmas, dict(extra), None, x, latent)
    assert guider.calls == len(sigmas) - 1
    reference = Guider(v_ms, False)  # the mixture's x0 itself, no v
    wrapped = lambda z, s, **kw: reference(z, s, **kw)  # noqa: E731
    start = x * (1 + sigmas[0] ** 2) ** 0.5  # EPS's (and V's) noise scaling from the top
    expected = sample_dpm_solver(
        wrapped, start, sigmas, dict(extra), disable=True, model_sampling="ve", **PROMISED[name]
    )
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    # The network's v read as an EPS model's output: another denoiser, another sample.
    as_eps = comfy.samplers.ksampler(name).sample(
        VGuider(eps_ms, False), sigmas, dict(extra), None, x, latent
    )
    assert float((as_eps - out).abs().max()) > 0.1


class GuidedGuider(Guider):
    """ComfyUI's CFGGuider as the sampler sees it (VP): the mixture's prediction as the
    unconditional one, the condition pushing it, guidance at `scale`, then the post-CFG
    functions of model_options; called without model_options (a plain k-diffusion model)
    it keeps the unconditional prediction in `uncond_denoised` instead."""

    def __init__(self, model_sampling: Any, scale: float) -> None:
        super().__init__(model_sampling, False)
        self.scale = scale

    def __call__(
        self, x: torch.Tensor, sigma: torch.Tensor, model_options: Any = None, **_: Any
    ) -> torch.Tensor:
        d_u = super().__call__(x, sigma)
        s = float(sigma.reshape(-1)[0])
        d_c = d_u + 0.3 * torch.tanh(x / (1 + s * s) ** 0.5)
        denoised = d_u + self.scale * (d_c - d_u)
        if model_options is None:
            self.uncond_denoised = d_u
        for fn in (model_options or {}).get("sampler_post_cfg_function", []):
            denoised = fn({"denoised": denoised, "cond_denoised": d_c, "uncond_denoised": d_u})
        return denoised


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_the_sampler_nodes_cfg_pp_reads_comfyuis_post_cfg_hook(
    comfy: SimpleNamespace, scale: float
) -> None:
    """The DPM-Solver node with cfg_pp=True through KSAMPLER (both modes): the
    unconditional prediction comes from the post-CFG hook it adds to model_options (the
    caller's options untouched), and the run equals ComfyUI's CFG++ 2M formula re-derived
    in test_k_diffusion_sde (1e-5) on 16 karras sigmas, unlike cfg_pp=False."""
    from test_k_diffusion_sde import comfy_2m_cfg_pp

    ms = model_samplings(comfy)["vp"]
    sigmas = comfy.samplers.calculate_sigmas(ms, "karras", 16)
    node = comfy.pack.NODE_CLASS_MAPPINGS["DPMSolverSampler"]()
    options = dict(
        algorithm="dpmsolver++", order=2, method="multistep", corrector="off",
        analytic_first_step=False, eta=0.0, s_noise=1.0,
    )  # fmt: skip
    x, latent = noise(), torch.zeros(4, 1, 8, 8)
    runs = {}
    for cfg_pp in (True, False):
        (sampler,) = node.get_sampler(cfg_pp=cfg_pp, **options)
        model_options: dict[str, Any] = {}
        extra = {"model_options": model_options, "seed": 0}
        runs[cfg_pp] = sampler.sample(GuidedGuider(ms, scale), sigmas, extra, None, x, latent)
        assert model_options == {}
    start = ms.noise_scaling(sigmas[0], x, latent, True)
    expected = comfy_2m_cfg_pp(GuidedGuider(ms, scale), start, sigmas.tolist(), {})
    torch.testing.assert_close(runs[True], expected, rtol=1e-5, atol=1e-5)
    assert float((runs[True] - runs[False]).abs().max()) > 0.01


def test_the_sampler_node_and_the_sigmas_node(comfy: SimpleNamespace) -> None:
    nodes = comfy.pack.NODE_CLASS_MAPPINGS
    (sampler,) = nodes["DPMSolverSampler"]().get_sampler(
        algorithm="dpmsolver++", order=3, method="multistep", corrector="all",
        analytic_first_step=True, eta=0.0, s_noise=1.0, cfg_pp=False,
    )  # fmt: skip
    ms = model_samplings(comfy)["vp"]
    model = SimpleNamespace(get_model_object=lambda name: ms)
    (sigmas,) = nodes["DPMSolverSigmas"]().get_sigmas(model, "logSNR", 6)
    assert sigmas.shape == (7,)
    guider = Guider(ms, False)
    sampler.sample(guider, sigmas, {}, None, noise(), torch.zeros(4, 1, 8, 8))
    assert guider.calls == 6 - 1  # 6 calls, one fewer with the analytic first step
    with pytest.raises(ValueError, match="order"):
        nodes["DPMSolverSampler"]().get_sampler(
            algorithm="dpmsolver++", order=4, method="multistep", corrector="off",
            analytic_first_step=False, eta=0.0, s_noise=1.0, cfg_pp=False,
        )  # fmt: skip
    # s_noise scales the SDE's noise: at 0 the seed no longer matters.
    runs = {}
    for s_noise in (0.0, 1.0):
        (sde,) = nodes["DPMSolverSampler"]().get_sampler(
            algorithm="dpmsolver++", order=2, method="multistep", corrector="off",
            analytic_first_step=False, eta=1.0, s_noise=s_noise, cfg_pp=False,
        )  # fmt: skip
        for seed in (1, 2):
            latent = torch.zeros(4, 1, 8, 8)
            runs[s_noise, seed] = sde.sample(
                Guider(ms, False), sigmas, {"seed": seed}, None, noise(), latent
            )
    assert torch.equal(runs[0.0, 1], runs[0.0, 2])
    assert not torch.equal(runs[1.0, 1], runs[1.0, 2])


def test_a_missing_comfyui_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from dpmsolver.comfyui import surface

    monkeypatch.setattr(surface, "_FOUND", [])
    monkeypatch.setitem(sys.modules, "comfy.samplers", None)  # as if absent
    with pytest.raises(ImportError, match=r"dpmsolver\.comfyui runs inside ComfyUI"):
        surface.comfy()
    old = ModuleType("comfy.samplers")  # a ComfyUI without the scheduler registry
    monkeypatch.setitem(sys.modules, "comfy.samplers", old)
    with pytest.raises(ImportError, match="SCHEDULER_HANDLERS"):
        surface.comfy()


# -- the tune node -----------------------------------------------------------------------------


def test_tuning_inside_a_sampler_call(comfy: SimpleNamespace) -> None:
    """The tune node's core: a KSAMPLER whose function tunes on its batch (the pilots,
    noised by ComfyUI) instead of sampling; the result runs through KSAMPLER with its own
    sigmas in `nfe` calls and equals the k-diffusion face's run of the tuned solver."""
    from dpmsolver.comfyui.samplers import sampler_function
    from dpmsolver.comfyui.tune import MAX_EVALUATIONS, max_calls_for, tune_in_sampler
    from dpmsolver.k_diffusion import sample_tuned, tuned_sigmas

    for kind, ms in model_samplings(comfy).items():
        found: list[dpm.TunedSolver] = []
        tuner = comfy.samplers.KSAMPLER(
            tune_in_sampler,
            extra_options=dict(
                nfe=4, found=found, max_calls=max_calls_for(8), families=["dpm++2m"], iterations=1
            ),
        )
        sigmas = torch.tensor([float(ms.sigma_max), float(ms.sigma_min), 0.0])
        pilots = noise(8)
        tuner.sample(Guider(ms, kind == "flow"), sigmas, {}, None, pilots, torch.zeros_like(pilots))
        (tuned,) = found
        assert tuned.pilots + tuned.held_out == 8
        assert 0 < tuned.model_calls["evaluations"] <= MAX_EVALUATIONS
        grid = tuned_sigmas(tuned, "flow" if kind == "flow" else "ve").float()
        run = comfy.samplers.KSAMPLER(sampler_function(dict(solver=tuned)))
        guider = Guider(ms, kind == "flow")
        x, latent = noise(), torch.zeros(4, 1, 8, 8)
        out = run.sample(guider, grid, {}, None, x, latent)
        assert guider.calls == tuned.nfe == 4
        start = ms.noise_scaling(grid[0], x, latent, True)
        reference = Guider(ms, kind == "flow")
        wrapped = functools.partial(reference.__call__)
        wrapped.inner_model = reference  # type: ignore[attr-defined]
        expected = ms.inverse_noise_scaling(
            grid[-1], sample_tuned(wrapped, start, grid, solver=tuned, disable=True)
        )
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_the_cache_key_follows_what_the_tuning_depends_on(tmp_path: Path) -> None:
    from dpmsolver.comfyui.tune import cache_path, max_calls_for

    parts = dict(model={"w": [[1, 2]]}, positive=[[torch.ones(2, 3), {}]], cfg=7.0, steps=8)
    path = cache_path(parts, tmp_path)
    assert path.parent == tmp_path and path == cache_path(dict(parts), tmp_path)
    for change in (dict(cfg=7.5), dict(steps=9), dict(positive=[[2 * torch.ones(2, 3), {}]])):
        assert cache_path({**parts, **change}, tmp_path) != path
    # A tuning on 16 pilots stays within 50000 evaluations.
    assert (3 * 64 * 4 + 64) * 16 + max_calls_for(16) * 12 <= 50_000


def test_the_cache_key_tells_two_fine_tunes_of_one_model_apart(
    comfy: SimpleNamespace, tmp_path: Path
) -> None:
    """Same class, names and shapes, different weights: different cache files."""
    from dpmsolver.comfyui.nodes import model_identity
    from dpmsolver.comfyui.tune import cache_path

    sampling = SimpleNamespace(sigma_min=0.03, sigma_max=14.6)

    def patched(net: torch.nn.Module) -> SimpleNamespace:
        return SimpleNamespace(model=net, get_model_object=lambda name: sampling)

    base = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    tuned = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    tuned.load_state_dict(base.state_dict())
    assert cache_path(dict(model=model_identity(patched(base))), tmp_path) == cache_path(
        dict(model=model_identity(patched(tuned))), tmp_path
    )
    with torch.no_grad():
        tuned[1].weight[0, 3] += 0.01  # the last value of a small tensor
    assert cache_path(dict(model=model_identity(patched(base))), tmp_path) != cache_path(
        dict(model=model_identity(patched(tuned))), tmp_path
    )


def test_the_cache_folder_is_the_variable_then_comfyuis_user_folder_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cache_path without a folder: $DPMSOLVER_COMFYUI_CACHE when set (ComfyUI's
    folder_paths loaded or not), else ComfyUI's user folder / dpmsolver when folder_paths is
    loaded (and has get_user_directory), else ~/.cache/dpmsolver/comfyui; a given folder
    before all of them."""
    from dpmsolver.comfyui.tune import cache_path

    parts = dict(cfg=7.0, steps=8)
    name = cache_path(parts, tmp_path).name
    assert len(name) == len("tuned-.json") + 24 and name.startswith("tuned-")
    folder_paths = ModuleType("folder_paths")
    folder_paths.get_user_directory = lambda: str(tmp_path / "user")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DPMSOLVER_COMFYUI_CACHE", str(tmp_path / "variable"))
    assert cache_path(parts) == tmp_path / "variable" / name
    assert cache_path(parts, tmp_path / "given") == tmp_path / "given" / name
    monkeypatch.delenv("DPMSOLVER_COMFYUI_CACHE")
    assert cache_path(parts) == tmp_path / "user" / "dpmsolver" / name
    # A folder_paths without get_user_directory (not ComfyUI's): the home folder.
    monkeypatch.setitem(sys.modules, "folder_paths", ModuleType("folder_paths"))
    assert cache_path(parts) == tmp_path / "home" / ".cache" / "dpmsolver" / "comfyui" / name
    monkeypatch.delitem(sys.modules, "folder_paths")
    assert cache_path(parts) == tmp_path / "home" / ".cache" / "dpmsolver" / "comfyui" / name


def test_the_tune_nodes_largest_pilots_leave_room_for_the_search(comfy: SimpleNamespace) -> None:
    """At MAX_PILOTS the search budget the node gives still covers the screening at every
    step count it offers: the search goes on to the model (which stops it here) instead of
    refusing max_calls; 64 pilots (the old cap) are refused at the most steps."""
    from dpmsolver.comfyui.nodes import MAX_PILOTS, MAX_TUNED_STEPS
    from dpmsolver.comfyui.tune import max_calls_for

    class ModelCalledError(Exception):
        pass

    class Stops:
        schedule = dpm.models.load("digits-exact").schedule
        sample_shape = (1, 8, 8)

        def __call__(self, *args: Any) -> torch.Tensor:
            raise ModelCalledError

    for steps in range(2, MAX_TUNED_STEPS + 1):
        with pytest.raises(ModelCalledError):
            dpm.optimize_solver(
                Stops(), steps, pilots=MAX_PILOTS, max_calls=max_calls_for(MAX_PILOTS)
            )
    with pytest.raises(ValueError, match="is below the least this search costs"):
        dpm.optimize_solver(Stops(), MAX_TUNED_STEPS, pilots=64, max_calls=max_calls_for(64))


def comfyui_model(unet: type[torch.nn.Module]) -> Any:
    """Real ComfyUI only: a BaseModel (SD 1.5's latent format) whose network is `unet`, in a
    ModelPatcher on the CPU, as a checkpoint loader gives it."""
    # `as` names: a plain `import comfy.x` would rebind `comfy`, the fixture, in its callers.
    import comfy.latent_formats as latent_formats
    import comfy.model_base as model_base
    import comfy.model_patcher as model_patcher
    import comfy.supported_models_base as supported_models_base

    class Config(supported_models_base.BASE):
        unet_config: ClassVar[dict[str, Any]] = {}
        latent_format = latent_formats.SD15

    base = model_base.BaseModel(Config({}), unet_model=unet)
    cpu = torch.device("cpu")
    return model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)


def test_the_tune_node_in_comfyui(comfy: SimpleNamespace, tmp_path: Path, monkeypatch: Any) -> None:
    """The node on a tiny model in ComfyUI's own ModelPatcher and CFGGuider: its SAMPLER +
    SIGMAS take `steps` model calls through SamplerCustom's path to a finite sample; a second
    tuning reads the cache (no model call)."""
    if not comfy.real:
        pytest.skip("needs ComfyUI's CFGGuider and ModelPatcher (the stand-in has neither)")
    import comfy.samplers as comfy_samplers  # `as`: keeps `comfy`, the fixture

    calls: list[int] = []

    class TinyUNet(torch.nn.Module):
        def __init__(self, **_: Any) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 1)
            self.dtype = torch.float32

        def forward(self, x: torch.Tensor, timesteps: torch.Tensor, **_: Any) -> torch.Tensor:
            calls.append(1)
            return 0.1 * x + 0.01 * self.conv(x)

    model = comfyui_model(TinyUNet)
    cond = [[torch.zeros(1, 77, 768), {}]]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    monkeypatch.setenv("DPMSOLVER_COMFYUI_CACHE", str(tmp_path))
    node = comfy.pack.NODE_CLASS_MAPPINGS["DPMSolverTuneSampler"]()
    _, sigmas = node.tune(model, cond, cond, 3.0, latent, 4, 8, 0)
    assert len(list(tmp_path.glob("tuned-*.json"))) == 1 and calls
    calls.clear()
    again, sigmas_again = node.tune(model, cond, cond, 3.0, latent, 4, 8, 0)
    assert not calls and torch.equal(sigmas, sigmas_again)  # read from the cache
    guider = comfy_samplers.CFGGuider(model)
    guider.set_conds(cond, cond)
    guider.set_cfg(3.0)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    out = guider.sample(x, latent["samples"], again, sigmas, seed=1, disable_pbar=True)
    assert len(calls) == 4  # one UNet call per step: ComfyUI batches cond and uncond
    assert bool(torch.isfinite(out).all())


def test_the_sampler_nodes_cfg_pp_in_comfyuis_cfg_guider(comfy: SimpleNamespace) -> None:
    """The DPMSolverSampler node with cfg_pp=True (order 2) in ComfyUI's own CFGGuider and
    ModelPatcher, on a tiny model whose prediction depends on the conditioning: it reads the
    unconditional prediction through ComfyUI's post-CFG hook (one UNet call on the batched
    cond and uncond per sigma, cfg 1 included) and equals ComfyUI's own dpmpp_2m_cfg_pp
    (1e-5); it differs from cfg_pp=False, except at cfg 0, where the guided prediction is
    the unconditional one and CFG++ is its plain solver (1e-5: float32 rounding)."""
    if not comfy.real:
        pytest.skip("needs ComfyUI's CFGGuider, ModelPatcher and dpmpp_2m_cfg_pp (not stood in)")
    import comfy.samplers as comfy_samplers  # `as`: keeps `comfy`, the fixture

    batches: list[int] = []

    class TinyUNet(torch.nn.Module):
        def __init__(self, **_: Any) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 1)
            with torch.no_grad():  # fixed weights: a permutation of the channels
                self.conv.weight.copy_(torch.eye(4).flip(0).reshape(4, 4, 1, 1))
                self.conv.bias.zero_()
            self.dtype = torch.float32

        def forward(
            self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, **_: Any
        ) -> torch.Tensor:
            batches.append(int(x.shape[0]))
            # eps of data N(mean, 1) (x = alpha x0 + sigma_vp eps), mean 0.5 for the
            # positive conditioning, 0 for the negative, with a nonlinear term.
            sigma = model.model.model_sampling.sigma(timesteps).reshape(-1, 1, 1, 1)
            alpha = (1 + sigma**2) ** -0.5
            mean = 0.5 * context.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
            return sigma * alpha * (x - alpha * mean + 0.1 * torch.tanh(self.conv(x)))

    model = comfyui_model(TinyUNet)
    positive = [[torch.ones(1, 77, 768), {}]]
    negative = [[torch.zeros(1, 77, 768), {}]]
    # 16 steps: no lowered final order (below 15 steps), as dpmpp_2m_cfg_pp never lowers it.
    sigmas = comfy_samplers.calculate_sigmas(model.get_model_object("model_sampling"), "karras", 16)

    def run(sampler: Any, cfg: float) -> tuple[torch.Tensor, list[int]]:
        guider = comfy_samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        batches.clear()
        x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        latent = torch.zeros(1, 4, 8, 8)
        out = guider.sample(x, latent, sampler, sigmas, seed=1, disable_pbar=True)
        assert bool(torch.isfinite(out).all())
        return out, list(batches)

    node = comfy.pack.NODE_CLASS_MAPPINGS["DPMSolverSampler"]()
    options = dict(
        algorithm="dpmsolver++", order=2, method="multistep", corrector="off",
        analytic_first_step=False, eta=0.0, s_noise=1.0,
    )  # fmt: skip
    (pp,) = node.get_sampler(cfg_pp=True, **options)
    (plain,) = node.get_sampler(cfg_pp=False, **options)
    theirs = comfy_samplers.ksampler("dpmpp_2m_cfg_pp")
    for cfg in (1.0, 3.0):
        ours, calls = run(pp, cfg)
        assert calls == [2] * 16  # cond and uncond in one batch, even at cfg 1
        torch.testing.assert_close(ours, run(theirs, cfg)[0], rtol=1e-5, atol=1e-5)
        guided, calls = run(plain, cfg)
        assert calls == ([1] if cfg == 1.0 else [2]) * 16  # ComfyUI's cfg 1 shortcut
        assert float((ours - guided).abs().max()) > 1.0
    # float32 samples of up to ~20 (ComfyUI's latent scaling): rounding of ~1e-5.
    torch.testing.assert_close(run(pp, 0.0)[0], run(plain, 0.0)[0], rtol=1e-5, atol=1e-5)


# -- install ----------------------------------------------------------------------------------


def _load_node_folder(folder: Path) -> ModuleType:
    """Import a custom_nodes folder as ComfyUI's load_custom_node does."""
    spec = importlib.util.spec_from_file_location(f"custom_{folder.name}", folder / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_writes_a_node_folder_comfyui_loads(
    comfy: SimpleNamespace, tmp_path: Path, capsys: Any
) -> None:
    """`dpmsolver comfyui install PATH` writes custom_nodes/dpmsolver, whose import gives
    the pack's mappings; running it again rewrites only its own file."""
    from dpmsolver.cli import main

    (tmp_path / "custom_nodes").mkdir()
    assert main(["comfyui", "install", str(tmp_path)]) == 0
    assert "restart ComfyUI" in capsys.readouterr().out
    folder = tmp_path / "custom_nodes" / "dpmsolver"
    module = _load_node_folder(folder)
    assert module.NODE_CLASS_MAPPINGS is comfy.pack.NODE_CLASS_MAPPINGS
    assert module.NODE_DISPLAY_NAME_MAPPINGS is comfy.pack.NODE_DISPLAY_NAME_MAPPINGS
    text = (folder / "__init__.py").read_text()
    assert main(["comfyui", "install", str(tmp_path)]) == 0
    assert (folder / "__init__.py").read_text() == text
    assert sorted(p.name for p in folder.iterdir()) == ["__init__.py"]  # no temporary left
    # A temporary a killed install left is its own, not the user's.
    from dpmsolver.tools.generation.files import tmp_path as temporary_of

    temporary_of(folder / "__init__.py").write_text("half a file")
    assert main(["comfyui", "install", str(tmp_path)]) == 0


def test_install_refuses_what_is_not_its_own(tmp_path: Path, capsys: Any) -> None:
    from dpmsolver.cli import main

    assert main(["comfyui", "install", str(tmp_path)]) == 2
    assert "not a ComfyUI folder (it has no custom_nodes/)" in capsys.readouterr().err
    folder = tmp_path / "custom_nodes" / "dpmsolver"
    folder.mkdir(parents=True)
    (folder / "nodes.py").write_text("mine\n")
    assert main(["comfyui", "install", str(tmp_path)]) == 2
    assert "holds files this command did not write (nodes.py)" in capsys.readouterr().err
    (folder / "nodes.py").unlink()
    (folder / "__init__.py").write_text("# my own pack\n")
    assert main(["comfyui", "install", str(tmp_path)]) == 2
    assert (folder / "__init__.py").read_text() == "# my own pack\n"  # untouched
    assert main(["comfyui", "install", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    # A temporary file a killed install left beside our own __init__.py is not the user's.
    from dpmsolver.tools.generation.files import TMP_PREFIX

    (folder / "__init__.py").unlink()
    assert main(["comfyui", "install", str(tmp_path)]) == 0
    (folder / f"{TMP_PREFIX}123-__init__.py").write_text("half a file")
    assert main(["comfyui", "install", str(tmp_path)]) == 0
    (folder / "notes.txt").write_text("mine\n")
    assert main(["comfyui", "install", str(tmp_path)]) == 2
    assert "did not write (notes.txt)" in capsys.readouterr().err


def test_the_node_folder_says_how_to_install_dpmsolver(tmp_path: Path) -> None:
    """Where ComfyUI's Python lacks dpmsolver, the folder's import fails with one message
    naming the pip command (ComfyUI reports it and starts without the pack)."""
    from dpmsolver.tools.comfyui_install import install_node_folder

    (tmp_path / "custom_nodes").mkdir()
    target = install_node_folder(tmp_path)
    # -I -S: a Python that sees neither PYTHONPATH nor site-packages, so no dpmsolver.
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import runpy; runpy.run_path({str(target)!r})"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last == (
        "ImportError: the dpmsolver node pack needs dpmsolver in ComfyUI's Python: "
        f"{sys.executable} -m pip install dpmsolver"
    )


def test_the_example_workflow_uses_our_nodes_as_they_are(comfy: SimpleNamespace) -> None:
    """examples/comfyui_workflow.json (saved from ComfyUI's frontend, the docs' screenshot):
    our nodes' widget values are, in order, valid values of their inputs, and its KSampler
    picks a registered sampler and scheduler."""
    path = Path(__file__).resolve().parents[1] / "examples" / "comfyui_workflow.json"
    workflow = json.loads(path.read_text())
    mappings = comfy.pack.NODE_CLASS_MAPPINGS
    ours = [n for n in workflow["nodes"] if n["type"] in mappings]
    assert sorted(n["type"] for n in ours) == sorted(mappings)
    for node in ours:
        required = mappings[node["type"]].INPUT_TYPES()["required"]
        widgets = [(k, v) for k, v in required.items() if v[0] in ("INT", "FLOAT", "BOOLEAN")
                   or isinstance(v[0], list)]  # fmt: skip
        assert len(node["widgets_values"]) == len(widgets), node["type"]
        for (name, spec), value in zip(widgets, node["widgets_values"], strict=True):
            if isinstance(spec[0], list):
                assert value in spec[0], (node["type"], name)
            elif spec[0] == "BOOLEAN":
                assert isinstance(value, bool), (node["type"], name)
            else:
                assert spec[1]["min"] <= value <= spec[1]["max"], (node["type"], name)
    (ksampler,) = [n for n in workflow["nodes"] if n["type"] == "KSampler"]
    sampler, scheduler = ksampler["widgets_values"][4:6]
    assert sampler in comfy.pack.SAMPLERS and sampler in comfy.samplers.SAMPLER_NAMES
    assert scheduler in comfy.pack.GRIDS and scheduler in comfy.samplers.SCHEDULER_HANDLERS
