"""tools/check_site.py: the built site's API reference check finds what is missing.

The check runs on the real site in CI (`make docs`); here it runs on small hand-made
pages, so that a check that passes everything would fail this test.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_site", ROOT / "tools" / "check_site.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_site = load_tool()


def entry(qualname: str, text: str) -> str:
    return (
        f'<div class="doc doc-object doc-function"><h2 id="{qualname}" class="doc">'
        f'<code>{qualname}</code></h2><div class="doc doc-contents">'
        f"<p>{html.escape(text)}</p></div></div>"
    )


def write_site(site: Path, skip: str = "", blank: str = "") -> None:
    """An API page with an entry per public name, its docstring's start as its text."""
    entries = []
    for module_name in check_site.PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            qualname = f"{module_name}.{name}"
            if qualname == skip:
                continue
            start = check_site.docstring_start(getattr(module, name)) or "a constant's value"
            entries.append(entry(qualname, "" if qualname == blank else f"{start} and more."))
    (site / "api" / "all").mkdir(parents=True)
    (site / "api" / "all" / "index.html").write_text("\n".join(entries), encoding="utf-8")


def test_a_complete_reference_passes(tmp_path: Path) -> None:
    write_site(tmp_path)
    assert check_site.check_api(tmp_path) == []


def test_a_missing_entry_is_reported(tmp_path: Path) -> None:
    write_site(tmp_path, skip="dpmsolver.k_diffusion.sample_ipndm")
    assert check_site.check_api(tmp_path) == [
        f"dpmsolver.k_diffusion.sample_ipndm: no entry in {tmp_path / 'api'}"
    ]


def test_an_entry_without_its_docstring_is_reported(tmp_path: Path) -> None:
    write_site(tmp_path, blank="dpmsolver.sample")
    problems = check_site.check_api(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("dpmsolver.sample: ")
    assert "lacks its docstring 'Solve the diffusion ODE from x'" in problems[0]


def test_no_site_is_reported(tmp_path: Path) -> None:
    assert "no pages; build the site first" in check_site.check_api(tmp_path)[0]


def test_docstring_start_drops_markdown_marks() -> None:
    def f() -> None:
        """Run `x` on [the grid](grids.md) **twice**, then stop here now.

        More text.
        """

    assert check_site.docstring_start(f) == "Run x on the grid twice,"


def test_pages_without_screenshots_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Page names only choose what to screenshot; without --screenshots they would do nothing.
    write_site(tmp_path)
    with pytest.raises(SystemExit) as stop:
        check_site.main([str(tmp_path), "index", "choosing"])
    assert stop.value.code == 2
    assert "pages index choosing given without --screenshots DIR" in capsys.readouterr().err
    assert check_site.main([str(tmp_path)]) == 0
