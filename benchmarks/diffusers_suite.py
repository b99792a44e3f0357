"""diffusers' own scheduler test suites, run against dpmsolver.diffusers.DPMSolverScheduler.

Measures how much of diffusers' public scheduler contract our scheduler meets: the suites
for DPMSolverMultistep, DPMSolverSinglestep and UniPCMultistep (tests/schedulers/ of a
diffusers revision) are exported with every file they import (followed through their
relative imports, plus the packages' __init__.py and conftest.py), each suite's
`scheduler_classes` is pointed at our class (configs, expected numbers and everything else
unchanged), and pytest runs them with this tree's src/ first on PYTHONPATH. The diffusers
library those tests import is the installed one; only the test files come from the source.

Printed: the source and revision, then per suite file the passed / failed / errors / skipped
counts and, apart from them, the tests of the common base class (SchedulerCommonTest) that
pytest collects again in each module where it is imported: there its scheduler_classes is
empty, so they pass without testing anything and are not counted as passes. Then every
failing test with a one-line message. Exit status 0 whenever pytest ran to the end
(failures are the report, not an error), 2 for a bad or missing --diffusers (or other
argument), 1 if pytest itself broke down.

Run (one command):
    python benchmarks/diffusers_suite.py --diffusers /path/to/diffusers/.git
        --extra-path /path/with/torchsde [--rev HEAD] [--keep DIR]
--diffusers takes a bare mirror, a checkout's .git, or a work tree (its files on disk are used
unless --rev is given). torchsde is needed by test_compatibles (DPMSolverSDEScheduler).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
SUITE_DIR = PurePosixPath("tests/schedulers")
SUITES = ("test_scheduler_dpm_multi.py", "test_scheduler_dpm_single.py", "test_scheduler_unipc.py")
OUR_CLASS = "DPMSolverScheduler"
OUR_IMPORT = f"from dpmsolver.diffusers import {OUR_CLASS}"
MESSAGE_WIDTH = 160


class UsageError(Exception):
    """A bad --diffusers / --rev / --extra-path / --keep: exit 2 with this one-line message."""


def git(git_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """git on the repository `git_dir` (bare or a .git directory)."""
    return run_git("--git-dir", str(git_dir), *args)


def run_git(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise UsageError("git is not installed; --diffusers must then be a work tree") from e


@dataclass
class Source:
    """Where the test files are read from: a git commit, or a directory on disk."""

    label: str
    revision: str
    git_dir: Path | None = None
    commit: str = ""
    tree: Path | None = None

    def read(self, path: PurePosixPath) -> str | None:
        if self.tree is not None:
            file = self.tree / path
            return file.read_text(encoding="utf-8") if file.is_file() else None
        assert self.git_dir is not None
        done = git(self.git_dir, "cat-file", "blob", f"{self.commit}:{path}")
        return done.stdout if done.returncode == 0 else None


def git_dir_of(path: Path) -> Path | None:
    """The git directory `path` is, or whose work tree it is; None when it is neither."""
    done = run_git("-C", str(path), "rev-parse", "--absolute-git-dir")
    return Path(done.stdout.strip()) if done.returncode == 0 else None


def open_source(path_arg: str, rev: str | None) -> Source:
    path = Path(path_arg).expanduser().resolve()
    if not path.exists():
        raise UsageError(f"--diffusers {path_arg}: no such file or directory")
    if rev is None and (path / SUITE_DIR).is_dir():
        revision = "files on disk (work tree)"
        gd = None
        if (path / ".git").exists():
            with contextlib.suppress(UsageError):  # no git: the files on disk still do
                gd = git_dir_of(path)
        if gd is not None:
            head = git(gd, "log", "-1", "--format=%H %cs %s").stdout.strip()
            dirty = run_git("-C", str(path), "status", "--porcelain", "--", "tests").stdout
            local = ", with local changes under tests/" if dirty.strip() else ""
            revision += f"; HEAD {head}{local}" if head else ""
        return Source(label=f"{path} (work tree)", revision=revision, tree=path)
    git_dir = git_dir_of(path)
    if git_dir is None:
        raise UsageError(
            f"--diffusers {path_arg}: neither a git directory nor a work tree with {SUITE_DIR}/"
        )
    bare = run_git("-C", str(git_dir), "rev-parse", "--is-bare-repository").stdout.strip()
    kind = "bare git repository" if bare == "true" else "git repository"
    wanted = rev or "HEAD"
    done = git(git_dir, "rev-parse", "--verify", "--quiet", f"{wanted}^{{commit}}")
    if done.returncode != 0:
        raise UsageError(f"--rev {wanted}: no such commit in {git_dir}")
    commit = done.stdout.strip()
    about = git(git_dir, "log", "-1", "--format=%cs %s", commit).stdout.strip()
    return Source(
        label=f"{git_dir} ({kind})",
        revision=f"{commit if wanted == commit else f'{wanted} = {commit}'} ({about})",
        git_dir=git_dir,
        commit=commit,
    )


def imported_paths(path: PurePosixPath, text: str, top: str) -> list[list[PurePosixPath]]:
    """Files that `path` may import from its own test tree, as groups of alternatives
    (module.py or module/__init__.py); names that are attributes, not modules, match none."""
    package = path.parent
    groups: list[list[PurePosixPath]] = []

    def module_files(base: PurePosixPath) -> list[PurePosixPath]:
        return [base.with_name(base.name + ".py"), base / "__init__.py"]

    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.parent
            elif node.module and node.module.split(".")[0] == top:
                base = PurePosixPath()
            else:
                continue
            if node.module:
                base = base.joinpath(*node.module.split("."))
                groups.append(module_files(base))
            groups.extend(module_files(base / alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == top:
                    groups.append(module_files(PurePosixPath(*alias.name.split("."))))
    return groups


def export_closure(source: Source, suites: list[PurePosixPath]) -> dict[PurePosixPath, str]:
    """The suites and every file they need to import and run, path -> text."""
    top = SUITE_DIR.parts[0]
    files: dict[PurePosixPath, str] = {}
    todo: list[list[PurePosixPath]] = [[s] for s in suites]
    while todo:
        for candidate in todo.pop():
            if candidate in files:
                break
            text = source.read(candidate)
            if text is None:
                continue
            files[candidate] = text
            todo.extend(imported_paths(candidate, text, top))
            # Packages from the top of the test tree down, and the conftest.py files that
            # pytest loads on the way.
            for parent in reversed(candidate.parents[:-1]):
                todo.append([parent / "__init__.py"])
                todo.append([parent / "conftest.py"])
            break
    return files


def retarget(text: str) -> tuple[str, int]:
    """The suite with each class-level `scheduler_classes = ...` set to our class and our
    import added after the module's leading imports; also how many assignments changed."""
    module = ast.parse(text)
    lines = text.splitlines(keepends=True)
    spans: list[tuple[int, int, int, int]] = []
    for node in ast.walk(module):
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt in node.body:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else []
            if isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                targets = [stmt.target]
            if any(isinstance(t, ast.Name) and t.id == "scheduler_classes" for t in targets):
                end_line = stmt.end_lineno or stmt.lineno
                spans.append((stmt.lineno, stmt.col_offset, end_line, stmt.end_col_offset or 0))
    for start, col, end, end_col in sorted(spans, reverse=True):
        head, tail = lines[start - 1][:col], lines[end - 1][end_col:]
        lines[start - 1 : end] = [f"{head}scheduler_classes = ({OUR_CLASS},){tail}"]
    after = 0
    for i, stmt in enumerate(module.body):
        is_docstring = (
            i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
        )
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            after = stmt.end_lineno or stmt.lineno
        elif not is_docstring:
            break
    # The replacements are all in class bodies, below the leading imports: `after` still holds.
    lines.insert(after, OUR_IMPORT + "\n")
    return "".join(lines), len(spans)


