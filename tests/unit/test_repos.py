"""Repo cache: one clone per repo whatever the concurrency, one worktree per job."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path

import pytest

from agenticore.config import Settings
from agenticore.errors import InvalidRepoURL, RepoError
from agenticore.models import Job, JobSpec
from agenticore.repos import RepoCache, Workspace, repo_key, validate_repo_url
from tests.helpers import git, make_remote


def _ensure(settings_json: str, url: str) -> bool:
    return RepoCache(Settings.model_validate_json(settings_json)).ensure(url)


def test_given_n_concurrent_first_jobs_then_exactly_one_clones(
    settings: Settings, tmp_path: Path
) -> None:
    remote = str(make_remote(tmp_path))
    ctx = multiprocessing.get_context("spawn")

    with ctx.Pool(4) as pool:
        cloned = pool.starmap(_ensure, [(settings.model_dump_json(), remote)] * 8)

    assert sorted(cloned) == [False] * 7 + [True]
    assert RepoCache(settings).repo_dir(remote) == settings.repos_dir / repo_key(remote) / "repo"
    assert list((settings.repos_dir / repo_key(remote)).iterdir()) == [
        settings.repos_dir / repo_key(remote) / "repo"
    ]


def test_given_a_cached_repo_when_the_remote_moves_then_the_next_job_sees_it(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    remote = make_remote(tmp_path)
    cache = RepoCache(settings)
    cache.ensure(str(remote))
    src = tmp_path / "remote-src"
    (src / "NEW.md").write_text("new\n")
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", "new")
    git(src, "push", "-q", str(remote), "main")

    assert cache.ensure(str(remote)) is False
    job = Job.from_spec(JobSpec(task="x", repo_url=str(remote)))
    workspace = cache.create_workspace(job)

    assert (workspace.path / "NEW.md").exists()
    assert workspace.branch == f"agenticore/{job.short_id}"
    head = git(workspace.path, "rev-parse", "HEAD")
    assert git(workspace.path, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD", "detached"
    assert git(cache.repo_dir(str(remote)), "rev-parse", f"refs/heads/{workspace.branch}") == head


def test_given_two_jobs_on_one_repo_then_each_has_its_own_worktree_and_branch(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    remote = str(make_remote(tmp_path))
    cache = RepoCache(settings)
    cache.ensure(remote)
    jobs = [Job.from_spec(JobSpec(task="x", repo_url=remote)) for _ in range(2)]

    spaces = [cache.create_workspace(job) for job in jobs]
    (spaces[0].path / "only-in-first").write_text("1")
    for job in jobs:
        cache.remove_workspace(job)

    assert spaces[0].path != spaces[1].path and spaces[0].branch != spaces[1].branch
    assert not (spaces[1].path / "only-in-first").exists()
    assert not any(space.path.exists() for space in spaces)
    assert "worktree" not in git(cache.repo_dir(remote), "worktree", "list").split("\n", 1)[-1]


def test_given_a_remote_that_is_not_a_repo_then_the_clone_fails_clearly_and_leaves_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    not_a_repo = tmp_path / "empty-dir"
    not_a_repo.mkdir()

    with pytest.raises(RepoError, match="git fetch failed") as err:
        RepoCache(settings).ensure(str(not_a_repo))

    assert err.value.repo == str(not_a_repo)
    assert not RepoCache(settings).repo_dir(str(not_a_repo)).exists()


def test_given_repo_urls_then_only_remote_git_urls_pass_unless_local_is_allowed(
    tmp_path: Path,
) -> None:
    assert validate_repo_url("https://github.com/acme/w", allow_local=False)
    assert validate_repo_url("ssh://git@github.com/acme/w.git", allow_local=False)
    assert validate_repo_url("git@github.com:acme/w.git", allow_local=False)
    for bad in ("ftp://x/y", "ext::sh -c evil", "-uevil", "github.com/acme/w", "https:///nohost"):
        with pytest.raises(InvalidRepoURL):
            validate_repo_url(bad, allow_local=True)
    with pytest.raises(InvalidRepoURL, match="ALLOW_LOCAL_REPOS"):
        validate_repo_url(str(tmp_path), allow_local=False)
    with pytest.raises(InvalidRepoURL, match="ALLOW_LOCAL_REPOS"):
        validate_repo_url(f"file://{tmp_path}", allow_local=False)
    assert validate_repo_url(f"file://{tmp_path}", allow_local=True) == str(tmp_path)


def _job_worktree(settings: Settings, tmp_path: Path) -> tuple[RepoCache, str, Workspace]:
    """A cached remote and one job's fresh worktree of it."""
    remote = str(make_remote(tmp_path))
    cache = RepoCache(settings)
    cache.ensure(remote)
    return cache, remote, cache.create_workspace(Job.from_spec(JobSpec(task="x", repo_url=remote)))


def _evil_program(tmp_path: Path) -> tuple[Path, Path]:
    """A program that leaves a mark when run, and the folder the marks go to."""
    marks = tmp_path / "marks"
    marks.mkdir()
    evil = tmp_path / "evil.sh"
    evil.write_text(f'#!/bin/sh\nenv > "{marks}/ran-$$"\nexit 0\n')
    evil.chmod(0o755)
    return evil, marks


