"""What a job leaves on disk and in Redis: no secret in the record, transcript or stderr log,
and nothing another local user may read."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from agenticore.config import Settings
from agenticore.jobs import JobStore
from agenticore.models import Job, JobSpec, JobStatus
from agenticore.runner import JobRunner
from tests.helpers import make_remote, redis_dump


def fresh_token() -> str:
    """A GitHub-shaped token no other test uses (masked by its shape alone)."""
    return "ghp_" + uuid.uuid4().hex[:16] + "SecretTokenX0123456"


def run(settings: Settings, task: str, **spec: object) -> Job:
    job = JobStore(settings).create(Job.from_spec(JobSpec(task=task, **spec)))  # type: ignore[arg-type]
    return JobRunner(settings).run(job.id, worker="test-worker")


def stored_texts(settings: Settings, job: Job) -> dict[str, str]:
    """Everything kept about the job, by where it is kept; the task (the caller's own words)
    left out of the record."""
    record = json.loads((settings.jobs_dir / f"{job.id}.json").read_text())
    record.pop("task")
    texts = {"record file": json.dumps(record)}
    if settings.redis_url is not None:
        texts["Redis"] = redis_dump(settings.redis_url, settings.redis_key_prefix)
    job_dir = settings.jobs_dir / job.id
    texts["transcript"] = (job_dir / "transcript.jsonl").read_text(errors="replace")
    texts["stderr.log"] = (job_dir / "stderr.log").read_text(errors="replace")
    return texts


@pytest.mark.parametrize("backend", ["redis", "embedded"])
def test_given_an_agent_that_prints_tokens_everywhere_then_none_is_kept(
    make_settings: Callable[..., Settings], tmp_path: Path, backend: str
) -> None:
    configured = f"plain-forge-secret-{uuid.uuid4().hex[:8]}"
    settings = make_settings(
        backend, forges={"https://git.corp/": {"provider": "gitlab", "token": configured}}
    )
    shaped = fresh_token()
    remote = make_remote(tmp_path, files={"config.env": f"TOKEN={shaped}\nOTHER={configured}\n"})
    task = "\n".join([
        "Leak everything",
        "@fake exec cat config.env",  # in the stream: a tool result
        f"@fake noise raw line Authorization: Bearer {shaped}",
        f"@fake stderr debug: token={shaped} other={configured}",
        f"@fake result Done; used {shaped} and https://user:{configured}@git.corp/a/b.git",
    ])  # fmt: skip

    done = run(settings, task, repo_url=str(remote))

    assert done.status is JobStatus.SUCCEEDED, done.error
    texts = stored_texts(settings, done)
    leaks = [where for where, text in texts.items() if shaped in text or configured in text]
    assert leaks == []
    assert done.result == "Done; used *** and https://***@git.corp/a/b.git"
    assert "TOKEN=***" in texts["transcript"] and "OTHER=***" in texts["transcript"]
    assert "debug: token=*** other=***" in texts["stderr.log"]


def test_given_a_failing_agent_with_a_token_in_its_error_then_the_record_masks_it(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings("redis")
    shaped = fresh_token()

    done = run(settings, f"Fail\n@fake fail could not push with {shaped}", max_attempts=1)

    assert done.status is JobStatus.FAILED
    assert "***" in (done.error or "") and shaped not in (done.error or "")
    assert not [where for where, text in stored_texts(settings, done).items() if shaped in text]


@pytest.mark.parametrize("backend", ["redis", "embedded"])
def test_given_free_text_fields_when_stored_then_they_are_masked_on_create_and_update(
    make_settings: Callable[..., Settings], backend: str
) -> None:
    store = JobStore(make_settings(backend))
    shaped = fresh_token()
    job = Job.from_spec(JobSpec(task="x")).model_copy(update={"error": f"e {shaped}"})

    created = store.create(job)
    updated = store.update(job.id, result=f"r {shaped}", pr_error=f"p {shaped}")

    assert created.error == "e ***"
    assert (updated.result, updated.pr_error) == ("r ***", "p ***")
    assert shaped not in store.get(job.id).model_dump_json()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("backend", ["redis", "embedded"])
def test_given_a_finished_job_then_its_files_are_private_to_the_worker_user(
    make_settings: Callable[..., Settings], tmp_path: Path, backend: str
) -> None:
    settings = make_settings(backend)

    done = run(settings, "Work\n@fake stderr noise\n@fake result ok")

    job_dir = settings.jobs_dir / done.id
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert mode(settings.home) == 0o711
    assert mode(settings.jobs_dir) == 0o700
    assert mode(job_dir) == 0o700
    assert mode(settings.jobs_dir / f"{done.id}.json") == 0o600
    assert mode(job_dir / "transcript.jsonl") == 0o600
    assert mode(job_dir / "stderr.log") == 0o600
    if backend == "embedded":
        assert mode(settings.locks_dir) == 0o700


def test_given_a_home_left_readable_by_an_older_version_then_it_is_tightened(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    settings.jobs_dir.mkdir(parents=True, mode=0o755)
    settings.home.chmod(0o755)
    settings.jobs_dir.chmod(0o755)

    JobStore(settings).create(Job.from_spec(JobSpec(task="x")))

    assert (mode(settings.home), mode(settings.jobs_dir)) == (0o711, 0o700)


def test_given_a_user_folder_outside_home_then_its_mode_is_left_alone(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    worktrees = tmp_path / "shared-worktrees"
    worktrees.mkdir(mode=0o755)
    worktrees.chmod(0o755)
    settings = make_settings(worktree_root=worktrees)

    done = run(settings, "Work\n@fake result ok")

    assert done.status is JobStatus.SUCCEEDED, done.error
    assert mode(worktrees) == 0o755