def empty_base_classes(files: dict[PurePosixPath, str], suites: set[PurePosixPath]) -> set[str]:
    """Names of the classes, outside the suites, whose scheduler_classes is `()`."""
    names = set()
    for path, text in files.items():
        if path in suites or path.suffix != ".py":
            continue
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.ClassDef):
                continue
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.Assign)
                    and any(
                        isinstance(t, ast.Name) and t.id == "scheduler_classes"
                        for t in stmt.targets
                    )
                    and isinstance(stmt.value, ast.Tuple)
                    and not stmt.value.elts
                ):
                    names.add(node.name)
    return names


def defined_classes(text: str) -> set[str]:
    return {n.name for n in ast.parse(text).body if isinstance(n, ast.ClassDef)}


@dataclass
class SuiteResult:
    counts: Counter[str] = field(default_factory=Counter)
    vacuous: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, id, message)


def one_line(element: ET.Element) -> str:
    message = element.get("message") or ""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    details = [ln[1:].strip() for ln in (element.text or "").splitlines() if ln.startswith("E ")]
    if (not lines or lines[0] == "collection failure") and details:
        lines = [details[-1]]
    if not lines:
        return "(no message)"
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:  # "ImportError:" with its text on the next line
        text += " " + lines[1]
    if text.startswith("assert ") and len(lines) > 1 and lines[1].startswith("+"):
        text += f"  [{lines[1].lstrip('+ ')}]"
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_WIDTH else text[: MESSAGE_WIDTH - 3] + "..."


