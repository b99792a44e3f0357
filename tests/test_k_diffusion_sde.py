"""The k-diffusion face's SDE and CFG++ samplers: parity with k-diffusion's own functions,
with ComfyUI's formulas on flow models, and with the native API on VE, VP and flow inputs.

The reference is k-diffusion's `sampling.py` itself (`k_reference`), run on the exact
digits mixture with the same sigmas and the same noise sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import k_reference
import pytest
import torch
from problems import digits_mixture, exact_x0_net
from torch import Tensor

import dpmsolver as dpm
import dpmsolver.k_diffusion as K  # noqa: N812 (k-diffusion's own convention)

KD = k_reference.load()
GMM = digits_mixture()


def ve_model(x: Tensor, sigma: Tensor, **_: Any) -> Tensor:
    """The digits mixture's exact denoiser in VE scaling (extra keywords, such as ComfyUI's
    seed, are taken and unused)."""
    return GMM.posterior_mean(x, 1.0, sigma)


def flow_model(x: Tensor, sigma: Tensor) -> Tensor:
    """The digits mixture as a flow model: D(x, s) = E[x0 | (1 - s) x0 + s eps]."""
    s = float(sigma[0])
    return GMM.posterior_mean(x, 1.0 - s, s)


def start(n: int = 4, scale: float = 80.0, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)


class NoiseTable:
    """A noise sampler that gives the k-th distinct (sigma, sigma_next) query its own fixed
    normal draw, so two samplers asked the same questions get the same noise."""

    def __init__(self, shape: tuple[int, ...], seed: int = 5) -> None:
        self.shape, self.gen = shape, torch.Generator().manual_seed(seed)
        self.table: dict[tuple[float, float], Tensor] = {}
        self.asked: list[tuple[float, float]] = []

    def __call__(self, sigma: Any, sigma_next: Any) -> Tensor:
        key = (round(float(sigma), 12), round(float(sigma_next), 12))
        self.asked.append(key)
        if key not in self.table:
            self.table[key] = torch.randn(self.shape, generator=self.gen, dtype=torch.float64)
        return self.table[key]


SDE_SAMPLERS: dict[str, dict[str, Any]] = {
    # name: extra keywords; each is k-diffusion's function of the same name
    "sample_dpmpp_2m_sde": {"solver_type": "midpoint"},
    "sample_dpmpp_2m_sde-heun": {"solver_type": "heun"},
    "sample_dpmpp_3m_sde": {},
    "sample_dpmpp_2s_ancestral": {},
    "sample_dpmpp_sde": {},
}


def name_of(key: str) -> str:
    return key.split("-")[0]


@pytest.mark.parametrize("key", SDE_SAMPLERS)
@pytest.mark.parametrize(("eta", "s_noise"), [(1.0, 1.0), (0.5, 0.8), (0.0, 1.0), (1.5, 1.0)])
@pytest.mark.parametrize("grid", ["karras", "exponential"])
def test_sde_samplers_match_k_diffusion_given_the_same_noise(
    key: str, eta: float, s_noise: float, grid: str
) -> None:
    sigmas = getattr(K, f"get_sigmas_{grid}")(12, 0.002, 80.0).double()
    x = start()
    kwargs = dict(SDE_SAMPLERS[key], eta=eta, s_noise=s_noise, disable=True)
    theirs_noise, ours_noise = NoiseTable(tuple(x.shape)), NoiseTable(tuple(x.shape))
    theirs = getattr(KD, name_of(key))(
        ve_model, x.clone(), sigmas, noise_sampler=theirs_noise, **kwargs
    )
    ours = getattr(K, name_of(key))(ve_model, x.clone(), sigmas, noise_sampler=ours_noise, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    # The same questions in the same order (none at all for the ODE, eta = 0).
    assert ours_noise.asked == (theirs_noise.asked if eta else [])
    if eta:
        assert not torch.allclose(ours, K.sample_dpmpp_2m(ve_model, x, sigmas, disable=True))


@pytest.mark.parametrize("seed", [7, [11, 12, 13, 14]])
def test_brownian_tree_noise_matches_k_diffusion_and_drives_the_same_run(seed: Any) -> None:
    x = start()
    sigmas = K.get_sigmas_karras(10, 0.01, 80.0).double()
    ours = K.BrownianTreeNoiseSampler(x, 0.01, 80.0, seed=seed)
    theirs = KD.BrownianTreeNoiseSampler(x, 0.01, 80.0, seed=seed)
    for a, b in [(80.0, 40.0), (3.0, 2.5), (0.02, 0.01)]:
        torch.testing.assert_close(
            ours(torch.tensor(a), torch.tensor(b)),
            theirs(torch.tensor(a), torch.tensor(b)).double(),
            rtol=0,
            atol=1e-6,  # k-diffusion queries at float32 times here, we at float64 ones
        )
    run_ours = K.sample_dpmpp_sde(ve_model, x, sigmas, disable=True, noise_sampler=ours)
    run_theirs = KD.sample_dpmpp_sde(
        ve_model,
        x,
        sigmas,
        disable=True,
        noise_sampler=KD.BrownianTreeNoiseSampler(x, 0.01, 80.0, seed=seed),
    )
    torch.testing.assert_close(run_ours, run_theirs, rtol=0, atol=1e-5)


def test_default_noise_is_seeded_by_extra_args_seed_as_comfyui_passes_it() -> None:
    sigmas = K.get_sigmas_karras(8, 0.01, 80.0).double()
    for fn in (K.sample_dpmpp_2m_sde, K.sample_dpmpp_3m_sde, K.sample_dpmpp_sde):
        a = fn(ve_model, start(), sigmas, {"seed": 3}, disable=True)
        b = fn(ve_model, start(), sigmas, {"seed": 3}, disable=True)
        c = fn(ve_model, start(), sigmas, {"seed": 4}, disable=True)
        assert torch.equal(a, b) and not torch.allclose(a, c)
    zero = K.sample_dpmpp_2m_sde(ve_model, start(), sigmas, {"seed": 3}, disable=True, s_noise=0)
    table = NoiseTable((4, 1, 8, 8))
    quiet = K.sample_dpmpp_2m_sde(ve_model, start(), sigmas, disable=True, noise_sampler=table)
    assert not torch.allclose(zero, quiet)  # s_noise = 0 drops the noise, keeps eta's decay
    with pytest.raises(ValueError, match="s_noise must be >= 0"):
        K.sample_dpmpp_sde(ve_model, start(), sigmas, disable=True, s_noise=-1.0)
    with pytest.raises(ValueError, match=r"r \(the stage's place in the step\) must be 0.5"):
        K.sample_dpmpp_sde(ve_model, start(), sigmas, disable=True, r=0.3)
    with pytest.raises(TypeError, match=r"extra_args\['seed'\] must be an int"):
        K.sample_dpmpp_sde(ve_model, start(), sigmas, {"seed": "a"}, disable=True)


# -- ComfyUI's SDE formulas on flow models ------------------------------------------------


def lambda_flow(s: float) -> float:
    return math.log((1 - s) / s)


def comfy_3m_sde(model: Callable, x: Tensor, sigmas: list[float], noise: Callable, eta: float):
    """ComfyUI's sample_dpmpp_3m_sde on a flow model (its lambda = logit form), re-derived:
    x = (s'/s) e^{-eta h} x + alpha' (1 - e^{-h_eta}) D + alpha' (phi_2 d1 - phi_3 d2) + noise,
    warm-up with the heun-form second difference; the last step (to 0) is D."""
    d_1 = d_2 = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = model(x, torch.full((x.shape[0],), s, dtype=x.dtype))
        if s_next == 0:
            return d
        h = lambda_flow(s_next) - lambda_flow(s)
        h_eta = h * (eta + 1)
        alpha_t = 1 - s_next
        x = s_next / s * math.exp(-h * eta) * x - alpha_t * math.expm1(-h_eta) * d
        phi_2 = math.expm1(-h_eta) / h_eta + 1
        if h_2 is not None:
            r0, r1 = h_1 / h, h_2 / h
            d1_0, d1_1 = (d - d_1) / r0, (d_1 - d_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x = x + alpha_t * phi_2 * d1 - alpha_t * (phi_2 / h_eta - 0.5) * d2
        elif h_1 is not None:
            x = x + alpha_t * phi_2 * (d - d_1) / (h_1 / h)
        x = x + noise(s, s_next) * s_next * math.sqrt(-math.expm1(-2 * h * eta))
        d_1, d_2, h_1, h_2 = d, d_1, h, h_1
    return x


def comfy_dpmpp_sde(model: Callable, x: Tensor, sigmas: list[float], noise: Callable, eta: float):
    """ComfyUI's sample_dpmpp_sde on a flow model, re-derived: each split an ancestral step
    in the VE levels e^{-lambda}, scaled by the target's alpha; the last step (to 0) is D."""

    def split(a: float, b: float) -> tuple[float, float]:
        up = min(b, eta * (b**2 * (a**2 - b**2) / a**2) ** 0.5)
        return (b**2 - up**2) ** 0.5, up

    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        d = model(x, torch.full((x.shape[0],), s, dtype=x.dtype))
        if s_next == 0:
            return d
        lam_s, lam_t = lambda_flow(s), lambda_flow(s_next)
        h = lam_t - lam_s
        lam_1 = lam_s + h / 2
        s_1 = 1 / (1 + math.exp(lam_1))
        alpha_s, alpha_1, alpha_t = 1 - s, 1 - s_1, 1 - s_next
        sd, su = split(math.exp(-lam_s), math.exp(-lam_1))
        h_ = -math.log(sd) - lam_s
        x_2 = (alpha_1 / alpha_s) * math.exp(-h_) * x - alpha_1 * math.expm1(-h_) * d
        x_2 = x_2 + alpha_1 * noise(s, s_1) * su
        d_2 = model(x_2, torch.full((x.shape[0],), s_1, dtype=x.dtype))
        sd, su = split(math.exp(-lam_s), math.exp(-lam_t))
        h_ = -math.log(sd) - lam_s
        x = (alpha_t / alpha_s) * math.exp(-h_) * x - alpha_t * math.expm1(-h_) * d_2
        x = x + alpha_t * noise(s, s_next) * su
    return x


def flow_grid(n: int, top: float = 0.98, low: float = 0.02) -> Tensor:
    """n flow sigmas uniform in lambda from `top` to `low`, then 0."""
    lam = torch.linspace(lambda_flow(top), lambda_flow(low), n, dtype=torch.float64)
    return torch.cat([torch.sigmoid(-lam), torch.zeros(1, dtype=torch.float64)])


@pytest.mark.parametrize("eta", [1.0, 0.5])
@pytest.mark.parametrize(
    ("ours", "reference"),
    [(K.sample_dpmpp_3m_sde, comfy_3m_sde), (K.sample_dpmpp_sde, comfy_dpmpp_sde)],
)
def test_flow_sde_samplers_match_comfyuis_formulas(ours: Any, reference: Any, eta: float) -> None:
    sigmas = flow_grid(10)
    x = start(scale=1.0)
    mine, theirs = NoiseTable(tuple(x.shape)), NoiseTable(tuple(x.shape))
    got = ours(
        flow_model, x, sigmas, disable=True, eta=eta, noise_sampler=mine, model_sampling="flow"
    )
    want = reference(flow_model, x, sigmas.tolist(), theirs, eta)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert mine.asked == theirs.asked


# -- the same samplers on VE, VP (scaled) and flow inputs equal the native API --------------

FACE = {
    # name: (face call, native options, the native noise sampler's noise per step)
    "2m": (K.sample_dpmpp_2m, dict(order=2, lower_order_final=False)),
    "3m": (K.sample_dpmpp_3m, dict(order=3, lower_order_final=False)),
    "2s": (K.sample_dpmpp_2s, dict(order=2, method="singlestep")),
    "2m_sde": (K.sample_dpmpp_2m_sde, dict(order=2, lower_order_final=False, eta=1.0)),
    "2m_sde_heun": (
        K.sample_dpmpp_2m_sde_heun,
        dict(order=2, lower_order_final=False, eta=1.0, solver_type="taylor"),
    ),
    "3m_sde": (
        K.sample_dpmpp_3m_sde,
        dict(order=3, lower_order_final=False, eta=1.0, solver_type="taylor"),
    ),
    "2s_ancestral": (
        K.sample_dpmpp_2s_ancestral,
        dict(order=2, method="singlestep", eta=1.0, ancestral=True),
    ),
    "sde": (K.sample_dpmpp_sde, dict(order=2, method="singlestep", eta=1.0)),
    "ipndm": (K.sample_ipndm, dict(order=4, algorithm="ipndm", lower_order_final=False)),
}


class StepNoise:
    """The i-th query's noise is draws[i], whatever times it is asked with (so a face asked
    in sigmas and the native API asked in times get the same noise)."""

    def __init__(self, shape: tuple[int, ...], seed: int = 9) -> None:
        g = torch.Generator().manual_seed(seed)
        self.draws = [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(64)]
        self.i = 0

    def __call__(self, a: Any, b: Any) -> Tensor:
        self.i += 1
        return self.draws[self.i - 1]


def native(model: Any, x: Tensor, grid: list[float], opts: dict[str, Any]) -> Tensor:
    kw = dict(opts)
    noise = StepNoise(tuple(x.shape)) if kw.get("eta") else None
    return dpm.sample(model, x, noise_sampler=noise, denoise_to_zero=True, **kw)


@pytest.mark.parametrize("name", FACE)
@pytest.mark.parametrize("inputs", ["ve", "vp", "flow"])
def test_face_sampler_equals_the_native_api(name: str, inputs: str) -> None:
    fn, opts = FACE[name]
    noise = StepNoise((4, 1, 8, 8)) if opts.get("eta") else None
    extra: dict[str, Any] = {} if noise is None else {"noise_sampler": noise}
    if inputs == "flow":
        sigmas = flow_grid(9, top=0.95)
        x = start(scale=1.0)
        ours = fn(flow_model, x, sigmas, disable=True, model_sampling="flow", **extra)
        schedule = dpm.FlowSchedule(shift=1.0, t_min=float(sigmas[-2]), t_max=1.0)
        model = dpm.Denoiser(flow_model, schedule, prediction="x0")
        grid = sigmas[:-1].tolist()
        theirs = native(model, x, grid, dict(opts, timesteps=grid))
    else:
        sigmas = K.get_sigmas_karras(9, 0.02, 60.0).double()
        x = start(scale=60.0)
        ours = fn(ve_model, x, sigmas, disable=True, **extra)
        if inputs == "ve":
            schedule: dpm.NoiseSchedule = dpm.VESchedule(0.02, 60.0)
            model = dpm.Denoiser(ve_model, schedule, prediction="x0")
            x_native = x
        else:  # a VP model: x_vp = alpha x_ve, the same lambdas (sigma = sigma_vp / alpha)
            schedule = dpm.VPSchedule.linear()
            model = dpm.Denoiser(exact_x0_net(GMM, schedule), schedule, prediction="x0")
            x_native = x / math.sqrt(1.0 + float(sigmas[0]) ** 2)  # alpha_T x_T
        theirs = native(model, x_native, [], dict(opts, sigmas=sigmas[:-1].tolist()))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("fn", "order"),
    [
        (K.sample_dpmpp_2m, 2),
        (K.sample_dpmpp_3m, 2),  # the authors' damped third difference: global order 2
        (K.sample_dpmpp_2s, 2),
        (K.sample_ipndm, 2),  # fixed weights on grids not uniform in sigma / alpha
        (K.sample_euler_cfg_pp, 1),
        (K.sample_dpmpp_2m_cfg_pp, 2),
    ],
)
def test_flow_face_samplers_converge_at_their_order(fn: Any, order: int) -> None:
    """On the exact flow ODE (CFG++ at scale 0, where it is its plain solver; from sigma =
    0.98 so that iPNDM can start), error against a 600-step 3M solution."""
    x = start(scale=1.0)
    model: Any = flow_model
    extra: dict[str, Any] = {}
    if "cfg_pp" in fn.__name__:
        model = K.CFGDenoiser(lambda x, s, cond: flow_model(x, s))
        c = torch.zeros(x.shape[0])
        extra = {"cond": c, "uncond": c, "cond_scale": 0.0}
    reference = K.sample_dpmpp_3m(
        flow_model, x, flow_grid(600), disable=True, model_sampling="flow"
    )
    errors = [
        float(
            (fn(model, x, flow_grid(n), extra, disable=True, model_sampling="flow") - reference)
            .pow(2)
            .mean()
            .sqrt()
        )
        for n in (20, 40, 80)
    ]
    slope = math.log2(errors[0] / errors[2]) / 2
    assert order - 0.35 < slope < order + 0.6, (errors, slope)


