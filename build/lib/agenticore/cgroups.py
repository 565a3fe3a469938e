"""A cgroup v2 memory limit per agent, where the worker is allowed to create one.

The RSS watchdog polls once a second; a cgroup limit is enforced by the kernel at the
moment of allocation. It needs the unified hierarchy with the ``memory`` controller
delegated to the worker's cgroup (common in containers given a writable cgroupfs).
Anywhere else ``create`` returns None and the watchdog alone guards memory.

The agent joins its cgroup right after it starts; everything it spawns inherits it.
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["MemoryCgroup"]

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


class MemoryCgroup:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(
        cls, name: str, limit_mb: int, *, root: Path = CGROUP_ROOT, own: str | None = None
    ) -> MemoryCgroup | None:
        """A child of this process's cgroup limited to ``limit_mb``, or None if not allowed."""
        parent = root / (own if own is not None else _own_cgroup()).lstrip("/")
        try:
            if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
                (parent / "cgroup.subtree_control").write_text("+memory")
            path = parent / name
            path.mkdir(exist_ok=True)
            (path / "memory.max").write_text(str(limit_mb * 1024 * 1024))
            if (path / "memory.swap.max").exists():  # swapping would only slow the kill
                (path / "memory.swap.max").write_text("0")
        except OSError as exc:
            log.debug("no cgroup memory limit here (%s); the RSS watchdog guards memory", exc)
            return None
        return cls(path)

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def oom_killed(self) -> bool:
        """Whether the kernel killed anything in the cgroup for exceeding its limit."""
        try:
            events = (self.path / "memory.events").read_text().split()
        except OSError:
            return False
        counts = dict(zip(events[::2], events[1::2], strict=False))
        return int(counts.get("oom_kill", "0")) > 0

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError as exc:  # still populated, or already gone
            log.debug("cgroup %s not removed: %s", self.path, exc)


def _own_cgroup() -> str:
    """This process's path in the unified hierarchy (the ``0::`` line), or ''."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        pass
    return ""
