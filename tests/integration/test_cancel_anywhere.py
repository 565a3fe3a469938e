"""A cancel at any moment of a run, on a real fleet (Redis, prefork worker, git, API).

Each moment is held open from outside by a ``git`` first on the worker's PATH that sleeps
before one chosen git subcommand: the fetch of a clone or of a cached repo, the checkout
(``read-tree``) that fills a new worktree, the snapshot (``write-tree``) that records what
the agent left, and the job branch lookup (``rev-parse``, after that snapshot) of the
worktree's removal. Whatever the moment, the job ends ``cancelled``, no process of it is
left (the slowed git, its children, the agent), its worktree is gone, the repo lock and
its permits are free at once (not when they time out), and the worker runs the next job
on the same repo.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from agenticore.keys import KeySchema
from agenticore.repos import repo_key
from tests.conftest import Fleet, running_fleet
from tests.helpers import SlowGit, git, make_remote, make_slow_git, pid_alive, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def slow_git(tmp_path_factory: pytest.TempPathFactory) -> SlowGit:
    return make_slow_git(tmp_path_factory.mktemp("slow-git"))


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, slow_git: SlowGit
) -> Iterator[Fleet]:
    """One fleet for every moment, on Redis, with the slow git first on its PATH. Leases
    last a minute, so a permit left behind would show; repo locks hold for 660 s."""
    home = tmp_path_factory.mktemp("cancel-fleet")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{slow_git.bin_dir}{os.pathsep}{os.environ['PATH']}")
        with running_fleet("redis", home, redis_url, lease_seconds=60) as fleet:
            yield fleet


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return make_remote(tmp_path)


@pytest.fixture(autouse=True)
def no_slow_git_after(slow_git: SlowGit) -> Iterator[None]:
    yield
    slow_git.clear()


def cancel(fleet: Fleet, job_id: str) -> None:
    response = fleet.http.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"


def assert_nothing_left(fleet: Fleet, slow_git: SlowGit, job_id: str, repo: Path) -> None:
    """No process, worktree, lock or permit of the job is left (a few seconds' grace), and
    the next job on the same repo runs at once."""
    worktree = fleet.settings.worktrees_dir / job_id
    wait_for(lambda: not _processes_of(slow_git, worktree), timeout=10,
             what="every process of the job to end")  # fmt: skip
    wait_for(lambda: not worktree.exists(), timeout=10, what="the worktree to be removed")
    client = redis.Redis.from_url(fleet.settings.redis_url or "")
    keys = KeySchema(fleet.settings.redis_key_prefix)
    lock = keys.lock(f"repo:{repo_key(fleet.job(job_id)['repo_url'])}")
    wait_for(lambda: not client.exists(lock), timeout=5, what="the repo lock to be free")
    wait_for(lambda: not _permits_of(client, keys, job_id), timeout=5,
             what="the job's permits to be free")  # fmt: skip
    assert fleet.wait_until_final(job_id, timeout=10)["status"] == "cancelled"

    started = time.monotonic()
    follow_up = fleet.submit(task="@fake result next", repo_url=str(repo))["id"]
    job = fleet.wait_until_final(follow_up, timeout=60)

    assert job["status"] == "succeeded", job["error"]
    assert time.monotonic() - started < 45, "the next job waited for a lock to time out"
    assert fleet.job(job_id)["status"] == "cancelled"


def assert_branch_holds(fleet: Fleet, job_id: str, path: str, text: str) -> None:
    job = fleet.job(job_id)
    cache = fleet.settings.repos_dir / repo_key(job["repo_url"]) / "repo"
    assert git(cache, "show", f"{job['branch']}:{path}") == text


def _processes_of(slow_git: SlowGit, worktree: Path) -> list[int]:
    """Live processes of the slow git, or working in the job's worktree (the agent, its
    children, a checkout into it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not pid_alive(int(entry.name)):
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if slow_git.marked(int(entry.name)) or cwd.startswith(str(worktree)):
            found.append(int(entry.name))
    return found


def _permits_of(client: redis.Redis, keys: KeySchema, job_id: str) -> list[bytes]:
    held = []
    for key in client.scan_iter(keys.permits("*")):
        held += [m for m in client.zrange(key, 0, -1) if m.startswith(f"{job_id}/".encode())]
    return held


def _start_repo_job(fleet: Fleet, remote: Path, task: str) -> str:
    job_id: str = fleet.submit(task=task, repo_url=str(remote))["id"]
    return job_id


def test_given_a_job_cloning_its_repo_when_cancelled_then_git_lock_and_permits_go_at_once(
    fleet: Fleet, slow_git: SlowGit, remote: Path
) -> None:
    slow_git.slow("fetch", 120)
    job_id = _start_repo_job(fleet, remote, "@fake result never")
    clone = slow_git.wait_started()

    cancel(fleet, job_id)

    wait_for(lambda: not pid_alive(clone), timeout=10, what="the clone's git to be killed")
    assert_nothing_left(fleet, slow_git, job_id, remote)


def test_given_a_job_fetching_a_cached_repo_when_cancelled_then_nothing_of_it_is_left(
    fleet: Fleet, slow_git: SlowGit, remote: Path
) -> None:
    first = _start_repo_job(fleet, remote, "@fake result cached")
    assert fleet.wait_until_final(first)["status"] == "succeeded"
    slow_git.slow("fetch", 120)
    job_id = _start_repo_job(fleet, remote, "@fake result never")
    fetch = slow_git.wait_started()

    cancel(fleet, job_id)

    wait_for(lambda: not pid_alive(fetch), timeout=10, what="the fetch to be killed")
    assert_nothing_left(fleet, slow_git, job_id, remote)


def test_given_a_worktree_being_checked_out_when_cancelled_then_the_half_worktree_goes(
    fleet: Fleet, slow_git: SlowGit, remote: Path
) -> None:
    slow_git.slow("read-tree", 120)
    job_id = _start_repo_job(fleet, remote, "@fake result never")
    slow_git.wait_started()
    assert (fleet.settings.worktrees_dir / job_id).is_dir(), "the checkout has begun"

    cancel(fleet, job_id)

    assert_nothing_left(fleet, slow_git, job_id, remote)


def test_given_a_running_agent_when_cancelled_then_its_tree_lock_and_permits_go(
    fleet: Fleet, slow_git: SlowGit, remote: Path
) -> None:
    job_id = _start_repo_job(fleet, remote, "@fake spawn 300\n@fake hang")
    wait_for(lambda: fleet.agent_pid(job_id), timeout=30, what="the agent to start")

    cancel(fleet, job_id)

    assert_nothing_left(fleet, slow_git, job_id, remote)


def test_given_a_run_being_recorded_when_cancelled_then_the_agents_commit_is_kept(
    fleet: Fleet, slow_git: SlowGit, remote: Path
) -> None:
    # the snapshot of what the agent left: the last git step before _finish stores the end
    slow_git.slow("write-tree", 120)
    task = "@fake write NOTES.md kept\n@fake commit notes\n@fake result done"
    job_id = _start_repo_job(fleet, remote, task)
    slow_git.wait_started()
    assert fleet.job(job_id)["status"] == "running"

    cancel(fleet, job_id)

    assert_nothing_left(fleet, slow_git, job_id, remote)
    assert_branch_holds(fleet, job_id, "NOTES.md", "kept")


def test_given_a_worktree_being_removed_when_cancelled_twice_then_the_removal_completes(
    fleet: Fleet, slow_git: SlowGit, remote: Path
) -> None:
    # an agent crash is retried: the job waits queued, cancellable, while its worktree goes;
    # listing the run's changes (git diff) is the last git step before that
    slow_git.slow("rev-parse", 4, after="diff")
    task = "@fake write NOTES.md kept\n@fake commit notes\n@fake crash 2"
    job_id = _start_repo_job(fleet, remote, task)
    removal = slow_git.wait_started()
    assert fleet.job(job_id)["status"] == "queued"
    pool_process = int(Path(f"/proc/{removal}/stat").read_text().rsplit(")", 1)[1].split()[1])

    cancel(fleet, job_id)
    os.kill(pool_process, signal.SIGTERM)  # a second SIGTERM, as a cold shutdown sends

    assert_nothing_left(fleet, slow_git, job_id, remote)
    assert_branch_holds(fleet, job_id, "NOTES.md", "kept")
