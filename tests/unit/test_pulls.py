"""The PR step in-process: a real run (fake claude), real git over smart HTTP with a token,
a local forge speaking GitHub's and GitLab's APIs, and the real job store."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agenticore.config import Settings
from agenticore.errors import RetryLater
from agenticore.jobs import JobStore
from agenticore.models import Job, JobSpec, JobStatus, PrStatus
from agenticore.profiles import job_from_spec
from agenticore.pulls import SUBJECT_MAX, PullRequestStep
from agenticore.repos import RepoCache
from agenticore.runner import JobRunner
from tests.conftest import FORGE_TOKEN, forge_settings
from tests.fake_forge import FakeForge
from tests.helpers import git, redis_dump

GITHUB_PROJECT = "acme/widgets"
GITLAB_PROJECT = "gl/group/proj"
CHANGE = "@fake write src/greeting.py print('hi')\n@fake result Added a greeting module.\n"


@pytest.fixture(params=["redis", "embedded"])
def pr_settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], forge: FakeForge
) -> Settings:
    return make_settings(request.param, **forge_settings(forge))


@pytest.fixture
def embedded(make_settings: Callable[..., Settings], forge: FakeForge) -> Settings:
    return make_settings(**forge_settings(forge))


def repo_url(forge: FakeForge, project: str = GITHUB_PROJECT) -> str:
    return f"{forge.url}/{project}.git"


def run_job(settings: Settings, task: str, **spec: Any) -> Job:
    """Creates the job as the API does, runs it to the end as a worker does."""
    job = job_from_spec(settings, JobSpec(task=task, **spec))
    JobStore(settings).create(job)
    return JobRunner(settings).run(job.id, worker="test-worker")


def remote_head(forge: FakeForge, branch: str, project: str = GITHUB_PROJECT) -> str | None:
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
        cwd=forge.git_root / f"{project}.git",
        capture_output=True,
        text=True,
    )
    return found.stdout.strip() or None


def test_given_uncommitted_changes_when_the_pr_step_runs_then_one_commit_one_push_one_pr(
    pr_settings: Settings, forge: FakeForge
) -> None:
    task = "Add a greeting module so the CLI can say hello to new users\n" + CHANGE
    ran = run_job(pr_settings, task, repo_url=repo_url(forge), auto_pr=True)
    assert ran.status is JobStatus.SUCCEEDED, ran.error
    assert ran.pr_status is PrStatus.PENDING
    assert ran.commit_sha and not Path(ran.worktree_path or "").exists(), "the run kept the work"

    done = PullRequestStep(pr_settings).run(ran.id)

    assert done.status is JobStatus.SUCCEEDED and done.pr_status is PrStatus.OPENED
    assert done.branch == f"agenticore/{ran.short_id}"
    pulls = forge.github_pulls(GITHUB_PROJECT)
    assert len(pulls) == 1
    pull = pulls[0]
    assert pull["head"]["ref"] == done.branch and pull["base"]["ref"] == "main"
    assert pull["title"] == "Add a greeting module so the CLI can say hello to new users"
    assert pull["draft"] is True
    for expected in (
        "Added a greeting module.",
        f"https://agenticore.example/jobs/{ran.id}",
        f"`{ran.session_id}`",
        f"${ran.cost_usd:.4f}",
        f"| Turns | {ran.num_turns} |",
    ):
        assert expected in pull["body"]
    assert done.pr_url == pull["html_url"] and done.pr_number == 1
    assert remote_head(forge, done.branch) == done.commit_sha
    bare = forge.git_root / f"{GITHUB_PROJECT}.git"
    message = git(bare, "log", "-1", "--format=%B", done.branch)
    assert message.splitlines()[0] == pull["title"]
    assert f"Agenticore-Job: {ran.id}" in message
    assert git(bare, "show", f"{done.branch}:src/greeting.py") == "print('hi')"
    assert RepoCache(pr_settings).repo_dir(repo_url(forge)).is_dir(), "the cache stays"


def test_given_the_agent_committed_itself_when_the_pr_step_runs_then_its_commit_is_kept(
    embedded: Settings, forge: FakeForge
) -> None:
    task = "Document the API\n@fake write API.md docs\n@fake commit docs: describe the API"
    ran = run_job(embedded, task, repo_url=repo_url(forge), auto_pr=True)

    done = PullRequestStep(embedded).run(ran.id)

    assert done.pr_status is PrStatus.OPENED
    bare = forge.git_root / f"{GITHUB_PROJECT}.git"
    log = git(bare, "log", "--format=%s", f"main..{done.branch}").splitlines()
    assert log == ["docs: describe the API"], "no extra commit when nothing was left over"
    assert done.commit_sha == ran.commit_sha == remote_head(forge, done.branch or "")


def test_given_no_changes_when_the_pr_step_runs_then_no_push_no_pr_and_it_says_so(
    pr_settings: Settings, forge: FakeForge
) -> None:
    ran = run_job(pr_settings, "Look around\n@fake result Nothing to do.",
                  repo_url=repo_url(forge), auto_pr=True)  # fmt: skip

    done = PullRequestStep(pr_settings).run(ran.id)

    assert done.status is JobStatus.SUCCEEDED
    assert done.pr_status is PrStatus.NO_CHANGES and done.pr_url is None
    assert forge.github_pulls(GITHUB_PROJECT) == []
    assert remote_head(forge, ran.branch or "") is None
    assert not Path(ran.worktree_path or "").exists()


def test_given_an_open_pr_when_the_step_is_redelivered_then_it_is_updated_not_duplicated(
    embedded: Settings, forge: FakeForge
) -> None:
    ran = run_job(embedded, "Add greeting\n" + CHANGE, repo_url=repo_url(forge),
                  auto_pr=True, keep_worktree=True)  # fmt: skip
    first = PullRequestStep(embedded).run(ran.id)
    # a delivery that opened the PR but died before recording it leaves the step pending
    JobStore(embedded).update(ran.id, pr_status=PrStatus.PENDING, pr_url=None, pr_number=None)
    forge.github_pulls(GITHUB_PROJECT)[0]["body"] = "stale"

    again = PullRequestStep(embedded).run(ran.id)

    pulls = forge.github_pulls(GITHUB_PROJECT)
    assert len(pulls) == 1
    assert again.pr_number == first.pr_number and again.pr_url == first.pr_url
    assert again.pr_status is PrStatus.OPENED and "Added a greeting module." in pulls[0]["body"]
    assert len(forge.api_calls("PATCH", r"/pulls/1$")) == 1
    assert len(forge.api_calls("POST", r"/pulls$")) == 1


def test_given_a_lagging_pr_list_when_create_says_it_exists_then_the_existing_pr_is_used(
    embedded: Settings, forge: FakeForge
) -> None:
    ran = run_job(embedded, "Add greeting\n" + CHANGE, repo_url=repo_url(forge),
                  auto_pr=True, keep_worktree=True)  # fmt: skip
    PullRequestStep(embedded).run(ran.id)
    JobStore(embedded).update(ran.id, pr_status=PrStatus.PENDING)
    forge.stale_lists = 1  # the first list misses the PR; create answers 422

    again = PullRequestStep(embedded).run(ran.id)

    assert again.pr_status is PrStatus.OPENED and again.pr_number == 1
    assert len(forge.github_pulls(GITHUB_PROJECT)) == 1


def test_given_a_finished_step_when_it_runs_again_then_nothing_is_called(
    embedded: Settings, forge: FakeForge
) -> None:
    ran = run_job(embedded, "Add greeting\n" + CHANGE, repo_url=repo_url(forge), auto_pr=True)
    PullRequestStep(embedded).run(ran.id)
    calls = len(forge.requests)

    again = PullRequestStep(embedded).run(ran.id)

    assert again.pr_status is PrStatus.OPENED and len(forge.requests) == calls


def test_given_labels_and_reviewers_when_the_pr_opens_then_they_are_set(
    embedded: Settings, forge: FakeForge
) -> None:
    ran = run_job(embedded, "Add greeting\n" + CHANGE, repo_url=repo_url(forge), auto_pr=True,
                  pr_labels=["agent", "needs-review"], pr_reviewers=["alice", "acme/core"],
                  pr_draft=False)  # fmt: skip

    done = PullRequestStep(embedded).run(ran.id)

    pull = forge.github_pulls(GITHUB_PROJECT)[0]
    assert [label["name"] for label in pull["labels"]] == ["agent", "needs-review"]
    assert pull["requested_reviewers"] == [{"login": "alice"}]
    assert pull["requested_teams"] == [{"slug": "core"}]
    assert pull["draft"] is False and done.pr_error is None


def test_given_a_reviewer_who_cannot_review_when_the_pr_opens_then_it_opens_with_a_warning(
    embedded: Settings, forge: FakeForge
) -> None:
    forge.state.collaborators = {"alice"}
    ran = run_job(embedded, "Add greeting\n" + CHANGE, repo_url=repo_url(forge), auto_pr=True,
                  pr_reviewers=["mallory"])  # fmt: skip

    done = PullRequestStep(embedded).run(ran.id)

    assert done.pr_status is PrStatus.OPENED and done.pr_url
    assert "reviewers not set" in (done.pr_error or "")
    assert "collaborators" in (done.pr_error or "")


def test_given_a_profile_with_pr_defaults_when_a_job_names_it_then_they_apply(
    make_settings: Callable[..., Settings], forge: FakeForge, tmp_path: Path
) -> None:
    profiles = tmp_path / "profiles"
    (profiles / "reviewed").mkdir(parents=True)
    (profiles / "reviewed" / "profile.yml").write_text(
        "auto_pr: true\npr_labels: [bot]\npr_reviewers: [alice]\npr_draft: false\n"
    )
    settings = make_settings(profiles_dir=profiles, **forge_settings(forge))
    ran = run_job(settings, "Add greeting\n" + CHANGE, repo_url=repo_url(forge),
                  profile="reviewed")  # fmt: skip
    assert ran.auto_pr is True and ran.pr_status is PrStatus.PENDING

    PullRequestStep(settings).run(ran.id)

    pull = forge.github_pulls(GITHUB_PROJECT)[0]
    assert pull["labels"] == [{"name": "bot"}] and pull["draft"] is False
    assert pull["requested_reviewers"] == [{"login": "alice"}]


def test_given_a_failed_auto_pr_run_when_it_ends_then_its_pr_step_is_settled_skipped(
    embedded: Settings, forge: FakeForge
) -> None:
    """The run's task ends in FAILURE, so no chained step would settle it: the run does."""
    ran = run_job(embedded, "Break\n@fake write x.py 1\n@fake fail boom",
                  repo_url=repo_url(forge), auto_pr=True)  # fmt: skip
    assert ran.status is JobStatus.FAILED and ran.pr_status is PrStatus.SKIPPED
    assert ran.pr_error == "the run failed" and ran.pr_due_at is None
    assert not Path(ran.worktree_path or "").exists(), "no PR will follow: worktree goes"

    done = PullRequestStep(embedded).run(ran.id)  # a step sent anyway changes nothing

    assert done.status is JobStatus.FAILED and done.pr_status is PrStatus.SKIPPED
    assert forge.requests == []


