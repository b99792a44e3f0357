"""The core: layers 1-5 of the design, importing nothing above them.

    schedules     1. noise schedules: alpha_t, sigma_t, lambda_t and t(lambda), float64
    model         2. model adapter: a network's output and guidance as eps_pred / x0_pred
    grids         3. time grids (a registry of spacings), the one check of a user-given grid
    published        published grids (Align Your Steps, GITS) and their resampling
    coefficients  4. update rules as data: x_new = cx x + sum_j cm[j] m[j] (+ noise z)
    options          the solver options: one frozen value, its checks and implications
    plan             the plan: levels, rules and the calls the stepper walks
    multistep        multistep plans (DPM-Solver(++), iPNDM, DEIS, UniC, tuned rules)
    singlestep       singlestep plans (DPM-Solver-1/2/3, stochastic singlestep steps)
    planning         options + schedule -> a plan, cached (`make_plan`); a face's call
                     times -> a plan (`call_plan`)
    kernel           applying a rule (`combine`) and calling the model (`Evaluator`)
    stepper       5. the one stepper: `init` and `step` on a state the caller holds
    loops            the fixed-step run (`run_plan`); `adaptive`: DPM-Solver-12/23
    stepnoise        the SDE steps' default noise (coupled within a singlestep step)
    sampler          `sample` and `Sampler`, the native entry points

Faces and tools import the names below (or a module's `__all__`), never a private name.
"""

from .coefficients import Linear, phi
from .grids import (
    GRIDS,
    SKIP_TYPES,
    check_grid,
    check_noise_levels,
    resolve_times,
    sigmas_to_times,
    singlestep_orders,
    time_grid,
)
from .kernel import Evaluator, ModelOutputError, combine
from .model import (
    ClassifierFree,
    ClassifierGuidance,
    Denoiser,
    DiffusionModel,
    DynamicThresholding,
    Prediction,
    Target,
    check_model,
    corrected_x0,
    to_data,
    to_noise,
)
from .options import ALGORITHMS, CORRECTORS, DPM_ALGORITHMS, MAX_STEPS, METHODS, SolverOptions
from .plan import Plan
from .planning import PlanEnd, call_plan, make_plan
from .published import ALIGN_YOUR_STEPS, align_your_steps, gits_sigmas, interpolate_grid
from .sampler import Sampler, sample
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
from .singlestep import singlestep_outer
from .stepnoise import LinkedNoise, StepNoise

__all__ = [
    "ALGORITHMS",
    "ALIGN_YOUR_STEPS",
    "CORRECTORS",
    "DPM_ALGORITHMS",
    "GRIDS",
    "MAX_STEPS",
    "METHODS",
    "SKIP_TYPES",
    "ClassifierFree",
    "ClassifierGuidance",
    "CosineVPSchedule",
    "CustomSchedule",
    "Denoiser",
    "DiffusionModel",
    "DiscreteVPSchedule",
    "DynamicThresholding",
    "EDMSchedule",
    "Evaluator",
    "FlowSchedule",
    "Level",
    "Linear",
    "LinearVPSchedule",
    "LinkedNoise",
    "ModelOutputError",
    "NoiseSchedule",
    "Plan",
    "PlanEnd",
    "Prediction",
    "Sampler",
    "SolverOptions",
    "StepNoise",
    "Target",
    "VESchedule",
    "VPSchedule",
    "align_your_steps",
    "call_plan",
    "check_grid",
    "check_model",
    "check_noise_levels",
    "combine",
    "corrected_x0",
    "gits_sigmas",
    "interpolate_grid",
    "make_plan",
    "phi",
    "resolve_times",
    "sample",
    "sigmas_to_times",
    "singlestep_orders",
    "singlestep_outer",
    "time_grid",
    "to_data",
    "to_noise",
]
