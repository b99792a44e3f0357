"""Check the built documentation site, and screenshot pages of it in headless Chromium.

Run after `mkdocs build` (`make docs` runs both)::

    python tools/check_site.py site                       # the API reference check
    python tools/check_site.py site --screenshots out/screenshots index choosing

The check: every public name of `dpmsolver`, `dpmsolver.diffusers` and
`dpmsolver.k_diffusion` (their `__all__`) has an entry in the rendered API reference
(`id="module.name"`), and the entry's text holds the start of the object's docstring
(for a constant, whose docstring lives in the source, a non-empty text). A strict build
already fails on a reference that does not resolve; this catches a name that no page
references and an entry rendered without its docstring.

The screenshots open each named page (`index`, `choosing`, `faces/native`, ...) from the
files as a browser would, so a page whose layout, images or styles fail to load shows it.
Chromium runs with no network access from the page and a throwaway profile.
"""

from __future__ import annotations

import argparse
import html
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PUBLIC_MODULES = ("dpmsolver", "dpmsolver.diffusers", "dpmsolver.k_diffusion")
TAG = re.compile(r"<[^>]+>")
# An entry runs from its heading to the next entry's heading (or the end of the page).
ENTRY_START = '<div class="doc doc-object'


def page_text(fragment: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed."""
    return " ".join(html.unescape(TAG.sub(" ", fragment)).split())


def squeeze(text: str) -> str:
    return "".join(text.split())


def docstring_start(obj: object, words: int = 6) -> str | None:
    """The first words of obj's own docstring, as the site renders them (no Markdown marks)."""
    doc = getattr(obj, "__doc__", None)
    if not callable(obj) or not doc or not doc.strip():
        return None
    first = doc.strip().split("\n\n")[0]
    first = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", first)  # [text](link) renders as text
    first = first.replace("`", "").replace("**", "").replace("*", "")
    return " ".join(first.split()[:words])


def check_api(site: Path) -> list[str]:
    """Problems with the API reference under site/api, one line each (empty when fine)."""
    pages = {p: p.read_text(encoding="utf-8") for p in sorted((site / "api").rglob("*.html"))}
    if not pages:
        return [f"{site / 'api'}: no pages; build the site first (mkdocs build)"]
    problems = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            anchor = f'id="{module_name}.{name}"'
            found = [(path, text) for path, text in pages.items() if anchor in text]
            if not found:
                problems.append(f"{module_name}.{name}: no entry in {site / 'api'}")
                continue
            path, text = found[0]
            start = text.index(anchor)
            end = text.find(ENTRY_START, start)
            contents = page_text(text[start : end if end > 0 else len(text)])
            expected = docstring_start(getattr(module, name))
            # Tags split the text ("(`times`" renders as "( times"): compare without spaces.
            if expected is not None and squeeze(expected) not in squeeze(contents):
                problems.append(f"{module_name}.{name}: {path} lacks its docstring {expected!r}")
            elif len(contents.split()) < 3:
                problems.append(f"{module_name}.{name}: {path} shows an empty entry")
    return problems


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("screenshots: no chromium on PATH (Debian: apt-get install chromium)")


def screenshot(site: Path, page: str, out: Path, browser: str) -> Path:
    """Render site/<page>/index.html (or site/index.html) to out/<page>.png."""
    target = site / "index.html" if page == "index" else site / page / "index.html"
    if not target.exists():
        raise SystemExit(f"screenshots: {target} does not exist")
    png = out / f"{page.replace('/', '_')}.png"
    with tempfile.TemporaryDirectory() as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",  # CI runs as root in a container
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--window-size=1280,2400",
            f"--screenshot={png.resolve()}",
            target.resolve().as_uri(),
        ]
        run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if run.returncode != 0 or not png.exists() or png.stat().st_size < 10_000:
        raise SystemExit(f"screenshots: {page} failed (exit {run.returncode}):\n{run.stderr}")
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("site", type=Path, help="the built site folder (mkdocs' site_dir)")
    parser.add_argument("pages", nargs="*", help="pages to screenshot (default: index choosing)")
    parser.add_argument("--screenshots", type=Path, help="write a PNG per page here")
    args = parser.parse_intermixed_args(argv)
    if args.pages and not args.screenshots:
        parser.error(f"pages {' '.join(args.pages)} given without --screenshots DIR")
    problems = check_api(args.site)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 1
    total = sum(len(importlib.import_module(m).__all__) for m in PUBLIC_MODULES)
    print(f"API reference: all {total} public names have an entry with their docstring")
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
        browser = find_chromium()
        for page in args.pages or ["index", "choosing"]:
            png = screenshot(args.site, page, args.screenshots, browser)
            print(f"screenshot: {png} ({png.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
