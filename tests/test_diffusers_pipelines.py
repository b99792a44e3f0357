"""DPMSolverScheduler as a drop-in for diffusers' DPM-Solver++ in real pipelines.

Tiny random-weight pipelines (tests/tiny_pipelines.py, built offline) of Stable Diffusion 1.5
(text-to-image, image-to-image, inpainting), SDXL, DeepFloyd IF stage I, SD3 (text-to-image,
image-to-image), Flux and Wan run with the scheduler config their model family ships, once
with diffusers' DPMSolverMultistepScheduler configured from that config (the reference) and
once with ours, `DPMSolverScheduler.from_config(pipe.scheduler.config)`. Ours must run, give
the reference's output shape, finite values, the same number of network calls at the same
noise levels, and an output close to the reference's.

Closeness is the mean absolute difference of the scheduler's own output: the final latents
(output_type="latent"), for IF the raw pixels (output_type="pt", before the clamp that "np"
applies). Decoded images are a poor measure here: the tiny random VAEs squash almost any
difference (plain Euler and DPM-Solver++ decode to within 1e-5 of each other for Wan).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import tiny_pipelines as tp
from diffusers import DPMSolverMultistepScheduler

# diffusers' schedulers call np.array on tensors (numpy 2 deprecation): not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
STEPS = 10
# How far (in training steps) ours may evaluate the network from the reference's noise levels:
# the VP reference rounds its grid to integer timesteps (ours is exact: <= 0.5 off); Flux
# hands the scheduler FlowMatchEuler's sigmas 1, 0.9, ..., 0.1 where the reference has 0.999,
# 0.8991, ..., 0.0999 (<= 0.61 off after the shift). Flow references truncate sigma * 1000 to
# integers: ours is compared with the reference's exact timesteps instead.
TIMESTEP_TOL = 1.0


class ReferenceDPMSolver(DPMSolverMultistepScheduler):
    """diffusers' DPM-Solver++, plus the `scale_noise` that SD3's img2img pipeline calls.

    FlowMatchEulerDiscreteScheduler.scale_noise(x0, t, noise) = (1 - s) x0 + s noise at the
    sigma s of timestep t (of begin_index once set): with use_flow_sigmas this is exactly
    DPMSolverMultistepScheduler.add_noise, which the pipeline would call by another name.
    """

    def scale_noise(self, sample: torch.Tensor, timestep: Any, noise: torch.Tensor) -> Any:
        return self.add_noise(sample, noise, timestep)


class ExactTimestepReference(ReferenceDPMSolver):
    """The reference with the network evaluated at its exact flow timesteps sigma * 1000
    (diffusers truncates them to integers): what ours does on the same grid."""

    def set_timesteps(self, *args: Any, **kwargs: Any) -> None:
        super().set_timesteps(*args, **kwargs)
        n = self.config.num_train_timesteps
        self.timesteps = (self.sigmas[:-1].double() * n).to(self.timesteps.device)


FLOW = dict(use_flow_sigmas=True, prediction_type="flow_prediction")


@dataclass(frozen=True)
class Case:
    build: Callable[[], tp.Tiny]
    # The reference: DPMSolverMultistepScheduler.from_config(native config, **reference);
    # for VP configs that is diffusers' DPM-Solver++(2M) with every key the config carries
    # (timestep_spacing, steps_offset, variance_type, thresholding, ...).
    reference: dict[str, Any]
    calls: int  # network calls of a STEPS-step run
    tol: float  # bound on the mean absolute difference from the reference
    output_type: str = "latent"
    # Runs that must differ from the reference by more than `tol` (the bound has teeth):
    # "native" is the pipeline's own scheduler, a dict a variant of the reference config.
    contrasts: tuple[str | dict[str, Any], ...] = ()
    flow: bool = False


# VP tolerances. Ours evaluates the network at the exact timesteps of its grid (999, 899.1,
# 799.2, ...) where diffusers rounds them (999, 899, 799, ...): every grid point but the first
# moves by up to half a training step. The yardstick is how far the reference itself moves
# when every timestep but the first moves by a whole training step, up or down (custom
# `timesteps`): twice the largest offset of ours. Measured with these builders and seeds, the
# larger of mean |reference(t - 1) - reference| and mean |reference(t + 1) - reference| is
#   sd15-txt2img 0.0196   sd15-img2img 0.0102   sd15-inpaint 0.0489
#   sdxl-txt2img 0.0138   if-stage1    0.0085
# and each bound below is that number times about 1.25. For scale, DPM-Solver++ of order 1
# is 0.29, 0.040, 0.44, 0.15, 0.033 away, the native scheduler 5.2, 0.38, 5.1, 0.86, 0.63.
# test_vp_tolerance_is_a_one_step_grid_shift re-measures both sides.
VP_CONTRASTS = ("native", {"solver_order": 1})
CASES: dict[str, Case] = {
    "sd15-txt2img": Case(tp.sd15_txt2img, {}, STEPS, 0.025, contrasts=VP_CONTRASTS),
    "sd15-img2img": Case(tp.sd15_img2img, {}, 6, 0.013, contrasts=VP_CONTRASTS),  # strength 0.6
    "sd15-inpaint": Case(tp.sd15_inpaint, {}, STEPS, 0.06, contrasts=VP_CONTRASTS),
    # denoising_end=0.8 keeps the timesteps >= 200 of leading spacing: 901, 811, ..., 271.
    "sdxl-txt2img": Case(tp.sdxl_txt2img, {}, 8, 0.017, contrasts=VP_CONTRASTS),
    # IF's config gives the reference variance_type="learned_range" (the UNet's 6 output
    # channels are split) and dynamic thresholding (ratio 0.95, sample_max_value 1.5).
    "if-stage1": Case(tp.if_stage1, {}, STEPS, 0.011, output_type="pt", contrasts=VP_CONTRASTS),
    # Flow matching: the reference is DPM-Solver++(2M) on DPMSolverMultistepScheduler's flow
    # grid with the model's shift: sigmas shift(s) for s = 0.999, 0.8991, ..., 0.0999, then 0
    # (shift(s) = k s / (1 + (k - 1) s)), not FlowMatchEuler's grid (shift(s) for s from 1 to
    # shift(1/1000) in n points, then 0: for SD3 its last call is at t = 8.9, not 249), which
    # is 0.033 away (DPM-Solver++ on it) and would not pass. 1e-2 bounds the difference; the
    # reference at its exact fractional timesteps is within 4.3e-3 of it.
    "sd3-txt2img": Case(
        tp.sd3_txt2img, dict(FLOW, flow_shift=3.0), STEPS, 1e-2, contrasts=("native",), flow=True
    ),
    "sd3-img2img": Case(
        tp.sd3_img2img, dict(FLOW, flow_shift=3.0), 6, 1e-2, contrasts=("native",), flow=True
    ),
    # Flux: the pipeline passes mu (resolution-dependent shift, exponential time shift).
    # Its tiny transformer is nearly linear: Euler, order 1 and order 3 all land within 1e-2 of
    # the reference, so here the timestep check carries the weight.
    "flux-txt2img": Case(
        tp.flux_txt2img,
        dict(FLOW, use_dynamic_shifting=True, time_shift_type="exponential"),
        STEPS,
        1e-2,
        flow=True,
    ),
    # Wan calls its transformer twice a step (conditional, unconditional).
    "wan-t2v": Case(  # the UniPC flow config Wan 2.1 ships
        tp.wan_txt2video,
        dict(FLOW, flow_shift=3.0),
        2 * STEPS,
        1e-2,
        contrasts=({"solver_order": 1},),
        flow=True,
    ),
    "wan-t2v-flowmatch": Case(  # FlowMatchEulerDiscreteScheduler(shift=7), diffusers' tests
        lambda: tp.wan_txt2video(tp.WAN_FLOWMATCH_SCHEDULER),
        dict(FLOW, flow_shift=7.0),
        2 * STEPS,
        1e-2,
        contrasts=("native", {"solver_order": 1}),
        flow=True,
    ),
}
VP_CASES = [name for name, case in CASES.items() if not case.flow]


@dataclass
class Run:
    output: np.ndarray
    timesteps: list[float]  # the denoiser's timestep input at each call, in training steps


def generate(tiny: tp.Tiny, scheduler: Any, output_type: str, **call: Any) -> Run:
    """One STEPS-step call of the pipeline with `scheduler`, seeded, recording the timestep
    the denoiser sees at each call."""
    pipe = tiny.make(scheduler)
    seen: list[float] = []

    def record(_module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        t = kwargs["timestep"] if "timestep" in kwargs else args[1]
        seen.append(float(torch.as_tensor(t).reshape(-1)[0]) / tiny.timestep_unit)

    handle = getattr(pipe, tiny.denoiser).register_forward_pre_hook(record, with_kwargs=True)
    try:
        out = pipe(
            **{**tiny.kwargs, **call},
            num_inference_steps=STEPS,
            output_type=output_type,
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        handle.remove()
    x = out.frames if hasattr(out, "frames") else out.images
    x = x.detach().float().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    return Run(x, seen)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


class Lab:
    """Each case's pipeline components, built once, and its reference runs."""

    def __init__(self) -> None:
        self._tiny: dict[str, tp.Tiny] = {}
        self._runs: dict[tuple[str, str], Run] = {}

    def tiny(self, name: str) -> tp.Tiny:
        if name not in self._tiny:
            self._tiny[name] = CASES[name].build()
        return self._tiny[name]

    def reference_scheduler(self, name: str, **overrides: Any) -> ReferenceDPMSolver:
        config = self.tiny(name).scheduler.config
        return ReferenceDPMSolver.from_config(config, **{**CASES[name].reference, **overrides})

    def reference(self, name: str, final_sigmas_type: str = "zero") -> Run:
        key = (name, final_sigmas_type)
        if key not in self._runs:
            scheduler = self.reference_scheduler(name, final_sigmas_type=final_sigmas_type)
            self._runs[key] = generate(self.tiny(name), scheduler, CASES[name].output_type)
        return self._runs[key]

    def exact_reference(self, name: str) -> Run:
        """A flow case's reference with the network at its exact timesteps sigma * 1000."""
        key = (name, "exact")
        if key not in self._runs:
            tiny, case = self.tiny(name), CASES[name]
            exact = ExactTimestepReference.from_config(tiny.scheduler.config, **case.reference)
            self._runs[key] = generate(tiny, exact, case.output_type)
        return self._runs[key]

    def levels(self, name: str) -> list[float]:
        """The reference's noise levels as timesteps, one per network call."""
        return (self.exact_reference(name) if CASES[name].flow else self.reference(name)).timesteps


