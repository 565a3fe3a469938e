"""Nothing accepted is lost and nothing runs twice when Redis goes away: restarted empty
(no persistence), restarted with its AOF, down for a while, or paused past the lease.

Each test runs a fleet on a Redis of its own, which it kills, restarts and pauses."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AGENT_REPORTS, Fleet, fleet_on, restart
from tests.helpers import SlowGit, make_remote, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def all_final(fleet: Fleet, ids: list[str], timeout: float = 120) -> list[dict[str, Any]]:
    return [fleet.wait_until_final(job_id, timeout=timeout) for job_id in ids]


@pytest.mark.parametrize("aof", [False, True], ids=["data-lost", "aof"])
def test_given_redis_restarted_mid_queue_then_every_accepted_job_runs_once(
    tmp_path: Path, aof: bool
) -> None:
    with fleet_on(tmp_path, aof=aof) as (fleet, server):
        ids = [fleet.submit(task=f"@fake sleep 2\n@fake result job {n}")["id"] for n in range(8)]
        wait_for(lambda: sum(fleet.job(i)["status"] == "running" for i in ids) == 2,
                 timeout=30, what="two running, six queued")  # fmt: skip

        server.kill()
        restart(server, fleet)

        jobs = all_final(fleet, ids)
        assert [job["status"] for job in jobs] == ["succeeded"] * 8
        assert [job["attempts"] for job in jobs] == [1] * 8, "none ran twice"
        listed = fleet.http.get("/jobs", params={"status": "succeeded", "limit": 50}).json()
        assert sorted(job["id"] for job in listed["data"]) == sorted(ids), "index rebuilt"


def test_given_redis_down_then_submissions_get_503_and_earlier_jobs_are_kept(
    tmp_path: Path,
) -> None:
    with fleet_on(tmp_path) as (fleet, server):
        before = fleet.submit(task="@fake sleep 3\n@fake result accepted before")["id"]
        wait_for(lambda: fleet.job(before)["status"] == "running", timeout=30, what="start")
        server.kill()

        refused = fleet.http.post("/jobs", json={"task": "x"}, headers={"Idempotency-Key": "k1"})

        assert refused.status_code == 503, refused.text
        assert "broker" in refused.json()["detail"]
        restart(server, fleet)
        retried = fleet.http.post(
            "/jobs", json={"task": "@fake result retried"}, headers={"Idempotency-Key": "k1"}
        )
        assert retried.status_code == 202, "the key was not burned by the refused request"
        assert fleet.wait_until_final(retried.json()["id"], timeout=120)["status"] == "succeeded"
        assert fleet.wait_until_final(before, timeout=120)["status"] == "succeeded"


def test_given_a_repeated_idempotency_key_with_wait_then_it_waits_for_the_same_job(
    tmp_path: Path,
) -> None:
    with fleet_on(tmp_path) as (fleet, _):
        headers = {"Idempotency-Key": "order-7"}
        first = fleet.http.post("/jobs", json={"task": "@fake sleep 2\n@fake result once"},
                                headers=headers)  # fmt: skip
        again = fleet.http.post("/jobs", json={"task": "ignored", "wait": True}, headers=headers)

        assert first.status_code == 202
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"]
        assert again.json()["status"] == "succeeded"


def test_given_redis_paused_past_the_lease_then_the_holder_keeps_its_job_and_it_runs_once(
    tmp_path: Path,
) -> None:
    with fleet_on(tmp_path, lease_seconds=2) as (fleet, server):
        job_id = fleet.submit(task="@fake sleep 8\n@fake result survived the pause")["id"]
        wait_for(lambda: fleet.job(job_id)["status"] == "running", timeout=30, what="start")
        time.sleep(1)

        pause = threading.Thread(target=server.pause, args=(5,))
        pause.start()
        pause.join()

        job = fleet.wait_until_final(job_id, timeout=60)
        starts = (tmp_path / "agent-starts").read_text().splitlines()
        assert job["status"] == "succeeded" and job["attempts"] == 1, job
        assert len(starts) == 1, "a second agent started"


def test_given_redis_down_when_a_run_ends_then_it_keeps_its_success(
    tmp_path: Path, slow_git_on_path: SlowGit
) -> None:
    slow_git = slow_git_on_path
    remote = make_remote(tmp_path)
    with fleet_on(tmp_path) as (fleet, server):
        # given an agent that succeeded, and Redis gone while its work is snapshot
        slow_git.slow("write-tree", 2)
        task = "@fake write DONE.md done\n@fake result did it"
        job_id = fleet.submit(task=task, repo_url=str(remote))["id"]
        slow_git.wait_started()
        server.kill()

        # when the run records its outcome (the breaker's count is in Redis), then Redis is back
        time.sleep(5)
        restart(server, fleet)

        job = fleet.wait_until_final(job_id, timeout=60)
    runs = (tmp_path / AGENT_REPORTS["FAKE_CLAUDE_RUNS_FILE"]).read_text().splitlines()
    assert (job["status"], job["attempts"], job["result"]) == ("succeeded", 1, "did it"), job
    assert runs == [f"{job_id} start", f"{job_id} done"]
