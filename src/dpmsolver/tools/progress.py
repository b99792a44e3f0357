"""An optional tqdm progress bar: a no-op when tqdm is missing or the bar is disabled."""

from __future__ import annotations

from typing import Any


class Progress:
    """`update(n)` advances n steps (default 1); `close()` ends the bar."""

    def __init__(self, total: int | None, disable: bool | None = None, **tqdm_kwargs: Any) -> None:
        self.bar: Any = None
        if disable:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm is an optional dependency
            return
        self.bar = tqdm(total=total, **tqdm_kwargs)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