@pytest.fixture(scope="module")
def lab() -> Lab:
    return Lab()


@pytest.mark.parametrize("name", list(CASES))
def test_reference_runs(lab: Lab, name: str) -> None:
    """Every builder works offline and diffusers' DPM-Solver++ runs in it as configured."""
    case = CASES[name]
    run = lab.reference(name)
    assert np.isfinite(run.output).all()
    assert len(run.timesteps) == case.calls
    native = generate(lab.tiny(name), lab.tiny(name).scheduler, case.output_type)
    assert native.output.shape == run.output.shape


@pytest.mark.parametrize("name", VP_CASES)
def test_vp_tolerance_is_a_one_step_grid_shift(lab: Lab, name: str) -> None:
    """The VP bound admits the reference with its grid moved by one training step, and does
    not admit the contrasts."""
    case, tiny = CASES[name], lab.tiny(name)
    base = lab.reference(name)
    grid = lab.reference_scheduler(name)
    grid.set_timesteps(STEPS)
    timesteps = [int(t) for t in grid.timesteps]
    for shift in (-1, 1):
        moved = [timesteps[0]] + [t + shift for t in timesteps[1:]]
        run = generate(tiny, lab.reference_scheduler(name), case.output_type, timesteps=moved)
        assert mad(run.output, base.output) <= case.tol, f"timesteps moved by {shift}"
    for contrast in case.contrasts:
        other = generate(tiny, contrast_scheduler(lab, name, contrast), case.output_type)
        assert mad(other.output, base.output) > case.tol, contrast


