"""Update rules of DPM-Solver (noise form) and DPM-Solver++ (data form) as coefficients.

Every update is linear in the current state x and in earlier model outputs m_j:

    x_new = cx * x + sum_j cm[j] * m[j]

so a rule is fully described by host float64 numbers computed once per run from the time
grid. Both forms share one set of formulas. For a step s -> t with h = lambda_t - lambda_s:

    noise form (DPM-Solver, m = eps_pred):
        x_t = (alpha_t/alpha_s) x - sigma_t Sum_k phi_{k+1}(h) D_k
    data form (DPM-Solver++, m = x0_pred):
        x_t = (sigma_t/sigma_s) x - alpha_t Sum_k phi_{k+1}(-h) D_k

with phi_1(z) = e^z - 1, phi_2(z) = phi_1(z)/z - 1, phi_3(z) = phi_2(z)/z - 1/2 and D_k the
k-th finite difference of the model output (scaled by h^k). Writing (scale, mult, z) for
(alpha_t/alpha_s, sigma_t, h) or (sigma_t/sigma_s, alpha_t, -h) gives one code path.
References: Lu et al., DPM-Solver (NeurIPS 2022), eqs. (3.7)-(3.9) and Algorithms 1-2;
DPM-Solver++ (2022), Algorithms 1-2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .schedules import Level

__all__ = [
    "Form",
    "Linear",
    "Multistep3",
    "SolverType",
    "Variant",
    "ancestral_split",
    "cfg_pp_update",
    "deis_update",
    "ipndm_update",
    "jump_to_zero",
    "multistep_update",
    "phi",
    "sde_multistep_update",
    "sde_noise_multistep_update",
    "sde_singlestep_rules",
    "sde_singlestep_update",
    "sde_stage_lambda",
    "singlestep_tableau",
    "unic_correction",
]

Form = Literal["noise", "data"]
SolverType = Literal["dpmsolver", "taylor"]
Multistep3 = Literal["damped", "exact"]
Variant = Literal["bh1", "bh2"]

# Below this |z| the phi-functions are summed as power series: the closed forms divide a
# difference of O(1) numbers by z^k and lose about k * log10(1/|z|) digits.
_SERIES_BELOW = 0.05


@dataclass(frozen=True)
class Linear:
    """x_new = cx * x + sum_j cm[j] * m[j] + noise * z, z ~ N(0, I) (m[0] is the first model
    output of the rule; noise is 0 for the ODE solvers)."""

    cx: float
    cm: tuple[float, ...]
    noise: float = 0.0


def phi(k: int, z: float) -> float:
    """phi_k(z) = (e^z - sum_{j<k} z^j / j!) / z^(k-1), k >= 1 (phi_1 = expm1)."""
    if k == 1:
        return math.expm1(z)
    if abs(z) < (_SERIES_BELOW if k <= 3 else 1.0):
        # phi_k(z) = sum_{n>=1} z^n / (n + k - 1)!; 13 terms reach double precision for
        # |z| < 0.05 and 25 for |z| < 1 (the closed form loses ~k digits near |z| = 1).
        terms = 14 if k <= 3 else 26
        return sum(z**n / math.factorial(n + k - 1) for n in range(1, terms))
    return phi(k - 1, z) / z - 1.0 / math.factorial(k - 1)


def _transfer(form: Form, s: Level, t: Level) -> tuple[float, float, float]:
    """(scale, mult, z) of the exact linear part for a step s -> t in the given form."""
    h = t.lambda_ - s.lambda_
    if form == "noise":
        return t.alpha / s.alpha, t.sigma, h
    return t.sigma / s.sigma, t.alpha, -h


def _rule(scale: float, mult: float, terms: list[tuple[float, np.ndarray]]) -> Linear:
    """scale * x - mult * sum_k c_k * (vector of weights on m_j)."""
    total = np.sum([c * v for c, v in terms], axis=0)
    return Linear(scale, tuple(float(-mult * w) for w in total))


def _multistep_terms(
    k: int,
    prev: list[Level],
    h: float,
    z: float,
    solver_type: SolverType,
    multistep3: Multistep3,
) -> list[tuple[float, np.ndarray]]:
    """The Taylor terms (phi weight, weights on m_j) of a multistep step of order k whose
    exponential integrals are taken at z, with the finite differences scaled by the step
    h in lambda (the ODE has z = +-h; the SDE of DPM-Solver++ z = -(1 + eta) h)."""
    e = np.eye(k)
    if k == 1:
        return [(phi(1, z), e[0])]
    r0 = (prev[0].lambda_ - prev[1].lambda_) / h
    d1_0 = (e[0] - e[1]) / r0
    if k == 2:
        c = 0.5 * phi(1, z) if solver_type == "dpmsolver" else phi(2, z)
        return [(phi(1, z), e[0]), (c, d1_0)]
    if k != 3:  # internal
        raise ValueError(f"multistep order must be 1, 2 or 3; got {k}")
    r1 = (prev[1].lambda_ - prev[2].lambda_) / h
    d1_1 = (e[1] - e[2]) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    c2 = 2.0 * phi(3, z) if multistep3 == "exact" else phi(3, z)
    return [(phi(1, z), e[0]), (phi(2, z), d1), (c2, d2)]


def multistep_update(
    form: Form, solver_type: SolverType, levels: list[Level], multistep3: Multistep3 = "damped"
) -> Linear:
    """Multistep DPM-Solver(++) of order k = len(levels) - 1 (1 model call per step).

    `levels` = [t_prev_0, t_prev_1, ..., t_prev_{k-1}, t]: the newest earlier time first,
    then the target; m[j] is the model output at t_prev_j. Order 1 is DDIM; order 2 is
    DPM-Solver++(2M); order 3 is DPM-Solver++(3M) (one formula for both solver types).

    Order 3: D2 = (D1_0 - D1_1) / (r0 + r1) estimates h^2 m''/2, while the Taylor term of
    the integral is phi_3 h^2 m'' = 2 phi_3 D2. multistep3='exact' uses 2 phi_3 D2 and
    converges at order 3; 'damped' uses phi_3 D2, as the authors' code does, and converges
    at order 2 but has the lower error at 10-40 steps on time-uniform grids (docs/benchmarks.md,
    "Where we differ from the reference").
    """
    *prev, t = levels
    scale, mult, z = _transfer(form, prev[0], t)
    h = t.lambda_ - prev[0].lambda_
    return _rule(scale, mult, _multistep_terms(len(prev), prev, h, z, solver_type, multistep3))


def singlestep_tableau(
    form: Form,
    solver_type: SolverType,
    s: Level,
    stages: list[Level],
    t: Level,
    r: list[float],
) -> list[Linear]:
    """Singlestep DPM-Solver(++) of order k = len(stages) + 1 (k model calls per step).

    The model is evaluated at s and at the intermediate levels `stages`, whose lambdas are
    lambda_s + r[j] h. Returns k linear rules: rule j < k - 1 gives the state at stages[j]
    from (x, m[0..j]); the last gives x_t from (x, m[0..k-1]). Order 1 is DDIM, order 2 is
    DPM-Solver-2 (r1 = 1/2 by default), order 3 is DPM-Solver-3 (r1 = 1/3, r2 = 2/3).
    """
    k = len(stages) + 1
    scale, mult, z = _transfer(form, s, t)
    e = np.eye(k)
    rules: list[Linear] = []
    for j, stage in enumerate(stages):
        scale_j, mult_j, _ = _transfer(form, s, stage)
        z_j = r[j] * z
        ej = np.eye(j + 1)  # stage j sees the outputs m[0..j] only
        terms = [(phi(1, z_j), ej[0])]
        if j == 1:  # the second stage of order 3 already uses a first difference
            terms.append((r[1] / r[0] * phi(2, z_j), ej[1] - ej[0]))
        rules.append(_rule(scale_j, mult_j, terms))
    if k == 1:
        rules.append(_rule(scale, mult, [(phi(1, z), e[0])]))
    elif k == 2:
        c = 0.5 * phi(1, z) if solver_type == "dpmsolver" else phi(2, z)
        rules.append(_rule(scale, mult, [(phi(1, z), e[0]), (c / r[0], e[1] - e[0])]))
    elif solver_type == "dpmsolver":
        rules.append(_rule(scale, mult, [(phi(1, z), e[0]), (phi(2, z) / r[1], e[2] - e[0])]))
    else:
        r1, r2 = r
        d1_0 = (e[1] - e[0]) / r1
        d1_1 = (e[2] - e[0]) / r2
        d1 = (r2 * d1_0 - r1 * d1_1) / (r2 - r1)
        d2 = 2.0 * (d1_1 - d1_0) / (r2 - r1)
        rules.append(_rule(scale, mult, [(phi(1, z), e[0]), (phi(2, z), d1), (phi(3, z), d2)]))
    return rules


def sde_multistep_update(
    solver_type: SolverType, levels: list[Level], eta: float, multistep3: Multistep3 = "damped"
) -> Linear:
    """SDE-DPM-Solver++ of order k = len(levels) - 1 (1 to 3; data form, 1 call per step).

    Solves the reverse SDE whose noise is scaled by eta (0: the ODE, i.e. DPM-Solver++;
    1: the full SDE of DPM-Solver++ Section 5). With h = lambda_t - lambda_s and
    h_eta = (1 + eta) h, the rule is DPM-Solver++'s with its exponential integrals taken
    at -h_eta, a decay e^{-eta h} on x and the exact variance of the added noise:
        x_t = (sigma_t/sigma_s) e^{-eta h} x - alpha_t Sum_k phi_{k+1}(-h_eta) D_k
              + sigma_t sqrt(1 - e^{-2 eta h}) z
    with D_k the finite differences of x0_pred in lambda scaled by h^k (see
    `multistep_update`). Order 2 with solver_type 'dpmsolver' is k-diffusion's
    "DPM-Solver++(2M) SDE" midpoint form ('taylor': its heun form); order 3 with
    multistep3='damped' is its "DPM-Solver++(3M) SDE" (whose order-2 warm-up step is the
    'taylor' form). At eta = 0 each equals DPM-Solver++'s rule.
    """
    *prev, t = levels
    s = prev[0]
    h = t.lambda_ - s.lambda_
    z = -(1.0 + eta) * h
    rule = _rule(
        t.sigma / s.sigma * math.exp(-eta * h),
        t.alpha,
        _multistep_terms(len(prev), prev, h, z, solver_type, multistep3),
    )
    noise = t.sigma * math.sqrt(-math.expm1(-2.0 * eta * h)) if eta > 0 else 0.0
    return Linear(rule.cx, rule.cm, noise)


def ancestral_split(sigma_from: float, sigma_to: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) of an ancestral step of strength eta between VE noise levels
    sigma = e^{-lambda}: a deterministic step to sigma_down, then noise of std sigma_up,
    with sigma_down^2 + sigma_up^2 = sigma_to^2 and
        sigma_up = min(sigma_to, eta sigma_to sqrt(1 - sigma_to^2 / sigma_from^2))
    (k-diffusion's get_ancestral_step; eta = 1 is DDPM's posterior variance). A start at
    sigma_from = inf (pure noise) gives sigma_up = eta sigma_to."""
    if eta == 0.0:
        return sigma_to, 0.0
    ratio = 0.0 if math.isinf(sigma_from) else (sigma_to / sigma_from) ** 2
    sigma_up = min(sigma_to, eta * sigma_to * math.sqrt(max(0.0, 1.0 - ratio)))
    return math.sqrt(max(0.0, sigma_to**2 - sigma_up**2)), sigma_up


