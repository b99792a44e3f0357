"""The project's own checks: the fast test target and the warnings the suite shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_variable(name: str) -> list[str]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{name} = (.*)$", text, re.M)
    assert match, f"the Makefile has no {name}"
    return match.group(1).split()


def test_the_fast_target_covers_the_core_each_face_and_the_cli() -> None:
    fast = make_variable("FAST_TESTS")
    assert all((ROOT / path).is_file() for path in fast), fast
    for needed in ("native_api", "compat_api", "diffusers", "k_diffusion", "comfyui", "vocabulary"):
        assert f"tests/test_{needed}.py" in fast
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: lint test-fast pytest$", text, re.M)  # fast first, then all
    assert "make test-fast" in (ROOT / "README.md").read_text()


def run_pytest(tmp_path: Path, body: str) -> str:
    test = tmp_path / "test_w.py"
    test.write_text("import warnings\n\n\ndef test_w():\n" + body)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test),
         "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    return done.stdout


def test_third_party_warnings_are_hidden_and_ours_fail(tmp_path: Path) -> None:
    """pyproject's filterwarnings: a deprecation raised in diffusers or NumPy is not shown;
    a warning raised in dpmsolver fails the test."""
    theirs = "".join(
        f"    warnings.warn_explicit('old', {category}, 'x.py', 1, module={module!r})\n"
        for category, module in (
            ("DeprecationWarning", "diffusers.schedulers.scheduling_x"),
            ("DeprecationWarning", "numpy._core.fromnumeric"),
            ("FutureWarning", "diffusers.utils.deprecation_utils"),
            ("UserWarning", "torchsde._brownian.brownian_interval"),
        )
    )
    out = run_pytest(tmp_path, theirs)
    assert "1 passed" in out and "warning" not in out.lower(), out
    ours = "    warnings.warn_explicit('ours', UserWarning, 'x.py', 1, module='dpmsolver.core')\n"
    out = run_pytest(tmp_path, ours)
    assert "1 failed" in out and "UserWarning: ours" in out, out
