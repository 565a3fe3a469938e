"""Work is kept: every run with a repo ends with its work committed to the job branch in the
repo cache, whatever the outcome; the diff, a bundle for ``agenticore checkout`` and the job
panel show it. And several nodes: the work is in what they share, not in a node's worktree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agenticore.repos import RepoCache
from tests.conftest import Fleet, forge_settings, running_fleet
from tests.fake_forge import FakeForge
from tests.helpers import git, make_remote, wait_for
from tests.integration.test_cli import cli
from workers.app import OPEN_PULL_REQUEST, make_celery

pytestmark = pytest.mark.integration

WRITE = "Add a CONTRIBUTING.md\n@fake write CONTRIBUTING.md Be kind.\n"
OUTCOMES = [
    ("succeeded", WRITE + "@fake result Wrote it.", {}),
    ("failed", WRITE + "@fake fail ran out of ideas", {}),
    ("timed_out", WRITE + "@fake hang", {"timeout_seconds": 3}),
]


def run_to_end(fleet: Fleet, task: str, **spec: Any) -> dict[str, Any]:
    return fleet.wait_until_final(fleet.submit(task=task, **spec)["id"])


def cache_of_job(fleet: Fleet, job: dict[str, Any]) -> Path:
    """The repo cache folder that holds the job's branch (the session fleet has many)."""
    return RepoCache(fleet.settings).repo_dir(job["repo_url"])


@pytest.mark.parametrize(("status", "task", "spec"), OUTCOMES, ids=[o[0] for o in OUTCOMES])
def test_given_an_agent_that_left_a_file_uncommitted_when_its_run_ends_then_the_branch_has_it(
    fleet: Fleet, tmp_path: Path, status: str, task: str, spec: dict[str, Any]
) -> None:
    remote = make_remote(tmp_path)

    job = run_to_end(fleet, task, repo_url=str(remote), **spec)

    assert job["status"] == status, job["error"]
    assert job["commit_sha"] and job["changed_files"] == ["CONTRIBUTING.md"]
    cache = cache_of_job(fleet, job)
    assert git(cache, "rev-parse", f"refs/heads/{job['branch']}") == job["commit_sha"]
    assert git(cache, "show", f"{job['commit_sha']}:CONTRIBUTING.md") == "Be kind."
    message = git(cache, "log", "-1", "--format=%B", job["commit_sha"])
    assert f"Agenticore-Job: {job['id']}" in message
    assert git(cache, "rev-list", "--count", f"{job['base_sha']}..{job['commit_sha']}") == "1"
    assert not Path(job["worktree_path"]).exists(), "the work is kept; the worktree goes"


def test_given_a_cancelled_run_then_what_its_agent_wrote_is_on_the_branch(
    fleet: Fleet, tmp_path: Path
) -> None:
    remote = make_remote(tmp_path)
    job_id = fleet.submit(task=WRITE + "@fake hang", repo_url=str(remote))["id"]
    worktree = fleet.settings.worktrees_dir / job_id
    wait_for(lambda: (worktree / "CONTRIBUTING.md").exists(), timeout=30, what="the agent's file")

    assert fleet.http.post(f"/jobs/{job_id}/cancel").status_code == 200
    job = wait_for(lambda: j if (j := fleet.job(job_id))["commit_sha"] else None, timeout=30,
                   what="the cancelled run's commit")  # fmt: skip

    assert job["status"] == "cancelled"
    assert git(cache_of_job(fleet, job), "show", f"{job['commit_sha']}:CONTRIBUTING.md") == (
        "Be kind."
    )
    wait_for(lambda: not worktree.exists(), timeout=10, what="the worktree to go")


