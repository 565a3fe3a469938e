"""The PR chain on real workers: REST submit -> run_job -> open_pull_request, a chain built
from the task signatures, retries through Celery, and redelivery after a killed process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    FORGE_TOKEN,
    REPO_ROOT,
    Fleet,
    forge_settings,
    running_fleet,
)
from tests.fake_forge import FakeForge
from tests.helpers import make_remote, wait_for
from workers.app import OPEN_PULL_REQUEST, make_celery

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT = "acme/widgets"
CHANGE = "@fake write src/greeting.py print('hi')\n@fake result Added a greeting module.\n"


@pytest.fixture(scope="module")
def forge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeForge]:
    root = tmp_path_factory.mktemp("forge")
    make_remote(root / "acme", "widgets")
    with FakeForge(root, token=FORGE_TOKEN) as server:
        yield server


@pytest.fixture(scope="module", params=["redis", "embedded"])
def pr_fleet(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
    forge: FakeForge,
) -> Iterator[Fleet]:
    home = tmp_path_factory.mktemp(f"pr-fleet-{request.param}")
    overrides = forge_settings(forge) | {"pr_max_attempts": 3}
    with running_fleet(request.param, home, redis_url, **overrides) as fleet:
        yield fleet


@pytest.fixture(params=["redis", "embedded"])
def own_pr_fleet(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, forge: FakeForge
) -> Iterator[Fleet]:
    """A fleet of the test's own, for tests that kill its worker."""
    with running_fleet(request.param, tmp_path, redis_url, **forge_settings(forge)) as fleet:
        yield fleet


@pytest.fixture(autouse=True)
def clean_forge(forge: FakeForge) -> Iterator[None]:
    yield
    forge.failures.clear()
    forge.hold_creates.clear()
    forge.create_reached.clear()
    forge.release_creates.clear()


def repo_url(forge: FakeForge) -> str:
    return f"{forge.url}/{PROJECT}.git"


def pulls_for(forge: FakeForge, branch: str) -> list[dict[str, Any]]:
    return [p for p in forge.github_pulls(PROJECT) if p["head"]["ref"] == branch]


def wait_pr_final(fleet: Fleet, job_id: str, timeout: float = 60) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        response = fleet.http.get(f"/jobs/{job_id}")  # 404 until a worker creates the job
        job: dict[str, Any] = response.json()
        return (
            job
            if response.status_code == 200 and job["pr_status"] not in (None, "pending")
            else None
        )

    return wait_for(
        settled,
        timeout=timeout,
        interval=0.2,
        what=f"the PR step of {job_id}",
    )


def test_given_an_auto_pr_job_when_submitted_then_the_chain_opens_exactly_one_pr(
    pr_fleet: Fleet, forge: FakeForge
) -> None:
    job = pr_fleet.submit(
        task="Add a greeting module\n" + CHANGE, repo_url=repo_url(forge), auto_pr=True
    )
    assert job["auto_pr"] is True

    done = wait_pr_final(pr_fleet, job["id"])

    assert done["status"] == "succeeded" and done["pr_status"] == "opened", done
    pulls = pulls_for(forge, done["branch"])
    assert len(pulls) == 1
    assert pulls[0]["title"] == "Add a greeting module" and pulls[0]["base"]["ref"] == "main"
    assert "Added a greeting module." in pulls[0]["body"] and job["id"] in pulls[0]["body"]
    assert done["pr_url"] == pulls[0]["html_url"] and done["pr_number"] == pulls[0]["number"]
    assert done["commit_sha"] and not Path(done["worktree_path"]).exists()


def test_given_a_job_without_auto_pr_when_it_succeeds_then_no_pr_and_no_worktree(
    pr_fleet: Fleet, forge: FakeForge
) -> None:
    job = pr_fleet.submit(task="Add a greeting module\n" + CHANGE, repo_url=repo_url(forge))

    done = pr_fleet.wait_until_final(job["id"])

    assert done["status"] == "succeeded" and done["pr_status"] is None
    assert pulls_for(forge, done["branch"]) == []
    assert not Path(done["worktree_path"]).exists()


