"""What a sampler holds in memory: the peak bytes of live tensors during a call.

Uses torch's dispatch-mode hook (a private torch module), so it is imported only by the
code that measures: the tests and `benchmarks/overhead.py`, never by `import dpmsolver`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["peak_live_bytes"]


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages created inside it that are still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if not isinstance(t, Tensor):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in self._seen or storage.nbytes() == 0:
                continue  # a view, or an in-place result
            self._seen.add(key)
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, storage.nbytes())
        return out


def peak_live_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes of tensors allocated by `fn` and alive at the same time (CPU or GPU).

    Measures what a sampler holds beyond its input: the state, the model outputs it keeps
    and its temporaries. Tensors the function returns count until they are dropped.
    """
    with _LiveBytes() as mode:
        fn()
    return mode.peak
