"""The diffusers face: `DPMSolverScheduler`, a scheduler that diffusers pipelines accept.

    from . import DPMSolverScheduler
    pipe.scheduler = DPMSolverScheduler.from_config(pipe.scheduler.config)

    config     what each key of diffusers' scheduler configs means here (`read_config`)
    spacing    where diffusers' schedulers place their calls, as times of our schedules
    scheduler  the scheduler protocol over the core's plans and rules

diffusers is an optional dependency (`pip install dpmsolver[diffusers]`), imported only
by this package.
"""

from .scheduler import DPMSolverScheduler

__all__ = ["DPMSolverScheduler"]