# -- CFG++ ----------------------------------------------------------------------------------


def inner(x: Tensor, sigma: Tensor, cond: Tensor) -> Tensor:
    """A conditioned VE denoiser: the mixture's, pushed by the condition."""
    push = torch.tanh(x / (1 + sigma.reshape(-1, 1, 1, 1)))
    return GMM.posterior_mean(x, 1.0, sigma) + 0.3 * cond.reshape(-1, 1, 1, 1) * push


def comfy_2m_cfg_pp(model: Any, x: Tensor, sigmas: list[float], extra: dict[str, Any]) -> Tensor:
    """ComfyUI's sample_dpmpp_2m_cfg_pp re-derived (VE): x = D + e^{-h} (x - D_u) +
    (1 - e^{-h}) / (2r) (D - D_u_prev), first-order at the first and last step."""
    old = None
    for i in range(len(sigmas) - 1):
        d = model(x, torch.full((x.shape[0],), sigmas[i], dtype=x.dtype), **extra)
        u = model.uncond_denoised
        if sigmas[i + 1] == 0:
            return d
        h = math.log(sigmas[i] / sigmas[i + 1])
        mix = -math.exp(-h) * u
        if old is not None:
            r = math.log(sigmas[i - 1] / sigmas[i]) / h
            mix = mix - math.expm1(-h) / (2 * r) * (d - old)
        x = d + mix + math.exp(-h) * x
        old = u
    return x