def _down_level(t: Level, sigma_down: float) -> Level:
    """The level an ancestral step lands on before its noise: at lambda = -log sigma_down,
    with alpha_t's scale (x / alpha_t = x0 + sigma_down eps there)."""
    if sigma_down == 0.0:
        return Level(t.t, t.alpha, 0.0, math.inf)
    return Level(t.t, t.alpha, t.alpha * sigma_down, -math.log(sigma_down))


def _to_level(s: Level, t: Level, terms: list[tuple[float, np.ndarray]]) -> Linear:
    """The data-form rule s -> t on `terms` (weights on the model outputs); a t at lambda =
    inf (a full ancestral step, sigma_down = 0) has cx = 0: x_t = alpha_t (the x0_pred
    combination), with phi_1(-inf) = -1 in the terms."""
    scale, mult, _ = _transfer("data", s, t)
    return _rule(scale, mult, terms)


def sde_singlestep_rules(
    s: Level, stage: Level | None, t: Level, r: float, eta: float, ancestral: bool
) -> list[Linear]:
    """Stochastic DPM-Solver++ singlestep rules of order 1 (stage None) or 2 (one stage at
    lambda_s + r h; data form; 1 or 2 model calls per step), every split an ancestral one
    (`ancestral_split`, in the VE noise levels sigma / alpha).

    ancestral=False (k-diffusion's "DPM-Solver++ SDE", `sample_dpmpp_sde`): the stage
    state is a first-order ancestral step s -> stage, and the step an ancestral step s -> t
    on x0_pred's midpoint combination (1 - 1/(2r)) m_s + 1/(2r) m_stage:
        x_j = (sigma_d/sigma_s) x + alpha_j (1 - e^{-h_d}) x0 + alpha_j sigma_up z_j,
    h_d = lambda_down - lambda_s. ancestral=True ("DPM-Solver++(2S) ancestral",
    `sample_dpmpp_2s_ancestral`): the whole 2S step (stage at lambda_s + r h_d) goes to
    t's sigma_down deterministically, then noise alpha_t sigma_up is added. Returns the
    stage rule (if any) and the step's rule, each with its noise coefficient; the caller
    gives `stage` at the lambda this convention places it (`sde_stage_lambda`).
    """
    ve = (math.exp(-s.lambda_), math.exp(-t.lambda_))
    down, up = ancestral_split(ve[0], ve[1], eta)
    d = _down_level(t, down)
    if stage is None:
        rule = _to_level(s, d, [(phi(1, -(d.lambda_ - s.lambda_)), np.eye(1)[0])])
        return [Linear(rule.cx, rule.cm, t.alpha * up)]
    e = np.eye(2)
    if ancestral:  # the deterministic stage of the 2S step to sigma_down
        z = -(d.lambda_ - s.lambda_)
        stage_rule = _to_level(s, stage, [(phi(1, r * z), np.eye(1)[0])])
    else:
        down_1, up_1 = ancestral_split(ve[0], math.exp(-stage.lambda_), eta)
        d1 = _down_level(stage, down_1)
        first = _to_level(s, d1, [(phi(1, -(d1.lambda_ - s.lambda_)), np.eye(1)[0])])
        stage_rule = Linear(first.cx, first.cm, stage.alpha * up_1)
    z = -(d.lambda_ - s.lambda_)
    fac = 1.0 / (2.0 * r)
    last = _to_level(s, d, [(phi(1, z), (1.0 - fac) * e[0] + fac * e[1])])
    return [stage_rule, Linear(last.cx, last.cm, t.alpha * up)]