def test_given_a_finished_job_then_diff_checkout_and_the_job_panel_get_its_work(
    fleet: Fleet, tmp_path: Path
) -> None:
    remote = make_remote(tmp_path)
    job = run_to_end(fleet, OUTCOMES[0][1], repo_url=str(remote))
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(remote), str(clone)], check=True)

    response = fleet.http.get(f"/jobs/{job['id']}/diff")
    printed = cli(fleet, "diff", job["id"])
    checked_out = cli(fleet, "checkout", job["id"], str(clone))
    panel = cli(fleet, "job", job["id"])

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/x-diff")
    assert "+++ b/CONTRIBUTING.md" in response.text and "+Be kind." in response.text
    assert printed.returncode == 0 and printed.stdout == response.text
    applies = subprocess.run(["git", "-C", str(clone), "apply", "--check"],
                             input=response.text, text=True, capture_output=True)  # fmt: skip
    assert applies.returncode == 0, applies.stderr
    assert checked_out.returncode == 0, checked_out.stderr
    assert f"fetched branch {job['branch']}" in checked_out.stdout
    assert git(clone, "rev-parse", f"refs/heads/{job['branch']}") == job["commit_sha"]
    assert git(clone, "show", f"{job['branch']}:CONTRIBUTING.md") == "Be kind."
    assert panel.returncode == 0, panel.stderr
    for hint in (f"agenticore diff {job['id']}", f"agenticore checkout {job['id']} [DIR]"):
        assert hint in panel.stdout, panel.stdout
    # the plain git line (the cache is on this machine) works as printed
    fetch = next(line.strip("│ ") for line in panel.stdout.splitlines() if "git fetch /" in line)
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(remote), str(other)], check=True)
    subprocess.run(fetch.split(), cwd=other, check=True, capture_output=True)
    assert git(other, "rev-parse", f"refs/heads/{job['branch']}") == job["commit_sha"]


def test_given_a_directory_that_cannot_take_the_branch_when_checking_out_then_exit_2(
    fleet: Fleet, tmp_path: Path
) -> None:
    job = run_to_end(fleet, OUTCOMES[0][1], repo_url=str(make_remote(tmp_path)))
    plain, unrelated = tmp_path / "plain", tmp_path / "unrelated"
    plain.mkdir()
    subprocess.run(["git", "init", "-q", str(unrelated)], check=True)

    outs = [cli(fleet, "checkout", job["id"], str(where)) for where in (plain, unrelated)]

    assert [out.returncode for out in outs] == [2, 2]
    assert "is not a git repository" in outs[0].stderr
    assert f"lacks the job's base commit {job['base_sha'][:12]}" in outs[1].stderr
    assert "Traceback" not in outs[0].stderr + outs[1].stderr


def test_given_jobs_without_work_then_diff_and_bundle_say_why(fleet: Fleet, tmp_path: Path) -> None:
    scratch = run_to_end(fleet, "@fake result no repository here")
    idle = run_to_end(fleet, "Look around\n@fake result nothing to do",
                      repo_url=str(make_remote(tmp_path)))  # fmt: skip

    no_repo = [fleet.http.get(f"/jobs/{scratch['id']}/{what}") for what in ("diff", "bundle")]
    empty_diff = fleet.http.get(f"/jobs/{idle['id']}/diff")
    empty_bundle = fleet.http.get(f"/jobs/{idle['id']}/bundle")
    unknown = fleet.http.get("/jobs/0000-nope/diff")
    printed = cli(fleet, "diff", scratch["id"])

    assert [r.status_code for r in no_repo] == [404, 404]
    assert all("ran without a repository" in r.json()["detail"] for r in no_repo)
    assert idle["commit_sha"] is None and idle["changed_files"] == []
    assert empty_diff.status_code == 200 and empty_diff.text == ""
    assert empty_bundle.status_code == 404 and "no commits past its base" in empty_bundle.text
    assert unknown.status_code == 404
    assert printed.returncode == 2 and "ran without a repository" in printed.stderr
    assert f"no commits on {idle['branch']}" in cli(fleet, "job", idle["id"]).stdout


