"""Task signatures users import: ``from workers.tasks import run_job``.

Tasks are thin: they pass ids, re-read state from the job store and call the library.
"""

from __future__ import annotations

import logging
import os
import signal
from functools import lru_cache
from typing import Any

from celery import Task

from agenticore.config import get_settings
from agenticore.errors import NoPermit
from agenticore.jobs import JobStore
from agenticore.models import Job, JobSpec, JobStatus
from agenticore.retries import backoff_seconds, jittered
from agenticore.runner import JobRunner
from agenticore.supervisor import Terminated
from workers.app import RUN_JOB, app, enqueue

__all__ = ["run_job"]

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _runner() -> JobRunner:
    settings = get_settings()
    return JobRunner(settings, JobStore(settings))


# max_retries=None: deferrals are unbounded; attempts are counted by the runner instead
@app.task(name=RUN_JOB, bind=True, max_retries=None)
def run_job(self: Task, job: str | dict[str, Any]) -> str:
    """Runs a stored job by id, or a new one from a spec dict (the task id becomes its id,
    so a redelivered message finds the same job). Returns the job id for chained tasks."""
    runner = _runner()
    if isinstance(job, dict):
        job_id = self.request.id or None
        job = runner.store.create(Job.from_spec(JobSpec.model_validate(job), job_id)).id
    settings = runner.settings
    try:
        outcome = runner.run(job, worker=self.request.hostname)
    except NoPermit as exc:
        # deferred, never dropped: the same message comes back later (not an attempt)
        log.info("job %s deferred %.1fs: %s", job, exc.retry_after, exc.reason)
        raise self.retry(countdown=jittered(max(exc.retry_after, 1.0))) from None
    except Terminated:
        handed_back = runner.store.get(job)
        if handed_back.status is JobStatus.QUEUED:
            # a stopping worker's job goes back to the queue now, not after a broker timeout
            enqueue(app, handed_back)
        _die_as_signalled()
    if outcome.status is JobStatus.QUEUED:
        delay = backoff_seconds(
            outcome.attempts,
            base=settings.retry_backoff_seconds,
            cap=settings.retry_backoff_max_seconds,
        )
        log.info("job %s: attempt %d failed (%s); retry in %.0fs", job, outcome.attempts,
                 outcome.error, delay)  # fmt: skip
        raise self.retry(countdown=delay)
    return job


def _die_as_signalled() -> None:
    """End this pool process by SIGTERM after the runner cleaned up.

    The pool sent SIGTERM (revoke with terminate, shutdown) and expects the process gone: a
    process that survives it is no longer supervised by the pool, so its next job would be
    lost silently if it died.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
