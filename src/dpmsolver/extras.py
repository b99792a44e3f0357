"""The optional extras (pyproject's `[project.optional-dependencies]`): which modules each
one installs, and one clear error when code that needs one runs without it.

    with needs_extra("sde", "BrownianTreeNoiseSampler"):
        import torchsde

When a package of the extra is not installed, the block's ModuleNotFoundError becomes a
`MissingExtraError` (a ModuleNotFoundError whose `.name` is that package) whose message
ends with the pip command that installs it. Any other import error (a missing dependency
of the extra's own package, or a submodule that an old version lacks) passes through
unchanged.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["EXTRAS", "MissingExtraError", "needs_extra", "pip_command"]

# extra -> the top-level modules it installs (ComfyUI is no extra: it is the host program,
# and `dpmsolver.comfyui` says so itself).
EXTRAS: dict[str, tuple[str, ...]] = {
    "diffusers": ("diffusers",),
    "progress": ("tqdm",),
    "plot": ("matplotlib",),
    "sde": ("torchsde",),
    "fit": ("sklearn",),
    "docs": ("mkdocs", "material", "mkdocstrings"),
}


class MissingExtraError(ModuleNotFoundError):
    """A module of an optional extra is not installed; the message says how to install it."""


def pip_command(extra: str) -> str:
    """The command that installs `extra`, quoted for every shell: pip install "dpmsolver[sde]"."""
    if extra not in EXTRAS:
        allowed = ", ".join(repr(e) for e in EXTRAS)
        raise ValueError(f"extra must be one of {allowed}; got {extra!r}")
    return f'pip install "dpmsolver[{extra}]"'


@contextmanager
def needs_extra(extra: str, user: str) -> Iterator[None]:
    """Turn a ModuleNotFoundError for a module of `extra` raised inside the block into a
    `MissingExtraError` naming `user` (what needs it), the module and `pip_command(extra)`."""
    command = pip_command(extra)
    try:
        yield
    except ModuleNotFoundError as error:
        top = (error.name or "").partition(".")[0]
        if isinstance(error, MissingExtraError) or top not in EXTRAS[extra] or _installed(top):
            raise
        raise MissingExtraError(
            f"{user} needs {top}, which is not installed: {command}", name=top
        ) from error


def _installed(module: str) -> bool:
    """Whether the top-level `module` can be found (None in sys.modules blocks it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a finder that refuses it
        return False
    except ValueError:  # imported, without a __spec__
        return True
