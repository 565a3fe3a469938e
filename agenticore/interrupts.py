"""SIGTERM as an exception while a job runs, and the sections it must not cut in half.

Celery's ``revoke(terminate=True)`` (a cancel) and a worker's cold shutdown send SIGTERM to
the pool process running a job. By default that ends the process on the spot: a repo lock
stays held until it times out, git children run on as orphans, the worktree stays. Inside
``sigterm_raises`` the first SIGTERM instead kills this process's own helper processes (git
and the like, see ``kill_own_children``) and raises ``Terminated``, so every ``with`` block
unwinds: locks and permits are given back, the agent is stopped by ``supervise``.

Sections that must finish once begun (taking or giving back a lock or a permit, recording a
job's end, removing its worktree) run under ``sigterm_deferred``: a SIGTERM meanwhile is
remembered and raised as ``Terminated`` when the section ends. Once ``Terminated`` has been
raised, further SIGTERMs are ignored: the process is on its way out and its cleanup must
not be interrupted by a second signal.

Signal handlers belong to the main thread; elsewhere these are no-ops.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import FrameType

__all__ = ["Terminated", "kill_own_children", "sigterm_deferred", "sigterm_raises"]

_FREEZE_ROUNDS = 10
_TERM_GRACE_SECONDS = 1.0


class Terminated(BaseException):
    """Raised in the main thread when its process receives SIGTERM."""


@dataclass
class _State:
    armed: bool = False  # inside sigterm_raises
    deferring: int = 0  # depth of sigterm_deferred sections
    pending: bool = False  # a SIGTERM came during a deferred section
    raised: bool = False  # Terminated was raised: later SIGTERMs are ignored


_state = _State()


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turns SIGTERM into ``Terminated`` for the duration (nested uses share the outer one)."""
    if threading.current_thread() is not threading.main_thread() or _state.armed:
        yield
        return
    _reset(armed=True)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _reset(armed=False)


@contextmanager
def sigterm_deferred() -> Iterator[None]:
    """Runs the block to its end; a SIGTERM meanwhile raises ``Terminated`` afterwards."""
    if not _state.armed or threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
        if not _state.deferring and _state.pending and not _state.raised:
            _state.raised = True
            raise Terminated(signal.SIGTERM)


def _reset(*, armed: bool) -> None:
    _state.armed, _state.deferring, _state.pending, _state.raised = armed, 0, False, False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _state.raised:
        return
    if _state.deferring:
        _state.pending = True
        return
    _state.raised = True
    # before anything unwinds: git must be gone before the repo lock it runs under is freed
    kill_own_children()
    raise Terminated(signum)


def kill_own_children() -> list[int]:
    """Ends every process this one started, directly or not, that is still in this
    process's session, and waits until they are gone (SIGKILL after a short grace);
    returns their pids.

    Found in /proc by parent pid: GitPython and ``subprocess`` start git for us and neither
    ends it when interrupted, and git starts children of its own (``upload-pack``,
    ``index-pack``). ``PR_SET_PDEATHSIG`` would not do: it acts only once we are dead (the
    lock must be freed after git is gone, while we live), follows the forking thread, not
    the process, and needs a ``preexec_fn``, which is unsafe with threads. The agent (and
    the reaper) run in sessions of their own and are left to ``supervise``, which stops
    the agent politely. Each round freezes what it finds (SIGSTOP), so none can start
    another unseen; then SIGTERM, which git answers by removing its lock files (a
    SIGKILLed git would leave them and the next git in the cache would refuse to run).
    """
    me, session = os.getpid(), os.getsid(0)
    frozen: list[int] = []
    for _ in range(_FREEZE_ROUNDS):
        found = [pid for pid in _descendants(me, session) if pid not in frozen]
        if not found:
            break
        _signal_all(found, signal.SIGSTOP)
        frozen += found
    _signal_all(frozen, signal.SIGTERM)
    _signal_all(frozen, signal.SIGCONT)
    if not _gone(frozen, _TERM_GRACE_SECONDS):
        _signal_all(frozen, signal.SIGKILL)
        _gone(frozen, _TERM_GRACE_SECONDS)
    return frozen


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, sig)


def _gone(pids: list[int], wait: float) -> bool:
    """Waits up to ``wait`` seconds until none of ``pids`` runs (reaped or a zombie)."""
    deadline = time.monotonic() + wait
    while any(_running(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _descendants(root: int, session: int) -> list[int]:
    """Live descendants of ``root`` in ``session``, parents before their children."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _stat_fields(int(entry.name))
        if stat is None or stat[0] == "Z" or int(stat[3]) != session:
            continue
        children.setdefault(int(stat[1]), []).append(int(entry.name))
    found: list[int] = []
    parents = [root]
    while parents:
        parent = parents.pop(0)
        for child in children.get(parent, []):
            found.append(child)
            parents.append(child)
    return found


def _stat_fields(pid: int) -> list[str] | None:
    """State, ppid, pgrp, session, … of ``pid`` from /proc/<pid>/stat (after the name)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].decode().split()


def _running(pid: int) -> bool:
    """Not yet gone: neither reaped nor a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"
