"""``agenticore drain``: no new jobs, running ones finish or are handed back, then stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, Fleet, running_fleet
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


@pytest.mark.parametrize("backend", ["redis", "embedded"])
def test_given_a_job_that_ends_in_time_when_draining_then_it_finishes_and_the_worker_stops(
    backend: str, tmp_path: Path, redis_url: str
) -> None:
    with running_fleet(backend, tmp_path, redis_url, lease_seconds=3) as fleet:
        job_id = fleet.submit(task="@fake sleep 3\n@fake result finished in time")["id"]
        wait_for(lambda: fleet.job(job_id)["status"] == "running", timeout=30, what="start")

        draining = drain(fleet, timeout=60)
        wait_for(lambda: worker_state(fleet) == "draining", timeout=15, what="draining state")
        assert fleet.job(job_id)["worker_state"] == "draining"
        late = fleet.submit(task="@fake result after the drain")["id"]
        output = draining.communicate(timeout=90)[0]

        assert draining.returncode == 0, output
        assert fleet.worker.wait(timeout=30) == 0
        job = fleet.job(job_id)
        assert job["status"] == "succeeded" and job["attempts"] == 1
        assert fleet.job(late)["status"] == "queued", "a draining worker takes no new job"
        fleet.replace_worker()
        assert fleet.wait_until_final(late)["status"] == "succeeded"


@pytest.mark.parametrize("backend", ["redis", "embedded"])
def test_given_a_job_past_the_drain_timeout_then_it_is_handed_back_and_runs_again(
    backend: str, tmp_path: Path, redis_url: str
) -> None:
    with running_fleet(backend, tmp_path, redis_url, lease_seconds=3) as fleet:
        job_id = fleet.submit(task="@fake sleep 6\n@fake result second worker")["id"]
        wait_for(lambda: fleet.job(job_id)["status"] == "running", timeout=30, what="start")

        output = drain(fleet, timeout=1).communicate(timeout=90)[0]

        assert "handing back" in output
        assert fleet.job(job_id)["status"] == "queued"
        fleet.worker.wait(timeout=30)
        fleet.replace_worker()
        job = fleet.wait_until_final(job_id, timeout=60)
        assert job["status"] == "succeeded" and job["attempts"] == 2
        assert job["result"] == "second worker"
