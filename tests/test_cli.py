"""The `dpmsolver sample` main job and the examples, run as a user runs them."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dpmsolver.cli import commands, labels, main
from dpmsolver.cli.commands import compare_picture
from dpmsolver.cli.labels import label_grid
from dpmsolver.models import tuned_solver
from dpmsolver.tools.png import read_png, read_png_text
from dpmsolver.tools.presets import SOLVERS

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


@pytest.mark.parametrize(
    ("extra", "solver"),
    [
        ([], "dpmsolver++ multistep order 2, logSNR grid"),
        (["--order", "3", "--skip-type", "time_uniform"], "dpmsolver++ multistep order 3, "
         "time_uniform grid"),
        (["--tuned"], "tuned {algorithm} multistep order {order}, given grid"),
    ],
)  # fmt: skip
def test_sample_png_says_what_was_sampled(tmp_path: Path, extra: list[str], solver: str) -> None:
    """The PNG's tEXt chunks name the model, the solver, the model calls and the seed."""
    shipped = tuned_solver("digits-exact", 5).solver()  # the tuned run's algorithm and order
    solver = solver.format(algorithm=shipped.algorithm, order=shipped.order)
    out = tmp_path / "grid.png"
    args = ["sample", "--n", "4", "--steps", "5", "--seed", "7", "--quiet", "--out", str(out)]
    assert main([*args, *extra]) == 0
    assert read_png_text(out) == {
        "Title": "4 samples of digits-exact",
        "Description": f"model digits-exact, solver {solver}, 5 model calls, seed 7",
        "Software": "dpmsolver sample",
    }


@pytest.mark.parametrize(
    ("extra", "calls"),
    [
        (["--tuned", "--steps", "4"], 4),  # the shipped 4-call solver: analytic first step
        (["--tuned", "--steps", "6"], 6),
        (["--analytic-first-step", "--steps", "5"], 5),  # 6 steps, 5 calls
        (["--method", "singlestep", "--order", "3", "--steps", "7"], 7),  # 3 steps, 7 calls
    ],
)
def test_sample_progress_bar_counts_the_model_calls(
    tmp_path: Path,
    record_bars: Callable[[Any], list[Any]],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    calls: int,
) -> None:
    """The bar's total is the model calls the run makes, and it fills to it exactly."""
    assert tuned_solver("digits-exact", 4).solver().analytic_first_step
    bars = record_bars(commands)
    assert main(["sample", "--n", "4", "--out", str(tmp_path / "s.png"), *extra]) == 0
    assert f", {calls} model calls in" in capsys.readouterr().out
    (bar,) = bars
    assert (bar.total, bar.done, bar.closed) == (calls, calls, True)


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


