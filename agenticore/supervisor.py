"""Runs one agent process and makes sure nothing of it outlives the job.

The agent starts in its own session (so its whole tree is one process group), with stdin
closed, stdout read line by line on a thread (lines may be far larger than 64 KiB) and
copied raw to a transcript, stderr to a file. The supervising thread enforces the wall
clock, polls for cancellation and, on any exit path, terminates the process group:
SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from agenticore.errors import AgentError

__all__ = [
    "ProcessResult",
    "ProcessSpec",
    "Terminated",
    "kill_process_group",
    "sigterm_raises",
    "supervise",
]

SIGTERM_EXIT = 128 + signal.SIGTERM  # 143: what the agent CLIs return when terminated
_EOF = object()
_CANCEL_POLL_SECONDS = 1.0


class Terminated(BaseException):
    """Raised in the supervising thread when its process receives SIGTERM."""


@dataclass(frozen=True)
class ProcessSpec:
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    transcript: Path
    stderr: Path
    timeout: float
    grace: float = 10.0


@dataclass
class ProcessResult:
    exit_code: int | None = None
    timed_out: bool = False
    stopped: bool = False
    duration: float = 0.0
    stderr_tail: str = ""
    pid: int | None = field(default=None, repr=False)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turns SIGTERM into ``Terminated`` for the duration, so cleanup code still runs.

    Celery's ``revoke(terminate=True)`` signals the pool process; without this the agent
    (in its own session) would be orphaned. Only the main thread may set handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def supervise(
    spec: ProcessSpec,
    *,
    on_line: Callable[[bytes], object],
    on_start: Callable[[int], object] = lambda pid: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ProcessResult:
    spec.transcript.parent.mkdir(parents=True, exist_ok=True)
    spec.stderr.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = ProcessResult()
    with spec.transcript.open("ab") as transcript, spec.stderr.open("ab") as stderr:
        proc = _spawn(spec, stderr)
        result.pid = proc.pid
        lines: queue.Queue[object] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(proc, lines), daemon=True)
        reader.start()
        try:
            on_start(proc.pid)
            _follow(spec, proc, lines, transcript, on_line, should_stop, started, result)
        finally:
            _stop(proc, spec.grace)
            reader.join(timeout=5)
            _drain(lines, transcript)
    result.exit_code = proc.returncode
    result.duration = time.monotonic() - started
    result.stderr_tail = _tail(spec.stderr)
    return result


def kill_process_group(pgid: int, sig: signal.Signals = signal.SIGKILL) -> bool:
    """Signals a whole group; False if no process of it was left."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _spawn(spec: ProcessSpec, stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            spec.argv,
            cwd=spec.cwd,
            env=spec.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise AgentError(
            f"agent_not_found: {spec.argv[0]!r} is not installed or not on PATH"
        ) from None
    except PermissionError:
        raise AgentError(f"agent_not_executable: {spec.argv[0]!r} cannot be executed") from None


def _pump(proc: subprocess.Popen[bytes], lines: queue.Queue[object]) -> None:
    assert proc.stdout is not None
    with proc.stdout:
        for line in iter(proc.stdout.readline, b""):
            lines.put(line)
    lines.put(_EOF)


def _follow(
    spec: ProcessSpec,
    proc: subprocess.Popen[bytes],
    lines: queue.Queue[object],
    transcript: IO[bytes],
    on_line: Callable[[bytes], object],
    should_stop: Callable[[], bool],
    started: float,
    result: ProcessResult,
) -> None:
    deadline = started + spec.timeout
    next_poll = started + _CANCEL_POLL_SECONDS
    eof = False
    while not (eof and proc.poll() is not None):
        now = time.monotonic()
        if now >= deadline:
            result.timed_out = True
            return
        if now >= next_poll:
            next_poll = now + _CANCEL_POLL_SECONDS
            if should_stop():
                result.stopped = True
                return
        wait = max(0.0, min(deadline, next_poll) - now)
        if eof:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=min(wait, 0.2))
            continue
        try:
            item = lines.get(timeout=wait)
        except queue.Empty:
            continue
        if item is _EOF:
            eof = True
            continue
        assert isinstance(item, bytes)
        transcript.write(item)
        on_line(item)


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Ends the agent and everything it started, politely first."""
    if proc.poll() is None:
        kill_process_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            kill_process_group(proc.pid, signal.SIGKILL)
            proc.wait()
    # the leader is gone; anything it left in its group goes too
    kill_process_group(proc.pid, signal.SIGKILL)


def _drain(lines: queue.Queue[object], transcript: IO[bytes]) -> None:
    while True:
        try:
            item = lines.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, bytes):
            transcript.write(item)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - limit))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
