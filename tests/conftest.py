import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# The tests use small tensors, for which intra-op threads only add overhead and contention.
torch.set_num_threads(1)


class RecordedBar:
    """Stands in for tools.progress.Progress: keeps its total, disable, other options and
    updates, and whether it was closed."""

    def __init__(self, total: int | None, disable: bool | None = None, **kwargs: Any) -> None:
        self.total, self.disable, self.kwargs = total, disable, kwargs
        self.done, self.closed = 0, False

    def update(self, n: int = 1) -> None:
        self.done += n

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def record_bars(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], list[RecordedBar]]:
    """record_bars(module): the bars `module`'s Progress makes from now on, recorded."""

    def record(module: Any) -> list[RecordedBar]:
        made: list[RecordedBar] = []

        def make(*args: Any, **kwargs: Any) -> RecordedBar:
            made.append(RecordedBar(*args, **kwargs))
            return made[-1]

        monkeypatch.setattr(module, "Progress", make)
        return made

    return record