def read_junit(
    xml_path: Path,
    suites: dict[str, PurePosixPath],
    vacuous_names: set[str],
    own: dict[str, set[str]],
) -> dict[str, SuiteResult]:
    """Results per suite module (dotted name), plus "(other)" for anything unmatched."""
    results: dict[str, SuiteResult] = {name: SuiteResult() for name in suites}
    for case in ET.parse(xml_path).iter("testcase"):
        classname, name = case.get("classname") or "", case.get("name") or ""
        module = next((m for m in suites if classname == m or classname.startswith(m + ".")), None)
        if module is None and not classname:
            module = next((m for m in suites if name == m), None)  # a collection error
        key = module or "(other)"
        result = results.setdefault(key, SuiteResult())
        if module:
            cls, path = classname[len(module) + 1 :], str(suites[module])
            if cls:
                test_id = f"{path}::{cls}::{name}"
            else:
                test_id = path if name == module else f"{path}::{name}"
        else:
            cls, test_id = classname, f"{classname}::{name}" if classname else name
        children = {child.tag: child for child in case}
        outcome = next((k for k in ("failure", "error", "skipped") if k in children), "passed")
        outcome = {"failure": "failed", "error": "errors"}.get(outcome, outcome)
        inherited = cls in vacuous_names and cls not in own.get(key, set())
        (result.vacuous if inherited else result.counts)[outcome] += 1
        for kind in ("failure", "error"):
            if kind in children:
                label = "collection error" if module and not cls else kind
                label += ", vacuous base-class test" if inherited else ""
                result.problems.append((label, test_id, one_line(children[kind])))
    return results


