"""Input checking shared by the public functions: one clear error per bad argument."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ValueError unless `value` is one of `allowed`."""
    allowed = tuple(allowed)
    if value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """Raise TypeError for a non-integer and ValueError outside [lo, hi]; returns an int.

    Accepts Python and NumPy integers and one-element integer tensors (not bools)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value)  # a 0-d integer tensor
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)  # NumPy integers are ints
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be {bound}; got {value}")
    return value


def check_float(name: str, value: Any, *, positive: bool = False) -> float:
    """Raise TypeError for a non-number and ValueError for NaN/Inf (or <= 0 if positive).

    Accepts Python and NumPy real scalars and one-element tensors.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or (positive and value <= 0):
        what = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{name} must be {what}; got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """Raise TypeError unless `value` is a bool (or a NumPy bool); returns it as a bool.

    A string such as "False" is truthy, so it is refused rather than read as True."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r} (True or False)")


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    """Raise TypeError/ValueError unless `shape` is a sequence of ints >= 1 (one sample's
    shape, without the batch); returns it as a tuple."""
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if isinstance(shape, str | bytes) or not isinstance(shape, Sequence):
        raise TypeError(
            f"{name} must be a sequence of ints (one sample's shape, without the batch, e.g. "
            f"(4, 64, 64)); got {type(shape).__name__} {shape!r}"
        )
    for i, size in enumerate(shape):
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"{name} must hold ints >= 1; entry {i} is {size!r} in {shape!r}")
    return tuple(int(v) for v in shape)


def check_device(name: str, value: Any) -> torch.device:
    """`value` as a torch.device (a name such as 'cpu', 'cuda:1', or a torch.device), else a
    ValueError/TypeError naming `name`; the meta device, which holds no data, is refused."""
    if not isinstance(value, str | torch.device):
        raise TypeError(
            f"{name} must be a device name (e.g. 'cpu', 'cuda:0') or a torch.device; got "
            f"{type(value).__name__} {value!r}"
        )
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"{name}={value!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1', 'mps')"
        ) from None
    if device.type == "meta":
        raise ValueError(f"{name}='meta' holds shapes without data; sampling needs a real device")
    return device