def sde_singlestep_update(levels: list[Level]) -> Linear:
    """SDE-DPM-Solver++ singlestep of order k = len(levels) - 1 (1 or 2; data form, the
    midpoint form), as diffusers' DPMSolverSinglestepScheduler takes it: from the step's
    start s with the outputs at s (and at the stage s_1), `levels` = [s, (s_1,) t], to t:
        x_t = (sigma_t/sigma_s) e^{-h} x + A m_s + (A / 2) (m_1 - m_s) / r
              + sigma_t sqrt(1 - e^{-2h}) z
    with h = lambda_t - lambda_s, A = alpha_t (1 - e^{-2h}), r = (lambda_{s_1} - lambda_s) / h.
    One model call per stage."""
    *pts, t = levels
    s = pts[0]
    h = t.lambda_ - s.lambda_
    one_minus = -math.expm1(-2.0 * h)  # 1 - e^{-2h}
    a_coef = t.alpha * one_minus
    cx = (t.sigma / s.sigma) * math.exp(-h)
    noise = t.sigma * math.sqrt(one_minus)
    if len(pts) == 1:
        return Linear(cx, (a_coef,), noise)
    slope = 0.5 * a_coef * h / (pts[1].lambda_ - s.lambda_)
    return Linear(cx, (a_coef - slope, slope), noise)


