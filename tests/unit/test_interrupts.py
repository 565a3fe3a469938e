"""SIGTERM inside ``sigterm_raises``: real signals, in a Python process of each test's own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

from tests.conftest import REPO_ROOT
from tests.helpers import pid_alive, wait_for


def run_script(body: str) -> str:
    """Runs ``body`` (with the interrupts API imported) and returns what it printed."""
    script = (
        "import os, signal, subprocess, time, json\n"
        "from agenticore.interrupts import Terminated, sigterm_deferred, sigterm_raises\n"
        + textwrap.dedent(body)
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=os.environ | {"PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_given_a_deferred_section_when_sigterm_arrives_then_it_ends_before_terminated() -> None:
    printed = run_script("""
        steps = []
        try:
            with sigterm_raises():
                with sigterm_deferred():
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.2)
                    steps.append("section done")
                steps.append("went on")
        except Terminated:
            steps.append("terminated")
        print(",".join(steps))
    """)

    assert printed == "section done,terminated"


def test_given_terminated_unwinding_when_a_second_sigterm_arrives_then_cleanup_finishes() -> None:
    printed = run_script("""
        steps = []
        try:
            with sigterm_raises():
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)
                finally:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.2)
                    steps.append("cleanup done")
        except Terminated:
            steps.append("terminated")
        print(",".join(steps))
    """)

    assert printed == "cleanup done,terminated"


def test_given_children_when_terminated_then_ours_die_and_other_sessions_are_left() -> None:
    printed = run_script("""
        helper = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!; sleep 300"],
                                  stdout=subprocess.PIPE, text=True)
        grandchild = int(helper.stdout.readline())
        agent = subprocess.Popen(["sleep", "300"], start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with sigterm_raises():
                os.kill(os.getpid(), signal.SIGTERM)
                helper.wait()
        except Terminated:
            pass
        print(json.dumps({"helper": helper.pid, "grandchild": grandchild, "agent": agent.pid,
                          "helper_ended": helper.poll() is not None}))
    """)
    pids = json.loads(printed)

    try:
        assert pids["helper_ended"], "the helper was killed before Terminated unwound"
        wait_for(lambda: not pid_alive(pids["grandchild"]), timeout=5, what="the grandchild")
        assert pid_alive(pids["agent"]), "a process in a session of its own is supervise's"
    finally:
        os.kill(pids["agent"], signal.SIGKILL)
