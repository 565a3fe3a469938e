"""``agenticore drain``: no new jobs, running ones finish or are handed back, then stop."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, Fleet
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def drain(fleet: Fleet, timeout: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agenticore.cli", "drain", "--timeout", str(timeout)],
        env=fleet.env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def worker_state(fleet: Fleet) -> str:
    workers = fleet.http.get("/status").json()["workers"]
    return next(w["state"] for w in workers if w["name"] == f"agenticore@test-{fleet.backend}")


def test_given_a_job_that_ends_in_time_when_draining_then_it_finishes_and_the_worker_stops(
    own_fleet: Fleet,
) -> None:
    job_id = own_fleet.start_job("@fake sleep 3\n@fake result finished in time")

    draining = drain(own_fleet, timeout=60)
    wait_for(lambda: worker_state(own_fleet) == "draining", timeout=15, what="draining state")
    assert own_fleet.job(job_id)["worker_state"] == "draining"
    late = own_fleet.submit(task="@fake result after the drain")["id"]
    output = draining.communicate(timeout=90)[0]

    assert draining.returncode == 0, output
    assert own_fleet.worker.wait(timeout=30) == 0
    job = own_fleet.job(job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1
    assert own_fleet.job(late)["status"] == "queued", "a draining worker takes no new job"
    own_fleet.replace_worker()
    assert own_fleet.wait_until_final(late)["status"] == "succeeded"


def test_given_a_job_past_the_drain_timeout_then_it_is_handed_back_and_runs_again(
    own_fleet: Fleet,
) -> None:
    job_id = own_fleet.start_job("@fake sleep 6\n@fake result second worker")

    output = drain(own_fleet, timeout=1).communicate(timeout=90)[0]

    assert "handing back" in output
    assert own_fleet.job(job_id)["status"] == "queued"
    own_fleet.worker.wait(timeout=30)
    own_fleet.replace_worker()
    job = own_fleet.wait_until_final(job_id, timeout=60)
    assert job["status"] == "succeeded" and job["attempts"] == 2
    assert job["result"] == "second worker"
