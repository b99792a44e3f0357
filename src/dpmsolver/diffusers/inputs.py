"""The arguments of the scheduler's protocol methods, checked: one clear error per bad
argument, read from the host (types, shapes, devices), never from the device."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from ..checks import check_int
from ..core import MAX_STEPS

__all__ = ["check_samples", "check_step_inputs", "check_steps_count", "position_in"]


def check_steps_count(n: object) -> int:
    """num_inference_steps as an int in [1, MAX_STEPS], or a clear error."""
    n = check_int("num_inference_steps", n, 1)
    if n > MAX_STEPS:
        raise ValueError(
            f"num_inference_steps={n} is more than {MAX_STEPS}: planning costs host time and "
            "memory per step before the first model call, and the ODE solution is converged "
            "long before"
        )
    return n


def check_samples(name: str, value: object) -> None:
    """Raise TypeError unless `value` is a floating tensor (named `name`)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype; got {value.dtype}")
    if value.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (a shape without data)")


def check_step_inputs(
    model_output: object,
    timestep: object,
    sample: object,
    variance_noise: object,
    generator: object,
) -> None:
    """The types step() takes: tensors for the model output and the sample, one timestep
    (a number or a one-element tensor), and optional noise and generator."""
    if not isinstance(model_output, Tensor):
        hint = ""
        if isinstance(model_output, tuple | list) or hasattr(model_output, "sample"):
            hint = " (a model's output object or tuple: pass its .sample or [0])"
        raise TypeError(
            f"model_output must be a torch.Tensor; got {type(model_output).__name__}{hint}"
        )
    check_samples("model_output", model_output)
    check_samples("sample", sample)
    if isinstance(timestep, Tensor):
        if timestep.device.type == "meta":
            raise ValueError("timestep is a meta tensor (a shape without data)")
        if timestep.numel() != 1:
            raise ValueError(
                f"timestep must be one timestep (a number, or a tensor of one element); got a "
                f"tensor of shape {tuple(timestep.shape)}: step() moves the whole batch from "
                "one timestep"
            )
    elif isinstance(timestep, bool) or not isinstance(timestep, numbers.Real):
        raise TypeError(
            f"timestep must be a number or a one-element tensor (an entry of "
            f"scheduler.timesteps); got {type(timestep).__name__} {timestep!r}"
        )
    if variance_noise is not None:
        check_samples("variance_noise", variance_noise)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")


def position_in(timestep: float | Tensor, grid: Tensor) -> int | None:
    """The index of `timestep` in `grid` if it is one of its elements (a view into its
    memory, as iterating over the tensor gives), found from pointers alone; else None."""
    if (
        not isinstance(timestep, Tensor)
        or timestep.dtype != grid.dtype
        or timestep.device != grid.device
        or timestep.numel() != 1
        or grid.dim() != 1
        or not grid.is_contiguous()
    ):
        return None
    offset = timestep.data_ptr() - grid.data_ptr()
    size = grid.element_size()
    if offset % size or not 0 <= offset // size < grid.numel():
        return None
    return offset // size
