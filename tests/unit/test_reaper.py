"""No agent outlives its supervisor, however the supervisor dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import suppress

from tests.helpers import group_members, wait_for

SUPERVISOR = """
import subprocess, sys, time
from agenticore.reaper import reaper
agents = [subprocess.Popen(["sleep", "300"], start_new_session=True) for _ in range(2)]
for agent in agents:
    reaper.watch(agent.pid)
reaper.forget(agents[1].pid)  # this one finished, as far as the supervisor knows
print(" ".join(str(a.pid) for a in agents), flush=True)
time.sleep(300)
"""


def test_given_a_supervisor_sigkilled_then_its_watched_groups_die_and_forgotten_ones_stay() -> None:
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR], stdout=subprocess.PIPE, text=True
    )
    assert supervisor.stdout is not None
    watched, forgotten = (int(pid) for pid in supervisor.stdout.readline().split())
    try:
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait(timeout=10)

        wait_for(lambda: not group_members(watched), timeout=5, what="the watched group to die")
        assert group_members(forgotten) == [forgotten]
    finally:
        for pgid in (watched, forgotten):
            with suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
