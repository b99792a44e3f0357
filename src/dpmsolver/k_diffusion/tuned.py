"""Tuned solvers (`dpmsolver.optimize_solver`) in the k-diffusion convention: their sigmas
(`tuned_sigmas`), and a run on them (`sample_tuned`), which equals `dpmsolver.sample(model,
x, solver=tuned)` on the tuned model."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..checks import check_bool, check_choice, check_device
from ..core import SolverOptions
from .denoiser import MODEL_SAMPLINGS

__all__ = ["tuned_options", "tuned_sigmas"]


def tuned_sigmas(
    solver: Any, model_sampling: str = "ve", *, final_zero: bool = False, device: Any = "cpu"
) -> Tensor:
    """The k-diffusion sigmas of a tuned solver (`dpmsolver.optimize_solver`): its noise
    levels sigma_t / alpha_t ('ve'), or the flow sigmas sigma_t ('flow'), float64.
    `final_zero` appends 0: the run then ends with the denoised prediction at the last
    sigma, one model call more."""
    check_choice("model_sampling", model_sampling, MODEL_SAMPLINGS)
    final_zero, device = check_bool("final_zero", final_zero), check_device("device", device)
    _check_tuned(solver)
    values = [float(v) for v in solver.sigmas]
    if model_sampling == "flow":
        values = [v / (1.0 + v) if math.isfinite(v) else 1.0 for v in values]
    if final_zero:
        values.append(0.0)
    return torch.tensor(values, dtype=torch.float64, device=device)


def tuned_options(
    solver: Any, grid: list[float], to_zero: bool, sampling: str, changed: list[str]
) -> SolverOptions:
    """The tuned solver's options on the face's grid, which must be its sigmas; `changed`
    names the sampler's solver arguments given other than their defaults, which a tuned
    solver (setting them all) refuses."""
    _check_tuned(solver)
    if changed:
        raise ValueError(
            f"solver (a tuned solver) sets the solver; {', '.join(changed)} must keep their "
            "defaults with it"
        )
    options = SolverOptions.of(solver)  # a TunedSolver's solver(), checked
    want = tuned_sigmas(solver, sampling).tolist()
    if len(want) != len(grid) or not all(
        math.isclose(a, b, rel_tol=1e-6) for a, b in zip(want, grid, strict=False)
    ):
        raise ValueError(
            f"sigmas must be the tuned solver's own (tuned_sigmas(solver, {sampling!r}), "
            f"{len(want)} values from {want[0]:.6g} to {want[-1]:.6g}, optionally with a final "
            f"0); got {len(grid)} values from {grid[0]:.6g} to {grid[-1]:.6g}"
        )
    return SolverOptions.of(
        options, timesteps=tuple(grid), denoise_to_zero=to_zero or options.denoise_to_zero
    )


def _check_tuned(solver: Any) -> None:
    if not hasattr(solver, "sigmas") or not callable(getattr(solver, "solver", None)):
        raise TypeError(
            f"solver must be a TunedSolver (optimize_solver); got {type(solver).__name__}"
        )
