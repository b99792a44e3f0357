"""The `dpmsolver sample` main job and the examples, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dpmsolver.cli import main
from dpmsolver.png import read_png

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300
    )


def test_sample_writes_a_grid_png(tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    proc = run(
        "-m", "dpmsolver", "sample", "--n", "12", "--nrow", "4", "--steps", "6", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert "6 model calls" in proc.stdout
    image = read_png(out)
    # 3 rows x 4 columns of 8x8 tiles, 1-pixel borders, upscaled 4x.
    assert image.shape == ((3 * 8 + 2) * 4, (4 * 8 + 3) * 4)
    assert image.dtype == np.uint8 and image.min() < 40 and image.max() > 215


def test_sample_is_reproducible_by_seed(tmp_path: Path) -> None:
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for path, seed in zip(paths, ["1", "1", "2"], strict=True):
        assert main(["sample", "--n", "4", "--steps", "5", "--seed", seed, "--out", str(path)]) == 0
    a, b, c = (read_png(p) for p in paths)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize(
    "sde",
    [
        ["--eta", "1"],
        ["--eta", "0.5", "--order", "3"],
        ["--eta", "1", "--method", "singlestep"],
        ["--eta", "1", "--method", "singlestep", "--ancestral"],
    ],
)
def test_sample_runs_the_sde_solvers_reproducibly(
    tmp_path: Path, sde: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [tmp_path / f"{i}.png" for i in range(4)]
    runs = [(sde, "1"), (sde, "1"), (sde, "2"), ([], "1")]
    for path, (extra, seed) in zip(paths, runs, strict=True):
        args = ["sample", "--n", "4", "--steps", "6", "--seed", seed, "--out", str(path)]
        assert main([*args, *extra]) == 0
    a, b, c, ode = (read_png(p) for p in paths)
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, ode)
    said = capsys.readouterr().out.splitlines()
    assert f"SDE eta={float(sde[1]):g}" in said[0] and "SDE" not in said[3]


def test_bench_writes_table_csv_json_and_plot(tmp_path: Path) -> None:
    proc = run(
        "-m",
        "dpmsolver",
        "bench",
        "--steps",
        "4,8",
        "--solvers",
        "ddim,dpm++3m",
        "--n",
        "4",
        "--reference-nfe",
        "60",
        "--no-baselines",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert "dpm++3m" in proc.stdout and "8 steps" in proc.stdout
    rows = (tmp_path / "bench.csv").read_text().strip().splitlines()
    assert rows[0].startswith("solver,steps,nfe,rms_error") and len(rows) == 5
    assert (tmp_path / "bench.json").exists()
    plot = tmp_path / "bench.png"
    assert plot.exists() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_writes_one_png_with_a_row_per_solver(tmp_path: Path) -> None:
    out = tmp_path / "compare.png"
    proc = run(
        "-m",
        "dpmsolver",
        "compare",
        "--steps",
        "5,10",
        "--solvers",
        "ddim,dpm++2m",
        "--n",
        "2",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    # rows: 2 solvers + the reference; columns: 2 seeds x 2 step counts; 8x8 tiles, 4x.
    assert read_png(out).shape == ((3 * 8 + 2) * 4, (4 * 8 + 3) * 4)


@pytest.mark.parametrize(
    "args",
    [
        ["sample", "--steps", "0"],
        ["sample", "--n", "0"],
        ["sample", "--order", "5"],
        ["sample", "--method", "bogus"],
        ["frobnicate"],
        ["bench", "--steps", "4,x"],
        ["bench", "--solvers", "rk4"],
        ["compare", "--steps", "0"],
        ["sample", "--threads", "0"],
    ],
)
def test_bad_arguments_exit_2_without_traceback(args: list[str]) -> None:
    proc = run("-m", "dpmsolver", *args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("dpmsolver") and "error:" in proc.stderr


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_examples_run(example: Path) -> None:
    proc = run(str(example))
    assert proc.returncode == 0, proc.stderr
    assert "samples: (16, 1, 8, 8)" in proc.stdout


def test_sample_the_trained_network(tmp_path: Path) -> None:
    out = tmp_path / "net.png"
    proc = run(
        "-m",
        "dpmsolver",
        "sample",
        "--model",
        "digits-net",
        "--n",
        "4",
        "--nrow",
        "4",
        "--steps",
        "5",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "digits-net" in proc.stdout and "5 model calls" in proc.stdout
    assert read_png(out).shape == (8 * 4, (4 * 8 + 3) * 4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sample", "--seed", str(2**70)], "--seed 1180591620717411303424: must lie in"),
        (["sample", "--seed", "-1"], "--seed -1: must lie in"),
        (["sample", "--out", "{tmp}"], "is a folder; sample writes a PNG file"),
        (["compare", "--out", "{tmp}"], "is a folder; compare writes a PNG file"),
        (["bench", "--out", "{file}"], "is a file; bench writes a folder"),
        (["generate", "--num", "4", "--out", "{file}"], "is a file; generate writes a folder"),
        (["sample", "--eta", "-1"], "eta must be >= 0"),
        (["sample", "--ancestral"], "ancestral=True is the ancestral form"),
        (["sample", "--tuned", "--steps", "5", "--eta", "1"], "--tuned sets an ODE solver"),
    ],
)
def test_cli_refuses_bad_arguments_before_any_work(
    args: list[str], message: str, tmp_path: Path
) -> None:
    """Checked before any model call: one line on stderr, exit 2, nothing written."""
    file = tmp_path / "a-file"
    file.write_text("keep")
    args = [a.format(tmp=tmp_path, file=file) for a in args]
    proc = run("-m", "dpmsolver", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert file.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_bench_without_rows_says_so_and_exits_1(tmp_path: Path) -> None:
    # 3M needs 3 steps; at 2 no solver runs (and no diffusers baselines are asked for).
    out = tmp_path / "bench"
    proc = run(
        *("-m", "dpmsolver", "bench", "--solvers", "dpm++3m", "--steps", "2"),
        *("--no-baselines", "--n", "2", "--reference-nfe", "6", "--out", str(out)),
    )
    assert proc.returncode == 1
    assert "no solver ran" in proc.stderr and not out.exists()
