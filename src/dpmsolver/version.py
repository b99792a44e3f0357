"""The package version (pyproject.toml's, checked by a test)."""

VERSION = "0.1.0"
