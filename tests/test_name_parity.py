"""The name-parity table of docs/faces/k-diffusion.md: each row (a sampler by the name
users know) runs our call and the implementation it names, with the same sigmas and the
same noise, and they agree.

References: k-diffusion's own sampling.py (`k_reference`), ComfyUI's formulas re-derived
in tests/test_k_diffusion_sde.py (its code imports the rest of ComfyUI), diffusers'
schedulers, and the authors' code through the golden vectors.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import k_reference
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    UniPCMultistepScheduler,
)
from test_compat_parity import ARRAYS, CASES, run_case
from test_deis import reference_deis
from test_diffusers_config import VP, run, run_with_noise
from test_k_diffusion_sde import (
    ComfyWrapper,
    NoiseTable,
    comfy_2m_cfg_pp,
    comfy_3m_sde,
    flow_grid,
    flow_model,
    inner,
    start,
    ve_model,
)
from torch import Tensor

import dpmsolver.k_diffusion as K  # noqa: N812 (k-diffusion's own convention)
from dpmsolver.diffusers import DPMSolverScheduler

KD = k_reference.load()
PAGE = Path(__file__).resolve().parents[1] / "docs" / "faces" / "k-diffusion.md"


def k_pair(name: str, grid: str, noise: bool, **kwargs: Any) -> tuple[Tensor, Tensor]:
    """Ours and k-diffusion's sampler `name` on their own `grid` sigmas (20 levels from
    14.6 to 0.03, SD's range) and, for an SDE sampler, the same noise."""
    ours_sigmas = getattr(K, f"get_sigmas_{grid}")(20, 0.03, 14.6).double()
    their_sigmas = getattr(KD, f"get_sigmas_{grid}")(20, 0.03, 14.6).double()
    # The same grid to float32 rounding (both return the default dtype); then the same
    # sigmas for both samplers.
    torch.testing.assert_close(ours_sigmas, their_sigmas, rtol=1e-6, atol=0)
    x = start(scale=14.6)

    def extra() -> dict[str, Any]:
        return {"noise_sampler": NoiseTable(tuple(x.shape))} if noise else {}

    ours = getattr(K, name)(ve_model, x, their_sigmas, disable=True, **kwargs, **extra())
    theirs = getattr(KD, name.replace("_heun", ""))(
        ve_model, x, their_sigmas, disable=True, **kwargs, **extra()
    )
    return ours, theirs


def kd(name: str, grid: str, noise: bool = True, **kw: Any) -> Callable[[], tuple[Tensor, Tensor]]:
    return lambda: k_pair(name, grid, noise, **kw)


def cfg_pp() -> tuple[Tensor, Tensor]:
    sigmas = K.get_sigmas_karras(12, 0.03, 14.6).double()
    c = torch.ones(4, dtype=torch.float64)
    extra = {"cond": c, "uncond": 0 * c, "cond_scale": 1.5}
    model = K.CFGDenoiser(inner)
    ours = K.sample_dpmpp_2m_cfg_pp(
        ComfyWrapper(1.5), start(scale=14.6), sigmas, {"model_options": {}}, disable=True
    )
    return ours, comfy_2m_cfg_pp(model, start(scale=14.6), sigmas.tolist(), extra)


def flow_3m_sde() -> tuple[Tensor, Tensor]:
    sigmas = flow_grid(12)
    x = start(scale=1.0)
    ours = K.sample_dpmpp_3m_sde(
        flow_model,
        x,
        sigmas,
        disable=True,
        model_sampling="flow",
        noise_sampler=NoiseTable(tuple(x.shape)),
    )
    theirs = comfy_3m_sde(flow_model, x, sigmas.tolist(), NoiseTable(tuple(x.shape)), 1.0)
    return ours, theirs


def diffusers_pair(
    cls: Any, steps: int = 12, noise: bool = False, **config: Any
) -> Callable[[], tuple[Tensor, Tensor]]:
    """Ours from diffusers' config, and diffusers' own scheduler (an SDE one given the same
    `variance_noise`), on the same linear model."""

    def pair() -> tuple[Tensor, Tensor]:
        full = dict(VP, timestep_spacing="linspace", **config)
        go = run_with_noise if noise else lambda s: run(s, steps)
        return go(DPMSolverScheduler.from_config(cls(**full).config)), go(cls(**full))

    return pair


def authors() -> tuple[Tensor, Tensor]:
    case = next(c for c in CASES if c["method"] == "multistep" and c["order"] == 2)
    out, _ = run_case(case, torch.float64)
    return out, torch.tensor(ARRAYS[f"out64_{case['id']}"])


