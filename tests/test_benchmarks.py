"""Every benchmark script runs, in a quick mode (seconds, small batches), and prints its
table: a benchmark that crashes fails CI instead of leaving a stale number behind."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from dpmsolver.models import tuned_solver

ROOT = Path(__file__).resolve().parents[1]
QUICK = {
    "coefficient_ceiling.py": (
        [
            *("--models", "digits-exact", "--budgets", "4", "--settings", "dpm++2m"),
            *("--reference-nfe", "300", "--pilots", "4", "--n", "4", "--iterations", "1"),
        ],
        "target at 4-10 calls",
    ),
    "accuracy.py": (["--nfe", "5,10", "--n", "4", "--skip-types", "logSNR"], "RMS error vs exact"),
    "diffusers_schedulers.py": (
        ["--steps", "5", "--flow-steps", "5", "--n", "4"],
        "error / best diffusers error",
    ),
    # Needs a diffusers git directory (its test suites); without one it exits 2 (checked
    # below), with the mirror these machines may hold it runs the suites.
    "diffusers_suite.py": (
        ["--diffusers", "/work/.mirror/huggingface+diffusers/repo"],
        "failing tests",
    ),
    "guidance.py": (["--quick"], "Recommendation"),
    "inversion.py": ([], "round-trip RMS error"),
    "low_budget.py": (
        [
            *("--models", "digits-exact", "--budgets", "4", "--settings", "dpm++2m"),
            *("--reference-nfe", "300", "--pilots", "4", "--n", "4"),
        ],
        "Best setting per model-call budget",
    ),
    "per_sample_ceiling.py": (
        [
            *("--models", "digits-exact", "--budgets", "4", "--settings", "dpm++2m"),
            *("--reference-nfe", "300", "--n", "4", "--iterations", "2"),
        ],
        "Per-noise oracles",
    ),
    "sde.py": (
        ["--n", "128", "--steps", "5", "--strong-steps", "10,20", "--reference-steps", "100"],
        "Strong convergence on one Brownian path",
    ),
    "comfyui_samplers.py": (
        ["--steps", "5", "--n", "8", "--pilots", "4", "--no-tune"],
        "best of ComfyUI",
    ),
    "overhead.py": (["--shapes", "1,4,8,8", "--rounds", "1"], "dpmsolver 2M (++, x0 model)"),
    "overhead_vs_rev.py": (
        ["--rev", "HEAD", "--repeats", "1", "--rounds", "1", "--shapes", "1,4,8,8"],
        "dpmsolver 2M (++, x0 model)",
    ),
}


# The benchmarks' shared helpers, imported by the scripts (not run on their own).
HELPERS = ("plots.py",)


def test_every_benchmark_has_a_quick_mode() -> None:
    scripts = [p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name not in HELPERS]
    assert sorted(QUICK) == sorted(scripts)


@pytest.mark.parametrize("script", sorted(QUICK))
def test_benchmark_runs_quickly(script: str) -> None:
    if script == "diffusers_schedulers.py":
        pytest.importorskip("diffusers")
    if script == "overhead_vs_rev.py" and not (ROOT / ".git").exists():
        pytest.skip("needs the git history of a checkout")
    args, expected = QUICK[script]
    if script == "diffusers_suite.py" and not Path(args[1]).exists():
        args, expected = [], ""  # no diffusers sources here: the refusal is the outcome
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / script)], capture_output=True, text=True
        )
        assert done.returncode == 2 and "--diffusers PATH is required" in done.stderr
        return
    if script == "comfyui_samplers.py" and not os.environ.get("COMFYUI_DIR"):
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / script)], capture_output=True, text=True
        )
        assert done.returncode == 2 and "set COMFYUI_DIR to a ComfyUI checkout" in done.stderr
        return
    run_quick(script, args, expected)


def run_quick(script: str, args: list[str], expected: str) -> str:
    """Run benchmarks/<script> with args on this tree's src/; it succeeds and prints expected.
    Returns its stdout."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected in done.stdout
    return done.stdout


