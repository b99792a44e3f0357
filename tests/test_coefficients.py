"""Identities of the update rules (`dpmsolver.core.coefficients`), coefficient by coefficient.

- phi_k agrees with its exact power series on both sides of the switch between series and
  closed form;
- every first-order rule is DDIM;
- the weights of every rule sum to DDIM's weight, so a constant model output is integrated
  exactly (the finite differences cancel);
- the rules that claim it integrate a polynomial model output exactly: Taylor-form order
  2 for a linear output, the exact third-order multistep and UniC for one degree more.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from scipy.integrate import quad

from dpmsolver.core import Level, VPSchedule, phi
from dpmsolver.core.coefficients import (
    Linear,
    ipndm_update,
    jump_to_zero,
    multistep_update,
    sde_multistep_update,
    singlestep_tableau,
    unic_correction,
)

SCHEDULE = VPSchedule.linear()
# Newest first: the step goes from 0.42 to 0.35; 0.5 and 0.6 are earlier outputs.
PREV = SCHEDULE.levels([0.42, 0.5, 0.6])
T = SCHEDULE.levels([0.35])[0]
FORMS = ["data", "noise"]


def phi_series(k: int, z: float, terms: int = 60) -> float:
    """phi_k(z) = sum_{n>=1} z^n / (n + k - 1)!, summed exactly in rationals."""
    zf = Fraction(z)
    return float(sum(zf**n / math.factorial(n + k - 1) for n in range(1, terms)))


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "z", [1e-8, -1e-8, 0.049999, 0.05, 0.050001, -0.049999, -0.05, -0.050001, 0.3, -2.0, 3.0]
)
def test_phi_matches_its_series_across_the_switch(k: int, z: float) -> None:
    exact = phi_series(k, z)
    # The closed form just above the switch loses ~k * log10(1 / 0.05) digits: 3e-13 at k=3.
    assert abs(phi(k, z) - exact) <= 1e-12 * abs(exact)


def ddim(form: str, s: Level, t: Level) -> Linear:
    """DDIM from s to t: x_t = alpha_t x0_pred + sigma_t eps_pred, written in x and the
    form's model output."""
    if form == "data":
        return Linear(t.sigma / s.sigma, (t.alpha - t.sigma * s.alpha / s.sigma,))
    return Linear(t.alpha / s.alpha, (t.sigma - t.alpha * s.sigma / s.alpha,))


def assert_rule_close(got: Linear, want: Linear) -> None:
    assert got.cx == pytest.approx(want.cx, rel=1e-14)
    assert got.cm == pytest.approx(want.cm, rel=1e-13)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("solver_type", ["dpmsolver", "taylor"])
def test_first_order_rules_are_ddim(form: str, solver_type: str) -> None:
    s = PREV[0]
    want = ddim(form, s, T)
    assert_rule_close(multistep_update(form, solver_type, [s, T]), want)
    assert_rule_close(singlestep_tableau(form, solver_type, s, [], T, [])[-1], want)
    if form == "noise":
        assert_rule_close(ipndm_update([s, T]), want)
    else:
        assert_rule_close(sde_multistep_update(solver_type, [s, T], 0.0), want)


def stages(r: list[float]) -> list[Level]:
    """The singlestep stage levels at lambda_s + r_j h for the step PREV[0] -> T."""
    s = PREV[0]
    lam = [s.lambda_ + rj * (T.lambda_ - s.lambda_) for rj in r]
    return SCHEDULE.levels(SCHEDULE.inverse_lambda(torch.tensor(lam, dtype=torch.float64)))


def all_rules(form: str) -> list[tuple[str, Linear]]:
    """Every rule of the step PREV[0] -> T, by name."""
    rules = []
    for k in (1, 2, 3):
        levels = [*PREV[:k], T]
        r = {1: [], 2: [0.5], 3: [1 / 3, 2 / 3]}[k]
        for st in ("dpmsolver", "taylor"):
            for m3 in ("damped", "exact"):
                rules.append((f"ms{k}-{st}-{m3}", multistep_update(form, st, levels, m3)))
            tableau = singlestep_tableau(form, st, PREV[0], stages(r), T, r)
            rules.append((f"ss{k}-{st}", tableau[-1]))
        for variant in ("bh1", "bh2"):
            rules.append((f"unic{k}-{variant}", unic_correction(form, levels, variant)))
    if form == "noise":
        four = [*PREV, SCHEDULE.levels([0.7])[0]]
        rules += [(f"ipndm{k}", ipndm_update([*four[:k], T])) for k in (1, 2, 3, 4)]
    else:
        for k in (1, 2):
            rules.append((f"sde{k}", sde_multistep_update("taylor", [*PREV[:k], T], 0.0)))
    return rules