def test_compare_writes_one_labelled_png_with_a_row_per_solver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    grids: list[np.ndarray] = []

    def spy(grid: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        grids.append(grid.copy())
        return label_grid(grid, *args, **kwargs)

    monkeypatch.setattr(labels, "label_grid", spy)
    out = tmp_path / "compare.png"
    args = ["compare", "--steps", "5,10", "--solvers", "ddim,dpm++2m", "--n", "2"]
    assert main([*args, "--out", str(out)]) == 0
    assert "columns: samples #0-#1 of seed 0 at each of 5, 10 steps" in capsys.readouterr().out
    image, grid = read_png(out), grids[-1]
    # The unlabelled grid: 2 solvers + the reference by 2 samples x 2 step counts, 8x8 tiles
    # with 1-pixel gaps, upscaled 8x (64-pixel tiles 8 apart, a row every 72 pixels);
    # labels drawn 4x with PAD * 4 pixels around them.
    assert grid.shape == ((3 * 8 + 2) * 8, (4 * 8 + 3) * 8)
    scale, pad, line = 4, labels.PAD * 4, labels.text_height(4)
    margin = pad + labels.text_width("reference", scale) + pad  # the widest left label
    header = pad + line + pad + line + 2 * pad  # step counts, then sample indices
    assert image.shape == (header + grid.shape[0], margin + grid.shape[1])
    assert np.array_equal(image[header:, margin:], grid)
    # Row labels, as labels.py draws them, black on white at the left of each row.
    expected = np.full((header + grid.shape[0], margin), 255, dtype=np.uint8)
    for row, name in enumerate(["ddim", "dpm++2m", "reference"]):
        top = header + row * 72 + (64 - line) // 2
        labels.draw_text(expected, name, top, pad, scale=scale)
    labels.draw_text(expected, "seed 0", pad + line + 2 * pad, pad, scale=scale)
    assert np.array_equal(image[:, :margin], expected)
    top_left = image[header + (64 - line) // 2 :, pad:][:line, : labels.text_width("ddim", 4)]
    assert np.array_equal(top_left == 0, labels.render_text("ddim", 4))
    # Over the columns: `5 st` / `10 st` (`5 steps` is too wide for 2 columns), then #0, #1.
    assert labels.text_width("5 steps", 4) > 2 * 64 + 8
    heads = image[pad : pad + line, margin:]
    assert np.array_equal(heads[:, :136] == 0, _centred(labels.render_text("5 st", 4), 136))
    assert np.array_equal(heads[:, 144:280] == 0, _centred(labels.render_text("10 st", 4), 136))
    indices = image[pad + line + 2 * pad :, margin:][:line]
    for col, text in enumerate(["#0", "#1", "#0", "#1"]):
        cell = indices[:, col * 72 : col * 72 + 64] == 0
        assert np.array_equal(cell, _centred(labels.render_text(text, 4), 64))
    # The reference row holds the reference samples #0, #1 under each step count alike.
    reference_row = grid[2 * 72 :]
    tiles = [reference_row[:, col * 72 : col * 72 + 64] for col in range(4)]
    assert np.array_equal(tiles[0], tiles[2]) and np.array_equal(tiles[1], tiles[3])
    assert not np.array_equal(tiles[0], tiles[1])


def test_compare_default_picture_shows_digits_at_8x_and_a_full_reference_row(
    tmp_path: Path,
) -> None:
    """The default compare (3 solvers and the reference, 4 samples at 5, 10 and 20 steps):
    64-pixel tiles, 4x the pixels of the 542x184 picture of 4x tiles and 2x labels, and
    every reference cell a digit (not the gaps' blank grey)."""
    out = tmp_path / "compare.png"
    assert main(["compare", "--out", str(out)]) == 0
    image = read_png(out)
    rows, columns, cell, gap, scale = 4, 3 * 4, 64, 8, 4
    pad, line = labels.PAD * scale, labels.text_height(scale)
    margin = pad + labels.text_width("reference", scale) + pad
    header = pad + line + pad + line + 2 * pad
    height = header + rows * cell + (rows - 1) * gap
    width = margin + columns * cell + (columns - 1) * gap
    assert (height, width) == (368, 1084) and image.shape == (height, width)
    assert height * width >= 4 * 184 * 542
    reference_row = image[header + 3 * (cell + gap) :, margin:]
    tiles = [reference_row[:, c * (cell + gap) : c * (cell + gap) + cell] for c in range(12)]
    for c, tile in enumerate(tiles):
        assert tile.min() < 40 and tile.max() > 215, f"reference cell {c} is blank"
        assert np.array_equal(tile, tiles[c % 4])  # sample c % 4 under each step count


@pytest.mark.parametrize(
    ("n", "steps", "columns", "heads", "scale"),
    [
        (4, [5, 20], ["#0", "#1", "#2", "#3"], ["5 steps", "20 steps"], 4),
        (12, [5], [str(i) for i in range(12)], ["5 steps"], 4),  # `#10` is wider than a tile
        (1, [5, 1000], ["#0"], ["5 st", "1000"], 2),  # `1000` is 92 pixels at 4x
    ],
)
def test_compare_headers_take_the_longest_form_that_fits(
    n: int, steps: list[int], columns: list[str], heads: list[str], scale: int
) -> None:
    args = argparse.Namespace(n=n, steps=steps, solvers=["ddim"], seed=3)
    grid = np.zeros((2 * 64 + 8, n * len(steps) * 72 - 8), dtype=np.uint8)
    expected = label_grid(
        grid, ["ddim", "reference"], columns * len(steps), cell=(64, 64), gap=8,
        group_labels=heads, corner="seed 3", scale=scale,
    )  # fmt: skip
    assert np.array_equal(compare_picture(grid, args, (64, 64)), expected)


def _centred(mask: np.ndarray, width: int) -> np.ndarray:
    left = (width - mask.shape[1]) // 2
    return np.pad(mask, ((0, 0), (left, width - mask.shape[1] - left)))


def test_every_solver_name_can_label_a_compare_row() -> None:
    for name in SOLVERS:
        assert labels.render_text(name, 2).shape == (14, labels.text_width(name, 2))


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
    # Digit examples print (16, 1, 8, 8), the diffusers pipeline (16, 8, 8, 3), 2-D points (16, 2).
    assert re.search(r"^samples: \(16, ", proc.stdout, re.MULTILINE), proc.stdout


@pytest.mark.parametrize("model", ["digits-net", "digits-flow"])
def test_sample_the_trained_network(tmp_path: Path, model: str) -> None:
    out = tmp_path / "net.png"
    proc = run(
        "-m",
        "dpmsolver",
        "sample",
        "--model",
        model,
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
    assert model in proc.stdout and "5 model calls" in proc.stdout
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
        (["sample", "--out", "{tmp}/noext"], "has no file suffix to say the image format"),
        (
            ["sample", "--tuned", "--order", "1"],
            "--tuned sets the solver and its grid; drop --order",
        ),
        (
            ["sample", "--tuned", "--corrector", "all", "--method", "singlestep"],
            "drop --method, --corrector",
        ),
        (["generate", "--num", "4", "--out", ""], "argument --out: expected a path, got ''"),
        (["sample", "--out", "{tmp}/x.xyz"], "ends in '.xyz', which Pillow cannot write"),
        (["sample", "--device", "meta"], "--device meta: the meta device holds shapes"),
        (["sample", "--method", "adaptive", "--steps", "5"], "--steps sets the model calls"),
        (["sample", "--n", str(10**12)], "--n=1000000000000: one batch of"),
        (
            ["generate", "--num", str(10**12), "--batch", str(10**12), "--out", "{tmp}/g"],
            "--batch=1000000000000: one batch of",
        ),
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


def test_sample_writes_the_format_its_name_says(tmp_path: Path) -> None:
    """--out x.jpg is a JPEG (through Pillow, an optional dependency), not PNG bytes."""
    pytest.importorskip("PIL")
    out = tmp_path / "grid.jpg"
    proc = run(
        "-m", "dpmsolver", "sample", "--n", "4", "--steps", "3", "--out", str(out), "--quiet"
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG's start of image


def test_adaptive_sample_chooses_its_own_steps(tmp_path: Path) -> None:
    out = tmp_path / "adaptive.png"
    proc = run(
        "-m",
        "dpmsolver",
        "sample",
        "--method",
        "adaptive",
        "--order",
        "3",
        "--n",
        "4",
        "--out",
        str(out),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    assert read_png(out).shape[0] > 0


def test_bench_a_flow_model(tmp_path: Path) -> None:
    proc = run(
        "-m", "dpmsolver", "bench", "--model", "digits-exact-flow", "--steps", "4,8",
        "--n", "4", "--reference-nfe", "120", "--solvers", "ddim,dpm++2m",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "dpm++2m" in proc.stdout and (tmp_path / "bench.csv").exists()
