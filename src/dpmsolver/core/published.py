"""Published time grids, as noise levels sigma_t / alpha_t: Align Your Steps' and GITS',
and the log-linear resampling both prescribe for other step counts. Give them to the
samplers as `sigmas=` (`dpmsolver.sample(..., sigmas=align_your_steps("sd15", 10))`).

GITS' table (15 coefficients x 19 step counts) is data: `gits_sigmas.json`, read once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources

import numpy as np

from ..checks import check_choice, check_float, check_int
from .grids import MAX_GRID_STEPS, check_grid

__all__ = [
    "ALIGN_YOUR_STEPS",
    "GITS_NOISE_LEVELS",
    "align_your_steps",
    "gits_sigmas",
    "interpolate_grid",
]

# Align Your Steps (Sabour et al., 2024, Table 3): 10-step noise levels sigma_t / alpha_t
# optimised for these models, from sigma_max down to the smallest training noise level.
ALIGN_YOUR_STEPS: dict[str, tuple[float, ...]] = {
    "sd15": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
    "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),
    "deepfloyd-if": (160.41, 8.081, 3.315, 1.885, 1.207, 0.785, 0.553, 0.293, 0.186, 0.030, 0.006),
    "svd": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}
"""Align Your Steps' published 10-step noise levels sigma_t / alpha_t, by model name
(`sd15`, `sdxl`, `deepfloyd-if`, `svd`), from sigma_max down to the smallest training level.
Resample them to other step counts with `align_your_steps(name, steps)`."""


def interpolate_grid(values: Sequence[float], steps: int) -> list[float]:
    """A published grid (times or noise levels, monotone, positive) resampled to `steps`
    intervals by log-linear interpolation, as Align Your Steps prescribes: log(value) is
    interpolated linearly against the grid's position in [0, 1]. The end points are kept.
    """
    check_int("steps", steps, 1, MAX_GRID_STEPS)
    arr = check_grid("values", values, increasing=True, positive=True).numpy()
    if steps + 1 == arr.size:
        return [float(v) for v in arr]
    xs = np.linspace(0.0, 1.0, arr.size)
    out = np.exp(np.interp(np.linspace(0.0, 1.0, steps + 1), xs, np.log(arr)))
    out[0], out[-1] = arr[0], arr[-1]
    return [float(v) for v in out]


def align_your_steps(model: str, steps: int) -> list[float]:
    """Align Your Steps' noise levels for `model` ('sd15', 'sdxl', 'deepfloyd-if', 'svd'),
    log-linearly interpolated to `steps` intervals; give them as `sample(..., sigmas=...)`
    (or to k-diffusion-style samplers with a final 0 appended)."""
    check_choice("model", model, tuple(ALIGN_YOUR_STEPS))
    return interpolate_grid(ALIGN_YOUR_STEPS[model], steps)


def gits_sigmas(steps: int, coeff: float = 1.20) -> list[float]:
    """GITS noise levels sigma_t / alpha_t for `steps` steps (Chen et al., "On the Trajectory
    Regularity of ODE-based Diffusion Sampling", ICML 2024): steps + 1 levels from Stable
    Diffusion's sigma_max (14.615) down to its smallest training level (0.0292).

    `coeff` picks the published grid by the coefficient of GITS's search (0.80 to 1.50 in
    steps of 0.05; rounded to 2 decimals, as ComfyUI's GITSScheduler does; 1.20 is that
    node's default). For 2 to 20 steps the result is the published grid itself; beyond 20
    it is the 20-step grid log-linearly interpolated (`interpolate_grid`), as that node
    does. The node returns these levels with the last one replaced by 0 (its samplers then
    end with the denoised prediction there), and with denoise < 1 only the last
    round(steps * denoise) + 1 of them. Give them as `sample(..., sigmas=...)`, mapped onto
    another model's noise range by the caller where needed.
    """
    check_int("steps", steps, 2, MAX_GRID_STEPS)
    value = check_float("coeff", coeff)
    key = round(value, 2)
    if key not in GITS_NOISE_LEVELS:
        allowed = ", ".join(f"{c:.2f}" for c in GITS_NOISE_LEVELS)
        raise ValueError(f"coeff must be one of {allowed} (GITS's published grids); got {coeff!r}")
    table = GITS_NOISE_LEVELS[key]
    if steps <= len(table) + 1:
        return list(table[steps - 2])
    return interpolate_grid(table[-1], steps)


def _gits_table() -> dict[float, tuple[tuple[float, ...], ...]]:
    """GITS' published noise levels by coefficient (`gits_sigmas.json`): entry [steps - 2]
    holds the steps + 1 levels of a steps-step grid."""
    data = json.loads(resources.files("dpmsolver.core").joinpath("gits_sigmas.json").read_text())
    return {
        round(float(k), 2): tuple(tuple(float(v) for v in row) for row in rows)
        for k, rows in data["levels"].items()
    }


GITS_NOISE_LEVELS: dict[float, tuple[tuple[float, ...], ...]] = _gits_table()
"""GITS (Chen et al., ICML 2024): the published noise levels sigma_t / alpha_t of the grids
the authors' search found, in Stable Diffusion's noise range (the numbers ComfyUI's
GITSScheduler ships), per coefficient (0.80 to 1.50): entry [steps - 2] holds the steps + 1
levels of a steps-step grid (2 to 20)."""
