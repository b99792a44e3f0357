"""The ranks of a torchrun job (torch.distributed), or one process alone."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch


class Group:
    """The torch.distributed process group, or one process when not under torchrun."""

    def __init__(self, device: torch.device) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.owned = False
        self.device = torch.device("cpu")
        launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if not dist.is_available():
            if launched:
                raise RuntimeError("WORLD_SIZE > 1 but this torch has no torch.distributed")
            self.rank, self.world = 0, 1
            return
        if not dist.is_initialized():
            if not launched:
                self.rank, self.world = 0, 1
                return
            if device.type == "cuda":
                torch.cuda.set_device(device)
                dist.init_process_group("nccl", device_id=device)
            else:
                dist.init_process_group("gloo")
            self.owned = True
        if dist.get_backend() == "nccl":
            if device.type != "cuda":
                raise ValueError(f"the process group uses NCCL; give a CUDA device, not {device}")
            self.device = device
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def agree(self, settings: dict[str, Any]) -> None:
        """Raise ValueError on every rank if any rank's settings differ from rank 0's."""
        if self.world == 1:
            return
        gathered: list[Any] = [None] * self.world
        self.dist.all_gather_object(gathered, settings)
        for rank, other in enumerate(gathered):
            keys = sorted(k for k in settings if gathered[0].get(k) != other.get(k))
            if keys:
                diff = "; ".join(f"{k}: {gathered[0].get(k)!r} vs {other.get(k)!r}" for k in keys)
                raise ValueError(f"ranks disagree on the settings: rank 0 vs rank {rank}: {diff}")

    def raise_if(self, error: str) -> None:
        """Rank 0's error (or '') raised on every rank."""
        if self.world > 1:
            box = [error]
            self.dist.broadcast_object_list(box, src=0)
            error = box[0]
        if error:
            raise ValueError(error)

    def gather_dict(self, part: dict[int, str]) -> dict[int, str]:
        """The union of every rank's `part`."""
        if self.world == 1:
            return dict(part)
        parts: list[Any] = [None] * self.world
        self.dist.all_gather_object(parts, part)
        return {k: v for p in parts for k, v in p.items()}

    def sum(self, n: int, failed: bool) -> tuple[int, int]:
        """Samples made this round and the number of other ranks that failed."""
        if self.world == 1:
            return n, 0
        total = torch.tensor([n, int(failed)], dtype=torch.int64, device=self.device)
        self.dist.all_reduce(total)
        made, failures = total.tolist()  # once per round of shards, not per model call
        return made, failures - int(failed)

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier()

    def close(self) -> None:
        if self.owned:
            self.dist.destroy_process_group()


def on_rank0(group: Group, step: Callable[[], str]) -> str:
    """Run `step` on rank 0; any exception becomes the message all ranks raise."""
    if group.rank != 0:
        return ""
    try:
        return step()
    except Exception as err:
        return f"{type(err).__name__}: {err}"
