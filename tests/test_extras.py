"""dpmsolver.extras: code that needs an optional extra, run without it, says which pip
command installs it (the missing package is simulated in this process by a None entry in
sys.modules, and for the diffusers face in a fresh interpreter)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from unittest import mock

import pytest
import torch

from dpmsolver.extras import EXTRAS, MissingExtraError, needs_extra, pip_command
from dpmsolver.noise import BrownianTreeNoiseSampler
from dpmsolver.tools.bench import BenchResult, Row

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def test_every_extra_of_pyproject_is_known() -> None:
    # `test` is the developers' set (it repeats the others); every installable extra has
    # its modules here, so a new extra cannot be added without its error.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["optional-dependencies"]
    assert set(EXTRAS) == set(declared) - {"test"}


def test_pip_command_is_quoted_and_checks_its_extra() -> None:
    assert pip_command("sde") == 'pip install "dpmsolver[sde]"'
    with pytest.raises(ValueError, match=r"extra must be one of .*'diffusers'.*; got 'sdee'"):
        pip_command("sdee")


# Two ways to take a package away in a fresh interpreter: a None entry in sys.modules
# (Python's own way to block an import) and a finder that does not find it, as in an
# environment where it was never installed.
BLOCKERS = {
    "sys.modules": "sys.modules[{blocked!r}] = None\n",
    "finder": (
        "class Missing:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == {blocked!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)\n"
        "sys.meta_path.insert(0, Missing())\n"
    ),
}


def run_import(blocked: str, how: str, statement: str) -> dict[str, object]:
    """Run `statement` in a fresh interpreter in which module `blocked` cannot be
    imported; the exception it raised, as a dict."""
    code = (
        "import json, sys\n" + BLOCKERS[how].format(blocked=blocked) + "try:\n"
        f"    {statement}\n"
        "except BaseException as error:\n"
        "    print(json.dumps({'type': type(error).__name__, 'name': error.name,\n"
        "        'message': str(error), 'module_error': isinstance(error, ModuleNotFoundError)}))\n"
        "else:\n"
        "    print(json.dumps(None))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result is not None, f"{statement} did not fail without {blocked}"
    return result


@pytest.mark.parametrize("how", sorted(BLOCKERS))
@pytest.mark.parametrize(
    "statement",
    [
        "import dpmsolver.diffusers",
        "from dpmsolver.diffusers import DPMSolverScheduler",
        "import dpmsolver.diffusers.scheduler",
    ],
)
def test_diffusers_face_without_diffusers(statement: str, how: str) -> None:
    error = run_import("diffusers", how, statement)
    assert error["type"] == "MissingExtraError"
    assert error["module_error"] and error["name"] == "diffusers"
    assert error["message"] == (
        "dpmsolver.diffusers needs diffusers, which is not installed: "
        'pip install "dpmsolver[diffusers]"'
    )


def test_the_core_imports_without_any_extra() -> None:
    # The blockers above really block, and the package itself needs no extra.
    blocked = "; ".join(f"sys.modules[{m!r}] = None" for e in EXTRAS.values() for m in e)
    faces = "import dpmsolver, dpmsolver.k_diffusion, dpmsolver.noise, dpmsolver.tools.bench"
    error = run_import("diffusers", "sys.modules", f"{blocked}; {faces}; import diffusers")
    assert error["type"] == "ModuleNotFoundError" and error["name"] == "diffusers"


def test_brownian_tree_without_torchsde() -> None:
    x = torch.zeros(2, 3)
    with (
        mock.patch.dict(sys.modules, {"torchsde": None}),
        pytest.raises(MissingExtraError) as caught,
    ):
        BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=0)
    assert caught.value.name == "torchsde"
    assert str(caught.value) == (
        "BrownianTreeNoiseSampler needs torchsde, which is not installed: "
        'pip install "dpmsolver[sde]"'
    )


def test_bench_plot_without_matplotlib(tmp_path: Path) -> None:
    result = BenchResult([Row("ddim", 5, 5, 0.1, 0.2, 0.01)], 100, 1e-6, "logSNR")
    with (
        mock.patch.dict(sys.modules, {"matplotlib": None}),
        pytest.raises(
            MissingExtraError,
            match=r"^BenchResult\.plot needs matplotlib, .*"
            r'pip install "dpmsolver\[plot\]"$',
        ),
    ):
        result.plot(tmp_path / "bench.png")
    assert not (tmp_path / "bench.png").exists()


def load_tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_tool_without_scikit_learn() -> None:
    tool = load_tool("fit_digits_gmm")
    with mock.patch.dict(sys.modules):  # restores the submodules deleted here
        for name in [m for m in sys.modules if m.startswith("sklearn.")]:
            del sys.modules[name]
        sys.modules["sklearn"] = None
        with pytest.raises(MissingExtraError, match=r'pip install "dpmsolver\[fit\]"$') as caught:
            tool.load_pixels()
    assert caught.value.name == "sklearn"


def test_a_submodule_an_installed_extra_lacks_passes_through() -> None:
    # matplotlib is installed (the test extra): a name it lacks is a version problem, and
    # the pip command would not be the fix.
    pytest.importorskip("matplotlib")
    with pytest.raises(ModuleNotFoundError) as caught, needs_extra("plot", "a plot"):
        import matplotlib.no_such_module  # noqa: F401
    assert type(caught.value) is ModuleNotFoundError
    assert caught.value.name == "matplotlib.no_such_module"


def test_other_import_errors_pass_through() -> None:
    # A missing dependency of the extra's own package is not the extra's: installing
    # dpmsolver[diffusers] again would not fix it, so the error stays as Python gave it.
    with (
        mock.patch.dict(sys.modules, {"huggingface_hub": None}),
        pytest.raises(ModuleNotFoundError) as caught,
        needs_extra("diffusers", "dpmsolver.diffusers"),
    ):
        import huggingface_hub  # noqa: F401
    assert type(caught.value) is ModuleNotFoundError
    assert caught.value.name == "huggingface_hub"
