"""What one batch of a job needs in memory, checked before anything is allocated."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch

# Bytes a batch needs per sample element beyond the model's own: the float64 starting
# noise, and the sampler's state, its kept outputs and temporaries in the run's dtype.
_NOISE_BYTES = 8


_STATES = 6


def check_batch_memory(
    batch: int,
    shape: Sequence[int],
    dtype: torch.dtype,
    device: torch.device,
    name: str = "batch",
) -> None:
    """Raise ValueError if one batch of samples cannot fit in the device's free memory:
    its noise and the sampler's states alone (the model needs more on top), counted
    before anything is allocated. `name` is how the caller calls the batch size."""
    elements = batch * math.prod(shape)
    need = elements * (_NOISE_BYTES + _STATES * torch.empty((), dtype=dtype).element_size())
    free = _free_memory(device)
    if free is not None and need > free:
        raise ValueError(
            f"{name}={batch}: one batch of {batch} samples of shape {tuple(shape)} needs about "
            f"{need / 2**30:.3g} GiB for its noise and the sampler's states alone, more than "
            f"the {free / 2**30:.3g} GiB free on {device}; lower {name}"
        )


def _free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on `device`, or None where that is not known."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        pages = getattr(os, "sysconf_names", {})
        if "SC_AVPHYS_PAGES" in pages and "SC_PAGE_SIZE" in pages:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return None
