"""Repo cache: one clone per repo whatever the concurrency, one worktree per job."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path

import pytest

from agenticore.config import Settings
from agenticore.errors import InvalidRepoURL, RepoError
from agenticore.models import Job, JobSpec
from agenticore.repos import RepoCache, repo_key, validate_repo_url
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
