"""Task signatures users import: ``from workers.tasks import run_job, open_pull_request``.

Tasks are thin: they pass ids, re-read state from the job store and call the library.
``run_job`` returns the job id, so ``(run_job.s(job_id) | open_pull_request.s())`` chains;
a job that did not succeed ends its task in FAILURE (``JobFailed``) or REVOKED instead.
"""

from __future__ import annotations

import logging
import os
import signal
from functools import lru_cache
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from celery.exceptions import Terminated as Revoked
from pydantic import ValidationError

from agenticore import telemetry
from agenticore.config import get_settings
from agenticore.errors import (
    InvalidRequest,
    JobFailed,
    NoPermit,
    RetryLater,
    StoreUnavailable,
)
from agenticore.interrupts import Terminated, sigterm_raises
from agenticore.jobs import JobStore
from agenticore.models import Job, JobSpec, JobStatus, PrStatus, new_job_id, valid_job_id
from agenticore.profiles import job_from_spec
from agenticore.pulls import PullRequestStep
from agenticore.retries import backoff_seconds, jittered
from agenticore.runner import JobRunner
from workers.app import OPEN_PULL_REQUEST, RUN_JOB, app, enqueue, send_pr_step
from workers.summaries import argument_summary

__all__ = ["open_pull_request", "run_job"]

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _runner() -> JobRunner:
    settings = get_settings()
    return JobRunner(settings, JobStore(settings))


@lru_cache(maxsize=1)
def _pull_requests() -> PullRequestStep:
    settings = get_settings()
    return PullRequestStep(settings, JobStore(settings))