def test_coefficient_ceiling_extensions_never_lose_on_their_own_pilots() -> None:
    """Each extension is fitted on the tuning pilots starting from the tuned solver itself
    (weights 0, shifts 0) and only improves its objective there: a least-squares fit, a
    ridge fit, and Levenberg-Marquardt steps kept only when they lower the error. So its
    pilot error is at most the tuned solver's. The tail table's RMS over the best 99% of
    the noises is at most the RMS over all of them."""
    args = [*QUICK["coefficient_ceiling.py"][0][:-2], "--iterations", "2"]
    out = run_quick("coefficient_ceiling.py", args, "target at 4-10 calls")
    found = [line.split() for line in out.splitlines() if line.split()[:1] == ["4"]]
    rows = [r for r in found if len(r) == 15]
    tails = [r for r in found if len(r) == 6]
    assert len(rows) == 1 and len(tails) == 1
    cells = [float(v) for v in rows[0][3:]]
    assert len(cells) == 12  # (pilots, held-out, ratio) for tuned and three extensions
    tuned_pilots, tuned_held, tuned_ratio = cells[:3]
    untuned = float(rows[0][2])
    assert math.isclose(tuned_ratio, tuned_held / untuned, abs_tol=0.006)  # 2 decimals
    for k in (3, 6, 9):
        assert cells[k] <= tuned_pilots * (1 + 1e-9)
    assert cells[6] < tuned_pilots  # per coordinate: 1 + nfe free weights per coordinate
    # Leaving out the worst noises can only lower the RMS error, and the share is a share.
    share, rms_kept = float(tails[0][1]), float(tails[0][2])
    assert 0.0 < share <= 1.0 and rms_kept <= tuned_held


def test_per_sample_oracles_never_lose_to_the_tuned_solver() -> None:
    """Each oracle starts from the tuned solver on each noise and keeps a Levenberg-Marquardt
    step only when it lowers that noise's error, which is the error it is scored by: its
    RMS error is at most the tuned solver's, and the printed ratios are the errors'."""
    out = run_quick("per_sample_ceiling.py", QUICK["per_sample_ceiling.py"][0], "/chosen")
    rows = [line.split() for line in out.splitlines() if line.startswith("digits-exact ")]
    assert len(rows) == 1 and len(rows[0]) == 13
    tuned, chosen, ratio, grid, grid_ratio, _, full, full_ratio, _ = map(float, rows[0][2:11])
    params, size = int(rows[0][11]), int(rows[0][12])
    assert math.isclose(ratio, tuned / chosen, abs_tol=0.006)  # printed to 2 decimals
    assert grid <= tuned * (1 + 1e-3) and full <= tuned * (1 + 1e-3)  # 3 printed digits
    assert math.isclose(grid_ratio, grid / tuned, abs_tol=0.006) and grid_ratio <= 1.0
    assert math.isclose(full_ratio, full / tuned, abs_tol=0.006)
    # The fits do move: every parameter, fitted per noise, lowers the error.
    assert full < tuned
    # The shipped 4-call solver's inner grid points and coefficients; 8 x 8 digits.
    shipped = tuned_solver("digits-exact", 4)
    inner = len(shipped.times) - 2
    assert params == inner + sum(map(len, shipped.coefficients or [])) and size == 64


@pytest.mark.parametrize("script", ["accuracy.py", "diffusers_schedulers.py", "low_budget.py"])
def test_benchmark_plot_writes_a_png(script: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    if script == "diffusers_schedulers.py":
        pytest.importorskip("diffusers")
    args, expected = QUICK[script]
    out = tmp_path / "x.png"
    run_quick(script, [*args, "--plot", str(out)], expected)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 400 <= width <= 4000 and 300 <= height <= 2000
    import matplotlib.image

    assert matplotlib.image.imread(out).shape[:2] == (height, width)
