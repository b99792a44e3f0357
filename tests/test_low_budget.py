"""UniC corrector, iPNDM, published and tuned time grids, and the budget search."""

from __future__ import annotations

import functools
import itertools
import json

import numpy as np
import pytest
import torch
from problems import digits_mixture, reference_solution

import dpmsolver as dpm
from dpmsolver import noise
from dpmsolver.core.coefficients import unic_correction
from dpmsolver.models import TUNED_NFE, load, tuned_grid, tuned_solver
from dpmsolver.tools import measure
from dpmsolver.tools.presets import SOLVERS
from dpmsolver.tuning import budget


@functools.cache
def exact() -> tuple[object, torch.Tensor]:
    model = load("digits-exact")
    return model, noise.start_noise(model, 8, 3)


def counted_run(**options: object) -> tuple[torch.Tensor, int]:
    model, x_T = exact()
    counted, calls = measure.counting(model)  # type: ignore[arg-type]
    x = dpm.sample(counted, x_T, **options)  # type: ignore[arg-type]
    return x, calls[0]


@pytest.mark.parametrize("algorithm", ["dpmsolver++", "dpmsolver"])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("corrector", ["all", "low_noise"])
def test_corrector_costs_no_model_call(algorithm: str, order: int, corrector: str) -> None:
    plain, n_plain = counted_run(steps=7, order=order, algorithm=algorithm)
    corrected, n_corr = counted_run(steps=7, order=order, algorithm=algorithm, corrector=corrector)
    assert n_plain == n_corr == 7
    assert not torch.equal(plain, corrected)


def test_low_noise_corrects_only_the_second_half() -> None:
    def states(corrector: str) -> list[torch.Tensor]:
        seen: list[torch.Tensor] = []
        counted_run(steps=10, corrector=corrector, callback=lambda i, t, x: seen.append(x.clone()))
        return seen

    off, half, full = states("off"), states("low_noise"), states("all")
    assert all(torch.equal(a, b) for a, b in zip(off[:6], half[:6], strict=True))  # steps 0-5
    assert not torch.equal(off[6], half[6])
    assert not torch.equal(off[1], full[1])
    # One state per step; that the last step costs no call is tested by the call counts.
    assert len(off) == len(half) == len(full) == 11


def test_corrector_variants_differ_only_at_order_one() -> None:
    schedule = load("digits-exact").schedule
    levels = schedule.levels([0.9, 0.7, 0.5, 0.3])
    for k in (2, 3):
        step = [*levels[k - 1 :: -1][:k], levels[k]]
        bh1, bh2 = unic_correction("data", step, "bh1"), unic_correction("data", step, "bh2")
        assert bh1.cx == bh2.cx
        np.testing.assert_allclose(bh1.cm, bh2.cm, rtol=1e-12, atol=0)
    one = [levels[0], levels[1]]
    assert unic_correction("data", one, "bh1").cm != unic_correction("data", one, "bh2").cm


def test_corrector_is_exact_for_a_constant_model_output() -> None:
    # x0_pred constant: the data-form ODE solution is DDIM's; every weight on a difference
    # cancels, so corrected and plain steps agree to rounding.
    schedule = dpm.VPSchedule.linear()
    x0 = torch.full((2, 3), 0.25, dtype=torch.float64)
    model = dpm.Denoiser(lambda x, t: x0.expand_as(x), schedule, prediction="x0")
    x_T = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for order in (1, 2, 3):
        a = dpm.sample(model, x_T, steps=6, order=order)
        b = dpm.sample(model, x_T, steps=6, order=order, corrector="all")
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(corrector="sometimes"), "corrector"),
        (dict(corrector_variant="bh3"), "corrector_variant"),
        (dict(corrector="all", method="singlestep"), "corrector='all' needs method='multistep'"),
        (dict(corrector="all", algorithm="ipndm"), "algorithm 'dpmsolver\\+\\+'"),
        (dict(corrector="all", eta=0.5), "needs eta=0"),
        (dict(algorithm="ipndm", method="singlestep"), "algorithm='ipndm' needs method"),
        (dict(algorithm="ipndm", order=5), "order"),
        (dict(order=4), "order"),
    ],
)
def test_bad_corrector_and_ipndm_options(options: dict, message: str) -> None:
    model, x_T = exact()
    with pytest.raises(ValueError, match=message):
        dpm.sample(model, x_T, steps=6, **options)  # type: ignore[arg-type]


