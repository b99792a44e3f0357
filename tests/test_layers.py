"""The package's structure, read from its import graph (the source's import statements):
the core imports nothing above it, no module imports another's private name, and there
are no import cycles (function-level imports included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dpmsolver"
# What the core may import besides itself: the input checks shared with every face.
CORE_MAY_IMPORT = {"dpmsolver.checks"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = modules()


def imports(name: str) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in module `name`,
    relative imports resolved; `import a.b` gives ('a.b', [])."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [alias.name for alias in node.names], node.lineno))
    return found


def internal_edges(name: str) -> set[str]:
    """The package's modules that module `name` imports (a `from pkg import mod` counts
    as importing pkg.mod)."""
    edges = set()
    for target, names, _ in imports(name):
        if target in MODULES:
            edges.add(target)
        for n in names:
            if f"{target}.{n}" in MODULES:
                edges.add(f"{target}.{n}")
    edges.discard(name)
    return edges


def test_the_graph_is_read() -> None:
    # The checks below are only as good as the graph: make sure it sees the known edges.
    assert "dpmsolver.core" in internal_edges("dpmsolver")
    assert "dpmsolver.core.sampler" in internal_edges("dpmsolver.core")
    assert "dpmsolver.core.kernel" in internal_edges("dpmsolver.core.loops")
    assert "dpmsolver.models.digits_net" in internal_edges("dpmsolver.models.registry")
    assert "dpmsolver.tools.generation" in internal_edges("dpmsolver.cli.commands")  # in a function
    assert len([m for m in MODULES if m.startswith("dpmsolver.core.")]) >= 9


@pytest.mark.parametrize("name", [m for m in MODULES if m.startswith("dpmsolver.core")])
def test_core_imports_only_core_and_checks(name: str) -> None:
    above = {
        e for e in internal_edges(name) if not e.startswith("dpmsolver.core")
    } - CORE_MAY_IMPORT
    assert not above, f"{name} imports {sorted(above)}, which sit above the core"
    for target, _, line in imports(name):
        if target.startswith("dpmsolver") and not target.startswith("dpmsolver.core"):
            assert target in CORE_MAY_IMPORT, f"{name}:{line} imports {target}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_private_name(name: str) -> None:
    for target, names, line in imports(name):
        if not target.startswith("dpmsolver"):
            continue
        private = [p for p in target.split(".") if p.startswith("_") and p != "__init__"]
        private += [n for n in names if n.startswith("_")]
        assert not private, f"{name}:{line} imports private {private} from {target}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as [a, b, ..., a], or None (depth-first search).

    Importing a submodule also runs its package's __init__; that implicit edge is left
    out, as every package has it and it is not a cycle of the code's own imports.
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, set())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle({name: internal_edges(name) for name in MODULES})
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_dpmsolver_loads_no_tool_it_does_not_need() -> None:
    code = "import sys, dpmsolver; print(' '.join(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "dpmsolver.core" in loaded
    for absent in ("dpmsolver.tools.bench", "dpmsolver.tools.memory", "dpmsolver.cli", "diffusers"):
        assert absent not in loaded


# -- one update loop ---------------------------------------------------------------------

# Where an update rule may be applied to a state (`combine`): the stepper; the adaptive
# controller's lower-order estimate (its trial steps go through the stepper); the pilots'
# prices of single first-order steps between reference states (written out: no run, and
# the GITS grids they choose stay as they were).
APPLIES_RULES = {
    "dpmsolver.core.kernel",
    "dpmsolver.core.stepper",
    "dpmsolver.core.adaptive",
    "dpmsolver.tuning.pilots",
}
# The drivers of the stepper: the core's fixed-step run and adaptive trial steps, the
# tuner's re-runs and the diffusers face's step().
STEPPER_DRIVERS = (
    "dpmsolver.core.loops",
    "dpmsolver.core.adaptive",
    "dpmsolver.tuning.refinement",
    "dpmsolver.diffusers.scheduler",
)


def rule_applications(source: str) -> list[int]:
    """Lines that apply an update rule: a call of `combine`, or a rule's `cx` times a
    state (a name or an element: an update written out by hand)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name == "combine":
                found.append(node.lineno)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            for side, other in ((node.left, node.right), (node.right, node.left)):
                by_hand = isinstance(side, ast.Attribute) and side.attr == "cx"
                if by_hand and isinstance(other, ast.Name | ast.Subscript | ast.Attribute):
                    found.append(node.lineno)
    return found