def test_given_a_chained_job_that_ended_elsewhere_when_delivered_then_its_step_is_skipped(
    embedded: Settings,
) -> None:
    """Dead-lettered by the reconciler, or cancelled, before this delivery: the chained
    step never runs after the task's FAILURE, so the delivery settles it."""
    store = JobStore(embedded)
    job = store.create(job_from_spec(embedded, JobSpec(task="x")))
    store.update(job.id, status=JobStatus.RUNNING, attempts=2)
    store.update(job.id, status=JobStatus.DEAD, error="lease_expired: attempt 2 lost")

    unchained = JobRunner(embedded).run(job.id)
    chained = JobRunner(embedded).run(job.id, pr_follows=True)

    assert unchained.pr_status is None, "no step was to follow"
    assert chained.status is JobStatus.DEAD and chained.pr_status is PrStatus.SKIPPED
    assert chained.pr_error == "the run dead"


@pytest.mark.parametrize(
    ("status", "headers", "least_wait"),
    [(401, {}, 0.0), (502, {}, 0.0), (429, {"Retry-After": "7"}, 7.0),
     (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "9999999999"}, 3600.0)],
)  # fmt: skip
def test_given_a_transient_forge_failure_when_the_pr_step_runs_then_it_asks_to_retry(
    embedded: Settings, forge: FakeForge, status: int, headers: dict[str, str], least_wait: float
) -> None:
    ran = run_job(embedded, "Add greeting\n" + CHANGE, repo_url=repo_url(forge), auto_pr=True)
    forge.fail("POST", r"/pulls$", status, headers=headers)

    with pytest.raises(RetryLater) as raised:
        PullRequestStep(embedded).run(ran.id)
    assert raised.value.retry_after >= least_wait
    pending = JobStore(embedded).get(ran.id)
    assert pending.pr_status is PrStatus.PENDING and str(status) in (pending.pr_error or "")

    done = PullRequestStep(embedded).run(ran.id)

    assert done.pr_status is PrStatus.OPENED and done.pr_attempts == 2 and done.pr_error is None
    assert len(forge.github_pulls(GITHUB_PROJECT)) == 1


