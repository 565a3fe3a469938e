"""Runs one agent process and makes sure nothing of it outlives the job.

The agent starts in its own session (so its whole tree is one process group), with stdin
closed (or, when the spec carries input such as the prompt, fed by a thread, then closed),
stdout read line by line on a thread (lines may be far larger than 64 KiB) and
copied to a transcript with secrets masked (``redaction.py``), stderr copied through a pipe
to a file that is redacted once the agent is gone; both 0600 in a 0700 folder, both
keeping their tail past ``transcript_cap``. The supervising thread is the
watchdog: it enforces the wall clock, notices an agent that prints nothing for
``stall_seconds`` or whose group grows past ``max_rss_mb``, asks the caller every second
whether to stop (cancellation, budgets) and, on any exit path, terminates the process
group: SIGTERM, a grace period, then SIGKILL. Before a kill the group is frozen (SIGSTOP)
and ``before_kill`` runs, so the caller can salvage the agent's work without it changing
underneath. The group is registered with this process's reaper (``reaper.py``), which
kills it should the supervising process itself die.

Stop reasons: ``timeout``, ``stalled``, ``memory_exceeded`` and whatever the callbacks
return (``cancelled``, ``budget_exceeded: cost`` …).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from agenticore.errors import AgentError
from agenticore.files import private_dir
from agenticore.interrupts import sigterm_deferred
from agenticore.reaper import reaper
from agenticore.redaction import redact_text
from agenticore.transcripts import CappedFile

__all__ = [
    "ProcessResult",
    "ProcessSpec",
    "group_rss_mb",
    "kill_process_group",
    "supervise",
]

SIGTERM_EXIT = 128 + signal.SIGTERM  # 143: what the agent CLIs return when terminated
_EOF = object()
_CANCEL_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class ProcessSpec:
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    transcript: Path
    stderr: Path
    timeout: float
    grace: float = 10.0
    stall_seconds: float | None = None
    max_rss_mb: int | None = None
    owner_uid: int | None = None  # a uid of this agent's alone: its memory is measured by it
    # what the agent reads on stdin (its prompt), then EOF; None: stdin is /dev/null
    stdin: bytes | None = None
    transcript_cap: int | None = None  # bytes kept of the transcript: its tail


@dataclass
class ProcessResult:
    exit_code: int | None = None
    stop_reason: str | None = None  # None: the agent ended by itself
    duration: float = 0.0
    peak_rss_mb: float = 0.0
    stderr_tail: str = ""
    pid: int | None = field(default=None, repr=False)


def supervise(
    spec: ProcessSpec,
    *,
    on_line: Callable[[bytes], str | None],
    on_start: Callable[[int], object] = lambda pid: None,
    should_stop: Callable[[], str | None] = lambda: None,
    before_kill: Callable[[str], object] | None = None,
) -> ProcessResult:
    """Runs the agent to its end or to the first stop reason.

    ``on_line`` gets every stdout line and may return a stop reason; ``should_stop`` is
    polled about once a second; ``before_kill`` runs with the group frozen before a
    watchdog or budget kill (not for cancellation).
    """
    private_dir(spec.transcript.parent)
    private_dir(spec.stderr.parent)
    started = time.monotonic()
    result = ProcessResult()
    with (
        CappedFile(spec.transcript, spec.transcript_cap) as transcript,
        CappedFile(spec.stderr, spec.transcript_cap) as stderr,
    ):
        proc = _spawn(spec)
        result.pid = proc.pid
        lines: queue.Queue[object] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(proc, lines), daemon=True)
        reader.start()
        # through a pipe, not a file the agent writes: an agent cannot fill the disk with it
        errors = threading.Thread(target=_copy_stderr, args=(proc, stderr), daemon=True)
        errors.start()
        try:
            reaper.watch(proc.pid)
            _start_input(proc, spec)
            on_start(proc.pid)
            _follow(spec, proc, lines, transcript, on_line, should_stop, started, result)
            if result.stop_reason not in (None, "cancelled") and before_kill is not None:
                _frozen(proc, lambda: before_kill(result.stop_reason or ""))
        finally:
            with sigterm_deferred():  # a SIGTERM now must not leave the agent half stopped
                _stop(proc, spec.grace)
                reaper.forget(proc.pid)
                reader.join(timeout=5)
                errors.join(timeout=5)
                _drain(lines, transcript)
                # copied raw: masked once it is whole, however the run ended
                stderr.flush()
                _redact_file(spec.stderr)
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


def _copy_stderr(proc: subprocess.Popen[bytes], stderr: CappedFile) -> None:
    assert proc.stderr is not None
    while chunk := os.read(proc.stderr.fileno(), 65536):
        stderr.write(chunk)


def _spawn(spec: ProcessSpec) -> subprocess.Popen[bytes]:
    try:
        proc = subprocess.Popen(
            spec.argv,
            cwd=spec.cwd,
            env=spec.env,
            stdin=subprocess.DEVNULL if spec.stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise AgentError(
            f"agent_not_found: {spec.argv[0]!r} is not installed or not on PATH"
        ) from None
    except PermissionError:
        raise AgentError(f"agent_not_executable: {spec.argv[0]!r} cannot be executed") from None
    return proc


def _start_input(proc: subprocess.Popen[bytes], spec: ProcessSpec) -> None:
    """Feeds the agent its input, once the reaper watches its group: an agent that reads its
    prompt from stdin does nothing before, and if this process dies before, it gets EOF
    and no prompt rather than running on unwatched."""
    if proc.stdin is None or spec.stdin is None:
        return
    # on a thread: a prompt larger than the pipe buffer blocks until the agent reads it,
    # and the watchdog must keep running meanwhile
    feeder = threading.Thread(
        target=_feed_stdin,
        args=(proc.stdin, spec.stdin),
        name=f"agent-stdin-{proc.pid}",
        daemon=True,
    )
    feeder.start()


def _feed_stdin(pipe: IO[bytes], data: bytes) -> None:
    """Writes the agent's input, then closes the pipe: EOF is where its prompt ends.

    An agent that exits (or is killed) before reading all of it breaks the pipe; that is
    its own business and shows in its exit, not an error of the supervisor.
    """
    try:
        with suppress(OSError):  # BrokenPipeError and its kin: the agent is gone
            pipe.write(data)
    finally:
        with suppress(OSError):  # closing flushes, and may break the pipe once more
            pipe.close()


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
    transcript: CappedFile,
    on_line: Callable[[bytes], str | None],
    should_stop: Callable[[], str | None],
    started: float,
    result: ProcessResult,
) -> None:
    """Reads until the agent is done, or sets ``result.stop_reason`` and returns."""
    deadline = started + spec.timeout
    next_poll = started + _CANCEL_POLL_SECONDS
    last_output = started
    eof = False
    while not (eof and proc.poll() is not None):
        now = time.monotonic()
        if now >= deadline:
            result.stop_reason = "timeout"
            return
        if now >= next_poll:
            next_poll = now + _CANCEL_POLL_SECONDS
            result.stop_reason = (
                _watchdog(spec, proc.pid, now - last_output, result) or should_stop()
            )
            if result.stop_reason:
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
        last_output = time.monotonic()
        transcript.write(redact_line(item))
        result.stop_reason = on_line(item)
        if result.stop_reason:
            return


def _watchdog(spec: ProcessSpec, pgid: int, silent_for: float, result: ProcessResult) -> str | None:
    if spec.stall_seconds is not None and silent_for >= spec.stall_seconds:
        return "stalled"
    if spec.max_rss_mb is not None:
        rss = group_rss_mb(pgid, uid=spec.owner_uid)
        result.peak_rss_mb = max(result.peak_rss_mb, rss)
        if rss > spec.max_rss_mb:
            return "memory_exceeded"
    return None


def group_rss_mb(pgid: int, *, uid: int | None = None) -> float:
    """Resident memory of every live process in the group, from /proc; with ``uid`` (a uid
    the job's agent alone runs as), of every process of that uid too: a process that left
    the group with ``setsid`` still counts."""
    total_pages = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
            owner = entry.stat().st_uid if uid is not None else None
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[2]) == pgid or (owner is not None and owner == uid):
            total_pages += int(fields[21])  # rss, in pages
    return total_pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _frozen(proc: subprocess.Popen[bytes], action: Callable[[], object]) -> None:
    """Runs ``action`` with the agent's group stopped, so files hold still meanwhile.

    The group stays stopped: ``_stop`` sends SIGTERM first and SIGCONT after, so the
    agent wakes up only to handle its termination.
    """
    kill_process_group(proc.pid, signal.SIGSTOP)
    action()


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Ends the agent and everything it started, politely first."""
    if proc.poll() is None:
        kill_process_group(proc.pid, signal.SIGTERM)
        kill_process_group(proc.pid, signal.SIGCONT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            kill_process_group(proc.pid, signal.SIGKILL)
            proc.wait()
    # the leader is gone; anything it left in its group goes too
    kill_process_group(proc.pid, signal.SIGKILL)


def _drain(lines: queue.Queue[object], transcript: CappedFile) -> None:
    while True:
        try:
            item = lines.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, bytes):
            transcript.write(redact_line(item))


def redact_line(line: bytes) -> bytes:
    """``line`` with secrets masked. Bytes that are not UTF-8 pass through unchanged
    (surrogateescape), so the transcript stays byte-for-byte what the agent wrote otherwise."""
    text = line.decode("utf-8", "surrogateescape")
    redacted = redact_text(text)
    return line if redacted == text else redacted.encode("utf-8", "surrogateescape")


def _redact_file(path: Path) -> None:
    """Rewrites ``path`` with every line redacted, atomically (temp file + rename, 0600);
    untouched if nothing in it needed masking."""
    try:
        source = path.open("rb")
    except FileNotFoundError:
        return
    with source:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        changed = False
        try:
            with os.fdopen(fd, "wb") as target:
                for line in source:
                    redacted = redact_line(line)
                    changed = changed or redacted is not line
                    target.write(redacted)
            if changed:
                os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - limit))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