def test_given_signatures_when_a_user_chains_them_then_the_pr_opens(
    pr_fleet: Fleet, forge: FakeForge
) -> None:
    """``(run_job.s(spec) | open_pull_request.s()).apply_async()`` from a user's own process."""
    spec = {"task": "Chained by hand\n" + CHANGE, "repo_url": repo_url(forge)}
    job_id = chain_by_hand(pr_fleet, spec)

    done = wait_pr_final(pr_fleet, job_id)

    assert done["auto_pr"] is False, "the chain alone asked for the PR"
    assert done["pr_status"] == "opened" and len(pulls_for(forge, done["branch"])) == 1


def test_given_a_chained_run_that_fails_when_it_ends_then_its_task_failed_and_pr_skipped(
    pr_fleet: Fleet, forge: FakeForge
) -> None:
    """The run's task ends in FAILURE, so Celery never sends the chained step: the run
    settles it itself."""
    spec = {"task": "Chained, failing\n@fake fail no luck", "repo_url": repo_url(forge)}
    job_id = chain_by_hand(pr_fleet, spec)

    done = wait_pr_final(pr_fleet, job_id)

    assert done["status"] == "failed" and done["pr_status"] == "skipped", done
    assert done["pr_error"] == "the run failed"
    celery = make_celery(pr_fleet.settings)
    try:
        result = celery.AsyncResult(job_id)
        wait_for(lambda: result.state == "FAILURE", timeout=30, what="the task's FAILURE")
        assert str(result.result) == done["error"]
    finally:
        celery.close()


