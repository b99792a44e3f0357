"""Tuned per-step coefficients, the shared pilot reference, optimize_solver and TunedSolver."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dpmsolver as dpm
from dpmsolver import noise
from dpmsolver.core import SolverOptions, make_plan, time_grid
from dpmsolver.models import TUNED_NFE, load, tuned_solver
from dpmsolver.tools import measure
from dpmsolver.tools.presets import SOLVERS
from dpmsolver.tuning.budget import budget
from dpmsolver.tuning.refinement import HELD_OUT_MEASURE
from dpmsolver.tuning.solver_search import HELD_OUT_NOISES

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def exact() -> object:
    return load("digits-exact")


@functools.cache
def small_reference() -> dpm.PilotReference:
    return dpm.pilot_reference(exact(), pilots=16, seed=0, candidates=24, substeps=2)


@functools.cache
def tuned(family: str = "dpm++2m+c+afs", nfe: int = 5) -> dpm.TunedSolver:
    return dpm.optimize_solver(
        exact(), nfe, reference=small_reference(), families=[family], iterations=2, name="exact"
    )


def grid_options(nfe: int, **options: object) -> SolverOptions:
    model = exact()
    opts = SolverOptions.of(**options)  # type: ignore[arg-type]
    steps = opts.steps_for_calls(nfe)
    s = model.schedule  # type: ignore[attr-defined]
    return SolverOptions.of(
        opts, timesteps=tuple(time_grid(s, "time_quadratic", s.t_max, s.t_min, steps).tolist())
    )


def row_lengths(options: SolverOptions) -> list[int]:
    plan = make_plan(exact().schedule, options)  # type: ignore[attr-defined]
    return [
        1 + len(r.cm) + (0 if c is None else 1 + len(c.cm))
        for r, c in zip(plan.rules, plan.corrections, strict=True)
    ]


def with_rows(options: SolverOptions, seed: int = 0, scale: float = 1e-2) -> SolverOptions:
    """`options` with small random coefficient rows of the lengths its plan needs."""
    gen = torch.Generator().manual_seed(seed)
    rows = tuple(
        tuple((scale * torch.randn(n, generator=gen, dtype=torch.float64)).tolist())
        for n in row_lengths(options)
    )
    return SolverOptions.of(options, coefficients=rows)


FAMILIES = [
    dict(order=2),
    dict(order=3, corrector="all"),
    dict(algorithm="ipndm", order=3, lower_order_final=False, analytic_first_step=True),
    dict(order=2, corrector="all", analytic_first_step=True),
    dict(algorithm="dpmsolver", order=2),
]


# -- SolverOptions.coefficients ------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_zero_coefficients_are_the_analytic_run_bit_for_bit(family: dict) -> None:
    options = grid_options(6, **family)
    zeros = tuple((0.0,) * n for n in row_lengths(options))
    x = noise.start_noise(exact(), 4, 1)
    a = dpm.sample(exact(), x, options)
    b = dpm.sample(exact(), x, options, coefficients=zeros)
    assert torch.equal(a, b)
    assert not torch.equal(a, dpm.sample(exact(), x, with_rows(options)))


def test_coefficients_change_each_rule_as_documented() -> None:
    options = grid_options(5, order=3, corrector="all")
    plain = make_plan(exact().schedule, options)  # type: ignore[attr-defined]
    changed = with_rows(options)
    plan = make_plan(exact().schedule, changed)  # type: ignore[attr-defined]
    for i, row in enumerate(changed.coefficients or ()):
        alpha = plan.levels[i + 1].alpha
        rule, new = plain.rules[i], plan.rules[i]
        k = len(rule.cm)
        assert new.cx == rule.cx * (1 + row[0])
        assert new.cm == tuple(c + alpha * d for c, d in zip(rule.cm, row[1 : 1 + k], strict=True))
        corr, new_corr = plain.corrections[i], plan.corrections[i]
        if corr is None:
            assert new_corr is None and len(row) == 1 + k
        else:
            assert new_corr is not None
            assert new_corr.cx == corr.cx * (1 + row[1 + k])
            assert new_corr.cm == tuple(
                c + alpha * d for c, d in zip(corr.cm, row[2 + k :], strict=True)
            )


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        (dict(steps=5, coefficients=((0.0,),)), ValueError, "no timesteps or sigmas"),
        (
            dict(timesteps=(1.0, 0.5, 0.001), method="singlestep", coefficients=((0.0,),) * 2),
            ValueError,
            "method='singlestep'",
        ),
        (
            dict(timesteps=(1.0, 0.5, 0.001), eta=1.0, coefficients=((0.0,),) * 2),
            ValueError,
            "eta=1.0",
        ),
        (
            dict(timesteps=(1.0, 0.5, 0.001), coefficients=((0.0, 0.0),)),
            ValueError,
            "has 1 rows; the grid has 2 steps",
        ),
        (
            dict(timesteps=(1.0, 0.5, 0.001), coefficients=((0.0, "a"), (0.0,))),
            TypeError,
            r"coefficients\[0\] must be a float",
        ),
        (
            dict(timesteps=(1.0, 0.5, 0.001), coefficients=((0.0, math.nan), (0.0,))),
            ValueError,
            r"coefficients\[0\] must be a finite",
        ),
        (
            dict(timesteps=(1.0, 0.5, 0.001), coefficients=((), (0.0,))),
            TypeError,
            r"coefficients\[0\] must be a non-empty",
        ),
        (dict(timesteps=(1.0, 0.5, 0.001), coefficients="0.1"), TypeError, "sequence of per-step"),
    ],
)
def test_bad_coefficients_are_refused(changes: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        SolverOptions.of(**changes)


def test_a_row_of_the_wrong_length_is_refused_when_planned() -> None:
    options = SolverOptions.of(
        timesteps=(1.0, 0.5, 0.1, 0.001),
        lower_order_final=False,
        coefficients=((0.0, 0.0),) * 3,
    )
    with pytest.raises(ValueError, match=r"coefficients\[1\] has 2 numbers; step 2 .* needs 3"):
        dpm.sample(exact(), noise.start_noise(exact(), 1, 0), options)


# -- the shared reference ------------------------------------------------------------------


def test_pilot_reference_cost_and_reuse_by_optimize_time_grid() -> None:
    model = exact()
    counted, calls = measure.counting(model)  # type: ignore[arg-type]
    ref = dpm.pilot_reference(counted, pilots=8, seed=3, candidates=16, substeps=2)
    assert ref.model_calls == calls[0] == 3 * 16 * 2 + 16
    assert len(ref.states) == 17 and len(ref.outputs) == 16 and ref.pilots == 8
    assert torch.equal(ref.x_start, noise.start_noise(model, 8, 3))
    own = dpm.optimize_time_grid(
        model, 4, x_T=ref.x_start, seed=3, candidates=16, substeps=2, sweeps=1
    )
    calls[0] = 0
    shared = dpm.optimize_time_grid(counted, 4, reference=ref, sweeps=1)
    assert shared.times == own.times  # the same reference, the same grid
    assert shared.model_calls == calls[0] == own.model_calls - ref.model_calls
    with pytest.raises(ValueError, match="not both"):
        dpm.optimize_time_grid(model, 4, reference=ref, x_T=ref.x_start)


# -- optimize_solver -----------------------------------------------------------------------


def test_optimize_solver_result_accounting_and_determinism() -> None:
    model = exact()
    ref = small_reference()
    counted, calls = measure.counting(model)  # type: ignore[arg-type]
    found = dpm.optimize_solver(
        counted, 5, reference=ref, families=["dpm++2m+c+afs"], iterations=2, name="exact"
    )
    # Evaluations: each call times its batch (12 tuning or 4 held-out pilots); the shared
    # reference's are not this call's.
    assert found.model_calls == {
        "reference": ref.model_calls,
        "held_out_reference": 0,
        "search": calls[0],
        "evaluations": calls[1],
    }
    assert 4 * calls[0] <= calls[1] <= 12 * calls[0]
    assert found.details["reference_shared"] is True
    assert found == tuned()  # deterministic given the pilots
    assert (found.pilots, found.held_out, found.seed, found.model) == (12, 4, 0, "exact")
    assert found.setting == "dpm++2m+c+afs" and found.nfe == 5
    assert found.times[0] == ref.times[0] and found.times[-1] == ref.times[-1]
    assert all(a > b for a, b in zip(found.times, found.times[1:], strict=False))
    counted_run, run_calls = measure.counting(model)  # type: ignore[arg-type]
    out = dpm.sample(counted_run, ref.x_start[:12], solver=found)
    assert run_calls[0] == 5
    assert found.pilot_error == pytest.approx(measure.rms(out, ref.end[:12]), rel=1e-12)
    held = dpm.sample(model, ref.x_start[12:], solver=found)
    assert found.held_out_error == pytest.approx(measure.rms(held, ref.end[12:]), rel=1e-12)
    analytic = dpm.sample(model, ref.x_start[12:], found.analytic())
    assert found.analytic_held_out_error == pytest.approx(
        measure.rms(analytic, ref.end[12:]), rel=1e-12
    )
    half = dpm.optimize_solver(
        exact(), 3, reference=ref, families=["dpm++2m"], iterations=0, held_out=0.5
    )
    assert (half.pilots, half.held_out) == (8, 8)
    grid_only = dpm.optimize_solver(
        exact(),
        5,
        reference=ref,
        families=["dpm++2m+c+afs"],
        iterations=2,
        tune_coefficients=False,
    )
    assert grid_only.coefficients is None and found.coefficients is not None
    # Without a shared reference it is computed (and counted) here.
    calls[0] = calls[1] = 0
    alone = dpm.optimize_solver(counted, 3, pilots=8, families=["dpm++2m"], iterations=1)
    assert alone.details["reference_shared"] is False
    spent = alone.model_calls
    assert spent["reference"] + spent["held_out_reference"] + spent["search"] == calls[0]
    # the reference's on all 8 pilots and on the 32 extra held-out noises included
    assert spent["evaluations"] == calls[1]
    assert (alone.pilots, alone.held_out) == (6, 2 + HELD_OUT_NOISES)


def test_extra_held_out_noises_decide_by_the_trimmed_measure() -> None:
    """pilot_reference(held_out_noises=N) draws N more states after the pilots (which stay
    as they were) and solves them to their end only; optimize_solver holds them out with
    the held-out pilots and reports its choice's measure: the RMS error without the worst
    tenth of the held-out states."""
    model = exact()
    plain = small_reference()
    ref = dpm.pilot_reference(
        model, pilots=16, seed=0, candidates=24, substeps=2, held_out_noises=12
    )
    assert torch.equal(ref.x_start, plain.x_start) and torch.equal(ref.end, plain.end)
    assert ref.held_x is not None and ref.held_end is not None
    assert torch.equal(ref.held_x, noise.start_noise(model, 28, 0)[16:])
    # half the candidates (12 intervals of 2 third-order steps)
    assert (ref.held_out_noises, ref.held_calls) == (12, 3 * 12 * 2)
    assert ref.evaluations == 16 * ref.model_calls + 12 * ref.held_calls
    assert measure.rms(ref.held_end, measure.reference(model, ref.held_x, 600)) < 2e-3
    found = dpm.optimize_solver(model, 5, reference=ref, families=["ipndm3"], iterations=1)
    assert (found.pilots, found.held_out) == (12, 4 + 12)
    assert found.details["held_out_measure"] == HELD_OUT_MEASURE
    x = torch.cat([ref.x_start[12:], ref.held_x])
    target = torch.cat([ref.end[12:], ref.held_end])
    out = dpm.sample(model, x, solver=found)
    trimmed = measure.trimmed_rms(out, target, 0.1)  # the worst 1 of 16 left out
    assert found.held_out_error == pytest.approx(trimmed, rel=1e-12)
    assert trimmed < measure.rms(out, target)
    # Beside given states drawn from the seed, the extras are not those states again.
    given = dpm.pilot_reference(
        model, x_T=ref.x_start, seed=0, candidates=24, substeps=2, held_out_noises=12
    )
    assert given.held_x is not None and torch.equal(given.held_x, ref.held_x)
    with pytest.raises(ValueError, match="held_out_noises"):
        dpm.optimize_solver(model, 5, reference=ref, held_out_noises=4)
    with pytest.raises(ValueError, match=r"give reference or the pilots \(pilots, seed\)"):
        dpm.optimize_solvers(model, [4, 5], reference=ref, pilots=99, seed=7)
    with pytest.raises(ValueError, match="held_out_noises must be >= 0; got -1"):
        dpm.pilot_reference(model, pilots=4, held_out_noises=-1)


def test_trimmed_rms_leaves_out_the_worst_samples() -> None:
    a = torch.zeros(20, 3, dtype=torch.float64)
    b = torch.zeros(20, 3, dtype=torch.float64)
    b[:, 0] = torch.arange(20.0)  # sample i has mean square i^2 / 3
    kept = torch.arange(18.0, dtype=torch.float64).pow(2).mean() / 3  # int(0.1 * 20) = 2 left out
    assert measure.trimmed_rms(a, b, 0.1) == pytest.approx(float(kept.sqrt()), rel=1e-15)
    assert measure.trimmed_rms(a[:9], b[:9], 0.1) == pytest.approx(measure.rms(a[:9], b[:9]))
    with pytest.raises(ValueError, match=r"trim must be a fraction in \[0, 1\); got 1.0"):
        measure.trimmed_rms(a, b, 1.0)
    # A lost sample (NaN or inf) is never the one trimmed away.
    for lost in (math.nan, math.inf):
        b[3, 1] = lost
        assert measure.trimmed_rms(a, b, 0.1) == math.inf


def test_frechet_distance_of_shifted_and_scaled_sets() -> None:
    """Closed forms: a set and its shift by c share a covariance S, so the distance is
    |c|^2; a set and its scaling by 2 (covariance 4 S) give |mu|^2 + Tr(S + 4 S - 2 * 2 S)
    = |mu|^2 + Tr(S). Fewer than 2 samples fit no covariance: refused, naming the set."""
    a = torch.randn(50, 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.5, -0.25], dtype=torch.float64)
    assert measure.frechet_distance(a, a + c.reshape(2, 3)) == pytest.approx(
        float(c.pow(2).sum()), rel=1e-9
    )
    flat = a.reshape(50, -1)
    expected = flat.mean(0).pow(2).sum() + torch.cov(flat.T).trace()
    assert measure.frechet_distance(a, 2 * a) == pytest.approx(float(expected), rel=1e-9)
    with pytest.raises(ValueError, match=r"b must hold 2 samples at least .* shape \(1, 2, 3\)"):
        measure.frechet_distance(a, a[:1])
    with pytest.raises(ValueError, match=r"a must hold 2 samples at least .* shape \(\)"):
        measure.frechet_distance(torch.tensor(1.0), a)
    with pytest.raises(TypeError, match="b must be a tensor; got list"):
        measure.frechet_distance(a, [1.0, 2.0])


def test_budget_refuses_too_few_noises_for_the_frechet_distance() -> None:
    """At the Frechet budgets (4-6 calls) each half of the held-out noises needs 2 samples;
    the refusal comes before any model call."""
    model, calls = measure.counting(load("digits-exact"))
    with pytest.raises(ValueError, match=r"n must be >= 4 with a budget in \(4, 5, 6\).*got 3"):
        budget(model, [8, 4], n=3)
    with pytest.raises(ValueError, match="n must be >= 1; got 0"):
        budget(model, [8], n=0)
    assert calls[0] == 0


@pytest.mark.parametrize("family", ["dpm++2m+c+afs", "ipndm3+afs", "dpm++3m"])
def test_tuned_solver_is_never_worse_than_its_start_on_the_held_out_pilots(family: str) -> None:
    found = tuned(family, 5)
    assert found.held_out_error <= found.analytic_held_out_error
    assert found.held_out_error <= found.details["start_held_out_error"]
    if found.coefficients is None:
        assert found.fallback is not None
    else:
        assert found.held_out_error < found.analytic_held_out_error


def test_fit_that_cannot_help_falls_back_to_the_analytic_rule() -> None:
    """At 40 calls on the exact model the analytic iPNDM-4 is near the reference's accuracy:
    whatever the fit does, the held-out pilots keep the better one."""
    found = dpm.optimize_solver(
        exact(), 40, reference=small_reference(), families=["ipndm4"], iterations=1
    )
    assert found.held_out_error <= found.analytic_held_out_error
    assert found.held_out_error <= found.details["start_held_out_error"]
    assert found.coefficients is None
    assert "coefficients dropped" in (found.fallback or "")


def test_point_mass_data_is_solved_exactly_and_the_fit_keeps_it() -> None:
    """With data at one point every data-form rule is exact: the tuned solver stays at the
    reference's accuracy (its coefficients add nothing the held-out pilots accept)."""
    schedule = load("digits-exact").schedule  # type: ignore[attr-defined]
    point = torch.linspace(-1, 1, 16, dtype=torch.float64).reshape(1, 4, 4)
    model = dpm.Denoiser(lambda x, t: point.expand_as(x), schedule, prediction="x0")
    ref = dpm.pilot_reference(model, shape=(1, 4, 4), pilots=8, candidates=12, substeps=1)
    found = dpm.optimize_solver(model, 4, reference=ref, families=["dpm++2m"], iterations=2)
    assert found.held_out_error <= found.analytic_held_out_error < 1e-12