@pytest.mark.parametrize("name", [name for name in CASES if CASES[name].flow])
def test_flow_tolerance_admits_exact_timesteps(lab: Lab, name: str) -> None:
    """The flow bound admits, with room to spare (half of it), the reference evaluated at its
    exact fractional timesteps, and does not admit the contrasts."""
    case, tiny = CASES[name], lab.tiny(name)
    base, exact = lab.reference(name), lab.exact_reference(name)
    assert max(abs(a - b) for a, b in zip(exact.timesteps, base.timesteps, strict=True)) < 1.0
    assert mad(exact.output, base.output) <= case.tol / 2
    for contrast in case.contrasts:
        other = generate(tiny, contrast_scheduler(lab, name, contrast), case.output_type)
        assert mad(other.output, base.output) > case.tol, contrast


def contrast_scheduler(lab: Lab, name: str, contrast: str | dict[str, Any]) -> Any:
    if contrast == "native":
        return lab.tiny(name).scheduler
    assert isinstance(contrast, dict)
    return lab.reference_scheduler(name, **contrast)


@pytest.mark.parametrize("name", list(CASES))
def test_ours_matches_the_reference(lab: Lab, name: str) -> None:
    from dpmsolver.diffusers import DPMSolverScheduler

    case, tiny = CASES[name], lab.tiny(name)
    # Flow configs: diffusers' DPM-Solver grid asked for by name (the flow default is ours,
    # test_flow_default_in_pipelines).
    grid = dict(use_diffusers_grid=True) if case.flow else {}
    ours = DPMSolverScheduler.from_config(tiny.scheduler.config, **grid)
    run = generate(tiny, ours, case.output_type)
    # Ours ends a VP run where its config says (by default at the training schedule's
    # smallest noise level, as final_sigmas_type="sigma_min" does; diffusers' default jumps
    # to sigma = 0): the reference ends at the same place. Flow runs end at sigma = 0.
    sigmas = getattr(ours, "sigmas", None)
    end = "zero"
    if not case.flow and sigmas is not None and float(torch.as_tensor(sigmas)[-1]) > 0:
        end = "sigma_min"
    reference, levels = lab.reference(name, end), lab.levels(name)
    assert run.output.shape == reference.output.shape
    assert np.isfinite(run.output).all()
    problems = []
    if len(run.timesteps) != len(levels):
        problems.append(f"{len(run.timesteps)} network calls, the reference makes {len(levels)}")
    elif max(abs(a - b) for a, b in zip(run.timesteps, levels, strict=True)) > TIMESTEP_TOL:
        problems.append(
            f"network timesteps {np.round(run.timesteps, 2).tolist()}, the reference's "
            f"{np.round(levels, 2).tolist()}"
        )
    difference = mad(run.output, reference.output)
    if difference > case.tol:
        problems.append(f"mean |ours - reference| = {difference:.4g} > {case.tol:g}")
    assert not problems, "; ".join(problems)