def sde_stage_lambda(s: Level, t: Level, r: float, eta: float, ancestral: bool) -> float:
    """The lambda of the stage of a stochastic singlestep step (`sde_singlestep_rules`):
    lambda_s + r h, with h to t (DPM-Solver++ SDE) or to t's sigma_down (2S ancestral)."""
    if not ancestral:
        return s.lambda_ + r * (t.lambda_ - s.lambda_)
    down, _ = ancestral_split(math.exp(-s.lambda_), math.exp(-t.lambda_), eta)
    target = math.inf if down == 0.0 else -math.log(down)
    return s.lambda_ + r * (target - s.lambda_)


def sde_noise_multistep_update(solver_type: SolverType, levels: list[Level]) -> Linear:
    """SDE-DPM-Solver of order k = len(levels) - 1 (1 or 2; noise form, 1 call per step).

    The reverse SDE written with eps_pred (DPM-Solver++ paper, Section 5, noise form), with
    h = lambda_t - lambda_s and D1 = (eps_s - eps_prev) / r0, r0 = h_prev / h:
        x_t = (alpha_t/alpha_s) x - 2 sigma_t (e^h - 1) eps_s - sigma_t c D1
              + sigma_t sqrt(e^{2h} - 1) z
    with c = e^h - 1 ('dpmsolver', the midpoint form) or 2 phi_2(h) ('taylor').
    """
    *prev, t = levels
    s = prev[0]
    h = t.lambda_ - s.lambda_
    grow = math.expm1(h)
    cx = t.alpha / s.alpha
    noise = t.sigma * math.sqrt(math.expm1(2.0 * h))
    if len(prev) == 1:
        return Linear(cx, (-2.0 * t.sigma * grow,), noise)
    r0 = (s.lambda_ - prev[1].lambda_) / h
    c = grow if solver_type == "dpmsolver" else 2.0 * phi(2, h)
    w = t.sigma * c / r0
    return Linear(cx, (-2.0 * t.sigma * grow - w, w), noise)