class JobTask(Task):
    """Our tasks' base, however they are sent (``delay``, ``apply_async``, a retry):

    * the message carries a summary of its arguments as ``argsrepr``/``kwargsrepr``
      (Flower, task events, worker logs), never the raw spec;
    * ``run_job(spec)`` without a task id gets a time-ordered one (``new_job_id``): the task
      id becomes the job id, and listings and the oldest-queued gauge rely on ids sorting by
      creation. (A chain freezes its ids before this runs; they stay as Celery made them.)
    """

    def apply_async(self, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        if options.get("argsrepr") is None:
            options["argsrepr"] = f"({', '.join(argument_summary(a) for a in args or ())})"
        if options.get("kwargsrepr") is None:
            pairs = (f"{k!r}: {argument_summary(v)}" for k, v in (kwargs or {}).items())
            options["kwargsrepr"] = "{" + ", ".join(pairs) + "}"
        if options.get("task_id") is None and args and isinstance(args[0], dict):
            options["task_id"] = new_job_id()
        return super().apply_async(args, kwargs, *rest, **options)


# max_retries=None: deferrals are unbounded; attempts are counted by the runner instead.
# throws: a job that did not succeed is an outcome, not a bug: logged without a traceback
@app.task(name=RUN_JOB, base=JobTask, bind=True, max_retries=None, throws=(JobFailed, Revoked))
def run_job(self: Task, job: str | dict[str, Any]) -> str:
    """Runs a stored job by id, or a new one from a spec dict (the task id becomes its id,
    so a redelivered message finds the same job). Returns the job id for chained tasks
    when the job succeeded; otherwise the task ends as the job did (``_end_as``)."""
    runner = _runner()
    job = _stored_job(runner, job, self.request.id or None)
    settings = runner.settings
    chained = _pr_follows(self)
    try:
        # a cancel (revoke with terminate) or a shutdown unwinds the run: locks, permits,
        # git children, the worktree; without this SIGTERM would end the process on the spot
        with sigterm_raises():
            outcome = runner.run(job, worker=self.request.hostname, pr_follows=chained)
    except NoPermit as exc:
        # deferred, never dropped: the same message comes back later (not an attempt)
        log.info("job %s deferred %.1fs: %s", job, exc.retry_after, exc.reason)
        raise _deferred(self, runner, job, jittered(max(exc.retry_after, 1.0))) from None
    except StoreUnavailable as exc:
        # the record could not be written (a full disk): the job runs again later
        log.error("job %s: %s; trying again later", job, exc)
        delay = backoff_seconds(1, base=settings.retry_backoff_seconds,
                                cap=settings.retry_backoff_max_seconds)  # fmt: skip
        raise _deferred(self, runner, job, delay) from None
    except Terminated:
        try:
            handed_back = runner.store.get(job)
            if handed_back.status is JobStatus.QUEUED:
                # a stopping worker's job goes back to the queue now, not after a broker
                # timeout (if this fails, the reconciler sends it: it is watched)
                enqueue(app, handed_back, runner.store)
        finally:
            _die_as_signalled()
    if outcome.status is JobStatus.QUEUED:
        delay = backoff_seconds(
            outcome.attempts,
            base=settings.retry_backoff_seconds,
            cap=settings.retry_backoff_max_seconds,
        )
        log.info("job %s: attempt %d failed (%s); retry in %.0fs", job, outcome.attempts,
                 outcome.error, delay)  # fmt: skip
        raise _deferred(self, runner, job, delay)
    _end_as(outcome)
    if outcome.pr_status is PrStatus.PENDING and not chained:
        # an auto_pr job: the PR step follows, as if the caller had chained it
        send_pr_step(app, outcome)
    return job


@app.task(name=OPEN_PULL_REQUEST, base=JobTask, bind=True, max_retries=None, throws=(JobFailed,))
def open_pull_request(self: Task, job_id: str) -> str:
    """Pushes a succeeded job's branch and opens its pull request, exactly once; records
    ``pr_status`` (and ``pr_url``) on the job. Returns the job id. Attempts are counted on
    the job (``PR_MAX_ATTEMPTS``), so the Celery retry count is not the limit."""
    try:
        with sigterm_raises():  # a shutdown unwinds the step: its lease, its git push
            job = _pull_requests().run(job_id)
    except NoPermit as exc:
        raise self.retry(countdown=jittered(max(exc.retry_after, 1.0))) from None
    except RetryLater as exc:  # already spread out, and never shorter than Retry-After
        raise self.retry(countdown=exc.retry_after) from None
    except Terminated:
        _die_as_signalled()  # the step stays pending: the reconciler sends it again
    log.info("job %s: PR step %s %s", job_id, job.pr_status and job.pr_status.value,
             job.pr_url or job.pr_error or "")  # fmt: skip
    if job.pr_status is PrStatus.FAILED:
        raise JobFailed(job.pr_error or "the PR step failed", job_id=job_id)
    return job_id


def _end_as(job: Job) -> None:
    """Ends the task the way the job ended, so Celery's state (and Flower) tells the truth:
    FAILURE with the job's error for a run that failed, timed out or went dead; REVOKED for
    a cancelled one. Raising Celery's ``Terminated`` from the task body has the worker's
    main process announce the task revoked (``task-revoked``, the result marked so)."""
    if job.status is JobStatus.CANCELLED:
        raise Revoked(job.error or "cancelled")
    if not job.terminal:
        # a delivery whose attempt was handed on: the job runs elsewhere, under the same
        # task id, so this one leaves the task's state to that run
        raise Ignore()
    if job.status is not JobStatus.SUCCEEDED:
        raise JobFailed(job.error or job.status.value, job_id=job.id)


def _deferred(task: Task, runner: JobRunner, job_id: str, countdown: float) -> Retry:
    """The retry that defers a job by ``countdown``, recorded first: while a worker holds
    the countdown (in memory, on the embedded broker) the reconciler must not send the job
    again, and must once the countdown is long past and nobody ran it."""
    runner.store.defer(job_id, countdown)
    return task.retry(countdown=countdown)


def _stored_job(runner: JobRunner, job: str | dict[str, Any], task_id: str | None) -> str:
    """The id of the job to run, creating it first from a spec.

    A message anyone could have sent is checked before anything is written: a spec that is
    invalid, or a task id that is no safe job id (``"../../etc/x"``), is logged and rejected
    for good; retrying would refuse it again.
    """
    try:
        if isinstance(job, dict):
            spec = JobSpec.model_validate(job)
            return runner.store.create(job_from_spec(runner.settings, spec, task_id)).id
        if not valid_job_id(job):
            raise InvalidRequest("job ids use letters, digits, '_' and '-' (at most 64)")
        return job
    except (ValidationError, InvalidRequest) as exc:
        reason = _refusal(exc)
        named = task_id if isinstance(job, dict) else job  # the id that would have been used
        log.error("run_job %r refused: %s", (named or "")[:80], reason)
        raise Reject(reason, requeue=False) from None


def _refusal(exc: ValidationError | InvalidRequest) -> str:
    """What was wrong, without the submitted values (they may hold secrets)."""
    if isinstance(exc, InvalidRequest):
        return str(exc)
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def _pr_follows(task: Task) -> bool:
    """Whether the caller chained a PR step after this run (``link`` or ``|``): a succeeded
    run then records ``pr_status: pending`` for it, as an ``auto_pr`` job does."""
    following = list(task.request.callbacks or []) + list(task.request.chain or [])[-1:]
    return any(signature.get("task") == OPEN_PULL_REQUEST for signature in following)


def _die_as_signalled() -> None:
    """End this pool process by SIGTERM after the runner cleaned up.

    The pool sent SIGTERM (revoke with terminate, shutdown) and expects the process gone: a
    process that survives it is no longer supervised by the pool, so its next job would be
    lost silently if it died.
    """
    telemetry.flush()  # the spans of the run just unwound, the ones worth reading
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