def test_ipndm_first_order_is_ddim() -> None:
    a, _ = counted_run(steps=8, order=1, algorithm="ipndm")
    b, _ = counted_run(steps=8, order=1, algorithm="dpmsolver")
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@functools.cache
def sigma_window() -> tuple[dpm.Denoiser, torch.Tensor, torch.Tensor, float, float]:
    # sigma = sigma_t / alpha_t from 2 to 0.2: iPNDM's fixed weights are exact-order on a
    # grid uniform in sigma, so its convergence can be measured there.
    from problems import exact_x0_net

    gmm = digits_mixture()
    schedule = dpm.VPSchedule.linear()
    t0, t1 = schedule.inverse_lambda(-torch.log(torch.tensor([2.0, 0.2], dtype=torch.float64)))
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x * float(schedule.sigma(t0))
    ref = reference_solution(gmm, schedule, x, float(t0), float(t1))
    model = dpm.Denoiser(exact_x0_net(gmm, schedule), schedule, prediction="x0")
    return model, x, ref, 2.0, 0.2


def ipndm_errors(order: int, nfe: list[int]) -> list[float]:
    model, x, ref, s0, s1 = sigma_window()
    out = []
    for n in nfe:
        sig = torch.linspace(s0, s1, n + 1, dtype=torch.float64)
        y = dpm.sample(
            model, x, sigmas=sig, order=order, algorithm="ipndm", lower_order_final=False
        )
        out.append(float((y - ref).abs().max()))
    return out


@pytest.mark.parametrize("order", [1, 2])
def test_ipndm_converges_at_its_order_on_a_sigma_uniform_grid(order: int) -> None:
    nfe = [20, 40, 80, 160]
    slope = -np.polyfit(np.log(nfe), np.log(ipndm_errors(order, nfe)), 1)[0]
    assert slope == pytest.approx(order, abs=0.25)


def test_higher_order_ipndm_is_more_accurate() -> None:
    errors = [ipndm_errors(k, [40])[0] for k in (1, 2, 3, 4)]
    assert errors[0] > 3 * errors[1] > 3 * errors[2]
    assert errors[3] < errors[2]


def test_interpolate_grid_and_align_your_steps() -> None:
    table = dpm.ALIGN_YOUR_STEPS["sd15"]
    assert dpm.align_your_steps("sd15", 10) == list(table)
    twenty = dpm.align_your_steps("sd15", 20)
    assert len(twenty) == 21 and twenty[0] == table[0] and twenty[-1] == table[-1]
    assert all(a > b for a, b in itertools.pairwise(twenty))
    # log-linear: a new point halfway between two table points is their geometric mean.
    assert twenty[1] == pytest.approx((table[0] * table[1]) ** 0.5, rel=1e-12)
    assert dpm.interpolate_grid([8.0, 2.0], 2) == pytest.approx([8.0, 4.0, 2.0])
    with pytest.raises(ValueError, match="strictly monotone"):
        dpm.interpolate_grid([1.0, 2.0, 1.5], 4)
    with pytest.raises(ValueError, match="> 0"):
        dpm.interpolate_grid([1.0, 0.0], 4)
    with pytest.raises(ValueError, match="model"):
        dpm.align_your_steps("sd3", 10)


def test_align_your_steps_grid_samples_a_discrete_model() -> None:
    from dpmsolver.diffusers import DPMSolverScheduler

    sd = DPMSolverScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    schedule = sd.noise_schedule
    model = dpm.Denoiser(lambda x, t: 0.5 * x, schedule, prediction="noise")
    x_T = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sigmas = dpm.align_your_steps("sd15", 12)
    counted, calls = measure.counting(model)
    out = dpm.sample(counted, x_T, sigmas=sigmas)
    assert calls[0] == 12 and torch.isfinite(out).all()


@functools.cache
def tuned() -> dpm.TunedGrid:
    model, _ = exact()
    return dpm.optimize_time_grid(
        model,
        6,
        shape=(1, 8, 8),
        algorithm="ipndm",
        order=3,
        lower_order_final=False,
    )


