"""Our samplers under ComfyUI names, and our grids as ComfyUI schedulers.

Samplers take k-diffusion's signature `(model, x, sigmas, extra_args, callback, disable)`
and run `dpmsolver.k_diffusion.sample_dpm_solver`, which reads from ComfyUI's model wrapper
whether the model is a flow model (CONST model sampling: SD3, Flux, Wan) or not. Scheduler
handlers take `(model_sampling, steps)` and return steps + 1 sigmas ending in 0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..checks import check_int
from ..core import VPSchedule, time_grid
from ..k_diffusion import sample_dpm_solver
from ..k_diffusion.denoiser import FLOW_SDE_START, is_flow

__all__ = ["GRIDS", "SAMPLERS", "grid_sigmas", "is_flow", "sampler_function"]

# Our samplers by ComfyUI name (each cannot clash with ComfyUI's own: a dpmsolver_ prefix),
# and the options of `sample_dpm_solver` each runs. One model call per sigma (the _afs
# ones: none at the first).
SAMPLERS: dict[str, dict[str, Any]] = {
    "dpmsolver_2m": dict(order=2),
    "dpmsolver_3m": dict(order=3),
    "dpmsolver_2m_unic": dict(order=2, corrector="all"),
    "dpmsolver_3m_unic": dict(order=3, corrector="all"),
    "dpmsolver_ipndm": dict(order=4, algorithm="ipndm"),
    "dpmsolver_3m_sde": dict(order=3, eta=1.0),
    # The analytic first step: no call at the first sigma (one call fewer than sigmas).
    "dpmsolver_3m_unic_afs": dict(order=3, corrector="all", analytic_first_step=True),
    "dpmsolver_ipndm_afs": dict(order=4, algorithm="ipndm", analytic_first_step=True),
}
# Our grids by ComfyUI scheduler name -> our skip_type.
GRIDS = {
    "dpmsolver_logsnr": "logSNR",
    "dpmsolver_time_uniform": "time_uniform",
    "dpmsolver_time_quadratic": "time_quadratic",
}
# Where a logSNR grid of a flow model starts (lambda is -inf at sigma = 1): where the
# k-diffusion face starts the samplers that cannot start at pure noise.
FLOW_LOGSNR_START = FLOW_SDE_START


def sampler_function(options: dict[str, Any]) -> Callable[..., Tensor]:
    """A k-diffusion-style sampler running `sample_dpm_solver` with `options` (which the
    caller's extra options override: a SamplerCustom node's)."""

    def sample(
        model: Any,
        x: Tensor,
        sigmas: Tensor,
        extra_args: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        disable: bool | None = None,
        **overrides: Any,
    ) -> Tensor:
        return sample_dpm_solver(
            model, x, sigmas, extra_args, callback, disable, **{**options, **overrides}
        )

    return sample


def grid_sigmas(model_sampling: Any, grid: str, steps: int) -> Tensor:
    """`steps` sigmas of our grid `grid` (a skip_type) for ComfyUI's model sampling, then
    0 (float32 on the CPU, as ComfyUI's schedulers give them: `steps` calls, the last one's
    denoised prediction the result).

    VP models (ComfyUI's discrete model sampling): our grid in the time of the
    DiscreteVPSchedule of its 1000 sigmas, as sigma_t / alpha_t. Flow models: our grid in
    the unshifted flow time u from pure noise (u = 1, or just below it for logSNR) to the
    model's smallest level, each u mapped through the model's own shift
    (`percent_to_sigma(1 - u)`)."""
    check_int("steps", steps, 1)
    if is_flow(model_sampling):
        values = _flow_sigmas(model_sampling, grid, steps)
    else:
        table = getattr(model_sampling, "sigmas", None)
        if not isinstance(table, Tensor) or table.numel() < 2:
            raise ValueError(
                f"the {grid} grid needs a model sampling with a table of sigmas (a discrete "
                f"VP model) or a flow model; got {type(model_sampling).__name__}"
            )
        schedule = _vp_schedule(tuple(table.double().tolist()))
        times = (
            time_grid(schedule, grid, schedule.t_max, schedule.t_min, steps - 1).tolist()
            if steps > 1
            else [schedule.t_max]
        )
        values = [lv.sigma / lv.alpha for lv in schedule.levels(times)]
    return torch.tensor([*values, 0.0], dtype=torch.float32)


@functools.lru_cache(maxsize=8)
def _vp_schedule(sigmas: tuple[float, ...]) -> Any:
    """The discrete VP schedule of ComfyUI's ascending VE sigmas (alphas_cumprod =
    1 / (1 + sigma^2)), one per table (plans are cached per schedule)."""
    table = torch.tensor(sigmas, dtype=torch.float64)
    return VPSchedule.discrete(alphas_cumprod=1.0 / (1.0 + table**2))


def _flow_sigmas(model_sampling: Any, grid: str, steps: int) -> list[float]:
    total = int(getattr(model_sampling, "sigmas", torch.zeros(1000)).numel())
    u_end = 1.0 / total
    if grid == "logSNR":
        # Uniform in lambda = log((1 - s) / s) from just below pure noise.
        hi = math.log((1 - FLOW_LOGSNR_START) / FLOW_LOGSNR_START)
        end = float(model_sampling.percent_to_sigma(1.0 - u_end))
        lo = math.log((1 - end) / end)
        lam = torch.linspace(hi, lo, steps, dtype=torch.float64)
        return (1.0 / (1.0 + lam.exp())).tolist()
    if grid == "time_uniform":
        u = torch.linspace(1.0, u_end, steps, dtype=torch.float64)
    elif grid == "time_quadratic":
        u = torch.linspace(1.0, u_end**0.5, steps, dtype=torch.float64) ** 2
    else:
        raise ValueError(f"grid must be one of {', '.join(GRIDS.values())}; got {grid!r}")
    return [float(model_sampling.percent_to_sigma(1.0 - float(v))) for v in u]
