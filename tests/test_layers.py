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
