"""Messages anyone with broker access could send: a real worker refuses them for good,
writes nothing, and carries on."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from agenticore.jobs import JobStore
from agenticore.models import Job, JobStatus, new_job_id
from tests.conftest import Fleet
from tests.helpers import wait_for
from workers.app import RUN_JOB, make_celery

pytestmark = pytest.mark.integration


def worker_log(fleet: Fleet) -> str:
    # a test that replaced the worker left its log under another name
    return "".join(p.read_text(errors="replace") for p in fleet.logs.glob("worker*.log"))


def refused(fleet: Fleet, task_id: str) -> bool:
    return f"run_job {task_id!r} refused" in worker_log(fleet)


def paths_for(fleet: Fleet, job_id: str) -> list[Path]:
    """Where a record, a job folder or a worktree for ``job_id`` would have gone."""
    settings = fleet.settings
    return [
        settings.jobs_dir / f"{job_id}.json",
        settings.jobs_dir / job_id,
        settings.worktrees_dir / job_id,
        settings.home / "agents" / job_id,
    ]


def handled(fleet: Fleet, task_id: str) -> bool:
    """We refused it, or (embedded) Celery's file result backend could not even record it
    as started, so the task body never ran."""
    return refused(fleet, task_id) or f"celery-task-meta-{task_id}'" in worker_log(fleet)


def run_to_end(fleet: Fleet, spec: dict[str, object]) -> Job:
    """Sends a good spec and waits for its job to end: the worker is alive and not stuck."""
    job_id = new_job_id()  # time-ordered, like every id the fleet makes: listings stay ordered
    make_celery(fleet.settings).send_task(RUN_JOB, args=[spec], task_id=job_id)
    store = JobStore(fleet.settings)
    return wait_for(
        lambda: job if (job := store.find(job_id)) and job.terminal else None,
        timeout=60,
        what="a good job to finish",
    )


def test_given_a_task_id_that_is_a_path_then_the_worker_refuses_it_and_writes_nothing(
    fleet: Fleet,
) -> None:
    hostile = f"../../etc/agenticore-{uuid.uuid4().hex[:8]}"
    celery = make_celery(fleet.settings)

    celery.send_task(RUN_JOB, args=[{"task": "@fake result pwned"}], task_id=hostile)
    wait_for(lambda: handled(fleet, hostile), timeout=30, what="the worker to refuse it")
    after = run_to_end(fleet, {"task": "@fake result still here"})

    assert after.status is JobStatus.SUCCEEDED and after.result == "still here"
    assert not any(p.exists() for p in paths_for(fleet, hostile))
    assert not (fleet.settings.home.parent / "etc").exists()
    assert worker_log(fleet).count(f"run_job[{hostile}] received") == 1, "never retried"


def test_given_a_stored_job_id_that_is_a_path_then_the_worker_refuses_it(fleet: Fleet) -> None:
    hostile = "../" + uuid.uuid4().hex
    celery = make_celery(fleet.settings)

    celery.send_task(RUN_JOB, args=[hostile], task_id=uuid.uuid4().hex)
    wait_for(lambda: refused(fleet, hostile), timeout=30, what="the worker to refuse it")

    assert not any(p.exists() for p in paths_for(fleet, hostile))


def test_given_an_invalid_spec_then_no_job_is_stored_and_the_worker_runs_the_next_one(
    fleet: Fleet,
) -> None:
    bad_id = uuid.uuid4().hex

    make_celery(fleet.settings).send_task(
        RUN_JOB, args=[{"task": "x", "base_ref": "main\n"}], task_id=bad_id
    )
    after = run_to_end(fleet, {"task": "@fake result still here"})

    assert after.status is JobStatus.SUCCEEDED
    wait_for(lambda: refused(fleet, bad_id), timeout=30, what="the refusal in the log")
    assert JobStore(fleet.settings).find(bad_id) is None
    assert not any(p.exists() for p in paths_for(fleet, bad_id))
    assert worker_log(fleet).count(f"run_job[{bad_id}] received") == 1, "never retried"