def test_given_auth_failing_every_time_when_attempts_run_out_then_pr_failed_and_run_intact(
    make_settings: Callable[..., Settings], forge: FakeForge
) -> None:
    settings = make_settings(**forge_settings(forge), pr_max_attempts=2)
    ran = run_job(settings, "Add greeting\n" + CHANGE, repo_url=repo_url(forge), auto_pr=True)
    forge.fail("GET", r"/pulls$", 401, times=5, message="Bad credentials")
    step = PullRequestStep(settings)

    with pytest.raises(RetryLater):
        step.run(ran.id)
    done = step.run(ran.id)

    assert done.status is JobStatus.SUCCEEDED, "the run's own status never changes"
    assert done.pr_status is PrStatus.FAILED and done.pr_attempts == 2
    assert "HTTP 401" in (done.pr_error or "") and "Bad credentials" in (done.pr_error or "")
    assert not Path(ran.worktree_path or "").exists()


def test_given_a_permanent_refusal_when_the_pr_step_runs_then_it_fails_at_once(
    embedded: Settings, forge: FakeForge
) -> None:
    ran = run_job(embedded, "Add greeting\n" + CHANGE, repo_url=repo_url(forge), auto_pr=True,
                  base_ref="dev")  # fmt: skip
    forge.fail("POST", r"/pulls$", 422, message="Validation Failed")

    done = PullRequestStep(embedded).run(ran.id)

    assert done.pr_status is PrStatus.FAILED and done.pr_attempts == 1
    assert "HTTP 422" in (done.pr_error or "")


