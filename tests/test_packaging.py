"""pyproject.toml builds without deprecation warnings: the license is an SPDX expression
(PEP 639), which needs setuptools 77 or newer to build."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data


def test_license_is_an_spdx_string() -> None:
    # A table ({text = ...} or {file = ...}) makes setuptools warn at every install.
    project = pyproject()["project"]
    assert project["license"] == "MIT"
    # PEP 639: an SPDX license expression excludes License :: classifiers.
    assert not [c for c in project.get("classifiers", []) if c.startswith("License ::")]


def test_the_build_needs_a_setuptools_that_reads_spdx_licenses() -> None:
    requires = pyproject()["build-system"]["requires"]
    found = [re.fullmatch(r"setuptools\s*>=\s*(\d+)(\.\d+)*", r) for r in requires]
    versions = [int(m[1]) for m in found if m]
    assert len(versions) == 1, requires
    assert versions[0] >= 77