def test_optimize_time_grid_result_and_call_count() -> None:
    model, _ = exact()
    grid = tuned()
    schedule = model.schedule  # type: ignore[attr-defined]
    assert isinstance(grid.times, list) and all(type(t) is float for t in grid.times)
    assert len(grid.times) == 7 and grid.nfe == 6
    assert grid.times[0] == schedule.t_max and grid.times[-1] == schedule.t_min
    assert all(a > b for a, b in zip(grid.times, grid.times[1:], strict=False))
    # Never worse than the best proposal (the DP grid and the standard grids) it started from.
    assert grid.pilot_error <= grid.initial_error == min(grid.details["start_errors"].values())
    counted, calls = measure.counting(model)  # type: ignore[arg-type]
    again = dpm.optimize_time_grid(
        counted,
        6,
        shape=(1, 8, 8),
        algorithm="ipndm",
        order=3,
        lower_order_final=False,
    )
    assert again.times == grid.times  # deterministic given the seed
    assert again.model_calls == calls[0]
    bound = 3 * 64 * 3 + 64 + 5 * 6 + 3 * 2 * 2 * 5 * 6
    assert 0 < calls[0] <= bound
    other = dpm.optimize_time_grid(
        model,
        6,
        shape=(1, 8, 8),
        seed=1,
        algorithm="ipndm",
        order=3,
        lower_order_final=False,
    )
    assert other.times != grid.times


def test_tuned_grid_beats_the_baselines_on_held_out_noise() -> None:
    model, _ = exact()
    x_T = noise.start_noise(model, 64, 7)  # not the tuning seed
    ref = measure.reference(model, x_T, 1500)
    rms = lambda x: float((x - ref).pow(2).mean().sqrt())  # noqa: E731
    best_base = min(
        rms(dpm.sample(model, x_T, steps=6, order=o, skip_type=g))  # type: ignore[arg-type]
        for o in (2, 3)
        for g in ("logSNR", "time_uniform")
    )
    ours = rms(
        dpm.sample(
            model, x_T, timesteps=tuned().times, algorithm="ipndm", order=3, lower_order_final=False
        )
    )
    # RMS over samples is dominated by a few hard trajectories, so a 64-sample ratio varies
    # by seed (0.40-0.64 over seeds 1-7); benchmarks/low_budget.py measures it in full.
    assert ours < 0.7 * best_base


def test_tuned_grid_round_trip_and_authors_api(tmp_path) -> None:
    grid = tuned()
    path = tmp_path / "grid.json"
    grid.to_json(path)
    assert dpm.TunedGrid.from_json(path) == grid
    assert json.loads(path.read_text())["times"] == grid.times
    # The official-compatible API consumes the plain list of times.
    from problems import exact_x0_net

    ns = dpm.NoiseScheduleVP("discrete", betas=torch.linspace(1e-4, 0.02, 1000))
    net = exact_x0_net(digits_mixture(), ns.native)
    wrapped = dpm.model_wrapper(net, ns, model_type="x_start")
    solver = dpm.DPM_Solver(wrapped, ns, algorithm_type="dpmsolver++")
    x_T = noise.start_noise(load("digits-exact"), 4, 0)
    a = solver.sample(x_T, order=2, timesteps=grid.times)
    b = dpm.sample(dpm.Denoiser(net, ns.native, prediction="x0"), x_T, timesteps=grid.times)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(nfe=1), ValueError, "nfe must be >= 2"),
        (dict(nfe=0), ValueError, "nfe must be >= 2"),
        (dict(nfe=2.5), TypeError, "nfe must be an int"),
        (dict(nfe=4, steps=4), ValueError, "steps is set by optimize_time_grid"),
        (dict(nfe=4, order=7), ValueError, "order"),
    ],
)
def test_optimize_time_grid_rejects(kwargs: dict, error: type, message: str) -> None:
    model, _ = exact()
    with pytest.raises(error, match=message):
        dpm.optimize_time_grid(model, shape=(1, 8, 8), **kwargs)
    with pytest.raises(ValueError, match="shape"):
        dpm.optimize_time_grid(model, 4)


@pytest.mark.parametrize("name", ["digits-exact", "digits-net"])
def test_shipped_tuned_grids(name: str) -> None:
    model = load(name)
    schedule = model.schedule
    for nfe in TUNED_NFE:
        grid = tuned_grid(name, nfe)
        assert len(grid.times) == dpm.SolverOptions.of(**grid.options).steps_for_calls(nfe) + 1
        assert grid.times[0] == pytest.approx(schedule.t_max)
        assert grid.times[-1] == pytest.approx(schedule.t_min)
        counted, calls = measure.counting(model)
        dpm.sample(counted, noise.start_noise(model, 2, 0), timesteps=grid.times, **grid.options)
        assert calls[0] == nfe
    with pytest.raises(ValueError, match="no tuned grid"):
        tuned_grid(name, 7)