def test_given_a_gitlab_repo_when_the_pr_step_runs_then_one_draft_merge_request_opens(
    embedded: Settings, forge: FakeForge
) -> None:
    forge.state.users = {"alice": 7}
    ran = run_job(embedded, "Add greeting\n" + CHANGE, repo_url=repo_url(forge, GITLAB_PROJECT),
                  auto_pr=True, pr_labels=["bot"], pr_reviewers=["alice"],
                  keep_worktree=True)  # fmt: skip

    done = PullRequestStep(embedded).run(ran.id)
    JobStore(embedded).update(ran.id, pr_status=PrStatus.PENDING)
    forge.stale_lists = 1  # the redelivery's list misses it: create answers 409
    again = PullRequestStep(embedded).run(ran.id)

    requests = forge.gitlab_merge_requests(GITLAB_PROJECT)
    assert len(requests) == 1
    mr = requests[0]
    assert mr["title"] == "Draft: Add greeting" and mr["draft"] is True
    assert mr["source_branch"] == done.branch and mr["target_branch"] == "main"
    assert "Added a greeting module." in mr["description"]
    assert mr["labels"] == ["bot"] and mr["reviewers"] == [{"id": 7}]
    assert done.pr_url == again.pr_url == mr["web_url"] and again.pr_number == 1
    assert remote_head(forge, done.branch or "", GITLAB_PROJECT) == done.commit_sha


