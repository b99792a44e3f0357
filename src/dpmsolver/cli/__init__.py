"""The `dpmsolver` command (`main`): sample, bench, compare and generate on the built-in
models.

    main       the entry point: parse, check, run one command
    arguments  the parser of each command and the checks of its arguments
    commands   what each command does (sample, bench, generate, compare)
    labels     the bitmap font that labels compare's picture
"""

from .main import main

__all__ = ["main"]