def cfg_pp_update(rule: Linear, s: Level, t: Level) -> Linear:
    """The CFG++ form of a data-form multistep rule s -> t (Chung et al., 2024).

    A data-form rule's weights on x0_pred sum to alpha_t (1 - e^{-h}): the e^{-h} part
    renoises the current prediction. CFG++ takes that part from the unconditional
    prediction u_s instead of the guided g_s, and its earlier outputs from the
    unconditional model: the rule acts on m = [g_s, u_s, u_prev_0, ...] with weights
        (cm[0] + alpha_t e^{-h}, -alpha_t e^{-h}, cm[1], cm[2], ...)
    so order 1 is x_t = alpha_t g_s + sigma_t (x - alpha_s u_s) / sigma_s, and order 2 is
    ComfyUI's dpmpp_2m_cfg_pp. Where g = u (guidance scale 0) it is the rule itself.
    """
    renoise = t.alpha * math.exp(-(t.lambda_ - s.lambda_))
    return Linear(rule.cx, (rule.cm[0] + renoise, -renoise, *rule.cm[1:]), rule.noise)


def unic_correction(form: Form, levels: list[Level], variant: Variant = "bh2") -> Linear:
    """UniC corrector of order k = len(levels) - 1 after a multistep step (no extra call).

    `levels` = [t_prev_0, ..., t_prev_{k-1}, t] as for `multistep_update`; the rule acts
    on m = [m_t, m_prev_0, ..., m_prev_{k-1}], where m_t is the model output at the
    predicted x_t (the call the next step needs anyway), and re-does the step from the
    same starting state x_prev_0:

        x_t^c = scale x - mult (phi_1(z) m_0 + B(z) (sum_j rho_j D_j + rho_k D_t))

    with D_j = (m_prev_j - m_0) / r_j, r_j = (lambda_prev_j - lambda_prev_0) / h, D_t =
    m_t - m_0, and rho solving sum_j rho_j r_j^(i-1) = i! phi_{i+1}(z) / B(z), i = 1..k
    (r_k = 1); order 1 takes rho = 1/2. B(z) = z ('bh1') or e^z - 1 ('bh2'). Using one
    more point than the predictor raises the order of accuracy by one (Zhao et al.,
    UniPC, 2023, Theorem 3.1; the same (scale, mult, z) as `multistep_update`).
    """
    *prev, t = levels
    k = len(prev)
    scale, mult, z = _transfer(form, prev[0], t)
    h = t.lambda_ - prev[0].lambda_
    b_z = z if variant == "bh1" else math.expm1(z)
    r = [(p.lambda_ - prev[0].lambda_) / h for p in prev[1:]] + [1.0]
    if k == 1:
        rho = np.array([0.5])
    else:
        mat = np.array([[rj**i for rj in r] for i in range(k)])
        rhs = np.array([math.factorial(i) * phi(i + 1, z) / b_z for i in range(1, k + 1)])
        rho = np.linalg.solve(mat, rhs)
    # Weights on m = [m_t, m_prev_0, ..., m_prev_{k-1}].
    e = np.eye(k + 1)
    diffs = [(e[j + 2] - e[1]) / r[j] for j in range(k - 1)] + [e[0] - e[1]]
    corr = np.sum([rho_j * d for rho_j, d in zip(rho, diffs, strict=True)], axis=0)
    return _rule(scale, mult, [(phi(1, z), e[1]), (b_z, corr)])


