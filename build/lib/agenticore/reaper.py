"""One reaper process per supervising process, so no agent outlives its supervisor.

The supervisor tells the reaper, over a pipe, which process groups to watch. The pipe's
only writer is the supervisor: when the supervisor dies, even by SIGKILL (an OOM kill, a
worker whose pool processes die with it), the kernel closes the pipe and the reaper kills
every group still watched. One reaper serves every job its supervisor runs, so the cost
is one small process per worker process, not one per job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

__all__ = ["reaper"]

_SCRIPT = (
    "import os, signal, sys\n"
    "groups = set()\n"
    "for line in sys.stdin:\n"
    "    (groups.add if line[0] == '+' else groups.discard)(int(line[1:]))\n"
    "for pgid in groups:\n"
    "    try:\n"
    "        os.killpg(pgid, signal.SIGKILL)\n"
    "    except OSError:\n"
    "        pass\n"
)


class Reaper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._pipe = -1
        self._owner = -1

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}\n")

    def _send(self, line: str) -> None:
        with self._lock:
            if not self._alive():
                self._start()
            try:
                os.write(self._pipe, line.encode())
            except BrokenPipeError:  # it died (someone killed it): a fresh one takes over
                self._start()
                os.write(self._pipe, line.encode())

    def _alive(self) -> bool:
        # a forked child inherits the parent's reaper; it needs one of its own
        return (
            self._owner == os.getpid()
            and self._process is not None
            and (self._process.poll() is None)
        )

    def _start(self) -> None:
        if self._pipe >= 0:
            os.close(self._pipe)
        read_end, self._pipe = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-S", "-E", "-c", _SCRIPT],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # signals to our group must not reach it
            )
        finally:
            os.close(read_end)
        self._owner = os.getpid()


reaper = Reaper()
