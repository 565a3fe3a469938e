"""Retries, dead letters and the circuit breaker, on real workers."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("backend", ["redis", "embedded"])
def test_given_provider_failures_then_the_breaker_opens_defers_jobs_and_closes_on_recovery(
    backend: str, tmp_path: Path, redis_url: str
) -> None:
    with running_fleet(
        backend,
        tmp_path,
        redis_url,
        breaker_threshold=2,
        breaker_cooldown_seconds=4,
        max_attempts=1,
    ) as fleet:
        broken = [fleet.submit(task="@fake auth-error")["id"] for _ in range(2)]
        for job_id in broken:
            assert fleet.wait_until_final(job_id)["status"] == "dead"
        breaker = fleet.http.get("/status").json()["breakers"][0]
        assert breaker["state"] == "open" and breaker["failures"] == 2

        opened = time.time()
        healthy = fleet.submit(task="@fake result back to normal")["id"]
        time.sleep(1.5)
        assert fleet.job(healthy)["status"] == "queued", "deferred while the breaker is open"

        job = fleet.wait_until_final(healthy, timeout=60)
        started = job["started_at"]

        assert job["status"] == "succeeded" and job["attempts"] == 1
        assert _epoch(started) >= opened + 2, "it ran only after the cool-down"
        assert fleet.http.get("/status").json()["breakers"][0]["state"] == "closed"
        wait_for(lambda: "deferred" in (fleet.logs / "worker.log").read_text(), timeout=5,
                 what="the deferral in the worker log")  # fmt: skip


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


@pytest.mark.parametrize("backend", ["redis", "embedded"])
def test_given_the_worker_main_process_sigkilled_mid_job_then_the_job_runs_again_elsewhere(
    backend: str, tmp_path: Path, redis_url: str
) -> None:
    with running_fleet(backend, tmp_path, redis_url, lease_seconds=3) as fleet:
        job_id = fleet.submit(task="@fake sleep 6\n@fake result survived")["id"]
        agent = wait_for(lambda: fleet.job(job_id)["status"] == "running" and _agent(fleet, job_id),
                         timeout=30, what="the agent")  # fmt: skip

        os.kill(fleet.worker.pid, signal.SIGKILL)
        fleet.worker.wait(timeout=10)
        # the pool process notices its worker is gone and takes the agent with it
        wait_for(lambda: not pid_alive(agent), timeout=5, what="the orphaned agent to die")
        fleet.replace_worker()
        job = fleet.wait_until_final(job_id, timeout=90)

    assert job["status"] == "succeeded" and job["result"] == "survived"
    assert job["attempts"] == 2
    records = [p.name for p in fleet.settings.jobs_dir.glob(f"{job_id}*.json")]
    assert records == [f"{job_id}.json"], "exactly one record"


def _agent(fleet: Fleet, job_id: str) -> int | None:
    pid = json.loads((fleet.settings.jobs_dir / f"{job_id}.json").read_text()).get("agent_pid")
    return pid if pid and pid_alive(pid) else None


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


@pytest.mark.parametrize("backend", ["redis", "embedded"])
def test_given_limits_on_real_workers_then_stalls_overspend_and_fleet_limits_are_enforced(
    backend: str, tmp_path: Path, redis_url: str
) -> None:
    limits = {"stall_seconds": 2, "fleet_max_jobs": 1, "kill_grace_seconds": 1}
    with running_fleet(backend, tmp_path, redis_url, **limits) as fleet:
        stalled = fleet.submit(task="@fake write notes.txt half\n@fake hang")["id"]
        pricey = fleet.submit(task="@fake turns 3\n@fake hang", max_cost_usd=0.001)["id"]
        queued = [fleet.submit(task=f"@fake sleep 1\n@fake result {n}")["id"] for n in range(3)]

        jobs = {job_id: fleet.wait_until_final(job_id, timeout=90)
                for job_id in [stalled, pricey, *queued]}  # fmt: skip

    assert jobs[stalled]["status"] == "failed" and jobs[stalled]["error"].startswith("stalled")
    assert jobs[pricey]["error"] == "budget_exceeded: cost"
    assert all(jobs[job_id]["status"] == "succeeded" for job_id in queued), "deferred, not dropped"
    spans = sorted((_epoch(j["started_at"]), _epoch(j["finished_at"])) for j in jobs.values())
    overlaps = [a for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    assert overlaps == [], "FLEET_MAX_JOBS=1: never two jobs at once"