@pytest.mark.parametrize("form", FORMS)
def test_weights_sum_to_ddims(form: str) -> None:
    # A constant model output m: the differences vanish and every rule is DDIM's step.
    want = ddim(form, PREV[0], T)
    rules = all_rules(form)
    assert len(rules) == (26 if form == "data" else 28)
    for name, rule in rules:
        assert rule.cx == pytest.approx(want.cx, rel=1e-14), name
        assert sum(rule.cm) == pytest.approx(want.cm[0], rel=1e-12), name


def exact_increment(form: str, s: Level, t: Level, poly: list[float]) -> float:
    """The model-output part of the exact solution for the output m(lambda) = sum_i
    poly[i] (lambda - lambda_s)^i: sigma_t Int e^l m dl (data) or -alpha_t Int e^-l m dl."""
    sign = 1.0 if form == "data" else -1.0

    def f(lam: float) -> float:
        return math.exp(sign * lam) * sum(c * (lam - s.lambda_) ** i for i, c in enumerate(poly))

    value = quad(f, s.lambda_, t.lambda_, epsabs=0.0, epsrel=1e-13)[0]
    return (t.sigma if form == "data" else -t.alpha) * value


def increment(rule: Linear, ms: list[float]) -> float:
    return sum(c * m for c, m in zip(rule.cm, ms, strict=True))


def output(poly: list[float], s: Level, at: Level) -> float:
    return sum(c * (at.lambda_ - s.lambda_) ** i for i, c in enumerate(poly))


LINEAR, QUADRATIC, CUBIC = [1.0, 0.7], [1.0, 0.7, -0.4], [1.0, 0.7, -0.4, 0.25]


@pytest.mark.parametrize("form", FORMS)
def test_rules_integrate_the_polynomials_they_claim_exactly(form: str) -> None:
    s = PREV[0]
    want = {name: exact_increment(form, s, T, p) for name, p in
            (("lin", LINEAR), ("quad", QUADRATIC), ("cubic", CUBIC))}  # fmt: skip
    ms = {name: [output(p, s, lv) for lv in PREV] for name, p in
          (("lin", LINEAR), ("quad", QUADRATIC), ("cubic", CUBIC))}  # fmt: skip
    m_t = {name: output(p, s, T) for name, p in
           (("lin", LINEAR), ("quad", QUADRATIC), ("cubic", CUBIC))}  # fmt: skip
    scale = abs(want["lin"])
    # Taylor-form second order: exact for a linear output; the authors' 'dpmsolver' form
    # (phi_1 / 2 for phi_2) is not, which shows the check can fail.
    taylor2 = multistep_update(form, "taylor", [*PREV[:2], T])
    assert abs(increment(taylor2, ms["lin"][:2]) - want["lin"]) <= 1e-13 * scale
    midpoint2 = multistep_update(form, "dpmsolver", [*PREV[:2], T])
    assert abs(increment(midpoint2, ms["lin"][:2]) - want["lin"]) > 1e-4 * scale
    # Third-order multistep, 'exact' weight: exact for a quadratic; 'damped' is not.
    exact3 = multistep_update(form, "taylor", [*PREV, T], "exact")
    assert abs(increment(exact3, ms["quad"]) - want["quad"]) <= 1e-13 * scale
    damped3 = multistep_update(form, "taylor", [*PREV, T], "damped")
    assert abs(increment(damped3, ms["quad"]) - want["quad"]) > 1e-4 * scale
    # UniC with k earlier outputs and the one at t: exact for degree k (k = 2, 3).
    for k, name in ((2, "quad"), (3, "cubic")):
        corr = unic_correction(form, [*PREV[:k], T], "bh2")
        got = increment(corr, [m_t[name], *ms[name][:k]])
        assert abs(got - want[name]) <= 1e-12 * scale, (k, got, want[name])


@pytest.mark.parametrize("form", FORMS)
def test_the_jump_to_zero_returns_x0_pred(form: str) -> None:
    s = PREV[0]
    x, x0 = 0.3, -0.8
    eps = (x - s.alpha * x0) / s.sigma
    rule = jump_to_zero(form, s)
    m = x0 if form == "data" else eps
    assert rule.cx * x + rule.cm[0] * m == pytest.approx(x0, rel=1e-14)
    # It is the limit of DDIM's step to sigma_t -> 0 (alpha_t -> 1 on a VP schedule).
    near = Level(1e-9, math.sqrt(1 - 1e-24), 1e-12, math.log(1e12))
    limit = ddim(form, s, near)
    assert limit.cx == pytest.approx(rule.cx, abs=1e-10)
    assert limit.cm == pytest.approx(rule.cm, rel=1e-10)