# Adams-Bashforth weights for equal steps, newest output first (iPNDM).
_ADAMS_BASHFORTH = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


def ipndm_update(levels: list[Level]) -> Linear:
    """iPNDM step of order k = len(levels) - 1 (1 to 4; noise form, 1 model call per step).

    In y = x / alpha and sigma~ = sigma / alpha = e^{-lambda} the probability-flow ODE is
    dy/dsigma~ = eps(x); iPNDM takes an Adams-Bashforth step with the fixed equal-step
    weights w of order k, whatever the step sizes (Zhang & Chen, DEIS, 2023; Zhou et al.,
    2024):  x_t = (alpha_t / alpha_s) x + alpha_t (sigma~_t - sigma~_s) sum_j w_j eps_j.
    Order 1 is DDIM. It has order k on grids uniform in sigma~.
    """
    *prev, t = levels
    k = len(prev)
    if not 1 <= k <= 4:  # internal
        raise ValueError(f"iPNDM order must be 1 to 4; got {k}")
    s = prev[0]
    step = t.alpha * (t.sigma / t.alpha - s.sigma / s.alpha)
    return Linear(t.alpha / s.alpha, tuple(step * w for w in _ADAMS_BASHFORTH[k - 1]))


# DEIS's time variable in its tAB form, as ComfyUI's sample_deis (after diff-sampler's GITS
# code) defines it whatever the model: t of the VP SDE that EDM fits to sigma in [0.002, 80]
# with epsilon_s = 1e-3 (Karras et al. 2022, Table 1), sigma(t)^2 = e^{beta_d t^2/2 +
# beta_min t} - 1, so t(0.002) = 1e-3 and t(80) = 1.
_DEIS_LOG_LO = math.log1p(0.002**2)
_DEIS_LOG_HI = math.log1p(80.0**2)
_DEIS_BETA_D = 2.0 * (_DEIS_LOG_LO / 1e-3 - _DEIS_LOG_HI) / (1e-3 - 1.0)
_DEIS_BETA_MIN = _DEIS_LOG_HI - 0.5 * _DEIS_BETA_D
# The weights' integrals: Gauss-Legendre in log sigma~, this many nodes per panel of at most
# _DEIS_PANEL (the integrand is analytic within pi/2 of the real axis there): ~1e-15 of the
# step against 40-digit quadrature, from sigma~ = 1e-3 to 200.
_DEIS_NODES, _DEIS_WEIGHTS = np.polynomial.legendre.leggauss(20)
_DEIS_PANEL = 0.5


def _deis_time(sigma: np.ndarray) -> np.ndarray:
    """DEIS's tAB time of noise levels sigma~ = sigma / alpha (b = beta_min < 0: no
    cancellation in the difference)."""
    b = _DEIS_BETA_MIN
    return (np.sqrt(b * b + 2.0 * _DEIS_BETA_D * np.log1p(sigma * sigma)) - b) / _DEIS_BETA_D


