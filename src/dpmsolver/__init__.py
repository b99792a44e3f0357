"""dpmsolver: DPM-Solver and DPM-Solver++ samplers for diffusion models.

Native API::

    import dpmsolver as dpm
    schedule = dpm.VPSchedule.discrete(betas=betas)
    model = dpm.Denoiser(net, schedule, prediction="noise")
    x0 = dpm.sample(model, x_T, steps=20)        # DPM-Solver++(2M)

Layout: `dpmsolver.core` holds the schedules, model adapter, grids, update rules, options,
plans and loops; the faces (`compat`, `diffusers`, `k_diffusion`, `comfyui`, `cli`) and
the tools (`tuning`, `tools`, `noise`, `models`) sit above it (see docs/ARCHITECTURE.md).

Drop-in replacement for the authors' single file::

    from dpmsolver import NoiseScheduleVP, model_wrapper, DPM_Solver
"""

from .compat import DPM_Solver, NoiseScheduleVP, model_wrapper
from .core import (
    ALIGN_YOUR_STEPS,
    ClassifierFree,
    ClassifierGuidance,
    CosineVPSchedule,
    CustomSchedule,
    Denoiser,
    DiffusionModel,
    DiscreteVPSchedule,
    DynamicThresholding,
    EDMSchedule,
    FlowSchedule,
    Level,
    LinearVPSchedule,
    ModelOutputError,
    NoiseSchedule,
    Sampler,
    SolverOptions,
    VESchedule,
    VPSchedule,
    align_your_steps,
    gits_sigmas,
    interpolate_grid,
    sample,
    singlestep_orders,
    time_grid,
    to_data,
    to_noise,
)
from .noise.brownian import BrownianTreeNoiseSampler, PerSampleNoise
from .tools.generation import GenerateResult, generate
from .tuning.grid_search import optimize_time_grid
from .tuning.pilots import PilotReference, pilot_reference
from .tuning.solver_search import optimize_solver, optimize_solvers
from .tuning.values import TunedGrid, TunedSolver
from .version import VERSION

__version__ = VERSION

__all__ = [
    "ALIGN_YOUR_STEPS",
    "BrownianTreeNoiseSampler",
    "ClassifierFree",
    "ClassifierGuidance",
    "CosineVPSchedule",
    "CustomSchedule",
    "DPM_Solver",
    "Denoiser",
    "DiffusionModel",
    "DiscreteVPSchedule",
    "DynamicThresholding",
    "EDMSchedule",
    "FlowSchedule",
    "GenerateResult",
    "Level",
    "LinearVPSchedule",
    "ModelOutputError",
    "NoiseSchedule",
    "NoiseScheduleVP",
    "PerSampleNoise",
    "PilotReference",
    "Sampler",
    "SolverOptions",
    "TunedGrid",
    "TunedSolver",
    "VESchedule",
    "VPSchedule",
    "align_your_steps",
    "generate",
    "gits_sigmas",
    "interpolate_grid",
    "model_wrapper",
    "optimize_solver",
    "optimize_solvers",
    "optimize_time_grid",
    "pilot_reference",
    "sample",
    "singlestep_orders",
    "time_grid",
    "to_data",
    "to_noise",
]
