"""The output folder's lock: one generate job writes into a folder at a time."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

# A lock file that cannot be read is one being written (by a process that created it a
# moment ago) or one torn by a crash: only older than this is it taken to be torn.
TORN_AFTER_S = 10.0


class Lock:
    """An exclusive lock file in the output folder: created with O_EXCL and holding its
    owner (pid, host, the process's start time). A lock whose process is gone, on this
    host, is stale and taken over; any other means the folder is busy (ValueError)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False
        self.owner = dict(
            pid=os.getpid(), host=socket.gethostname(), start=_start_time(os.getpid())
        )

    def acquire(self) -> None:
        for _ in range(2):  # once more after removing a stale lock
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None and self._age() < TORN_AFTER_S:
                    raise ValueError(
                        f"{self.path.parent} is busy: another generate is taking its lock "
                        f"{self.path} now; try again once it has finished"
                    ) from None
                if holder is not None and _alive(holder):
                    raise ValueError(
                        f"{self.path.parent} is busy: another generate (pid {holder.get('pid')} "
                        f"on {holder.get('host')}) is writing into it; wait for it to finish, "
                        f"or remove {self.path} if that process is gone"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner, f)
            self.held = True
            return
        raise ValueError(f"{self.path.parent} is busy: its lock {self.path} keeps coming back")

    def _holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # torn by a crash while being written: stale
        return data if isinstance(data, dict) else None

    def _age(self) -> float:
        """Seconds since the lock file was written (inf if it is gone)."""
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return float("inf")

    def release(self) -> None:
        if self.held:
            if self._holder() == self.owner:
                self.path.unlink(missing_ok=True)
            self.held = False


def _start_time(pid: int) -> int | None:
    """A process's start time (clock ticks since boot, from /proc), or None where that is
    not known: with the pid it names the process even after pids are reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the process that holds a lock still runs (a lock of another host is taken
    to be held: its process cannot be seen from here)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    start = holder.get("start")
    return start is None or _start_time(pid) in (None, start)