def test_given_keep_worktree_when_run_from_the_cli_then_the_worktree_stays_and_the_work_is_kept(
    fleet: Fleet, tmp_path: Path
) -> None:
    remote = make_remote(tmp_path)

    out = cli(fleet, "run", OUTCOMES[0][1], "--repo", str(remote), "--keep-worktree",
              "--wait", "--json")  # fmt: skip

    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    assert job["keep_worktree"] is True and job["commit_sha"]
    assert (Path(job["worktree_path"]) / "CONTRIBUTING.md").read_text() == "Be kind."
    assert git(cache_of_job(fleet, job), "show", f"{job['commit_sha']}:CONTRIBUTING.md") == (
        "Be kind."
    )


# -- several nodes ---------------------------------------------------------------------


def pr_settled(fleet: Fleet, job_id: str) -> dict[str, Any] | None:
    job = fleet.job(job_id)
    return job if job["pr_status"] not in (None, "pending") else None


@pytest.mark.slow
def test_given_nodes_sharing_home_when_one_stops_then_another_continues_and_a_third_opens_the_pr(
    tmp_path: Path, redis_url: str, forge: FakeForge
) -> None:
    """Shared: HOME (jobs, repo cache, agent homes) and Redis. Node-local: WORKTREE_ROOT."""
    roots = {name: tmp_path / f"{name}-worktrees" for name in ("node-1", "node-2", "node-3")}
    settings = forge_settings(forge) | {"worker_name": "node-1", "worktree_root": roots["node-1"]}
    with running_fleet("redis", tmp_path / "home", redis_url, **settings) as fleet:
        # given: node 1 runs a job whose agent has appended a line, and is stopped cold
        task = "Keep notes\n@fake append NOTES.md one line\\n\n@fake sleep 6\n@fake result noted"
        job_id = fleet.submit(task=task, repo_url=f"{forge.url}/acme/widgets.git")["id"]
        wait_for(lambda: (roots["node-1"] / job_id / "NOTES.md").exists(), timeout=30,
                 what="the agent's line on node 1")  # fmt: skip
        os.kill(fleet.worker.pid, signal.SIGQUIT)  # cold: the pool process gets SIGTERM
        fleet.worker.wait(timeout=30)
        handed_back = fleet.job(job_id)
        assert handed_back["status"] == "queued" and handed_back["commit_sha"], handed_back

        # when: node 2, with a worktree root of its own, takes the job up
        node_2 = fleet.add_worker("node-2", worktree_root=str(roots["node-2"]))
        try:
            done = fleet.wait_until_final(job_id, timeout=90)
        finally:
            node_2.send_signal(signal.SIGTERM)
            node_2.wait(timeout=30)

        # then: it continued from node 1's commit, and its own worktree is gone
        assert done["status"] == "succeeded" and done["attempts"] == 2, done["error"]
        assert done["worker"] == "agenticore@node-2"
        assert Path(done["worktree_path"]).parent == roots["node-2"]
        cache = cache_of_job(fleet, done)
        assert git(cache, "show", f"{done['commit_sha']}:NOTES.md") == "one line\none line"
        assert not (roots["node-1"] / job_id).exists() and not (roots["node-2"] / job_id).exists()

        # when: its PR step runs on node 3, which never ran the job
        node_3 = fleet.add_worker("node-3", worktree_root=str(roots["node-3"]))
        try:
            celery = make_celery(fleet.settings)
            celery.send_task(OPEN_PULL_REQUEST, args=[job_id])
            celery.close()
            opened = wait_for(lambda: pr_settled(fleet, job_id), timeout=60, what="the PR step")
        finally:
            node_3.send_signal(signal.SIGTERM)
            node_3.wait(timeout=30)

        # then: the PR holds the work, and the API's diff shows it too
        assert opened["pr_status"] == "opened", opened["pr_error"]
        bare = forge.git_root / "acme" / "widgets.git"
        assert git(bare, "rev-parse", f"refs/heads/{done['branch']}") == done["commit_sha"]
        pulls = [
            p for p in forge.github_pulls("acme/widgets") if p["head"]["ref"] == done["branch"]
        ]
        assert len(pulls) == 1
        diff = fleet.http.get(f"/jobs/{job_id}/diff").text
        assert diff.count("+one line") == 2
        assert not (roots["node-3"] / job_id).exists()