def _deis_weights(nodes: list[float], end: float) -> list[float]:
    """w_j = Int_{nodes[0]}^{end} L_j(tau(sigma)) dsigma, L_j the Lagrange basis in tau =
    `_deis_time` through the `nodes` (noise levels sigma~, all > 0), float64."""
    taus = _deis_time(np.asarray(nodes, dtype=np.float64))
    u_s, u_t = math.log(nodes[0]), math.log(end)
    panels = max(1, math.ceil(abs(u_t - u_s) / _DEIS_PANEL))
    edges = np.linspace(u_s, u_t, panels + 1)
    mid, half = 0.5 * (edges[1:] + edges[:-1]), 0.5 * (edges[1:] - edges[:-1])
    u = (mid[:, None] + half[:, None] * _DEIS_NODES[None, :]).ravel()
    sigma = np.exp(u)
    dsigma = (half[:, None] * _DEIS_WEIGHTS[None, :]).ravel() * sigma  # dsigma = sigma du
    tau = _deis_time(sigma)
    out = []
    for j in range(len(nodes)):
        basis = np.ones_like(tau)
        for m in range(len(nodes)):
            if m != j:
                basis *= (tau - taus[m]) / (taus[j] - taus[m])
        out.append(float(np.dot(dsigma, basis)))
    return out


def deis_update(levels: list[Level]) -> Linear:
    """DEIS step of order k = len(levels) - 1 (1 to 3; noise form, 1 model call per step):
    tAB-DEIS as ComfyUI's sample_deis runs it (deis_mode='tab').

    In y = x / alpha and sigma~ = sigma / alpha the probability-flow ODE is dy/dsigma~ =
    eps(x). DEIS (Zhang & Chen, "Fast Sampling of Diffusion Models with Exponential
    Integrator", ICLR 2023; tAB-DEIS) extrapolates eps over the step by the Lagrange
    polynomial through the k newest outputs in a time variable tau and integrates it:

        x_t = (alpha_t / alpha_s) x + alpha_t sum_j w_j eps_j,
        w_j = Int_{sigma~_s}^{sigma~_t} L_j(tau(sigma~)) dsigma~,

    L_j the j-th Lagrange basis polynomial in tau through tau(sigma~_prev_j), j = 0..k-1
    (newest first). tau is ComfyUI's: the time of EDM's VP fit to sigma in [0.002, 80],
    the same function of sigma~ for every model (so the rule depends on the noise levels
    only, like iPNDM's). The integrals are taken by Gauss-Legendre quadrature in log
    sigma~, in float64 to about 1e-15 of the step (ComfyUI sums 10^4 points instead).
    Order 1 is DDIM (ComfyUI's first, Euler step); order k has global order k.
    """
    *prev, t = levels
    k = len(prev)
    if not 1 <= k <= 3:  # internal
        raise ValueError(f"DEIS order must be 1 to 3; got {k}")
    sig = [p.sigma / p.alpha if p.alpha > 0 else math.inf for p in levels]
    if not all(0.0 < v < math.inf for v in sig):  # internal: from_pure_noise refuses alpha = 0
        raise ValueError(f"DEIS needs 0 < sigma / alpha < inf at every level; got {sig}")
    s = prev[0]
    if k == 1:
        return Linear(t.alpha / s.alpha, (t.alpha * (t.sigma / t.alpha - s.sigma / s.alpha),))
    weights = _deis_weights(sig[:-1], sig[-1])
    return Linear(t.alpha / s.alpha, tuple(t.alpha * w for w in weights))


def jump_to_zero(form: Form, s: Level) -> Linear:
    """The last step from s to sigma = 0 (no model call after it): the limit h -> inf of the
    first-order step, x_0 = x0_pred(x_s). In the data form that is the output itself
    (cx = 0); in the noise form (x_s - sigma_s eps_pred) / alpha_s."""
    if form == "data":
        return Linear(0.0, (1.0,))
    return Linear(1.0 / s.alpha, (-s.sigma / s.alpha,))
