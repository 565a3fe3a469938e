"""Submit → Celery worker → supervised agent → recorded result, on Redis and embedded.

Every test here runs twice: against a fleet on a real Redis and against the embedded
default (filesystem broker, file result backend, file job store).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agenticore.repos import RepoCache
from tests.conftest import REPO_ROOT, Fleet
from tests.helpers import git, group_members, make_remote, pid_alive, wait_for

pytestmark = pytest.mark.integration


def test_given_a_repo_task_when_submitted_then_the_job_ends_with_result_cost_and_session(
    fleet: Fleet, tmp_path: Path
) -> None:
    remote = make_remote(tmp_path)
    task = (
        "Add a CONTRIBUTING.md\n"
        "@fake write CONTRIBUTING.md Be kind.\n"
        "@fake commit docs: contributing"
    )

    accepted = fleet.submit(task=task, repo_url=str(remote))
    job = fleet.wait_until_final(accepted["id"])

    assert accepted["status"] == "queued"
    assert job["status"] == "succeeded", job["error"]
    assert job["cost_usd"] > 0 and job["session_id"] and job["num_turns"] >= 2
    assert job["worker"].startswith("agenticore@test-") and job["attempts"] == 1
    assert job["commit_sha"] and job["branch"].startswith("agenticore/")
    cache = RepoCache(fleet.settings).repo_dir(str(remote))
    assert git(cache, "show", f"{job['branch']}:CONTRIBUTING.md") == "Be kind."
    record = json.loads((fleet.settings.jobs_dir / f"{job['id']}.json").read_text())
    assert record["status"] == "succeeded", "the file store always holds the record"


def test_given_wait_true_when_submitted_then_the_response_is_the_finished_job(fleet: Fleet) -> None:
    response = fleet.http.post("/jobs", json={"task": "@fake result all good", "wait": True})

    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    assert response.json()["result"] == "all good"


def test_given_a_failing_agent_when_submitted_then_the_job_fails_with_its_reason(
    fleet: Fleet,
) -> None:
    job = fleet.wait_until_final(fleet.submit(task="@fake fail compile error")["id"])

    assert job["status"] == "failed"
    assert job["error"] == "agent_error: error_during_execution: compile error"
    assert job["exit_code"] == 1


def test_given_a_running_job_when_cancelled_then_its_process_tree_and_worktree_are_gone(
    fleet: Fleet, tmp_path: Path
) -> None:
    remote = make_remote(tmp_path)
    job_id = fleet.submit(task="@fake spawn 300\n@fake hang", repo_url=str(remote))["id"]
    pid = wait_for(lambda: fleet.job(job_id)["status"] == "running" and fleet.agent_pid(job_id),
                   timeout=30, what="the agent to start")  # fmt: skip
    assert group_members(pid), "the agent runs in its own process group"

    response = fleet.http.post(f"/jobs/{job_id}/cancel")

    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    wait_for(lambda: not group_members(pid), timeout=5, what="the process group to die")
    wait_for(lambda: not (fleet.settings.worktrees_dir / job_id).exists(), timeout=10,
             what="the worktree to be removed")  # fmt: skip
    job = fleet.job(job_id)
    assert job["status"] == "cancelled" and job["finished_at"]
    assert fleet.http.post(f"/jobs/{job_id}/cancel").status_code == 409


def test_given_a_queued_job_when_cancelled_then_it_never_starts(fleet: Fleet) -> None:
    blockers = [fleet.submit(task="@fake hang")["id"] for _ in range(2)]
    wait_for(lambda: all(fleet.job(b)["status"] == "running" for b in blockers), timeout=30,
             what="both worker slots busy")  # fmt: skip
    queued = fleet.submit(task="@fake result should never run")["id"]

    assert fleet.http.post(f"/jobs/{queued}/cancel").json()["status"] == "cancelled"
    for blocker in blockers:
        fleet.http.post(f"/jobs/{blocker}/cancel")
    for blocker in blockers:
        fleet.wait_until_final(blocker)
    # give the worker time to pick the cancelled message up (and skip it)
    wait_for(lambda: f"{queued}]" in (fleet.logs / "worker.log").read_text(), timeout=15,
             what="the worker to see the cancelled job")  # fmt: skip

    job = fleet.job(queued)
    assert job["status"] == "cancelled"
    assert job["started_at"] is None and job["attempts"] == 0


def test_given_a_burst_of_jobs_when_submitted_then_every_one_ends_with_a_record(
    fleet: Fleet,
) -> None:
    ids = [fleet.submit(task=f"@fake result job {n}")["id"] for n in range(12)]

    jobs = [fleet.wait_until_final(job_id, timeout=120) for job_id in ids]

    assert [job["status"] for job in jobs] == ["succeeded"] * 12
    assert [job["result"] for job in jobs] == [f"job {n}" for n in range(12)]
    assert all((fleet.settings.jobs_dir / f"{job_id}.json").exists() for job_id in ids)


def test_given_jobs_when_listed_then_newest_first_with_cursor_and_status_filter(
    fleet: Fleet,
) -> None:
    ids = [fleet.submit(task=f"@fake result listed {n}", wait=True)["id"] for n in range(3)]
    failed = fleet.submit(task="@fake fail nope", wait=True)["id"]

    first = fleet.http.get("/jobs", params={"limit": 2}).json()
    second = fleet.http.get("/jobs", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    failures = fleet.http.get("/jobs", params={"status": "failed", "limit": 200}).json()

    assert [j["id"] for j in first["data"]] == [failed, ids[2]]
    assert [j["id"] for j in second["data"]] == [ids[1], ids[0]]
    assert failed in [j["id"] for j in failures["data"]]
    assert all(j["status"] == "failed" for j in failures["data"])


def test_given_bad_input_when_submitted_then_a_4xx_explains_it(fleet: Fleet) -> None:
    cases = [
        ({"task": ""}, 422, "task"),
        ({"task": "x", "profile": "nope"}, 422, "unknown profile 'nope'"),
        ({"task": "x", "repo_url": "ftp://example.com/r"}, 422, "unsupported repo_url"),
        (
            {"task": "x", "repo_url": "https://user:ghp_SECRET123@github.com/a/b"},
            422,
            "must not embed credentials",
        ),
        ({"task": "x", "base_ref": "--upload-pack=evil"}, 422, "not a valid git ref"),
        ({"task": "x", "session_id": "not-a-uuid"}, 422, "session_id must be a UUID"),
        ({"task": "x", "surprise": 1}, 422, "surprise"),
    ]
    before = fleet.http.get("/jobs", params={"limit": 200}).json()["count"]
    for body, code, message in cases:
        response = fleet.http.post("/jobs", json=body)
        assert response.status_code == code, body
        assert message in response.text, response.text
    assert "ghp_SECRET123" not in fleet.http.post("/jobs", json=cases[3][0]).text
    assert fleet.http.get("/jobs", params={"limit": 200}).json()["count"] == before
    assert fleet.http.get("/jobs/0000-nope").status_code == 404
    assert fleet.http.post("/jobs/0000-nope/cancel").status_code == 404
    assert fleet.http.get("/jobs", params={"status": "bogus"}).status_code == 422


def test_given_the_api_then_profiles_health_and_readiness_answer(fleet: Fleet) -> None:
    profiles = fleet.http.get("/profiles").json()
    ready = fleet.http.get("/readyz")

    assert "default" in [p["name"] for p in profiles["data"]]
    assert fleet.http.get("/healthz").json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "broker": "ok", "store": "ok", "backend": fleet.backend}


def test_given_a_python_user_when_run_job_delay_is_called_with_a_spec_then_it_runs(
    fleet: Fleet,
) -> None:
    script = (
        "from workers.tasks import run_job\n"
        "result = run_job.delay({'task': '@fake result from python'})\n"
        "print(result.id)\n"
        "print(result.get(timeout=60))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=fleet.env, cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=90)  # fmt: skip

    assert out.returncode == 0, out.stderr
    task_id, returned = out.stdout.split()
    assert task_id == returned
    job = fleet.job(task_id)
    assert job["status"] == "succeeded" and job["result"] == "from python"


def test_given_a_pool_process_killed_mid_job_then_the_job_runs_again_and_no_agent_is_orphaned(
    fleet: Fleet,
) -> None:
    job_id = fleet.submit(task="@fake sleep 8\n@fake result second time lucky")["id"]
    first_agent = wait_for(lambda: fleet.agent_pid(job_id), timeout=30, what="the agent")
    pool_process = int(Path(f"/proc/{first_agent}/stat").read_text().split(") ")[1].split()[1])

    os.kill(pool_process, signal.SIGKILL)
    wait_for(lambda: fleet.job(job_id)["attempts"] == 2, timeout=30, what="the redelivery")
    # the orphan would sleep on for seconds: it must be gone well before that
    wait_for(lambda: not pid_alive(first_agent), timeout=4, what="the orphaned agent to die")
    job = fleet.wait_until_final(job_id, timeout=90)

    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2 and job["result"] == "second time lucky"