@pytest.mark.parametrize("name", [name for name in CASES if CASES[name].flow])
def test_flow_default_in_pipelines(lab: Lab, name: str) -> None:
    """From the pipeline's config as it is, a flow run takes the flow default: the calls the
    case promises, at 1000 times the default grid's sigmas with the model's shift (Flux:
    e^mu for the mu it passes, and no sigmas of its own, since our config says the scheduler
    places its sigmas), ending at sigma = 0."""
    from dpmsolver.diffusers import DPMSolverScheduler
    from dpmsolver.diffusers.spacing import flow_default_calls

    case, tiny = CASES[name], lab.tiny(name)
    ours = DPMSolverScheduler.from_config(tiny.scheduler.config)
    assert ours.config.use_flow_sigmas is True and ours.config.corrector == "all"
    asked: list[dict[str, Any]] = []
    plain = ours.set_timesteps

    def recorded(*args: Any, **kwargs: Any) -> None:
        asked.append(kwargs)
        plain(*args, **kwargs)

    ours.set_timesteps = recorded  # type: ignore[method-assign]
    run = generate(tiny, ours, case.output_type)
    assert np.isfinite(run.output).all() and len(run.timesteps) == case.calls
    assert asked and all(kw.get("sigmas") is None for kw in asked)
    mu = asked[-1].get("mu")
    config = ours.config
    if config.use_dynamic_shifting:
        assert mu is not None
        shift = float(np.exp(mu))
    else:
        shift = config.shift if config.shift is not None else config.flow_shift
    n = len(ours.timesteps)
    expected = flow_default_calls(config.num_train_timesteps, shift, n)
    np.testing.assert_allclose(ours.sigmas[:-1].numpy(), expected, rtol=1e-12, atol=0)
    assert float(ours.sigmas[-1]) == 0.0
    # The network's timesteps: the grid's (img2img: its last ones; Wan: each twice).
    calls = np.sort(np.unique(np.round(run.timesteps, 6)))[::-1]
    np.testing.assert_allclose(calls, 1000 * expected[n - len(calls) :], rtol=1e-6)


