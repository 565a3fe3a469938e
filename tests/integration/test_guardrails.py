"""Retries, dead letters and the circuit breaker, on real workers."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import pytest

from agenticore.jobs import JobStore
from agenticore.models import Job, JobSpec
from tests.conftest import Fleet, running_fleet
from tests.helpers import pid_alive, wait_for

pytestmark = pytest.mark.integration


def test_given_a_crashing_agent_then_it_is_retried_dead_lettered_and_can_be_requeued(
    fleet: Fleet,
) -> None:
    job_id = fleet.submit(task="@fake crash 7")["id"]

    dead = fleet.wait_until_final(job_id, timeout=60)
    listed = fleet.http.get("/dlq").json()["data"]
    requeued = fleet.http.post(f"/jobs/{job_id}/retry")
    again = fleet.wait_until_final(job_id, timeout=60)

    assert dead["status"] == "dead" and dead["attempts"] == 3
    assert dead["error"].startswith("agent_crashed: exit code 7")
    assert job_id in [j["id"] for j in listed]
    assert job_id in [
        j["id"] for j in fleet.http.get("/jobs", params={"status": "dead"}).json()["data"]
    ]
    assert requeued.status_code == 200 and requeued.json()["status"] == "queued"
    assert again["status"] == "dead" and again["attempts"] == 3, "a fresh set of attempts"


def test_given_a_task_failure_then_it_is_not_retried(fleet: Fleet) -> None:
    job = fleet.wait_until_final(fleet.submit(task="@fake fail nope")["id"])

    assert job["status"] == "failed" and job["attempts"] == 1
    assert fleet.http.post(f"/jobs/{job['id']}/retry").status_code == 409


def test_given_the_status_endpoint_then_it_lists_workers_and_breakers(fleet: Fleet) -> None:
    status = fleet.http.get("/status").json()

    assert [w["name"] for w in status["workers"]] == [f"agenticore@test-{fleet.backend}"]
    assert status["breakers"][0]["name"] == "claude"
    assert status["queue_depth"] >= 0


@pytest.mark.fleet_settings(breaker_threshold=2, breaker_cooldown_seconds=4, max_attempts=1)
def test_given_provider_failures_then_the_breaker_opens_defers_jobs_and_closes_on_recovery(
    own_fleet: Fleet,
) -> None:
    broken = [own_fleet.submit(task="@fake auth-error")["id"] for _ in range(2)]
    for job_id in broken:
        assert own_fleet.wait_until_final(job_id)["status"] == "dead"
    breaker = own_fleet.http.get("/status").json()["breakers"][0]
    assert breaker["state"] == "open" and breaker["failures"] == 2

    opened = time.time()
    healthy = own_fleet.submit(task="@fake result back to normal")["id"]
    time.sleep(1.5)
    assert own_fleet.job(healthy)["status"] == "queued", "deferred while the breaker is open"
    job = own_fleet.wait_until_final(healthy, timeout=60)

    assert job["status"] == "succeeded" and job["attempts"] == 1
    assert _epoch(job["started_at"]) >= opened + 2, "it ran only after the cool-down"
    assert own_fleet.http.get("/status").json()["breakers"][0]["state"] == "closed"
    assert "deferred" in (own_fleet.logs / "worker.log").read_text()


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def test_given_the_worker_main_process_sigkilled_mid_job_then_its_pool_finishes_the_job_once(
    own_fleet: Fleet,
) -> None:
    job_id = own_fleet.start_job("@fake sleep 4\n@fake result survived")
    agent = wait_for(lambda: own_fleet.agent_pid(job_id), timeout=30, what="the agent")
    main = own_fleet.worker.pid
    pool = [int(pid) for pid in Path(f"/proc/{main}/task/{main}/children").read_text().split()]

    os.kill(main, signal.SIGKILL)
    own_fleet.worker.wait(timeout=10)
    own_fleet.replace_worker()
    job = own_fleet.wait_until_final(job_id, timeout=90)

    # the pool process that ran it outlived its main process, recorded the job, then ended
    assert job["status"] == "succeeded" and job["result"] == "survived"
    assert job["attempts"] == 1, "the agent's work was not thrown away and run again"
    wait_for(lambda: not any(pid_alive(pid) for pid in pool), timeout=30,
             what="the orphaned pool processes to end")  # fmt: skip
    assert not pid_alive(agent)
    records = [p.name for p in own_fleet.settings.jobs_dir.glob(f"{job_id}*.json")]
    assert records == [f"{job_id}.json"], "exactly one record"


def test_given_a_queue_of_batch_jobs_then_an_interactive_job_overtakes_them(
    tmp_path: Path, redis_url: str
) -> None:
    with running_fleet("redis", tmp_path, redis_url, max_parallel_jobs=1) as fleet:
        blocker = fleet.submit(task="@fake hang")["id"]
        wait_for(lambda: fleet.job(blocker)["status"] == "running", timeout=30, what="blocker")
        batch = [fleet.submit(task="@fake result b", priority="batch")["id"] for _ in range(3)]
        urgent = fleet.submit(task="@fake result now", priority="interactive")["id"]

        fleet.http.post(f"/jobs/{blocker}/cancel")
        jobs = {job_id: fleet.wait_until_final(job_id) for job_id in [*batch, urgent]}

    started = {job_id: job["started_at"] for job_id, job in jobs.items()}
    assert all(job["status"] == "succeeded" for job in jobs.values())
    assert started[urgent] < min(started[b] for b in batch), "submitted last, served first"


@pytest.mark.fleet_settings(stall_seconds=2, fleet_max_jobs=1, kill_grace_seconds=1)
def test_given_limits_on_real_workers_then_stalls_overspend_and_fleet_limits_are_enforced(
    own_fleet: Fleet,
) -> None:
    stalled = own_fleet.submit(task="@fake write notes.txt half\n@fake hang")["id"]
    pricey = own_fleet.submit(task="@fake turns 3\n@fake hang", max_cost_usd=0.001)["id"]
    queued = [own_fleet.submit(task=f"@fake sleep 1\n@fake result {n}")["id"] for n in range(3)]

    jobs = {job_id: own_fleet.wait_until_final(job_id, timeout=90)
            for job_id in [stalled, pricey, *queued]}  # fmt: skip

    assert jobs[stalled]["status"] == "failed" and jobs[stalled]["error"].startswith("stalled")
    assert jobs[pricey]["error"] == "budget_exceeded: cost"
    assert all(jobs[job_id]["status"] == "succeeded" for job_id in queued), "deferred, not dropped"
    spans = sorted((_epoch(j["started_at"]), _epoch(j["finished_at"])) for j in jobs.values())
    overlaps = [a for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    assert overlaps == [], "FLEET_MAX_JOBS=1: never two jobs at once"


def test_given_a_stored_job_whose_message_never_reached_the_broker_then_it_still_runs(
    fleet: Fleet,
) -> None:
    # as if the API died between storing the job and enqueueing it
    job = JobStore(fleet.settings).create(Job.from_spec(JobSpec(task="@fake result recovered")))

    done = fleet.wait_until_final(job.id, timeout=60)

    assert done["status"] == "succeeded" and done["result"] == "recovered"
    assert done["attempts"] == 1
