"""One vocabulary of solver names across the CLI and the Python presets, and the CLI's
basics a newcomer meets first (--version, a bare command, defaults in the help)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import dpmsolver as dpm
from dpmsolver.cli import main
from dpmsolver.cli.arguments import parser
from dpmsolver.models import load
from dpmsolver.tools.presets import ALIASES, SOLVERS, resolve

ROOT = Path(__file__).resolve().parents[1]


def parity_names() -> list[str]:
    """The names users pick in the docs' name-parity table: its first column, and the
    ComfyUI names of its second (a call with arguments, like a diffusers class configured
    otherwise, is not a name)."""
    text = (ROOT / "docs" / "faces" / "k-diffusion.md").read_text()
    table = text[text.index("## Name parity") :]
    names = []
    for row in table.splitlines():
        cells = row.split("|")
        if len(cells) < 4 or not cells[1].strip().startswith("`"):
            continue
        first = cells[1].strip().strip("`").removesuffix(" on a flow model")
        if "(" not in first:
            names.append(first)
        where = re.sub(r"\(.*?\)", "", cells[2])  # not a parenthesis's mode names
        names += re.findall(r"`([a-z0-9_]+)`", where)
    return sorted(set(names))


def test_the_parity_table_gives_names() -> None:
    names = parity_names()
    assert {"DPM++ 2M Karras", "dpmpp_2m", "DPM fast", "dpm_fast", "kl_optimal"} <= set(names)


@pytest.mark.parametrize("name", parity_names())
def test_every_name_of_the_parity_table_resolves_or_says_where_it_is(name: str) -> None:
    """Each name either names a preset (whose own name resolves to itself) or the error
    says where that setting lives; none is 'unknown'."""
    try:
        found = resolve(name)
    except ValueError as err:
        assert "is not a preset here" in str(err), str(err)
        return
    assert found.name in SOLVERS and resolve(found.name) == (found.name, None)


@pytest.mark.parametrize("name", [*SOLVERS, *ALIASES])
def test_every_preset_and_alias_round_trips_in_any_case(name: str) -> None:
    found = resolve(name)
    assert resolve(name.upper()) == found == resolve(f" {name.swapcase()} ")
    assert resolve(found.name) == (found.name, None)


@pytest.mark.parametrize(
    ("name", "preset", "grid"),
    [
        ("DPM++ 2M Karras", "dpm++2m", "karras"),
        ("dpmpp_2m", "dpm++2m", None),
        ("DPM++ 3M SDE Exponential", "dpm++3m-sde", "exponential"),
        ("DPM++ 2S a Karras", "dpm++2s-a", "karras"),
        ("dpmpp_2s_ancestral", "dpm++2s-a", None),
        ("ipndm", "ipndm4", None),
        ("deis", "deis3", None),
        ("DPM fast", "dpm3s", None),
        ("DDIM", "ddim", None),
        ("UniPCMultistepScheduler", "dpm++2m+c", None),
        ("dpmsolver++", "dpm++2m", None),
    ],
)
def test_names_users_know(name: str, preset: str, grid: str | None) -> None:
    assert resolve(name) == (preset, grid)


def test_what_the_names_run() -> None:
    """A name and its preset are the same options (the SDE presets are k-diffusion's)."""
    assert SOLVERS["dpm++2m-sde"].options.eta == 1.0 and SOLVERS["dpm++2m-sde"].options.order == 2
    two_s = SOLVERS[resolve("DPM++ 2S a").name].options
    assert (two_s.method, two_s.order, two_s.ancestral) == ("singlestep", 2, True)
    assert SOLVERS[resolve("ipndm").name].options.order == 4


def test_a_near_miss_gets_suggestions_and_a_grid_is_named_a_grid() -> None:
    with pytest.raises(ValueError, match=r"unknown solver 'dpm\+\+2' \(did you mean 'dpm\+\+2m'"):
        resolve("dpm++2")
    with pytest.raises(ValueError, match=r"'karras' is not a preset here; a grid.*--skip-type"):
        resolve("karras")
    with pytest.raises(TypeError, match="solver must be a solver name"):
        resolve(2)  # type: ignore[arg-type]


def test_python_presets_take_the_same_names() -> None:
    """optimize_solver's families, the budget search's settings and the bench's solvers."""
    from dpmsolver.tools.bench import run as bench

    model = load("digits-exact")
    result = bench(
        model, [4], solvers=["DPM++ 2M", "dpmpp_3m"], n=2, reference_nfe=20, baselines=False
    )
    assert [row.solver for row in result.rows] == ["dpm++2m", "dpm++3m"]
    with pytest.raises(ValueError, match=r"solvers: 'dpmpp_3m_sde' is an SDE sampler"):
        bench(model, [4], solvers=["dpmpp_3m_sde"], n=2, reference_nfe=20)
    with pytest.raises(ValueError, match=r"families: 'dpmpp_2m_sde' is an SDE sampler"):
        dpm.optimize_solver(model, 4, families=["dpmpp_2m_sde"], pilots=2)
    with pytest.raises(ValueError, match=r"families: 'DPM\+\+ 2M Karras' names a grid"):
        dpm.optimize_solver(model, 4, families=["DPM++ 2M Karras"], pilots=2)


# -- the CLI -------------------------------------------------------------------------------


def run(argv: list[str], capsys: Any) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_sample_takes_every_vocabulary(tmp_path: Path, capsys: Any) -> None:
    png = str(tmp_path / "a.png")
    for name in ("ddim", "dpm++2m", "dpmpp_3m_sde", "DPM++ 2M Karras", "ipndm", "dpmsolver++"):
        code, out, err = run(
            ["sample", "--solver", name, "--n", "2", "--quiet", "--out", png], capsys
        )
        assert code == 0, err
    code, out, _ = run(
        ["sample", "--solver", "ipndm", "--order", "3", "--n", "2", "--quiet", "--out", png],
        capsys,
    )
    assert code == 0 and "ipndm multistep order 3" in out
    code, out, _ = run(["sample", "--solver", "dpmpp_3m_sde", "--quiet", "--out", png], capsys)
    assert "order 3 SDE eta=1" in out
    with pytest.raises(SystemExit) as stop:
        main(["sample", "--solver", "dpm++2", "--out", png])
    assert stop.value.code == 2
    assert "did you mean 'dpm++2m'" in capsys.readouterr().err


def test_compare_and_bench_take_every_vocabulary(tmp_path: Path, capsys: Any) -> None:
    code, out, err = run(
        ["compare", "--solvers", "dpmsolver++,DPM++ 2M,ddim", "--steps", "4", "--n", "1",
         "--out", str(tmp_path / "c.png")],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "rows: dpm++2m, dpm++2m, ddim, reference" in out
    with pytest.raises(SystemExit):
        main(["compare", "--solvers", "DPM++ 2M Karras", "--out", str(tmp_path / "c.png")])
    assert "names a grid (karras) as well" in capsys.readouterr().err


def test_order_4_says_which_solver_takes_it(tmp_path: Path, capsys: Any) -> None:
    code, _, err = run(["sample", "--order", "4", "--out", str(tmp_path / "a.png")], capsys)
    assert code == 2
    assert "--order 4: only iPNDM has a fourth order (--solver ipndm4" in err


def test_steps_0_names_the_flag(tmp_path: Path, capsys: Any) -> None:
    for command in (["sample"], ["generate", "--num", "2"]):
        out = str(tmp_path / ("a.png" if command == ["sample"] else "gen"))
        code, _, err = run([*command, "--steps", "0", "--out", out], capsys)
        assert code == 2 and "--steps must be >= 1" in err, err


def test_version_and_a_bare_command(capsys: Any) -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert dpm.__version__ == version
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"dpmsolver {version}"
    code, out, _ = run([], capsys)
    assert code == 0 and out.startswith("usage: dpmsolver")
    for command in ("sample", "bench", "generate", "compare", "comfyui"):
        assert command in out


COMMANDS = {  # each subcommand with its required arguments
    "sample": [],
    "bench": [],
    "generate": ["--num", "2", "--out", "gen"],
    "compare": [],
    "comfyui install": ["PATH"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_with_a_default_shows_it(command: str, capsys: Any) -> None:
    """The help of each option whose default is a value (not a switched-off flag) shows
    that value."""
    words = command.split()
    args = vars(parser().parse_args([*words, *COMMANDS[command]]))
    with pytest.raises(SystemExit):
        parser().parse_args([*words, "--help"])
    entries: dict[str, str] = {}  # the first flag of each help entry -> the entry's text
    flag = ""
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  -"):
            flag = line.split()[0].rstrip(",")
            entries[flag] = line
        elif flag and line.startswith("   "):
            entries[flag] += " " + line.strip()
        else:
            flag = ""
    for dest, default in args.items():
        if default is None or default is False or dest in ("command", "action"):
            continue
        if dest in ("num", "out", "path") and command in ("generate", "comfyui install"):
            continue  # the required arguments given above
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
        entry = entries["--" + dest.replace("_", "-")]
        assert "default" in entry and shown in entry, f"{command}: {entry!r}"


def test_the_pinned_default_sampler_is_the_named_one(tmp_path: Path) -> None:
    """No --solver: DPM-Solver++(2M) on the logSNR grid, as the help says."""
    args = parser().parse_args(["sample", "--out", str(tmp_path / "a.png")])
    from dpmsolver.cli.arguments import solver_options

    options = solver_options(args)
    assert (options.algorithm, options.order, options.skip_type) == ("dpmsolver++", 2, "logSNR")


def test_compare_and_bench_take_ode_solvers_only(tmp_path: Path, capsys: Any) -> None:
    """Their runs draw no seeded SDE noise and are compared with the ODE's solution."""
    for argv in (["compare", "--solvers", "dpmpp_2m_sde"], ["bench", "--solvers", "dpm++sde"]):
        with pytest.raises(SystemExit) as stop:
            main([*argv, "--out", str(tmp_path / "x.png")])
        assert stop.value.code == 2 and "is an SDE sampler" in capsys.readouterr().err


def test_compare_steps_are_model_calls(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    """An analytic-first-step solver gets one step more, so each column makes the calls
    its header says."""
    import dpmsolver.cli.commands as commands

    calls: list[int] = []
    real = commands.sample

    def counted(model: Any, x: Any, options: Any, **kw: Any) -> Any:
        calls.append(dpm.SolverOptions.of(options, **kw).model_calls())
        return real(model, x, options, **kw)

    monkeypatch.setattr(commands, "sample", counted)
    argv = ["compare", "--solvers", "dpm++2m+afs,ddim", "--steps", "4,6", "--n", "1"]
    assert main([*argv, "--out", str(tmp_path / "c.png")]) == 0
    assert calls == [4, 6, 4, 6]


def test_bench_budget_refuses_what_it_would_ignore(tmp_path: Path, capsys: Any) -> None:
    code = main(["bench", "--budget", "--steps", "5", "--dtype", "float64", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "bench --budget chooses its own" in err and "drop --steps, --dtype" in err
