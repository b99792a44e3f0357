"""dpmsolver.tools.bench: the reference solve, the rows, and the files it writes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from problems import reference_solution

from dpmsolver.models import load
from dpmsolver.tools import bench, measure

ROOT = Path(__file__).resolve().parents[1]


def test_reference_solve_agrees_with_scipy() -> None:
    model = load("digits-exact")
    s = model.schedule
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = measure.reference(model, x_T, nfe=3000)
    scipy = reference_solution(model.mixture, s, x_T, s.t_max, s.t_min)
    assert float((ours - scipy).abs().max()) < 1e-6


def test_run_rows_summary_and_files(tmp_path: Path) -> None:
    result = bench.run(
        load("digits-exact"),
        steps=[5, 10, 50],
        solvers=["ddim", "dpm++3m"],
        n=8,
        reference_nfe=600,
        baselines=False,
    )
    assert [(r.solver, r.steps, r.nfe) for r in result.rows] == [
        ("ddim", 5, 5),
        ("ddim", 10, 10),
        ("ddim", 50, 50),
        ("dpm++3m", 5, 5),
        ("dpm++3m", 10, 10),
        ("dpm++3m", 50, 50),
    ]
    errors = {(r.solver, r.steps): r.rms_error for r in result.rows}
    assert errors["dpm++3m", 50] < errors["dpm++3m", 10] < errors["ddim", 10]
    assert result.reference_error < 1e-4
    assert "dpm++3m reaches DDIM's 50-call error" in result.summary()
    result.to_csv(tmp_path / "b.csv")
    result.to_json(tmp_path / "b.json")
    rows = list(csv.DictReader((tmp_path / "b.csv").open()))
    assert len(rows) == 6 and rows[0]["solver"] == "ddim" and float(rows[0]["rms_error"]) > 0
    assert len(json.loads((tmp_path / "b.json").read_text())["rows"]) == 6
    table = result.table()
    assert "dpm++3m" in table and "50 steps" in table


def test_diffusers_baselines_join_for_discrete_schedules() -> None:
    pytest.importorskip("diffusers")
    result = bench.run(load("digits-exact"), steps=[10], solvers=["ddim"], n=4, reference_nfe=300)
    assert {r.solver for r in result.rows} == {"ddim", "diffusers-dpm++2m", "diffusers-unipc"}


def test_unknown_solver() -> None:
    with pytest.raises(ValueError, match="solvers: unknown solver 'rk4'"):
        bench.run(load("digits-exact"), solvers=["rk4"])


def test_plot_ticks_the_calls_as_plain_integers() -> None:
    """The calls axis is ticked at the calls run, labelled 4, 5, ... 50 (a log axis left
    alone labels them 5x10^0 and adds minor labels)."""
    pytest.importorskip("matplotlib")

    calls = [4, 5, 6, 8, 10, 15, 20, 25, 50]
    rows = [
        bench.Row(name, nfe, nfe, rms_error=scale / nfe**2, max_error=1.0, seconds=0.0)
        for name, scale in (("ddim", 1.0), ("dpm++2m", 0.1))
        for nfe in calls
    ]
    fig = bench.BenchResult(rows, 60, 0.0, "logSNR").figure()
    (ax,) = fig.axes
    fig.canvas.draw()
    assert list(ax.get_xticks()) == calls
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(c) for c in calls]
    assert [t.get_text() for t in ax.get_xticklabels(minor=True)] == []
    assert getattr(fig, "number", None) is None  # not a pyplot figure: nothing left open


def test_the_plot_leaves_the_callers_backend(tmp_path: Path) -> None:
    """plot() draws without pyplot: a notebook's (here: svg) backend stays selected."""
    pytest.importorskip("matplotlib")
    script = (
        "import matplotlib; matplotlib.use('svg')\n"
        "from dpmsolver.tools import bench\n"
        "rows = [bench.Row('ddim', n, n, 1.0 / n, 1.0, 0.0) for n in (4, 8)]\n"
        f"bench.BenchResult(rows, 60, 0.0, 'logSNR').plot({str(tmp_path / 'b.png')!r})\n"
        "import sys; print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "False"]
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