def run_checks(env: dict[str, str]) -> list[str]:
    """Which dpmsolver and which diffusers the pytest run will import."""
    probe = (
        "import diffusers, dpmsolver.diffusers as m\n"
        "print('dpmsolver.diffusers from ' + m.__file__)\n"
        "print('diffusers ' + diffusers.__version__ + ' (installed; its classes are used as is)')"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode == 0:
        return done.stdout.splitlines()
    last = (done.stderr.strip().splitlines() or ["?"])[-1]
    return [f"import check failed: {last}"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--diffusers", metavar="PATH", help="diffusers bare mirror, .git directory or work tree"
    )
    parser.add_argument(
        "--rev", default=None, help="revision to read the tests from (git sources; default HEAD)"
    )
    parser.add_argument(
        "--extra-path",
        action="append",
        default=[],
        metavar="DIR",
        help="prepended to PYTHONPATH of the pytest run (repeatable), e.g. where torchsde is",
    )
    parser.add_argument("--keep", metavar="DIR", help="export into DIR (new or empty) and keep it")
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace) -> tuple[Source, list[str], Path | None]:
    if not args.diffusers:
        raise UsageError("--diffusers PATH is required (a diffusers git directory or work tree)")
    extra = []
    for entry in args.extra_path:
        path = Path(entry).expanduser().resolve()
        if not path.is_dir():
            raise UsageError(f"--extra-path {entry}: not a directory")
        extra.append(str(path))
    keep = None
    if args.keep:
        keep = Path(args.keep).expanduser().resolve()
        if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
            raise UsageError(f"--keep {args.keep}: exists and is not an empty directory")
    return open_source(args.diffusers, args.rev), extra, keep


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    try:
        source, extra, keep = prepare(args)
        wanted = [SUITE_DIR / name for name in SUITES]
        present = [p for p in wanted if source.read(p) is not None]
        if not present or source.read(SUITE_DIR / "test_schedulers.py") is None:
            raise UsageError(
                f"{source.label} at {source.commit[:12] or 'files on disk'}: no diffusers "
                f"scheduler tests ({SUITE_DIR}/test_scheduler_*.py, test_schedulers.py)"
            )
    except UsageError as e:
        print(f"diffusers_suite: {e}", file=sys.stderr)
        return 2

    files = export_closure(source, present)
    suite_set = set(present)
    vacuous_names = empty_base_classes(files, suite_set)
    changed: dict[PurePosixPath, int] = {}
    for path in present:
        files[path], changed[path] = retarget(files[path])
    own = {".".join(p.with_suffix("").parts): defined_classes(files[p]) for p in present}
    modules = {".".join(p.with_suffix("").parts): p for p in present}

    work = keep or Path(tempfile.mkdtemp(prefix="diffusers_suite_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for path, text in files.items():
            target = work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        # Pins pytest's rootdir (and so the test ids) to the export, away from any config
        # file further up.
        (work / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(SRC), *extra, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
        )

        print(f"diffusers scheduler suites vs dpmsolver.diffusers.{OUR_CLASS}")
        print(f"source:   {source.label}")
        print(f"revision: {source.revision}")
        for line in run_checks(env):
            print(f"imports:  {line}")
        print(f"exported: {len(files)} files: " + ", ".join(str(p) for p in sorted(files)))
        for path in wanted:
            if path not in suite_set:
                print(f"  {path.name}: absent at this revision, not run")
            elif changed[path] == 0:
                print(f"  {path.name}: WARNING no scheduler_classes found, it tests diffusers")
        packages = {parent / "__init__.py" for p in files for parent in p.parents[:-1]}
        if missing := sorted(str(p) for p in packages - files.keys()):
            print("  WARNING not in the source, relative imports may fail: " + ", ".join(missing))
        print()

        xml_path = work / "junit.xml"
        cmd = [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE"),
            *("--tb=line", "-W", "ignore::DeprecationWarning", "--continue-on-collection-errors"),
            f"--junitxml={xml_path}",
            *(str(p) for p in present),
        ]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=False)
        pytest_s = time.perf_counter() - t0
        output = done.stdout + done.stderr
        if keep:
            (work / "pytest.log").write_text(output, encoding="utf-8")
        if not xml_path.is_file():
            print(output[-3000:], file=sys.stderr)
            print(
                f"diffusers_suite: pytest wrote no report (rc {done.returncode})", file=sys.stderr
            )
            return 1
        results = read_junit(xml_path, modules, vacuous_names, own)
        report(results, modules, vacuous_names)
        summary = next(
            (ln.strip("= ") for ln in reversed(done.stdout.splitlines()) if " in " in ln), "?"
        )
        print()
        print(f"pytest:   {summary}  (rc {done.returncode}, {pytest_s:.1f} s)")
        if keep:
            print(f"kept:     {work} (pytest.log, junit.xml, tests/)")
        print(f"runtime:  {time.perf_counter() - started:.1f} s in all")
        if done.returncode not in (0, 1):
            print(output[-3000:], file=sys.stderr)
            print(
                f"diffusers_suite: pytest stopped abnormally (rc {done.returncode})",
                file=sys.stderr,
            )
            return 1
        return 0
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def report(
    results: dict[str, SuiteResult], modules: dict[str, PurePosixPath], vacuous_names: set[str]
) -> None:
    base = ", ".join(sorted(vacuous_names)) or "the common base class"
    columns = ("passed", "failed", "errors", "skipped")
    print(f"{'suite':32}" + "".join(f"{c:>9}" for c in columns) + f"{'vacuous':>10}")
    total, total_vacuous = Counter[str](), Counter[str]()
    for key, result in results.items():
        if key == "(other)" and not (result.counts or result.vacuous):
            continue
        name = modules[key].name if key in modules else key
        cells = "".join(f"{result.counts[c]:>9}" for c in columns)
        print(f"{name:32}{cells}{sum(result.vacuous.values()):>10}")
        total.update(result.counts)
        total_vacuous.update(result.vacuous)
    print(f"{'total':32}" + "".join(f"{total[c]:>9}" for c in columns), end="")
    print(f"{sum(total_vacuous.values()):>10}")
    vacuous_note = ", ".join(f"{n} {k}" for k, n in sorted(total_vacuous.items())) or "none"
    print(
        f"vacuous: tests of {base} collected again in each suite module that imports it, with "
        f"its empty scheduler_classes ({vacuous_note}); not in the other columns"
    )
    problems = [p for r in results.values() for p in r.problems]
    print()
    print(f"failing tests ({len(problems)}):" if problems else "failing tests: none")
    for kind, test_id, message in problems:
        tag = "" if kind == "failure" else f" [{kind}]"
        print(f"  {test_id}{tag}")
        print(f"      {message}")


if __name__ == "__main__":
    sys.exit(main())
