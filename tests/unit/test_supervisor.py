"""The supervisor feeding an agent's stdin: real child processes, payloads past the pipe buffer."""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path

import pytest

from agenticore.supervisor import ProcessResult, ProcessSpec, supervise
from tests.helpers import wait_for

BIG = ("日本語 prompt line\n" * 200_000).encode()  # ~4.8 MB, far past a 64 KiB pipe buffer


def python_agent(
    tmp_path: Path, code: str, *, stdin: bytes | None, timeout: float = 30
) -> ProcessSpec:
    return ProcessSpec(
        argv=[sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        transcript=tmp_path / "transcript.log",
        stderr=tmp_path / "stderr.log",
        timeout=timeout,
        grace=1,
        stdin=stdin,
    )


def run_bounded(spec: ProcessSpec, lines: list[bytes]) -> ProcessResult:
    """``supervise`` on a thread: a supervisor that blocks fails the test, not hangs it."""
    results: list[ProcessResult] = []

    def target() -> None:
        results.append(supervise(spec, on_line=lambda line: lines.append(line) and None))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "supervise did not return: the stdin write blocked it"
    return results[0]


def feeders_alive(pid: int | None) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == f"agent-stdin-{pid}"]


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """Exceptions that escaped any thread during the test (a crashed stdin feeder)."""
    seen: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    return seen


def test_given_a_big_input_when_the_agent_reads_it_then_it_gets_every_byte_then_eof(
    tmp_path: Path, thread_errors: list[BaseException | None]
) -> None:
    # given: an agent that reads stdin to EOF and reports what it got
    code = (
        "import hashlib, sys\n"
        "data = sys.stdin.buffer.read()\n"
        "print(len(data), hashlib.sha256(data).hexdigest(), flush=True)\n"
    )
    lines: list[bytes] = []

    # when
    result = run_bounded(python_agent(tmp_path, code, stdin=BIG), lines)

    # then
    assert (result.exit_code, result.stop_reason) == (0, None), result.stderr_tail
    assert lines == [f"{len(BIG)} {hashlib.sha256(BIG).hexdigest()}\n".encode()]
    wait_for(lambda: not feeders_alive(result.pid), timeout=10, what="the feeder to end")
    assert thread_errors == []


def test_given_a_big_input_when_the_agent_exits_without_reading_it_then_all_is_well(
    tmp_path: Path, thread_errors: list[BaseException | None]
) -> None:
    # given: an agent that never touches stdin (the pipe breaks under the feeder)
    lines: list[bytes] = []

    # when
    result = run_bounded(python_agent(tmp_path, "print('bye')", stdin=BIG), lines)

    # then: its exit is its own; the feeder ends quietly
    assert (result.exit_code, result.stop_reason) == (0, None), result.stderr_tail
    assert lines == [b"bye\n"]
    wait_for(lambda: not feeders_alive(result.pid), timeout=10, what="the feeder to end")
    assert thread_errors == []


def test_given_a_big_input_the_agent_never_reads_when_it_hangs_then_the_watchdog_still_runs(
    tmp_path: Path, thread_errors: list[BaseException | None]
) -> None:
    # given: an agent that prints, then sleeps with its stdin full and unread
    code = "import time\nprint('up', flush=True)\ntime.sleep(300)\n"
    lines: list[bytes] = []

    # when
    result = run_bounded(python_agent(tmp_path, code, stdin=BIG, timeout=2), lines)

    # then: its output was read and the wall clock ended it, though the write never finished
    assert lines == [b"up\n"]
    assert result.stop_reason == "timeout"
    wait_for(lambda: not feeders_alive(result.pid), timeout=10, what="the feeder to end")
    assert thread_errors == []


def test_given_no_input_then_the_agent_stdin_is_devnull(tmp_path: Path) -> None:
    code = "import sys\nprint(len(sys.stdin.buffer.read()), flush=True)\n"
    lines: list[bytes] = []

    result = run_bounded(python_agent(tmp_path, code, stdin=None), lines)

    assert (result.exit_code, lines) == (0, [b"0\n"])
    assert feeders_alive(result.pid) == []