# Page row (its first cell) -> (ours, the reference), tolerance
def deis_pair() -> tuple[Tensor, Tensor]:
    """Ours and ComfyUI's DEIS formula (tab mode, max_order 3, re-derived in test_deis)
    on karras sigmas of SD's range."""
    sigmas = K.get_sigmas_karras(20, 0.03, 14.6).double()
    x = start(scale=14.6)
    return K.sample_deis(ve_model, x, sigmas, disable=True), reference_deis(ve_model, x, sigmas)


def dpm_fast() -> tuple[Tensor, Tensor]:
    """DPM-Solver-fast: 10 calls from 14.6 to 0.03, ours and k-diffusion's."""
    x = start(scale=14.6)
    ours = K.sample_dpm_fast(ve_model, x, 0.03, 14.6, 10, disable=True)
    return ours, KD.sample_dpm_fast(ve_model, x, 0.03, 14.6, 10, disable=True)


def comfy_kl_optimal(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """ComfyUI's kl_optimal_scheduler (comfy/samplers.py), re-derived: n sigmas uniform in
    arctan(sigma) from sigma_max to sigma_min, then 0."""
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = torch.tensor([sigma_min, sigma_max], dtype=torch.float64).atan()
    return torch.cat([torch.tan((1 - t) * hi + t * lo), torch.zeros(1, dtype=torch.float64)])


def kl_optimal() -> tuple[Tensor, Tensor]:
    """The kl_optimal grid (as ComfyUI's KSampler computes it for 12 steps: 12 sigmas
    and 0) and DPM-Solver++ 2M on it."""
    import dpmsolver as dpm

    schedule = dpm.VESchedule(0.03, 14.6)
    times = dpm.time_grid(schedule, "kl_optimal", 14.6, 0.03, 11)
    ours = torch.cat([times, torch.zeros(1, dtype=torch.float64)])
    return ours, comfy_kl_optimal(12, 0.03, 14.6)


ROWS: dict[str, tuple[Callable[[], tuple[Tensor, Tensor]], float]] = {
    "DPM++ 2M Karras": (kd("sample_dpmpp_2m", "karras", noise=False), 1e-6),
    "DPM++ 2M SDE Karras": (kd("sample_dpmpp_2m_sde", "karras"), 1e-6),
    "DPM++ 2M SDE Heun Karras": (
        kd("sample_dpmpp_2m_sde_heun", "karras", solver_type="heun"),
        1e-6,
    ),
    "DPM++ 3M SDE Exponential": (kd("sample_dpmpp_3m_sde", "exponential"), 1e-6),
    "DPM++ 2S a Karras": (kd("sample_dpmpp_2s_ancestral", "karras"), 1e-6),
    "DPM++ SDE Karras": (kd("sample_dpmpp_sde", "karras"), 1e-6),
    "DPM++ 2M CFG++": (cfg_pp, 1e-6),
    "DPM++ 3M SDE on a flow model": (flow_3m_sde, 1e-6),
    "DPMSolverMultistepScheduler(use_karras_sigmas=True)": (
        diffusers_pair(
            DPMSolverMultistepScheduler, use_karras_sigmas=True, final_sigmas_type="zero"
        ),
        2e-5,
    ),
    'DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")': (
        diffusers_pair(
            DPMSolverMultistepScheduler,
            noise=True,
            algorithm_type="sde-dpmsolver++",
            final_sigmas_type="zero",
        ),
        2e-5,
    ),
    "UniPCMultistepScheduler": (
        diffusers_pair(UniPCMultistepScheduler, solver_order=2, final_sigmas_type="zero"),
        2e-5,
    ),
    "DPM_Solver(...).sample(x, method='multistep')": (authors, 1e-7),
    "DEIS": (deis_pair, 1e-10),
    "DPM fast": (dpm_fast, 1e-5),
    "kl_optimal": (kl_optimal, 1e-12),
}


def page_rows() -> list[str]:
    """The first cells of the table under '## Name parity' on the k-diffusion page."""
    text = PAGE.read_text()
    section = text.split("\n## Name parity", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]  # no header
    return [re.sub(r"`", "", row.split("|")[1].strip()) for row in rows]


def test_every_row_of_the_page_is_tested() -> None:
    assert sorted(page_rows()) == sorted(ROWS)


@pytest.mark.parametrize("row", sorted(ROWS))
def test_row_gives_the_reference_result(row: str) -> None:
    pair, tol = ROWS[row]
    ours, theirs = pair()
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=tol, atol=tol)