def test_given_a_token_when_jobs_clone_push_and_open_prs_then_it_is_never_stored_or_logged(
    make_settings: Callable[..., Settings],
    forge: FakeForge,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings("redis", **forge_settings(forge))
    ran = run_job(settings, "Add greeting\n" + CHANGE, repo_url=repo_url(forge), auto_pr=True,
                  keep_worktree=True)  # fmt: skip
    forge.fail("POST", r"/pulls$", 502)  # a failure message is stored too
    with pytest.raises(RetryLater):
        PullRequestStep(settings).run(ran.id)
    done = PullRequestStep(settings).run(ran.id)
    assert done.pr_status is PrStatus.OPENED

    assert all(authorized for _, authorized in forge.git_requests), "git sent the token"
    assert any(path.endswith("git-receive-pack") for path, _ in forge.git_requests)
    stored = [
        (settings.jobs_dir / f"{ran.id}.json").read_text(),
        redis_dump(redis_url, settings.redis_key_prefix),
        caplog.text,
    ]  # fmt: skip
    cache = RepoCache(settings).repo_dir(repo_url(forge))
    configs = [cache / "config", Path(done.worktree_path or "") / ".git"]
    stored += [p.read_text() for p in configs]
    stored += [p.read_text(errors="replace") for p in settings.jobs_dir.rglob("*") if p.is_file()]
    assert not [text for text in stored if FORGE_TOKEN in text]
    assert done.pr_error is None


def test_given_no_token_when_cloning_from_the_forge_then_the_server_refuses(
    make_settings: Callable[..., Settings], forge: FakeForge
) -> None:
    overrides = forge_settings(forge)
    overrides["forges"] = {
        prefix: {k: v for k, v in entry.items() if k != "token"}
        for prefix, entry in overrides["forges"].items()
    }
    settings = make_settings(**overrides)

    ran = run_job(settings, "Add greeting\n" + CHANGE, repo_url=repo_url(forge), max_attempts=1)

    assert ran.status is JobStatus.DEAD and "git fetch failed" in (ran.error or "")
    assert forge.git_requests and not any(ok for _, ok in forge.git_requests)


def test_pr_title_takes_the_first_prose_line_and_keeps_it_short() -> None:
    from agenticore.pulls import commit_message, pr_title

    assert pr_title("\n  @fake write a b\nFix   the bug \nmore") == "Fix the bug"
    long = pr_title("x" * 200)
    assert len(long) == SUBJECT_MAX and long.endswith("…")
    job = Job.from_spec(JobSpec(task="Fix it\nplease"))
    assert commit_message(job) == f"Fix it\n\nAgenticore-Job: {job.id}\n"


def test_given_a_worktree_whose_git_file_was_replaced_then_the_pr_step_refuses_it(
    embedded: Settings, forge: FakeForge
) -> None:
    ran = run_job(embedded, "Add greeting\n" + CHANGE, repo_url=repo_url(forge), auto_pr=True,
                  keep_worktree=True)  # fmt: skip
    (Path(ran.worktree_path or "") / ".git").write_text("gitdir: /nonexistent\n")

    done = PullRequestStep(embedded).run(ran.id)

    assert done.status is JobStatus.SUCCEEDED
    assert done.pr_status is PrStatus.FAILED and "worktree_tampered" in (done.pr_error or "")
    assert forge.requests == []


def test_given_a_finished_run_without_a_worktree_when_asked_later_then_its_commits_get_a_pr(
    embedded: Settings, forge: FakeForge
) -> None:
    task = "Document the API\n@fake write API.md docs\n@fake commit docs: describe the API"
    ran = run_job(embedded, task, repo_url=repo_url(forge))
    assert ran.pr_status is None and not Path(ran.worktree_path or "").exists()

    done = PullRequestStep(embedded).run(ran.id)

    assert done.pr_status is PrStatus.OPENED
    assert remote_head(forge, done.branch or "") == ran.commit_sha
    assert not Path(ran.worktree_path or "").exists(), "the re-made worktree goes too"