def chain_by_hand(fleet: Fleet, spec: dict[str, Any]) -> str:
    """Sends ``run_job.s(spec) | open_pull_request.s()`` from a process of its own; returns
    the run's task id (its job id)."""
    script = (
        "import json, sys\n"
        "from workers.tasks import open_pull_request, run_job\n"
        "result = (run_job.s(json.loads(sys.argv[1])) | open_pull_request.s()).apply_async()\n"
        "print(result.parent.id)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(spec)],
        env=fleet.env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def test_given_a_flaky_forge_when_the_pr_step_fails_then_celery_retries_until_it_opens(
    pr_fleet: Fleet, forge: FakeForge
) -> None:
    forge.fail("POST", r"/pulls$", 503, times=1)
    forge.fail("POST", r"/pulls$", 429, times=1, headers={"Retry-After": "1"})

    job = pr_fleet.submit(task="Flaky forge\n" + CHANGE, repo_url=repo_url(forge), auto_pr=True)
    done = wait_pr_final(pr_fleet, job["id"])

    assert done["pr_status"] == "opened" and done["pr_attempts"] == 3
    assert done["pr_error"] is None and len(pulls_for(forge, done["branch"])) == 1


def test_given_a_forge_refusing_auth_when_attempts_run_out_then_pr_failed_run_succeeded(
    pr_fleet: Fleet, forge: FakeForge
) -> None:
    forge.fail("GET", r"/pulls$", 401, times=3, message="Bad credentials")

    job = pr_fleet.submit(task="Bad token\n" + CHANGE, repo_url=repo_url(forge), auto_pr=True)
    done = wait_pr_final(pr_fleet, job["id"])

    assert done["status"] == "succeeded"
    assert done["pr_status"] == "failed" and done["pr_attempts"] == 3
    assert "HTTP 401 Bad credentials" in done["pr_error"]
    assert pulls_for(forge, done["branch"]) == []
    assert not Path(done["worktree_path"]).exists()


def test_given_a_pool_process_killed_mid_create_when_redelivered_then_one_pr_is_recorded(
    pr_fleet: Fleet, forge: FakeForge
) -> None:
    forge.hold_creates.set()  # the forge stores the PR, then holds its answer
    job = pr_fleet.submit(task="Survive a kill\n" + CHANGE, repo_url=repo_url(forge),
                          auto_pr=True)  # fmt: skip
    assert forge.create_reached.wait(timeout=60), "the PR step never reached the forge"

    os.kill(_pool_process_running(pr_fleet, OPEN_PULL_REQUEST), signal.SIGKILL)
    forge.hold_creates.clear()
    forge.release_creates.set()
    done = wait_pr_final(pr_fleet, job["id"])

    assert done["pr_status"] == "opened", done
    pulls = pulls_for(forge, done["branch"])
    assert len(pulls) == 1, "the redelivered step found the PR instead of opening another"
    assert done["pr_number"] == pulls[0]["number"] and done["pr_attempts"] == 2
    assert len(forge.api_calls("PATCH", rf"/pulls/{pulls[0]['number']}$")) == 1


def test_given_the_worker_killed_mid_create_when_a_new_worker_starts_then_one_pr_is_recorded(
    own_pr_fleet: Fleet, forge: FakeForge
) -> None:
    """The whole worker dies (main process and pool, as when a node is lost) while the forge
    is opening the PR; the replacement's reconciler sends the PR step again."""
    forge.hold_creates.set()
    job = own_pr_fleet.submit(task="Lose the node\n" + CHANGE, repo_url=repo_url(forge),
                              auto_pr=True)  # fmt: skip
    assert forge.create_reached.wait(timeout=60), "the PR step never reached the forge"
    main = own_pr_fleet.worker.pid
    pool = Path(f"/proc/{main}/task/{main}/children").read_text().split()

    for pid in [main, *map(int, pool)]:
        os.kill(pid, signal.SIGKILL)
    own_pr_fleet.worker.wait(timeout=10)
    forge.hold_creates.clear()
    forge.release_creates.set()
    assert own_pr_fleet.job(job["id"])["pr_status"] == "pending"
    own_pr_fleet.replace_worker()
    done = wait_pr_final(own_pr_fleet, job["id"])

    assert done["pr_status"] == "opened", done
    pulls = pulls_for(forge, done["branch"])
    assert len(pulls) == 1 and done["pr_number"] == pulls[0]["number"]
    assert done["pr_attempts"] == 2


def test_given_worker_logs_when_prs_were_opened_then_the_token_never_appears(
    pr_fleet: Fleet, forge: FakeForge
) -> None:
    job = pr_fleet.submit(task="Leak check\n" + CHANGE, repo_url=repo_url(forge), auto_pr=True)
    assert wait_pr_final(pr_fleet, job["id"])["pr_status"] == "opened"

    leaks = [
        path
        for root in (pr_fleet.logs, pr_fleet.settings.jobs_dir, pr_fleet.settings.repos_dir)
        for path in root.rglob("*")
        if path.is_file() and FORGE_TOKEN.encode() in path.read_bytes()
    ]
    assert leaks == []


def _pool_process_running(fleet: Fleet, task_name: str) -> int:
    """The pool process busy with ``task_name``. Only that one is killed: an idle pool
    process may hold the pool's shared queue lock, and killing it stalls the whole pool."""
    celery = make_celery(fleet.settings)
    try:
        active = celery.control.inspect(timeout=5).active() or {}
    finally:
        celery.close()
    pids = [t["worker_pid"] for tasks in active.values() for t in tasks if t["name"] == task_name]
    assert len(pids) == 1, active
    return int(pids[0])


def test_given_the_cli_when_run_with_pr_options_then_it_waits_for_the_pr_and_shows_it(
    pr_fleet: Fleet, forge: FakeForge
) -> None:
    env = pr_fleet.env | {"AGENTICORE_API_URL": pr_fleet.api_url, "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "agenticore.cli", "run", "From the CLI\n" + CHANGE,
         "--repo", repo_url(forge), "--pr", "--label", "cli", "--reviewer", "alice",
         "--ready", "--wait"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip

    assert out.returncode == 0, out.stderr
    pull = [p for p in forge.github_pulls(PROJECT) if p["title"] == "From the CLI"][-1]
    assert pull["html_url"] in out.stdout
    assert pull["labels"] == [{"name": "cli"}] and pull["draft"] is False
    assert pull["requested_reviewers"] == [{"login": "alice"}]


def test_given_auto_pr_without_a_repo_when_submitted_then_422_says_why(pr_fleet: Fleet) -> None:
    response = pr_fleet.http.post("/jobs", json={"task": "x", "auto_pr": True})

    assert response.status_code == 422
    assert "auto_pr needs a repo_url" in response.text
