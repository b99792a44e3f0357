"""`dpmsolver comfyui install PATH`: the node folder that makes ComfyUI load dpmsolver.comfyui.

ComfyUI imports every folder of `ComfyUI/custom_nodes/` at start and reads its
`NODE_CLASS_MAPPINGS`. The folder written here holds one `__init__.py` that re-exports
those of `dpmsolver.comfyui` (installed into ComfyUI's Python), so that updating the package
updates the nodes. It lives outside `dpmsolver.comfyui`, which can only be imported inside
ComfyUI.
"""

from __future__ import annotations

import os
from pathlib import Path

from .generation.files import TMP_PREFIX, write_atomic

__all__ = ["FOLDER", "MARKER", "install_node_folder"]

FOLDER = "dpmsolver"
# The first line of the file we write: what tells our folder from a user's.
MARKER = "# Written by `dpmsolver comfyui install`"

INIT = (
    MARKER
    + '''; delete this folder to uninstall.
"""dpmsolver's ComfyUI nodes and samplers: see dpmsolver.comfyui."""

try:
    from dpmsolver.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ModuleNotFoundError as error:
    if error.name != "dpmsolver":
        raise
    import sys

    raise ImportError(
        "the dpmsolver node pack needs dpmsolver in ComfyUI's Python: "
        f"{sys.executable} -m pip install dpmsolver"
    ) from error

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
'''
)


def install_node_folder(comfyui: str | os.PathLike[str]) -> Path:
    """Write `custom_nodes/dpmsolver/__init__.py` under the ComfyUI folder `comfyui`;
    return the file. Refuses a folder that is not ComfyUI's (no `custom_nodes/`) and a
    `custom_nodes/dpmsolver` that holds anything this command did not write."""
    root = Path(comfyui).expanduser()
    nodes = root / "custom_nodes"
    if not root.is_dir():
        raise ValueError(f"PATH {os.fspath(comfyui)!r}: not a folder; give ComfyUI's folder")
    if not nodes.is_dir():
        raise ValueError(
            f"PATH {os.fspath(comfyui)!r}: not a ComfyUI folder (it has no custom_nodes/); "
            "give the folder that holds ComfyUI's main.py"
        )
    folder = nodes / FOLDER
    target = folder / "__init__.py"
    if folder.exists():
        # A temporary of ours a killed run left is not the user's.
        theirs = [
            p.name
            for p in folder.iterdir()
            if p.name not in ("__init__.py", "__pycache__") and not p.name.startswith(TMP_PREFIX)
        ]
        ours = target.is_file() and target.read_text(errors="replace").startswith(MARKER)
        if theirs or (target.exists() and not ours):
            raise ValueError(
                f"{folder} exists and holds files this command did not write "
                f"({', '.join(sorted(theirs)) or '__init__.py'}); move it away first"
            )
    folder.mkdir(exist_ok=True)
    # Written whole, then renamed: a ComfyUI starting meanwhile never reads half a file.
    write_atomic(target, INIT.encode())
    return target
