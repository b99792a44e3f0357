"""dpmsolver: DPM-Solver and DPM-Solver++ samplers for diffusion models.

Native API::

    import dpmsolver as dpm
    schedule = dpm.VPSchedule.discrete(betas=betas)
    model = dpm.Denoiser(net, schedule, prediction="noise")
    x0 = dpm.sample(model, x_T, steps=20)        # DPM-Solver++(2M)

Drop-in replacement for the authors' single file::

    from dpmsolver import NoiseScheduleVP, model_wrapper, DPM_Solver
"""

from .compat import DPM_Solver, NoiseScheduleVP, model_wrapper
from .generate import GenerateResult, generate
from .grids import (
    ALIGN_YOUR_STEPS,
    align_your_steps,
    interpolate_grid,
    singlestep_orders,
    time_grid,
)
from .model import (
    ClassifierFree,
    ClassifierGuidance,
    Denoiser,
    DiffusionModel,
    DynamicThresholding,
    to_data,
    to_noise,
)
from .sampler import ModelOutputError, Sampler, sample
from .schedules import (
    CosineVPSchedule,
    CustomSchedule,
    DiscreteVPSchedule,
    EDMSchedule,
    FlowSchedule,
    Level,
    LinearVPSchedule,
    NoiseSchedule,
    VESchedule,
    VPSchedule,
)
from .tuning import TunedGrid, optimize_time_grid

__version__ = "0.1.0"

__all__ = [
    "ALIGN_YOUR_STEPS",
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
    "Sampler",
    "TunedGrid",
    "VESchedule",
    "VPSchedule",
    "align_your_steps",
    "generate",
    "interpolate_grid",
    "model_wrapper",
    "optimize_time_grid",
    "sample",
    "singlestep_orders",
    "time_grid",
    "to_data",
    "to_noise",
]
