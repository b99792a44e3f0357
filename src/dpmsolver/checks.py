"""Input checking shared by the public functions: one clear error per bad argument."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch


def _no_meta(name: str, value: Any) -> None:
    """Raise ValueError if `value` is a tensor on the meta device (a shape, no data)."""
    if isinstance(value, torch.Tensor) and value.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (a shape without data); give its value")


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ValueError unless `value` is one of `allowed`."""
    allowed = tuple(allowed)
    if value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """Raise TypeError for a non-integer and ValueError outside [lo, hi]; returns an int.

    Accepts Python and NumPy integers and one-element integer tensors (not bools)."""
    _no_meta(name, value)
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
    _no_meta(name, value)
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
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name}={value!r}: this torch sees no CUDA device")
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"{name}={value!r}: there are {count} CUDA devices (cuda:0 to cuda:{count - 1})"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={value!r}: this torch has no MPS device")
    return device


def _numbers(value: Any) -> Any:
    """A nested list with its one-element tensors (on a real device) as Python numbers."""
    out = []
    for item in value:
        if isinstance(item, list | tuple):
            out.append(_numbers(item))
        elif isinstance(item, torch.Tensor) and item.numel() == 1 and item.device.type != "meta":
            out.append(item.item())
        else:
            out.append(item)
    return out


def _leaves(value: Any) -> Iterable[Any]:
    """The entries of a nested list or tuple, in order."""
    for item in value:
        if isinstance(item, list | tuple):
            yield from _leaves(item)
        else:
            yield item


def check_tensor_values(name: str, value: Any) -> torch.Tensor:
    """A 1-D-or-more table of real numbers given as a tensor, array or (nested) list, as a
    float64 CPU tensor; strings, bools, complex numbers and meta tensors are refused by
    name (numpy would read "1.0" and True as numbers)."""
    if isinstance(value, torch.Tensor):
        _no_meta(name, value)
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers; got a {value.dtype} tensor")
        return value.detach().to("cpu", torch.float64)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold real numbers; got an array of dtype {value.dtype}")
        return torch.as_tensor(value.astype(np.float64))
    if isinstance(value, list | tuple):
        # One-element tensors are numbers too (a list of a tensor's entries, as
        # `list(get_sigmas_karras(...))` gives).
        value = _numbers(value)
        flat = list(_leaves(value))
        bad = next(
            (v for v in flat if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real)),
            None,
        )
        if bad is not None or any(isinstance(v, str | bytes) for v in flat):
            raise TypeError(f"{name} must be numbers; got {type(bad).__name__} {bad!r} among them")
        try:
            return torch.as_tensor(np.asarray(value, dtype=np.float64))
        except ValueError:  # ragged nesting
            raise ValueError(
                f"{name} must be a regular table of numbers; got {value!r:.80}"
            ) from None
    raise TypeError(
        f"{name} must be a tensor, an array or a list of numbers; got {type(value).__name__}"
    )