def test_the_search_narrows_to_the_callers_options() -> None:
    found = dpm.optimize_solver(
        exact(), 4, reference=small_reference(), algorithm="ipndm", iterations=0, finalists=1
    )
    assert found.setting.startswith("ipndm") and found.options["algorithm"] == "ipndm"
    screened = {row["setting"] for row in found.details["screened"]}
    assert screened <= {"ipndm3", "ipndm4", "ipndm3+afs", "ipndm4+afs"}
    given = dpm.optimize_solver(
        exact(), 4, reference=small_reference(), algorithm="dpmsolver", iterations=0
    )
    assert given.setting == "given" and given.options["algorithm"] == "dpmsolver"


def test_max_calls_is_a_hard_bound() -> None:
    """A budget below what every search spends (the screening and the runs that score the
    result) is refused before any model call, with that least named; any other budget
    bounds the search's calls, and at the least no Levenberg-Marquardt iteration fits."""
    counted, calls = measure.counting(exact())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"max_calls=0 is below the least this search costs"):
        dpm.optimize_solver(
            counted, 6, reference=small_reference(), families=["dpm++3m"], max_calls=0
        )
    assert calls[0] == 0
    try:
        dpm.optimize_solver(
            exact(), 6, reference=small_reference(), families=["dpm++3m"], max_calls=1
        )
    except ValueError as error:
        least = int(re.search(r"costs, (\d+) calls", str(error)).group(1))  # type: ignore[union-attr]

    def capped(budget: int) -> int:
        found = dpm.optimize_solver(
            exact(), 6, reference=small_reference(), families=["dpm++3m"], max_calls=budget
        )
        spent = found.model_calls["search"]
        assert spent <= budget
        return spent

    no_iterations = dpm.optimize_solver(
        exact(), 6, reference=small_reference(), families=["dpm++3m"], iterations=0
    ).model_calls["search"]
    spent = [capped(b) for b in (least, least + 100, least + 600, 10**9)]
    assert spent[0] == no_iterations
    assert spent == sorted(spent) and spent[2] < spent[3]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(nfe=1), ValueError, "nfe"),
        (dict(nfe=4, steps=4), ValueError, "steps is set by optimize_solver"),
        (dict(nfe=4, coefficients=()), ValueError, "coefficients is set by optimize_solver"),
        (dict(nfe=4, families=["nope"]), ValueError, "families: unknown solver 'nope'"),
        (dict(nfe=4, eta=1.0), ValueError, "multistep ODE solvers"),
        (dict(nfe=4, regularization=-1.0), ValueError, "regularization must be >= 0"),
        (dict(nfe=4, finalists=0), ValueError, "finalists"),
        (dict(nfe=4, held_out=1.0), ValueError, r"held_out must be a fraction in \(0, 1\)"),
        (dict(nfe=4, orders=3), TypeError, "unknown solver option 'orders'"),
        (dict(nfe=4, denoise_to_zero=True), ValueError, "denoise_to_zero=True cannot be tuned"),
        (dict(nfe=4, pilots=8), ValueError, r"give reference or the pilots \(pilots\)"),
        (dict(nfe=4, seed=3, shape=(1, 8, 8)), ValueError, r"\(shape, seed\), not both"),
        (dict(nfe=4, tune_coefficients="no"), TypeError, "tune_coefficients must be a bool"),
        (dict(nfe=4, name=3), TypeError, "name must be a str or None"),
    ],
)
def test_optimize_solver_rejects(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        dpm.optimize_solver(exact(), reference=small_reference(), **kwargs)


def test_too_few_pilots_and_a_wrong_reference_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 pilots"):
        dpm.optimize_solver(exact(), 4, pilots=1, families=["dpm++2m"])
    with pytest.raises(TypeError, match="reference must be a PilotReference"):
        dpm.optimize_solver(exact(), 4, reference="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"x_T must be a floating tensor of pilot states"):
        dpm.pilot_reference(exact(), x_T=[[0.0]])  # type: ignore[arg-type]
    given = dpm.pilot_reference(exact(), x_T=small_reference().x_start, candidates=8)
    assert given.seed is None  # no seed drew the caller's states


def test_options_narrow_the_families_or_apply_to_them() -> None:
    ref = small_reference()
    bh1 = dpm.optimize_solver(exact(), 4, reference=ref, iterations=0, corrector_variant="bh1")
    settings = {row["setting"] for row in bh1.details["screened"]}
    assert len(settings) > 1  # not one "given" family: bh1 applies to every family
    # ... that has a corrector (the others have no B(h) to set)
    has_corrector = bh1.options.get("corrector", "off") != "off"
    assert bh1.options.get("corrector_variant") == ("bh1" if has_corrector else None)
    plain = dpm.optimize_solver(
        exact(), 4, reference=ref, iterations=0, lower_order_final=False, finalists=8
    )
    screened = {row["setting"] for row in plain.details["screened"]}
    assert any(name.startswith("dpm++") for name in screened)  # not only iPNDM and DEIS
    assert plain.options.get("lower_order_final") is False


@pytest.mark.parametrize(
    "family", ["dpm++2m", "dpm++3m+c+afs", "dpm++2m+c+afs", "ipndm4+afs", "deis3", "deis3+afs"]
)
def test_the_search_runs_the_samplers_loop_bit_for_bit(family: str) -> None:
    from dpmsolver.tuning.refinement import PilotSearch

    ref = small_reference()
    search = PilotSearch(exact(), ref, 12, 10**9)
    options = with_rows(grid_options(6, **SolverOptions.of(SOLVERS[family].options).changed()))
    run = search.run(options, search.plan(options))
    assert torch.equal(run.end, dpm.sample(exact(), ref.x_start[:12], options))
    again = search.run(options, search.plan(options), start=3, prev=run)  # a re-run from 3
    assert torch.equal(again.end, run.end)


# -- TunedSolver: a value every face runs ---------------------------------------------------


def with_coefficients(found: dpm.TunedSolver) -> dpm.TunedSolver:
    """`found` with coefficients even if its fit fell back (the faces must run both)."""
    if found.coefficients is not None:
        return found
    rows = with_rows(found.solver()).coefficients or ()
    return dataclasses.replace(found, coefficients=[list(r) for r in rows])


def test_json_round_trip_is_exact(tmp_path) -> None:
    found = with_coefficients(tuned())
    path = tmp_path / "tuned.json"
    found.to_json(path)
    back = dpm.TunedSolver.from_json(path)
    assert back == found and dpm.TunedSolver.from_json(found.to_json()) == found
    assert back.solver() == found.solver()
    x = noise.start_noise(exact(), 3, 5)
    assert torch.equal(dpm.sample(exact(), x, solver=back), dpm.sample(exact(), x, solver=found))
    assert torch.equal(dpm.Sampler(exact(), solver=back)(x), dpm.sample(exact(), x, back.solver()))
    with pytest.raises(TypeError, match="options or solver"):
        dpm.Sampler(exact(), SolverOptions.of(), solver=back)


def faces(found: dpm.TunedSolver, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tuned solver run by every face on the exact model from x (x_T of the VP model),
    each result in the VP model's scaling."""
    from dpmsolver.core import sigmas_to_times
    from dpmsolver.diffusers import DPMSolverScheduler
    from dpmsolver.k_diffusion import sample_tuned, tuned_sigmas

    model = exact()
    s = model.schedule  # type: ignore[attr-defined]
    out = {
        "native": dpm.sample(model, x, solver=found),
        "sampler": dpm.Sampler(model, solver=found)(x),
    }
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ns = dpm.NoiseScheduleVP("discrete", betas=betas)

    def eps(xx: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        return model(xx, s.levels([float(tt.reshape(-1)[0])])[0], "noise")  # type: ignore[operator]

    out["compat"] = dpm.DPM_Solver(eps, ns).sample(x, solver=found)

    def denoiser(xv: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        t = float(sigmas_to_times(s, [float(sigma.reshape(-1)[0])])[0])
        lv = s.levels([t])[0]
        return model(xv * lv.alpha, lv, "data")  # type: ignore[operator]

    first, last = s.levels([found.times[0], found.times[-1]])
    k = sample_tuned(denoiser, x / first.alpha, tuned_sigmas(found), solver=found, disable=True)
    # The state at t_end is x / alpha there; a final denoising gives x0_pred, in no frame.
    out["k_diffusion"] = k if found.solver().denoise_to_zero else k * last.alpha
    diffusers = pytest.importorskip("diffusers")

    # A pipeline's DPM-Solver config of this schedule (its grid keys are replaced).
    config = diffusers.DPMSolverMultistepScheduler(
        beta_schedule="linear", beta_start=1e-4, beta_end=0.02, timestep_spacing="leading"
    ).config
    sch = DPMSolverScheduler.from_tuned(found, config)
    sch.set_timesteps(found.solver().model_calls())
    latents = x * sch.init_noise_sigma
    for t in sch.timesteps:
        lv = s.levels([float(t) / 1000 + 1e-3])[0]
        latents = sch.step(model(latents, lv, "noise"), t, latents).prev_sample  # type: ignore[operator]
    out["diffusers"] = latents
    return out


@pytest.mark.parametrize("family", ["dpm++2m+c+afs", "ipndm3+afs", "dpm++3m"])
def test_every_face_runs_the_tuned_solver(family: str) -> None:
    found = with_coefficients(tuned(family, 5))
    x = noise.start_noise(exact(), 3, 9)
    got = faces(found, x)
    assert torch.equal(got["native"], got["sampler"])
    for name, value in got.items():
        assert float((value - got["native"]).abs().max()) < 1e-9, name
    # ... and they run its coefficients, not the analytic rules.
    analytic = dpm.sample(exact(), x, found.analytic())
    assert float((analytic - got["native"]).abs().max()) > 1e-6


def test_a_tuned_solver_that_denoises_at_the_end_runs_so_in_every_face() -> None:
    original = with_coefficients(tuned("dpm++2m+c+afs", 5))
    found = dataclasses.replace(original, options={**original.options, "denoise_to_zero": True})
    x = noise.start_noise(exact(), 3, 9)
    got = faces(found, x)
    for name, value in got.items():
        assert float((value - got["native"]).abs().max()) < 1e-9, name
    plain = dpm.sample(exact(), x, solver=original)
    assert float((plain - got["native"]).abs().max()) > 1e-6


def test_a_solver_saved_by_one_process_gives_bit_identical_samples_in_another(tmp_path) -> None:
    found = with_coefficients(tuned("dpm++2m+c+afs", 5))
    path = tmp_path / "tuned.json"
    found.to_json(path)
    x = noise.start_noise(exact(), 3, 9)
    torch.save(x, tmp_path / "x.pt")
    script = f"""
import sys, torch
sys.path.insert(0, {str(ROOT / "tests")!r})
import dpmsolver as dpm
from test_solver_tuning import faces
got = faces(dpm.TunedSolver.from_json({str(path)!r}), torch.load({str(tmp_path / "x.pt")!r}))
torch.save(got, {str(tmp_path / "got.pt")!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    other = torch.load(tmp_path / "got.pt")
    here = faces(dpm.TunedSolver.from_json(path), x)
    assert set(other) == set(here)
    for name in here:
        assert torch.equal(other[name], here[name]), name


def test_faces_refuse_what_they_cannot_honour() -> None:
    from dpmsolver.diffusers import DPMSolverScheduler
    from dpmsolver.k_diffusion import sample_dpm_solver, tuned_sigmas

    found = tuned()
    model = exact()
    x = noise.start_noise(model, 1, 0)
    ns = dpm.NoiseScheduleVP("discrete", betas=torch.linspace(1e-4, 0.02, 1000))
    solver = dpm.DPM_Solver(lambda xx, tt: torch.zeros_like(xx), ns)
    with pytest.raises(ValueError, match="steps, order must keep their defaults"):
        solver.sample(x, steps=10, order=3, solver=found)
    den = lambda xv, sigma: torch.zeros_like(xv)  # noqa: E731
    with pytest.raises(ValueError, match="order must keep their defaults"):
        sample_dpm_solver(den, x, tuned_sigmas(found), order=3, solver=found, disable=True)
    with pytest.raises(ValueError, match="sigmas must be the tuned solver's own"):
        sample_dpm_solver(den, x, tuned_sigmas(found)[1:], solver=found, disable=True)
    config = dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    record = json.loads(found.to_json())
    with pytest.raises(ValueError, match="timestep_spacing cannot be given"):
        DPMSolverScheduler(**config, timestep_spacing="leading", tuned_solver=record)
    with pytest.raises(ValueError, match="tuned on another schedule"):
        DPMSolverScheduler.from_tuned(found, dict(config, beta_end=0.012))
    with pytest.raises(ValueError, match="tuned on another schedule"):
        DPMSolverScheduler(shift=3.0, tuned_solver=record)  # a VP solver on a flow config
    sch = DPMSolverScheduler.from_tuned(found, dict(config, timestep_spacing="leading"))
    with pytest.raises(ValueError, match="takes 5 model calls"):
        sch.set_timesteps(6)
    with pytest.raises(ValueError, match="runs on its own grid"):
        sch.set_timesteps(timesteps=[900, 500, 100])
    with pytest.raises(TypeError, match="TunedSolver"):
        DPMSolverScheduler.from_tuned(3, config)
    other = dpm.NoiseScheduleVP("discrete", betas=torch.linspace(1e-4, 0.012, 1000))
    with pytest.raises(ValueError, match=r"noise_schedule gives .* tuned on another schedule"):
        dpm.DPM_Solver(lambda xx, tt: torch.zeros_like(xx), other).sample(x, solver=found)
    with pytest.raises(TypeError, match="solver must be a TunedSolver"):
        solver.sample(x, solver=SolverOptions.of())
    from dpmsolver.k_diffusion import sample_tuned

    with pytest.raises(TypeError, match="needs solver="):
        sample_tuned(den, x, tuned_sigmas(found), solver=None, disable=True)
    grid = dpm.TunedGrid([1.0, 0.5, 0.001], 2, {}, 0.0, 0.0, 0, 0)
    with pytest.raises(TypeError, match="solver must be a TunedSolver"):
        tuned_sigmas(grid)
    with pytest.raises(TypeError, match="solver must be a tuned solver"):
        dpm.sample(model, x, solver=3)


def test_diffusers_from_tuned_survives_save_and_load(tmp_path) -> None:
    from dpmsolver.diffusers import DPMSolverScheduler

    found = with_coefficients(tuned())
    sch = DPMSolverScheduler.from_tuned(found, dict(beta_schedule="linear"))
    sch.save_config(tmp_path)
    again = DPMSolverScheduler.from_pretrained(tmp_path)
    for s in (sch, again):
        s.set_timesteps(found.nfe)
    assert torch.equal(sch.timesteps, again.timesteps)
    assert sch.init_noise_sigma == again.init_noise_sigma
    x = noise.start_noise(exact(), 2, 1)
    runs = []
    for s in (sch, again):
        lat = x * s.init_noise_sigma
        for t in s.timesteps:
            lat = s.step(torch.sin(lat), t, lat).prev_sample
        runs.append(lat)
    assert torch.equal(runs[0], runs[1])


# -- shipped tuned solvers -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits-exact", "digits-net", "digits-flow", "digits-exact-flow"])
def test_shipped_tuned_solvers(name: str) -> None:
    model = load(name)
    total = 0
    for nfe in TUNED_NFE:
        found = tuned_solver(name, nfe)
        # A budget's solver may be a smaller budget's (better on the held-out states: 4
        # pilots of 16 and the extra held-out noises).
        assert found.nfe <= nfe and found.model == name
        assert (found.pilots, found.held_out) == (12, 4 + HELD_OUT_NOISES)
        assert found.details["held_out_measure"] == HELD_OUT_MEASURE
        assert found.model_calls["reference"] + found.model_calls["search"] <= 5000
        assert found.model_calls["evaluations"] <= 50_000
        assert found.held_out_error <= found.analytic_held_out_error
        total += found.model_calls["search"]
        counted, calls = measure.counting(model)
        out = dpm.sample(counted, noise.start_noise(model, 2, 0), solver=found)
        assert calls[0] == found.nfe and torch.isfinite(out).all()
    assert total + found.model_calls["reference"] <= 12000  # budgets 4-10, one reference
    with pytest.raises(ValueError, match="no tuned solver"):
        tuned_solver(name, 7)
    with pytest.raises(ValueError, match="name must be one of"):
        tuned_solver("nope", 4)


def test_shipped_tuned_solver_beats_the_shipped_grid_on_fresh_noise() -> None:
    """The shipped 6-call solver of the exact model against its grid with the analytic
    rules, on noises none of its pilots saw."""
    model = exact()
    found = tuned_solver("digits-exact", 6)
    x = noise.start_noise(model, 64, 11)
    ref = measure.reference(model, x, 1500)
    ours = measure.rms(dpm.sample(model, x, solver=found), ref)
    analytic = measure.rms(dpm.sample(model, x, found.analytic()), ref)
    assert ours < 0.8 * analytic


def test_cli_sample_tuned_runs_the_shipped_solver(tmp_path, capsys) -> None:
    from dpmsolver.cli import main
    from dpmsolver.tools import png

    out = tmp_path / "tuned.png"
    assert main(["sample", "--tuned", "--steps", "5", "--n", "4", "--out", str(out)]) == 0
    assert "5 model calls" in capsys.readouterr().out
    shipped = out.read_bytes()
    plain = tmp_path / "plain.png"
    assert main(["sample", "--steps", "5", "--n", "4", "--out", str(plain)]) == 0
    assert shipped != plain.read_bytes()
    assert png.read_png(out).shape == png.read_png(plain).shape


def test_tuned_sigmas_final_zero_and_the_flow_face() -> None:
    """`tuned_sigmas(..., final_zero=True)` ends the k-diffusion run with the denoised
    prediction (one call more); on a flow model the face takes the flow sigmas."""
    from dpmsolver.k_diffusion import sample_tuned, tuned_sigmas

    found = with_coefficients(tuned())
    sig = tuned_sigmas(found, final_zero=True)
    assert float(sig[-1]) == 0.0 and sig[:-1].tolist() == found.sigmas
    # A flow model: data at one point, so every rule is exact and the faces must agree.
    point = torch.linspace(-1, 1, 16, dtype=torch.float64).reshape(1, 4, 4)
    flow = dpm.Denoiser(lambda x, t: point.expand_as(x), dpm.FlowSchedule(), prediction="x0")
    ref = dpm.pilot_reference(flow, shape=(1, 4, 4), pilots=8, candidates=12, substeps=1)
    on_flow = dpm.optimize_solver(flow, 4, reference=ref, families=["dpm++2m"], iterations=1)
    flow_sigmas = tuned_sigmas(on_flow, "flow")
    levels = flow.schedule.levels(on_flow.times)
    assert flow_sigmas.tolist() == pytest.approx([lv.sigma for lv in levels], rel=1e-12)
    x = ref.x_start[:2]
    calls = [0]

    def denoiser(xv: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return point.expand_as(xv)

    out = sample_tuned(
        denoiser, x, flow_sigmas, solver=on_flow, model_sampling="flow", disable=True
    )
    assert calls[0] == 4
    assert float((out - dpm.sample(flow, x, solver=on_flow)).abs().max()) < 1e-9


def test_regularization_pulls_the_fit_to_the_analytic_rule() -> None:
    from dpmsolver.tuning.refinement import PilotSearch

    search = PilotSearch(exact(), small_reference(), 12, 10**9)
    base = grid_options(5, order=3)

    def largest(reg: float) -> float:
        fitted = search.refine(base, 2, reg, coefficients=True)
        return max(abs(v) for row in fitted.coefficients or () for v in row)

    loose, tight = largest(1e-3), largest(1e8)
    assert loose > 1e-3 and tight < 1e-3 * loose


def test_pilot_reference_between_given_times() -> None:
    s = exact().schedule  # type: ignore[attr-defined]
    ref = dpm.pilot_reference(exact(), pilots=2, candidates=8, substeps=1, t_start=0.8, t_end=0.01)
    assert (ref.times[0], ref.times[-1]) == (0.8, 0.01) and len(ref.times) == 9
    assert float(ref.x_start.std()) == pytest.approx(float(s.sigma(0.8)), rel=0.2)
    with pytest.raises(ValueError, match="t_start"):
        dpm.pilot_reference(exact(), pilots=2, t_start=2.0)


# -- a choice that never loses, several budgets, flow models -------------------------------


def held_out_error(solver: dpm.TunedSolver | SolverOptions) -> float:
    """RMS error of a solver on small_reference()'s held-out pilots (the last 4)."""
    ref = small_reference()
    options = solver.solver() if isinstance(solver, dpm.TunedSolver) else solver
    return measure.rms(dpm.sample(exact(), ref.x_start[12:], options), ref.end[12:])


def test_the_result_never_loses_to_the_best_untuned_setting_screened() -> None:
    found = dpm.optimize_solver(
        exact(), 5, reference=small_reference(), families=["dpm++2m", "ipndm3"], iterations=1
    )
    screened = [row for row in found.details["screened"] if row["grid"] != "dp"]
    best = min(screened, key=lambda row: row["pilot_error"])
    untuned = SolverOptions.of(
        SOLVERS[best["setting"]].options,
        timesteps=tuple(dpm.time_grid(exact().schedule, best["grid"], 1.0, 1e-3, 5).tolist()),
    )
    assert found.held_out_error == pytest.approx(held_out_error(found), rel=1e-9)
    assert found.held_out_error <= held_out_error(untuned) * (1 + 1e-9)


def test_budgets_tuned_together_are_monotone() -> None:
    found = dpm.optimize_solvers(
        exact(), [4, 3, 5], reference=small_reference(), families=["dpm++2m"], iterations=1
    )
    assert list(found) == [3, 4, 5]
    errors = [found[b].held_out_error for b in (3, 4, 5)]
    assert errors == sorted(errors, reverse=True)
    assert all(found[b].nfe <= b for b in found)
    with pytest.raises(TypeError, match="budgets must be a non-empty list"):
        dpm.optimize_solvers(exact(), 4)
    with pytest.raises(TypeError, match=r"smaller\[0\] must be a TunedSolver"):
        dpm.optimize_solver(exact(), 4, reference=small_reference(), smaller=[3])


def test_a_flow_model_from_pure_noise_is_tuned_and_run_by_every_face() -> None:
    """optimize_solver on a flow model that starts at pure noise (FlowSchedule(t_max=1)):
    the grids spaced in lambda are skipped, the rest tuned; the result runs natively, in
    the diffusers face (from a FlowMatch config) and in the k-diffusion face (flow
    sigmas), with the same output."""
    from dpmsolver.diffusers import DPMSolverScheduler
    from dpmsolver.k_diffusion import sample_tuned, tuned_sigmas

    schedule = dpm.FlowSchedule(shift=1.0, t_min=1e-3, t_max=1.0, time_scale=1000.0)
    model = load("digits-exact-flow", schedule=schedule)
    found = dpm.optimize_solver(
        model, 4, pilots=8, candidates=16, substeps=1, families=["dpm++2m+c"], iterations=1
    )
    assert found.times[0] == 1.0 and found.sigmas[0] == math.inf
    grids = {row["grid"] for row in found.details["screened"]}
    assert "karras" not in grids and "logSNR" not in grids and "time_uniform" in grids
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    native = dpm.sample(model, x, solver=found)
    scheduler = DPMSolverScheduler.from_tuned(
        found, dict(shift=1.0, prediction_type="flow_prediction")
    )
    scheduler.set_timesteps(found.nfe, mu=0.7)  # a tuned grid holds its shift: mu is not read
    assert scheduler.config.use_flow_sigmas is True
    y = x.clone()
    for t in scheduler.timesteps:
        s = float(t) / 1000
        x0 = model.mixture.posterior_mean(y, 1.0 - s, s)
        y = scheduler.step((y - (1.0 - s) * x0) / s - x0, t, y).prev_sample
    torch.testing.assert_close(y, native, rtol=1e-9, atol=1e-9)

    def denoiser(z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = float(sigma[0])
        return model.mixture.posterior_mean(z, 1.0 - s, s)

    sigmas = tuned_sigmas(found, "flow")
    k = sample_tuned(denoiser, x, sigmas, solver=found, model_sampling="flow", disable=True)
    torch.testing.assert_close(k, native, rtol=1e-9, atol=1e-9)


def test_counting_passes_on_what_the_model_says_of_itself() -> None:
    """A counted model keeps the sample shape and the time's name in messages (the ComfyUI
    tune node counts a k-diffusion denoiser, whose time is sigma)."""

    class Named:
        schedule = load("digits-exact").schedule
        sample_shape = (1, 8, 8)
        time_name = "sigma"

    class Plain:
        schedule = Named.schedule

    counted = measure.counting(Named())[0]  # type: ignore[arg-type]
    assert (counted.time_name, counted.sample_shape) == ("sigma", (1, 8, 8))  # type: ignore[attr-defined]
    assert not hasattr(measure.counting(Plain())[0], "time_name")  # type: ignore[arg-type]