def _agent_git(workspace_path: Path, env: dict[str, str], *args: str) -> str:
    import os
    import subprocess

    out = subprocess.run(
        ["git", "-c", "user.name=agent", "-c", "user.email=agent@example.com", *args],
        cwd=workspace_path, env=os.environ | env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip()


def test_given_an_agent_that_plants_git_config_then_the_workers_git_runs_none_of_it(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # the agent shares the worker's uid here (the weakest mode): it can write the cache
    cache, remote, workspace = _job_worktree(make_settings(), tmp_path)
    env = cache.agent_git_env(workspace)
    (workspace.path / "agent.txt").write_text("committed by the agent\n")
    _agent_git(workspace.path, env, "add", "agent.txt")
    _agent_git(workspace.path, env, "commit", "-q", "-m", "agent commit")
    evil, marks = _evil_program(tmp_path)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for hook in ("pre-commit", "post-commit", "pre-push", "reference-transaction"):
        (hooks / hook).write_text(evil.read_text())
        (hooks / hook).chmod(0o755)
        (cache.repo_dir(remote) / "hooks" / hook).write_text(evil.read_text())
        (cache.repo_dir(remote) / "hooks" / hook).chmod(0o755)
    for key, value in (
        ("core.fsmonitor", str(evil)),
        ("core.hooksPath", str(hooks)),
        ("credential.helper", f"!{evil}"),
        ("filter.evil.clean", str(evil)),
        ("filter.evil.process", str(evil)),
        ("core.untrackedCache", "true"),
    ):
        git(workspace.path, "config", key, value)  # lands in the shared cache's config
    (workspace.path / ".gitattributes").write_text("* filter=evil\n")
    (workspace.path / "left.txt").write_text("left uncommitted\n")

    commit = cache.commit_all(workspace, "leftovers")
    changed, head = cache.changes(workspace)
    cache.push(remote, workspace.branch or "")

    assert list(marks.iterdir()) == [], "the worker ran something the agent planted"
    assert changed == [".gitattributes", "agent.txt", "left.txt"]
    assert commit is not None and head == commit
    log = git(Path(remote), "log", "--format=%s", workspace.branch or "")
    assert log.splitlines()[:2] == ["leftovers", "agent commit"]
    assert git(Path(remote), "show", f"{workspace.branch}:left.txt") == "left uncommitted"


def test_given_an_agent_that_replaced_dot_git_then_the_worker_refuses_its_worktree(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    cache, _, workspace = _job_worktree(make_settings(), tmp_path)
    evil, marks = _evil_program(tmp_path)
    (workspace.path / ".git").unlink()
    git(workspace.path, "init", "-q")
    git(workspace.path, "config", "core.fsmonitor", str(evil))

    with pytest.raises(RepoError, match="worktree_tampered"):
        cache.commit_all(workspace, "x")
    with pytest.raises(RepoError, match="worktree_tampered"):
        cache.changes(workspace)
    assert list(marks.iterdir()) == []


def test_given_a_job_branch_then_no_other_job_may_start_from_it(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    cache, remote, workspace = _job_worktree(make_settings(), tmp_path)
    (workspace.path / "secret-work.txt").write_text("unpushed\n")
    unpushed = cache.commit_all(workspace, "unpushed work")
    published = git(Path(remote), "rev-parse", "dev")

    for base in (workspace.branch, f"refs/heads/{workspace.branch}", unpushed, unpushed[:12]):
        with pytest.raises(RepoError, match="not found"):
            cache.create_workspace(Job.from_spec(JobSpec(task="y", repo_url=remote,
                                                         base_ref=base)))  # fmt: skip
    ok = cache.create_workspace(Job.from_spec(JobSpec(task="y", repo_url=remote,
                                                      base_ref=published[:10])))  # fmt: skip
    assert ok.base_sha == published


def test_given_an_origin_refspec_onto_the_job_branches_then_the_worker_drops_it(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    cache, remote, workspace = _job_worktree(make_settings(), tmp_path)
    (workspace.path / "work.txt").write_text("the job's work\n")
    commit = cache.commit_all(workspace, "work")
    git(workspace.path, "config", "--add", "remote.origin.fetch", "+refs/heads/*:refs/heads/*")

    cache.ensure(remote)  # fetch --prune: with that refspec it would drop the job branch

    assert git(cache.repo_dir(remote), "rev-parse", f"refs/heads/{workspace.branch}") == commit
    refspecs = git(cache.repo_dir(remote), "config", "--get-all", "remote.origin.fetch")
    assert refspecs == "+refs/heads/*:refs/remotes/origin/*"


def test_given_an_agent_index_that_git_cannot_use_then_the_snapshot_starts_from_head(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    cache, _, workspace = _job_worktree(make_settings(), tmp_path)
    (workspace.path / "new.txt").write_text("new\n")
    assert workspace.gitdir is not None
    (workspace.gitdir / "index").write_bytes(b"DIRC garbage, not an index")

    commit = cache.commit_all(workspace, "leftovers")
    changed, head = cache.changes(workspace)

    assert changed == ["new.txt"] and commit is not None and head == commit


def test_given_finished_job_branches_then_only_those_whose_work_is_safe_elsewhere_go(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    remote = str(make_remote(tmp_path))
    cache = RepoCache(settings)
    cache.ensure(remote)
    unpushed, pushed, untouched = (
        Job.from_spec(JobSpec(task="x", repo_url=remote)) for _ in range(3)
    )
    for job, work in ((unpushed, "mine"), (pushed, "shared"), (untouched, None)):
        space = cache.create_workspace(job)
        if work:
            (space.path / f"{work}.txt").write_text(work)
            cache.commit_all(space, f"{work}\n\nAgenticore-Job: {job.id}\n")
        job.branch, job.base_ref, job.base_sha = space.branch, space.base_ref, space.base_sha
        cache.remove_workspace(job)
    assert pushed.branch is not None
    cache.push(remote, pushed.branch)
    cache.ensure(remote)  # a fetch: origin's copy of the pushed branch is known

    assert [cache.discard_branch(job) for job in (unpushed, pushed, untouched)] == [
        False, True, True]  # fmt: skip
    assert cache.branch_head(remote, unpushed.branch or "") is not None, "its work stays"
    assert cache.branch_head(remote, pushed.branch) is None
