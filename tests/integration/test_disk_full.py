"""A full disk under the job store: the API refuses new jobs with 507, a worker that cannot
record an outcome defers the job (its agent gone), and once there is room again every job
accepted before ends; none is left running."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import running_fleet
from tests.helpers import TinyDisk, pid_alive, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root"),
]


def test_given_the_job_store_disk_fills_then_507_and_the_running_job_ends_once_freed(
    tmp_path: Path, redis_url: str
) -> None:
    home = tmp_path / "home"
    disk = TinyDisk(home / "jobs", size_kb=2048)
    try:
        with running_fleet("redis", home, redis_url, lease_seconds=3) as fleet:
            job_id = fleet.submit(task="@fake sleep 3\n@fake result after the disk filled")["id"]
            pid = wait_for(lambda: fleet.agent_pid(job_id), timeout=30, what="the agent")
            disk.fill()

            refused = fleet.http.post("/jobs", json={"task": "x"})

            assert refused.status_code == 507, refused.text
            assert "full" in refused.json()["detail"]
            wait_for(lambda: not pid_alive(pid), timeout=30, what="the agent to end")
            wait_for(lambda: "trying again later" in (fleet.logs / "worker.log").read_text(),
                     timeout=30, what="the worker to defer the job")  # fmt: skip
            disk.free()
            job = fleet.wait_until_final(job_id, timeout=90)
            assert job["status"] == "succeeded" and job["result"] == "after the disk filled"
            assert fleet.submit(task="@fake result room again")["status"] == "queued"
    finally:
        disk.unmount()