@pytest.mark.parametrize("name", sorted(set(MODULES) - APPLIES_RULES))
def test_no_module_but_the_stepper_applies_an_update_rule(name: str) -> None:
    lines = rule_applications(MODULES[name].read_text())
    assert not lines, f"{name} applies an update rule at lines {lines}: drive the stepper"


def test_the_rule_check_finds_a_hand_written_update() -> None:
    assert rule_applications("x = combine(rule, x, ms)") == [1]
    assert rule_applications("def f(r, x, m):\n    return r.cx * x + r.cm[0] * m") == [2]
    assert rule_applications("x = rule.cm[0] * m") == []
    assert rule_applications("cx = rule.cx * (1.0 + row[0])") == []  # a coefficient


def reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(internal_edges(node))
    return False


@pytest.mark.parametrize("name", STEPPER_DRIVERS)
def test_the_drivers_import_the_stepper(name: str) -> None:
    assert "dpmsolver.core.stepper" in internal_edges(name)


@pytest.mark.parametrize(
    "face", ["dpmsolver.compat", "dpmsolver.k_diffusion.run", "dpmsolver.core.sampler"]
)
def test_the_other_faces_run_through_the_stepper(face: str) -> None:
    assert reaches(face, "dpmsolver.core.stepper")


@pytest.mark.parametrize(
    "name",
    [f"dpmsolver.core.{m}" for m in ("plan", "multistep", "singlestep", "planning")],
)
def test_planning_publishes_only_what_other_modules_use(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text())
    published = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    )
    used = {
        n
        for other in MODULES
        if other != name
        for t, ns, _ in imports(other)
        if t == name
        for n in ns
    }
    assert set(published) <= used, f"{name} publishes {sorted(set(published) - used)}, unused"


# -- tests use the public API ------------------------------------------------------------

TESTS = Path(__file__).resolve().parent
# Modules whose private names a test may touch (not ours).
FOREIGN = {"torch", "np", "numpy", "self", "cls", "sys", "os", "diffusers"}


def private_uses(source: str) -> list[str]:
    """Private names of ours a test module reaches: imported from dpmsolver, or read as an
    attribute (`obj._name`) of anything but a foreign module or the test's own object."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dpmsolver"):
            parts = (node.module or "").split(".") + [a.name for a in node.names]
            found += [f"{node.lineno}: {p}" for p in parts if p.startswith("_") and p != "__init__"]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("dpmsolver") and "._" in alias.name:
                    found.append(f"{node.lineno}: {alias.name}")
        elif isinstance(node, ast.Attribute):
            attr = node.attr
            if attr.startswith("_") and not attr.startswith("__"):
                root = node.value
                while isinstance(root, ast.Attribute | ast.Call | ast.Subscript):
                    root = root.func if isinstance(root, ast.Call) else root.value
                if not (isinstance(root, ast.Name) and root.id in FOREIGN):
                    found.append(f"{node.lineno}: .{attr}")
    return found


@pytest.mark.parametrize("path", sorted(TESTS.glob("*.py")), ids=lambda p: p.name)
def test_no_test_reaches_a_private_name(path: Path) -> None:
    assert not private_uses(path.read_text()), f"{path.name} uses {private_uses(path.read_text())}"


def test_the_private_check_finds_private_uses() -> None:
    assert private_uses("from dpmsolver.tuning.refinement import _Search") == ["1: _Search"]
    assert private_uses("n = len(ev._finite)") == ["1: ._finite"]
    assert private_uses("torch._dynamo.reset()\nself._runs = {}") == []


# -- sizes ---------------------------------------------------------------------------------

MAX_MODULE_LINES = 600  # lines of code: not blank, not a comment (data lives in data files)
MAX_FUNCTION_LINES = 100  # from `def` to the last line, docstring included


def code_lines(source: str) -> int:
    return sum(
        1 for line in source.splitlines() if line.strip() and not line.strip().startswith("#")
    )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_600_lines_of_code(name: str) -> None:
    assert code_lines(MODULES[name].read_text()) <= MAX_MODULE_LINES


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_function_is_over_100_lines(name: str) -> None:
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"  # type: ignore[operator]
        for node in ast.walk(ast.parse(MODULES[name].read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES  # type: ignore[operator]
    ]
    assert not long, f"{name}: {long}"


def test_code_lines_leave_out_blanks_and_comments() -> None:
    assert code_lines('"""doc"""\n\n# why\nx = 1  # a comment after code\n') == 2
