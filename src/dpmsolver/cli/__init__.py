"""The `dpmsolver` command (`main`): sample, bench, compare and generate on the built-in
models. `main` holds the commands; `labels` the bitmap font that labels compare's picture."""

from .main import main

__all__ = ["main"]
