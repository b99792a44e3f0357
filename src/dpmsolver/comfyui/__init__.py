"""dpmsolver inside ComfyUI: a custom node pack.

    pip install dpmsolver                      # into ComfyUI's Python
    dpmsolver comfyui install /path/to/ComfyUI

Importing this module (ComfyUI does, from custom_nodes/) adds our samplers to the KSampler
list (`dpmsolver_2m`, `dpmsolver_3m`, `dpmsolver_2m_unic`, `dpmsolver_3m_unic`,
`dpmsolver_ipndm`, `dpmsolver_3m_sde`, and with the analytic first step
`dpmsolver_3m_unic_afs`, `dpmsolver_ipndm_afs`) and our grids to its scheduler list
(`dpmsolver_logsnr`, `dpmsolver_time_uniform`, `dpmsolver_time_quadratic`), and gives the
nodes of `NODE_CLASS_MAPPINGS`: DPM-Solver (a SAMPLER), DPM-Solver Sigmas and DPM-Solver
Tune Sampler (SAMPLER + SIGMAS tuned for the loaded model). ComfyUI's own entries are not
changed. Outside ComfyUI (or with one too old) the import is one clear ImportError.

    surface   the part of ComfyUI the pack uses, checked once
    samplers  our samplers under ComfyUI names, our grids as ComfyUI schedulers
    registry  their registration in ComfyUI's lists
    tune      tuning inside a sampler call, and its cache
    nodes     the nodes
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from .registry import register
from .samplers import GRIDS, SAMPLERS

__all__ = ["GRIDS", "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "SAMPLERS", "register"]

register()