def test_flux_with_a_static_shift_config_runs() -> None:
    """FluxPipeline passes mu to every scheduler; with a FlowMatch config without dynamic
    shifting (as some Flux-architecture models ship) diffusers' FlowMatchEuler ignores it,
    and so does ours: the run takes its calls at the static shift's grid."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from dpmsolver.diffusers import DPMSolverScheduler
    from dpmsolver.diffusers.spacing import flow_default_calls

    static = dict(tp.FLUX_SCHEDULER, use_dynamic_shifting=False)
    tiny = tp.flux_txt2img(static)
    native = generate(tiny, FlowMatchEulerDiscreteScheduler.from_config(static), "latent")
    for grid in ({}, {"use_diffusers_grid": True}):
        ours = DPMSolverScheduler.from_config(tiny.scheduler.config, **grid)
        run = generate(tiny, ours, "latent")
        assert run.output.shape == native.output.shape and np.isfinite(run.output).all()
        assert len(run.timesteps) == STEPS
    np.testing.assert_allclose(
        ours.sigmas[:-1].numpy(), flow_sigma_grid(static["shift"], STEPS), rtol=1e-6
    )  # diffusers keeps its sigmas in float32
    default = DPMSolverScheduler.from_config(tiny.scheduler.config)
    generate(tiny, default, "latent")
    np.testing.assert_allclose(
        default.sigmas[:-1].numpy(), flow_default_calls(1000, static["shift"], STEPS), rtol=1e-12
    )


def flow_sigma_grid(shift: float, n: int) -> np.ndarray:
    """DPMSolverMultistepScheduler's flow sigmas (use_flow_sigmas) with a static shift."""
    reference = DPMSolverMultistepScheduler(
        use_flow_sigmas=True, flow_shift=shift, prediction_type="flow_prediction"
    )
    reference.set_timesteps(n)
    return reference.sigmas[:-1].double().numpy()


# -- no host read per step -------------------------------------------------------------------

# The tensor functions that read a value back to the host (on a GPU: a synchronisation).
HOST_READS = {
    "item",
    "tolist",
    "numpy",
    "cpu",
    "nonzero",
    "equal",
    "allclose",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "__repr__",
    "__format__",
}


class HostReads(torch.overrides.TorchFunctionMode):
    """Records every tensor function that reads a value back to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


def test_the_read_check_sees_reads() -> None:
    x = torch.ones(3)
    with HostReads() as spy:
        bool(x.sum() > 0)
        x.tolist()
        torch.add(x, 1)
    assert spy.reads == ["__bool__", "tolist"]


@pytest.mark.parametrize("name", ["sd15-txt2img", "sd15-img2img", "flux-txt2img", "wan-t2v"])
def test_no_host_read_after_the_first_step(lab: Lab, name: str) -> None:
    """diffusers #9485 / #14589 (a device read per step: 79 stalls in 20 steps): as the
    pipeline calls them, set_timesteps gets host values only (numbers, numpy sigmas: it
    plans on the host, in float64), step() reads nothing after its first call (which may
    read a timestep that is not one of `timesteps`, once), and the last step reads once:
    the run's NaN report, one flag per step."""
    from dpmsolver.diffusers import DPMSolverScheduler

    case, tiny = CASES[name], lab.tiny(name)
    ours = DPMSolverScheduler.from_config(tiny.scheduler.config)
    reads: list[list[str]] = []
    plain_step, plain_set = ours.step, ours.set_timesteps

    def set_timesteps(*args: Any, **kwargs: Any) -> None:
        given = [*args, *kwargs.values()]
        assert not any(isinstance(v, torch.Tensor) for v in given), given
        plain_set(*args, **kwargs)

    def step(*args: Any, **kwargs: Any) -> Any:
        with HostReads() as spy:
            out = plain_step(*args, **kwargs)
        reads.append(spy.reads)
        return out

    ours.set_timesteps = set_timesteps  # type: ignore[method-assign]
    ours.step = step  # type: ignore[method-assign]
    generate(tiny, ours, case.output_type)
    assert len(reads) > 2
    assert all(not r for r in reads[1:-1]), reads
    # The NaN flags: one copy to the host (the one device read), then checked there.
    assert reads[-1] == ["cpu", "__bool__"], reads[-1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_pipeline_loop_does_not_synchronise_on_cuda(lab: Lab) -> None:
    """Under torch.cuda.set_sync_debug_mode('error'), a tiny SD 1.5 pipeline's denoising
    loop with our scheduler runs (the scheduler skips its NaN report there)."""
    from dpmsolver.diffusers import DPMSolverScheduler

    tiny = lab.tiny("sd15-txt2img")
    pipe = tiny.make(DPMSolverScheduler.from_config(tiny.scheduler.config)).to("cuda")
    kwargs = {k: v.to("cuda") if isinstance(v, torch.Tensor) else v for k, v in tiny.kwargs.items()}
    generator = torch.Generator("cuda").manual_seed(0)
    pipe(**kwargs, num_inference_steps=4, output_type="latent", generator=generator)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = pipe(**kwargs, num_inference_steps=STEPS, output_type="latent", generator=generator)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.images.device.type == "cuda"