class ComfyWrapper:
    """A ComfyUI-like guided model: CFG inside, post-CFG functions from model_options."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, x: Tensor, sigma: Tensor, model_options: dict, seed: int | None = None):
        c = torch.ones(x.shape[0], dtype=x.dtype)
        d_u, d_c = inner(x, sigma, 0 * c), inner(x, sigma, c)
        denoised = d_u + self.scale * (d_c - d_u)
        for fn in model_options.get("sampler_post_cfg_function", []):
            denoised = fn({"denoised": denoised, "cond_denoised": d_c, "uncond_denoised": d_u})
        return denoised


@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_dpmpp_2m_cfg_pp_matches_comfyuis_formula(scale: float) -> None:
    sigmas = K.get_sigmas_karras(10, 0.002, 80.0).double()
    x = start()
    c = torch.ones(4, dtype=torch.float64)
    extra = {"cond": c, "uncond": 0 * c, "cond_scale": scale}
    model = K.CFGDenoiser(inner)
    ours = K.sample_dpmpp_2m_cfg_pp(model, x, sigmas, extra, disable=True)
    torch.testing.assert_close(
        ours, comfy_2m_cfg_pp(model, x, sigmas.tolist(), extra), rtol=0, atol=1e-6
    )
    # Through ComfyUI's post-CFG hook: the same run; the caller's options are not changed.
    options: dict[str, Any] = {"sampler_post_cfg_function": []}
    hooked = K.sample_dpmpp_2m_cfg_pp(
        ComfyWrapper(scale), x, sigmas, {"model_options": options, "seed": 0}, disable=True
    )
    torch.testing.assert_close(hooked, ours, rtol=0, atol=1e-12)
    assert options == {"sampler_post_cfg_function": []}
    # CFG++ is not plain CFG (the renoising direction differs) except at scale 0.
    plain = K.sample_dpmpp_2m(model, x, sigmas, extra, disable=True)
    assert float((plain - ours).abs().max()) > 1e-3
    zero = dict(extra, cond_scale=0.0)
    torch.testing.assert_close(
        K.sample_dpmpp_2m_cfg_pp(model, x, sigmas, zero, disable=True),
        K.sample_dpmpp_2m(model, x, sigmas, zero, disable=True),
        rtol=0,
        atol=1e-10,
    )


def test_euler_cfg_pp_is_ddim_with_the_unconditional_renoise() -> None:
    sigmas = torch.tensor([20.0, 5.0, 0.0], dtype=torch.float64)
    x = start(scale=20.0)
    c = torch.ones(4, dtype=torch.float64)
    extra = {"cond": c, "uncond": 0 * c, "cond_scale": 3.0}
    model = K.CFGDenoiser(inner)
    got = K.sample_euler_cfg_pp(model, x, sigmas, extra, disable=True)
    d = model(x, torch.full((4,), 20.0, dtype=torch.float64), **extra)
    x1 = d + (5.0 / 20.0) * (x - model.uncond_denoised)
    torch.testing.assert_close(got, model(x1, torch.full((4,), 5.0, dtype=x.dtype), **extra))


def test_cfg_pp_needs_the_unconditional_prediction() -> None:
    sigmas = K.get_sigmas_karras(5, 0.01, 10.0).double()
    with pytest.raises(ValueError, match="found no unconditional prediction"):
        K.sample_dpmpp_2m_cfg_pp(ve_model, start(), sigmas, disable=True)
    with pytest.raises(TypeError, match=r"extra_args\['model_options'\] must be a dict"):
        K.sample_dpmpp_2m_cfg_pp(ve_model, start(), sigmas, {"model_options": 3}, disable=True)
    with pytest.raises(ValueError, match="cond must be a tensor with x's batch"):
        K.CFGDenoiser(inner)(start(), torch.ones(4), torch.ones(3), torch.ones(4), 2.0)


@pytest.mark.parametrize(
    "name",
    ["sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde", "sample_dpmpp_sde", "sample_dpmpp_2s_ancestral"],
)
def test_flow_sde_from_sigma_1_starts_where_comfyui_does(name: str) -> None:
    """From sigma = 1 an SDE step would span an infinite lambda interval and forget x_T for
    any eta > 0; the face starts at sigma = 1 - 1e-4, as ComfyUI does, so x_T matters."""
    fn = getattr(K, name)
    sigmas = torch.cat([torch.tensor([1.0], dtype=torch.float64), flow_grid(8, top=0.9)])
    moved = sigmas.clone()
    moved[0] = 1 - 1e-4
    a, b = start(scale=1.0, seed=0), start(scale=1.0, seed=1)

    def run(x: Tensor, grid: Tensor) -> Tensor:
        noise = NoiseTable(tuple(x.shape))
        return fn(
            flow_model, x, grid, disable=True, eta=0.3, model_sampling="flow", noise_sampler=noise
        )

    torch.testing.assert_close(run(a, sigmas), run(a, moved), rtol=0, atol=0)
    assert float((run(a, sigmas) - run(b, sigmas)).abs().max()) > 0.1


@pytest.mark.parametrize("fn", [K.sample_dpmpp_2s, K.sample_dpm_solver])
def test_flow_singlestep_ode_from_sigma_1_takes_its_first_step_at_order_1(fn: Any) -> None:
    sigmas = torch.cat([torch.tensor([1.0], dtype=torch.float64), flow_grid(8, top=0.9)])
    x = start(scale=1.0)
    kw = {} if fn is K.sample_dpmpp_2s else {"order": 3, "method": "singlestep"}
    ours = fn(flow_model, x, sigmas, disable=True, model_sampling="flow", **kw)
    schedule = dpm.FlowSchedule(shift=1.0, t_min=float(sigmas[-2]), t_max=1.0)
    model = dpm.Denoiser(flow_model, schedule, prediction="x0")
    grid = sigmas[:-1].tolist()
    order = kw.get("order", 2)
    native = dpm.sample(
        model, x, timesteps=grid, order=order, method="singlestep", denoise_to_zero=True
    )
    torch.testing.assert_close(ours, native, rtol=0, atol=1e-6)
    # The first step is the first-order limit x_1 = sigma_1 x + alpha_1 x0_pred(x).
    first = dpm.sample(model, x, timesteps=grid[:2], order=order, method="singlestep")
    x0 = flow_model(x, torch.ones(x.shape[0], dtype=x.dtype))
    torch.testing.assert_close(first, grid[1] * x + (1 - grid[1]) * x0, rtol=0, atol=1e-12)