def test_budget_search_and_cli(tmp_path, capsys) -> None:
    model, _ = exact()
    result = budget.budget(
        model,
        [5],
        n=8,
        pilots=8,
        reference_nfe=300,
        settings=["dpm++2m", "ipndm3"],
        grids=["logSNR", "ays"],
        max_calls=500,
    )
    (row,) = result.rows
    assert row.nfe == 5 and row.ratio == pytest.approx(row.rms_error / row.baseline_error)
    # The best untuned setting is the best of every setting on every grid.
    assert len(result.untuned[5]) == 4
    assert (row.baseline_error, row.baseline) == min(result.untuned[5])
    names = {name for _, name in result.untuned[5]}
    assert names == {f"{s}, {g}" for s in ("dpm++2m", "ipndm3") for g in ("logSNR", "ays")}
    # The chosen untuned setting is the best on the tuning pilots (the 6 of 8 not held out),
    # scored here on its own; its error is its held-out one.
    pilots = dpm.pilot_reference(model, pilots=8, seed=0)

    def on_pilots(label: str) -> float:
        name, grid = label.split(", ")
        opts = SOLVERS[name].options
        times = budget.untuned_grid(model.schedule, grid, opts.steps_for_calls(5))
        options = dpm.SolverOptions.of(opts, timesteps=tuple(times))
        run = dpm.sample(model, pilots.x_start[:6], options)
        return measure.rms(run, pilots.end[:6])

    assert row.chosen == min(sorted(names), key=on_pilots)
    assert (row.chosen_error, row.chosen) in result.untuned[5]
    solver = result.solvers[5]
    assert row.times == solver.times and row.setting == solver.setting
    x = noise.start_noise(model, 8, 1)  # the budget's held-out noises (seed 1)
    ref = measure.reference(model, x, 300)
    assert row.rms_error == pytest.approx(measure.rms(dpm.sample(model, x, solver=solver), ref))
    assert row.analytic_error == pytest.approx(
        measure.rms(dpm.sample(model, x, solver.analytic()), ref)
    )
    # the pilots' trajectory reference, then the extra held-out noises' ends (half the candidates)
    assert result.reference_calls == (3 * 64 * 4 + 64) + 3 * 32 * 4
    assert result.model_calls >= solver.model_calls["search"] > 0
    assert "Best setting per model-call budget" in result.table()
    from dpmsolver.cli import main

    code = main(
        [
            *("bench", "--budget", "--budgets", "4", "--n", "4"),
            *("--reference-nfe", "300", "--out", str(tmp_path)),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Best setting per model-call budget" in out
    data = json.loads((tmp_path / "budget.json").read_text())
    (saved,) = data["rows"]
    shipped = tuned_solver("digits-exact", 4)  # the CLI runs the shipped solver
    assert saved["nfe"] == 4 and saved["times"] == shipped.times
    assert saved["coefficients"] == shipped.coefficients
    # The shipped solver is compared with the untuned setting chosen on its tuning pilots.
    assert [saved["chosen_error"], saved["chosen"]] in data["untuned"]["4"]
    with pytest.raises(ValueError, match="budgets"):
        budget.budget(model, [1])
    with pytest.raises(ValueError, match="grids: unknown 'nope'"):
        budget.budget(model, [4], grids=["nope"])


def test_published_grids_are_mapped_onto_the_models_noise_range() -> None:
    """On Stable Diffusion's schedule the mapping is the identity: the AYS grid is the
    published table; on another schedule its ends are the schedule's."""
    sd = dpm.VPSchedule.discrete(
        betas=torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    )
    times = budget.untuned_grid(sd, "ays", 10)
    sigmas = [lv.sigma / lv.alpha for lv in sd.levels(times)]
    # (the table is rounded to 3-4 digits; SD's own ends are 14.6146 and 0.0292)
    assert sigmas == pytest.approx(list(dpm.ALIGN_YOUR_STEPS["sd15"]), rel=1e-2)
    model, _ = exact()
    schedule = model.schedule  # type: ignore[attr-defined]
    mapped = budget.untuned_grid(schedule, "ays", 7)
    assert (mapped[0], mapped[-1]) == (schedule.t_max, schedule.t_min) and len(mapped) == 8
    assert all(a > b for a, b in itertools.pairwise(mapped))


@pytest.mark.parametrize("steps", [6, 10, 20])
def test_diffusers_face_with_corrector_equals_unipc(steps: int) -> None:
    diffusers = pytest.importorskip("diffusers")
    from dpmsolver.diffusers import DPMSolverScheduler

    model = load("digits-exact")
    ns = model.schedule
    ac = torch.exp(2 * ns.log_alpha_table)
    betas = (1 - ac / torch.cat([torch.ones(1, dtype=ac.dtype), ac[:-1]])).numpy()
    unipc = diffusers.UniPCMultistepScheduler(
        trained_betas=betas, solver_order=2, solver_type="bh2", final_sigmas_type="sigma_min"
    )
    unipc.set_timesteps(steps)
    # UniPC always takes its last step at first order; ours only below 15 steps unless told.
    ours = DPMSolverScheduler(
        trained_betas=betas, corrector="all", final_step_first_order=steps >= 15
    )
    ours.set_timesteps(timesteps=unipc.timesteps.tolist())
    x_T = noise.start_noise(model, 4, 0)
    outs = []
    for scheduler in (unipc, ours):
        x = x_T.clone()
        for t in scheduler.timesteps:
            eps = model(x, ns.levels([(float(t) + 1.0) / 1000])[0], "noise")
            x = scheduler.step(eps, t, x).prev_sample
        outs.append(x)
    # diffusers computes its coefficients in float32.
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=2e-5)
    plain = DPMSolverScheduler(trained_betas=betas, final_step_first_order=steps >= 15)
    plain.set_timesteps(timesteps=unipc.timesteps.tolist())
    x = x_T.clone()
    for t in plain.timesteps:
        x = plain.step(model(x, ns.levels([(float(t) + 1.0) / 1000])[0], "noise"), t, x).prev_sample
    assert float((x - outs[0]).abs().max()) > 1e-3  # the corrector did something


def test_diffusers_face_rejects_corrector_settings() -> None:
    pytest.importorskip("diffusers")
    from dpmsolver.diffusers import DPMSolverScheduler

    with pytest.raises(ValueError, match="needs method='multistep'"):
        DPMSolverScheduler(corrector="all", method="singlestep")
    with pytest.raises(ValueError, match="corrector"):
        DPMSolverScheduler(corrector="yes")
    with pytest.raises(ValueError, match="algorithm_type"):
        DPMSolverScheduler(algorithm_type="ipndm")


def test_k_diffusion_face_corrector_and_ipndm() -> None:
    from dpmsolver import k_diffusion as kd

    model = load("digits-exact")
    schedule = model.schedule

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = float(sigma[0])
        alpha = (1 + s * s) ** -0.5
        return model.mixture.posterior_mean(x * alpha, alpha, s * alpha)  # type: ignore[attr-defined]

    lam = schedule.lambda_(torch.tensor([schedule.t_max, schedule.t_min], dtype=torch.float64))
    sig_max, sig_min = torch.exp(-lam).tolist()
    sigmas = kd.get_sigmas_karras(30, sig_min, sig_max).double()
    x_T = noise.start_noise(model, 4, 0) / float(schedule.alpha(schedule.t_max))
    ref = kd.sample_dpm_solver(
        denoiser, x_T, kd.get_sigmas_karras(400, sig_min, sig_max).double(), order=3, disable=True
    )
    plain = kd.sample_dpm_solver(denoiser, x_T, sigmas, disable=True)
    corrected = kd.sample_dpm_solver(denoiser, x_T, sigmas, corrector="all", disable=True)
    ipndm = kd.sample_ipndm(denoiser, x_T, sigmas, disable=True)
    err = lambda x: float((x - ref).pow(2).mean().sqrt())  # noqa: E731
    assert err(corrected) < 0.6 * err(plain)
    assert err(ipndm) < err(plain)
    same = kd.sample_dpm_solver(
        denoiser, x_T, sigmas, order=4, algorithm="ipndm", lower_order_final=False, disable=True
    )
    torch.testing.assert_close(ipndm, same, rtol=0, atol=0)


def test_diffusers_face_snaps_rounded_sigmas_and_rejects_out_of_range() -> None:
    pytest.importorskip("diffusers")
    from dpmsolver.diffusers import DPMSolverScheduler

    sd = DPMSolverScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    sd.set_timesteps(sigmas=[*dpm.align_your_steps("sd15", 10), 0.0])
    assert float(sd.timesteps[0]) == 999.0  # 14.615 lies 1e-4 above sigma_max
    with pytest.raises(ValueError, match="beyond the training schedule"):
        sd.set_timesteps(sigmas=[100.0, 1.0, 0.0])


def test_cli_sample_tuned_reports_the_tuned_solver(tmp_path, capsys) -> None:
    from dpmsolver.cli import main

    out = tmp_path / "t.png"
    args = ["sample", "--tuned", "--steps", "6", "--n", "4"]
    assert main([*args, "--quiet", "--out", str(out)]) == 0
    grid = tuned_grid("digits-exact", 6)
    algorithm = grid.options.get("algorithm", "dpmsolver++")
    line = capsys.readouterr().out
    assert f"{algorithm} multistep order {grid.options['order']}" in line
    assert "6 model calls" in line and out.exists()


# Analytic first step: x0_pred = 0 at t_start instead of a model call.


@pytest.mark.parametrize(
    "options",
    [
        dict(order=2),
        dict(order=3, corrector="all"),
        dict(order=2, algorithm="dpmsolver"),
        dict(order=3, algorithm="ipndm", lower_order_final=False),
    ],
)
def test_analytic_first_step_saves_one_call_and_equals_a_zero_first_output(options) -> None:
    model, x_T = exact()
    schedule = model.schedule  # type: ignore[attr-defined]
    _, n_plain = counted_run(steps=6, **options)
    out, n_afs = counted_run(steps=6, analytic_first_step=True, **options)
    assert (n_plain, n_afs) == (6, 5)

    def first_zero(x: torch.Tensor, level, target: str) -> torch.Tensor:
        if level.t == schedule.t_max:  # x0_pred = 0, so eps_pred = x / sigma_T
            return torch.zeros_like(x) if target == "data" else x / level.sigma
        return model(x, level, target)  # type: ignore[operator]

    first_zero.schedule = schedule  # type: ignore[attr-defined]
    expected = dpm.sample(first_zero, x_T, steps=6, **options)  # type: ignore[arg-type]
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_analytic_first_step_is_nearly_free_accuracy() -> None:
    # The approximate first output costs little: 6 steps for 5 calls come within 30% of
    # 6 steps for 6 calls, and beat 5 steps for 5 calls by a wide margin.
    model, x_T = exact()
    ref = measure.reference(model, x_T, 1000)  # type: ignore[arg-type]
    options = dict(algorithm="ipndm", order=3, lower_order_final=False, skip_type="time_quadratic")
    six = measure.rms(counted_run(steps=6, **options)[0], ref)
    five = measure.rms(counted_run(steps=5, **options)[0], ref)
    afs = measure.rms(counted_run(steps=6, analytic_first_step=True, **options)[0], ref)
    assert afs < 1.3 * six
    assert afs < 0.7 * five


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(method="singlestep"), ValueError, "analytic_first_step needs method='multistep'"),
        (dict(steps=1, order=1), ValueError, r"steps >= 2 \(one model call at least\); got 1"),
        (dict(t_start=0.5), ValueError, r"alpha / sigma <= 0.1 at t_start; got 0.292"),
        (dict(analytic_first_step=1), TypeError, "analytic_first_step must be a bool, got int"),
    ],
)
def test_analytic_first_step_rejects(options: dict, error: type, message: str) -> None:
    model, x_T = exact()
    options = {"analytic_first_step": True, **options}
    with pytest.raises(error, match=message):
        dpm.sample(model, x_T, **options)  # type: ignore[arg-type]


def test_optimize_time_grid_with_analytic_first_step() -> None:
    model, x_T = exact()
    grid = dpm.optimize_time_grid(model, 4, shape=(1, 8, 8), sweeps=1, analytic_first_step=True)
    assert grid.nfe == 4 and len(grid.times) == 6  # five steps for four calls
    assert grid.options == {"analytic_first_step": True}
    assert grid.pilot_error <= grid.initial_error
    counted, calls = measure.counting(model)
    dpm.sample(counted, x_T, timesteps=grid.times, **grid.options)  # type: ignore[arg-type]
    assert calls[0] == 4
    assert (
        dpm.SolverOptions.of(**grid.options).steps_for_calls(4) == 5
        and dpm.SolverOptions.of().steps_for_calls(4) == 4
    )


def test_cli_sample_analytic_first_step(tmp_path, capsys) -> None:
    from dpmsolver.cli import main

    out = tmp_path / "a.png"
    args = ["sample", "--analytic-first-step", "--steps", "5", "--n", "4", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    assert "5 model calls" in capsys.readouterr().out and out.exists()
