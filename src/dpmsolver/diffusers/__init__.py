"""The diffusers face: `DPMSolverScheduler`, a scheduler that diffusers pipelines accept.

    from . import DPMSolverScheduler
    pipe.scheduler = DPMSolverScheduler.from_config(pipe.scheduler.config)

    scheduler  the scheduler protocol: set_timesteps plans, step() drives the core's stepper
    config     what each key of diffusers' scheduler configs means here (`read_config`)
    config_io  the config's round trip: synonyms, the keys it resolves, from_config / save
    spacing    where diffusers' schedulers place their calls, as times of our schedules
    calls      those calls as a core plan (`core.call_plan`)
    inputs     the checks of step()'s and set_timesteps' arguments
    outputs    a model output in the plan's form (eps / x0), learned variances split off
    noising    add_noise and scale_noise (img2img, inpainting)
    tuned      a tuned solver as the scheduler's settings
    pipeline_tuning  `tune_pipeline`: a solver tuned on a pipeline's own denoiser

diffusers is an optional dependency (`pip install "dpmsolver[diffusers]"`), imported only
by this package; without it, importing the package is one `MissingExtraError` saying so.
"""

from ..extras import needs_extra

with needs_extra("diffusers", "dpmsolver.diffusers"):
    from .pipeline_tuning import PipelineModel, tune_pipeline
    from .scheduler import DPMSolverScheduler

__all__ = ["DPMSolverScheduler", "PipelineModel", "tune_pipeline"]
