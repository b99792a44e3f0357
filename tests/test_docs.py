"""The documentation's code runs: every Python block of the README and of the site's pages.

A block is either an include of an example (`--8<-- "examples/NAME.py"` or, for a part of
one, `--8<-- "examples/NAME.py:SECTION"`, which the site renders from the file, and which
`tests/test_cli.py` runs), or code that this test runs, in a temporary working folder.
Each README block runs alone, in a fresh namespace, as a reader copies one of them; a site
page's blocks run in order in one namespace, as its note says, as a reader types them into
one session. Code lines fit the page (`CODE_WIDTH`), and an included example shows none of
its lint comments. The API reference must list every public name of the three public
modules, and each entry of a docstring's Args / Attributes names one thing.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import shlex
import textwrap
from pathlib import Path

import pytest
import torch

from dpmsolver import cli
from dpmsolver.tools.png import read_png

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)
INCLUDE = re.compile(r'^--8<-- "(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"$')
PUBLIC_MODULES = ("dpmsolver", "dpmsolver.diffusers", "dpmsolver.k_diffusion")


def blocks(page: Path) -> list[tuple[str, str]]:
    """(language, code) of each fenced block of `page`, in order, dedented."""
    found = []
    for match in FENCE.finditer(page.read_text()):
        indent = len(match["indent"])
        body = "\n".join(line[indent:] for line in match["body"].splitlines())
        found.append((match["lang"].lower(), body))
    return found


def python_blocks(page: Path) -> list[str]:
    return [code for lang, code in blocks(page) if lang in ("python", "py", "python3", "pycon")]


def includes(code: str) -> list[re.Match[str]] | None:
    """The include lines of a block that holds only includes, or None for code."""
    lines = [line.strip() for line in code.strip().splitlines()]
    matches = [INCLUDE.match(line) for line in lines]
    if lines and all(matches):
        return [m for m in matches if m is not None]
    if any(matches):
        raise AssertionError(f"a block mixes includes and code:\n{code}")
    return None


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_the_pages_have_python_blocks() -> None:
    # The collection below is not empty by accident (a changed fence syntax would make
    # every page pass vacuously).
    counts = {page_id(p): len(python_blocks(p)) for p in PAGES}
    assert counts["README.md"] >= 4
    assert counts["docs/faces/native.md"] >= 5
    assert sum(counts.values()) >= 40


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code_blocks = []
    for code in python_blocks(page):
        matches = includes(code)
        if matches is None:
            code_blocks.append(code)
            continue
        for m in matches:
            path = ROOT / m["path"]
            assert path.parent == ROOT / "examples" and path.exists(), m["path"]
            if m["section"]:
                text = path.read_text()
                for edge in ("start", "end"):
                    marker = f"# --8<-- [{edge}:{m['section']}]"
                    assert text.count(marker) == 1, f"{m['path']}: {marker}"
    if not code_blocks:
        return
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    namespace: dict[str, object] = {}
    try:
        for i, code in enumerate(code_blocks):
            if page == README or not namespace:  # a README block stands alone
                namespace = {"__name__": "__docs__"}
            try:
                exec(compile(code, f"{page_id(page)}[{i}]", "exec"), namespace)
            except Exception as error:
                raise AssertionError(f"{page_id(page)} block {i} failed:\n{code}") from error
    finally:
        torch.set_num_threads(threads)


def test_includes_are_rendered_from_examples() -> None:
    # Every example a page includes exists; an include is the only way a page shows code
    # that this test does not run itself.
    seen = set()
    for page in PAGES:
        for code in python_blocks(page):
            for m in includes(code) or []:
                seen.add(m["path"])
    assert seen, "no page includes an example"
    assert all((ROOT / p).exists() for p in seen)


def rendered(include: re.Match[str]) -> str:
    """The code the site shows for an include: the example's section between its
    markers, dedented (`dedent_subsections`), or the whole file without the markers."""
    text = (ROOT / include["path"]).read_text()
    if include["section"]:
        start = f"# --8<-- [start:{include['section']}]"
        end = f"# --8<-- [end:{include['section']}]"
        section = text[text.index(start) + len(start) : text.index(end)]
        return textwrap.dedent(section.partition("\n")[2]).rstrip()
    marker = re.compile(r"^\s*# --8<-- \[(start|end):[\w-]+\]\n", re.M)
    return marker.sub("", text)


def shown_code() -> list[tuple[str, str]]:
    """(where, code) of every fenced block of the pages as the site shows it: an include
    block as the example code it renders, any other block (any language) as written."""
    found = []
    for page in PAGES:
        for i, (lang, code) in enumerate(blocks(page)):
            matches = includes(code) if lang in ("python", "py", "python3", "pycon") else None
            if matches is None:
                found.append((f"{page_id(page)} block {i}", code))
            for m in matches or []:
                found.append((f"{page_id(page)}: {m[0]}", rendered(m)))
    return found


CODE_WIDTH = 88  # the characters a code block of the site shows without scrolling
LINT_COMMENT = re.compile(r"#\s*(noqa|type:\s*ignore|fmt:|pragma)|--8<--")


def test_code_lines_fit_the_page() -> None:
    shown = shown_code()
    assert len(shown) >= 50 and any("--8<--" in where for where, _ in shown)
    long = [
        f"{where}: {len(line)} chars: {line.strip()}"
        for where, code in shown
        for line in code.splitlines()
        if len(line) > CODE_WIDTH
    ]
    assert not long, "\n".join(long)


def test_included_examples_show_no_lint_comments() -> None:
    # The site shows what the reader would type; a lint directive (noqa for E402, say) is
    # the example file's business (a section that needs one starts at the wrong line).
    includes_shown = [(w, code) for w, code in shown_code() if "--8<--" in w]
    assert len(includes_shown) >= 4
    for where, code in includes_shown:
        assert code.strip(), f"{where} renders nothing"
        shown = LINT_COMMENT.search(code)
        assert shown is None, f"{where} shows {shown[0]!r}"


def api_pages_text() -> str:
    return "\n".join(p.read_text() for p in sorted((DOCS / "api").glob("*.md")))


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_api_reference_lists_every_public_name(module_name: str) -> None:
    module = importlib.import_module(module_name)
    listed = set(re.findall(r"^::: ([\w.]+)", api_pages_text(), re.M))
    for name in module.__all__:
        assert f"{module_name}.{name}" in listed, f"{module_name}.{name} is not in docs/api/"
        obj = getattr(module, name)
        if callable(obj):  # a constant's docstring is in its source (checked by the build)
            assert (obj.__doc__ or "").strip(), f"{module_name}.{name} has no docstring"


def test_api_reference_lists_nothing_else() -> None:
    # A listed name that is not public would document an implementation detail.
    public = {f"{m}.{n}" for m in PUBLIC_MODULES for n in importlib.import_module(m).__all__}
    listed = set(re.findall(r"^::: ([\w.]+)", api_pages_text(), re.M))
    assert listed <= public, sorted(listed - public)


# Google-style sections whose entries are `name: text` (or `name (type): text`); the API
# reference makes a table row of each, so an entry must name exactly one thing.
NAMED_SECTIONS = {
    "Args", "Arguments", "Parameters", "Params", "Keyword Args", "Keyword Arguments",
    "Other Parameters", "Attributes", "Raises", "Exceptions", "Warns", "Warnings",
}  # fmt: skip
ENTRY_NAME = re.compile(r"\*{0,2}[A-Za-z_][\w.]*")


def section_entries(docstring: str) -> list[tuple[str, str]]:
    """(section, entry's name) of each entry of the named sections of a docstring: the
    section's lines at its first line's indent, up to the first `:` (a type dropped)."""
    lines = inspect.cleandoc(docstring).splitlines()
    found = []
    for i, line in enumerate(lines):
        title = line.strip()
        if not title.endswith(":") or title[:-1] not in NAMED_SECTIONS:
            continue
        indent, item = len(line) - len(line.lstrip()), None
        for entry in lines[i + 1 :]:
            if not entry.strip():
                continue
            depth = len(entry) - len(entry.lstrip())
            if depth <= indent:
                break
            item = depth if item is None else item
            if depth == item:
                name = re.sub(r"\s*\(.*\)$", "", entry.strip().split(":")[0])
                found.append((title[:-1], name))
    return found


def test_section_entries_reads_google_style() -> None:
    doc = """Summary.

    Args:
        model, schedule: two at once.
        x (Tensor): one,
            continued: not an entry.

    Returns:
        not: an entry.
    """
    assert section_entries(doc) == [("Args", "model, schedule"), ("Args", "x")]


def docstrings() -> list[tuple[str, str]]:
    """(where, docstring) of every module, class and function of the package."""
    found = []
    for path in sorted((ROOT / "src" / "dpmsolver").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node, clean=False)
                if doc:
                    where = f"{path.relative_to(ROOT)}:{getattr(node, 'name', '<module>')}"
                    found.append((where, doc))
    return found


def test_docstring_entries_name_one_thing() -> None:
    # `model, schedule: ...` renders as a row named "model," (mkdocstrings' Google parser);
    # each argument or attribute gets its own line.
    entries = [(where, *e) for where, doc in docstrings() for e in section_entries(doc)]
    assert len(entries) >= 100  # the parser finds the sections
    bad = [e for e in entries if not ENTRY_NAME.fullmatch(e[2])]
    assert not bad, bad


LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")


def bash_lines(page: Path) -> list[str]:
    """The commands of a page's bash blocks, comments dropped."""
    lines = []
    for lang, code in blocks(page):
        if lang == "bash":
            lines += [line.split("#")[0].strip() for line in code.splitlines() if line.strip()]
    return lines


def blocks_of(text: str) -> list[tuple[str, str]]:
    return [(m["lang"].lower(), m["body"]) for m in FENCE.finditer(text)]


def test_readme_quick_start_is_the_two_make_commands() -> None:
    text = README.read_text()
    quick_start = text[text.index("## Quick start") :]
    quick_start = quick_start[: quick_start.index("\n## ", 1)]
    first = next(code for lang, code in blocks_of(quick_start) if lang == "bash")
    commands = [line.split("#")[0].strip() for line in first.splitlines()]
    assert commands == ["make sample", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("sample", "test", "docs"):
        assert re.search(rf"^{target}:", makefile, re.M), target


def make_recipe(target: str) -> list[str]:
    """The command lines of a Makefile target's recipe."""
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{target}:[^\n]*\n(?P<recipe>(?:\t[^\n]*\n)*)", makefile, re.M)
    assert match, f"the Makefile has no target {target!r}"
    return [line.strip() for line in match["recipe"].splitlines()]


def test_make_bench_writes_every_stored_benchmark_output() -> None:
    """Each output kept in docs/benchmarks/ (which the docs quote) is rewritten by `make
    bench`, so that one command reruns every figure on the site."""
    recipe = " ".join(make_recipe("bench"))
    stored = sorted(p.name for p in (ROOT / "docs" / "benchmarks").glob("*.txt"))
    assert stored and [n for n in stored if f"docs/benchmarks/{n}" not in recipe] == []


def test_docs_digit_grid_is_what_make_sample_draws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The home page's picture, captioned `make sample`, is what `make sample` draws now,
    pixel for pixel, and `make bench` redraws it with the same command."""
    index = (DOCS / "index.md").read_text()
    assert "(digits_grid.png)" in index and "`make sample`" in index
    sample = [shlex.split(c)[1:] for c in make_recipe("sample") if "dpmsolver sample" in c]
    redraw = [shlex.split(c)[1:] for c in make_recipe("bench") if "dpmsolver sample" in c]
    assert len(sample) == 1 and len(redraw) == 1
    args, docs_args = sample[0], redraw[0]
    out = docs_args.index("--out")
    assert docs_args[out + 1] == "docs/digits_grid.png"
    same = args[: args.index("--out")] + args[args.index("--out") + 2 :]
    assert docs_args[:out] + docs_args[out + 2 :] == same
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        assert cli.main([*docs_args[:out], "--quiet", "--out", "drawn.png"]) == 0
    finally:
        torch.set_num_threads(threads)
    drawn, committed = read_png(tmp_path / "drawn.png"), read_png(DOCS / "digits_grid.png")
    assert drawn.shape == committed.shape
    differ = int((drawn != committed).sum())
    assert differ == 0, f"{differ} pixels differ: run make bench (or its line) to redraw it"


@pytest.mark.parametrize(
    ("page", "prefix"),
    [(README, ".venv/bin/dpmsolver "), (DOCS / "getting-started.md", "dpmsolver ")],
    ids=["README", "getting-started"],
)
def test_page_commands_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: Path, prefix: str
) -> None:
    # Every `dpmsolver ...` line the page shows runs as written and writes its --out file
    # or folder (through the console script's entry point, in a scratch folder).
    commands = [line for line in bash_lines(page) if line.startswith(prefix)]
    assert len(commands) >= 2
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        for command in commands:
            args = shlex.split(command)[1:]
            assert cli.main(args) == 0, command
            assert Path(args[args.index("--out") + 1]).stat().st_size > 0, command
    finally:
        torch.set_num_threads(threads)


def test_readme_links_resolve() -> None:
    # The README is read on the code host, outside the site build that checks the pages'
    # links, so its relative links and images are checked here.
    targets = [m["target"] for m in LINK.finditer(README.read_text())]
    local = [t for t in targets if "://" not in t]
    assert len(local) >= 10
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, missing


def test_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 150
