"""/jobs: submit, list, read, cancel, retry, and the work of a job (diff, bundle)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response, status

from agenticore.apikeys import ApiKey, Role
from agenticore.config import Settings
from agenticore.errors import InvalidTransition
from agenticore.jobs import JobStore, idempotency_digest
from agenticore.models import IDEMPOTENCY_KEY_PATTERN, Job, JobSpec, JobStatus, utcnow
from agenticore.profiles import job_from_spec
from agenticore.redaction import redact_text
from agenticore.repos import RepoCache, validate_repo_url
from api.deps import DispatcherDep, OperatorKey, SettingsDep, StoreDep, ViewerKey, may_act_on
from api.dispatch import Dispatcher
from api.schemas import BUNDLE_RESPONSE, DIFF_RESPONSE, JobCreate, JobPublic, JobsPublic

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/jobs", tags=["jobs"])

_WAIT_POLL_SECONDS = 0.25


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic)
async def create_job(
    body: JobCreate,
    response: Response,
    settings: SettingsDep,
    store: StoreDep,
    dispatcher: DispatcherDep,
    caller: OperatorKey,
    idempotency_key: Annotated[
        str | None, Header(max_length=200, pattern=IDEMPOTENCY_KEY_PATTERN)
    ] = None,
) -> Job:
    spec = JobSpec.model_validate(body.model_dump(exclude={"wait", "wait_timeout_seconds"}))
    if idempotency_key and spec.idempotency_key and idempotency_key != spec.idempotency_key:
        raise HTTPException(422, "Idempotency-Key header and idempotency_key field differ")
    spec.idempotency_key = spec.idempotency_key or idempotency_key
    if spec.repo_url is not None:
        validate_repo_url(spec.repo_url, allow_local=settings.allow_local_repos)
    if spec.session_id is not None:
        await asyncio.to_thread(_check_session, store, spec.session_id, caller)
    job = job_from_spec(settings, spec)
    job.submitted_by = caller.submitter
    # admit before claiming the key: a refused request must not bind it to no job
    await asyncio.to_thread(_admit, settings, dispatcher)
    digest = idempotency_digest(caller.id, spec.idempotency_key) if spec.idempotency_key else None
    if digest is not None:
        holder = await asyncio.to_thread(store.claim_idempotency_key, digest, job.id)
        if holder != job.id:
            job = await _existing(store, holder)
            return await _maybe_wait(body, response, settings, store, job)
    try:
        job = await asyncio.to_thread(_store_and_send, store, dispatcher, job)
    except Exception:
        if digest is not None:  # the key stays free: a retry creates the job
            await asyncio.to_thread(store.release_idempotency_key, digest, job.id)
        raise
    if digest is not None:
        await asyncio.to_thread(store.bind_idempotency_key, digest, job.id)
    return await _maybe_wait(body, response, settings, store, job)


def _store_and_send(store: JobStore, dispatcher: Dispatcher, job: Job) -> Job:
    """Stores the job, then sends it; 503 if the broker did not take it (the job is then
    recorded failed, never left queued without a message)."""
    job = store.create(job)
    try:
        dispatcher.submit(job)
    except Exception as exc:
        error = f"enqueue_failed: {redact_text(str(exc))}"
        store.update(job.id, status=JobStatus.FAILED, finished_at=utcnow(), error=error)
        log.error("job %s could not be enqueued: %s", job.id, error)
        raise HTTPException(
            503, f"the broker did not accept job {job.id}; nothing will run it; retry: {error}"
        ) from None
    return job


async def _maybe_wait(
    body: JobCreate, response: Response, settings: Settings, store: JobStore, job: Job
) -> Job:
    """With ``"wait": true``, holds until the job ends (200), else answers at once (202)."""
    if not body.wait:
        return job
    timeout = body.wait_timeout_seconds or settings.longest_run_seconds + 60
    job = await _wait_for_end(store, job.id, timeout)
    if job.terminal:
        response.status_code = status.HTTP_200_OK
    return job


@router.get("", response_model=JobsPublic)
def list_jobs(
    store: StoreDep,
    caller: ViewerKey,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> JobsPublic:
    jobs, next_cursor = store.list_jobs(status=status_filter, limit=limit, cursor=cursor)
    data = [JobPublic.model_validate(job, from_attributes=True) for job in jobs]
    return JobsPublic(data=data, count=len(data), next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, store: StoreDep, caller: ViewerKey) -> Job:
    return store.get(job_id)


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: str, store: StoreDep, dispatcher: DispatcherDep, caller: OperatorKey) -> Job:
    job = _own_job(store, job_id, caller, "cancel")
    if job.terminal:
        raise InvalidTransition(job_id, job.status.value, JobStatus.CANCELLED.value)
    job = store.update(
        job_id, status=JobStatus.CANCELLED, finished_at=utcnow(), error="cancelled by request"
    )
    # a queued job is then skipped; a running one is stopped by the worker within seconds
    try:
        dispatcher.cancel(job_id)
    except Exception as exc:
        log.warning(
            "job %s: revoke failed (%s); the worker stops it on its next check", job_id, exc
        )
    return job


def _own_job(store: JobStore, job_id: str, caller: ApiKey, action: str) -> Job:
    """The job, if ``caller`` may act on it (its submitter or an admin), else 403."""
    job = store.get(job_id)
    if not may_act_on(caller, job):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"job {job_id} was submitted by another key; only its submitter or an admin "
            f"may {action} it",
        )
    return job


def _check_session(store: JobStore, session_id: str, caller: ApiKey) -> None:
    """A session is resumed only by the key whose job first ran it, or by an admin: a
    session carries that key's conversation, and its files."""
    if caller.role is Role.ADMIN:
        return
    owner = store.session_owner(session_id)
    if owner is None or owner.id != caller.id:
        whose = "has no recorded owner" if owner is None else "belongs to another key"
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"session {session_id} {whose}; only its owner or an admin may resume it",
        )


def _admit(settings: Settings, dispatcher: Dispatcher) -> None:
    """Backpressure: past MAX_QUEUE_DEPTH nothing new is accepted, so nothing is dropped."""
    if settings.max_queue_depth is None:
        return
    depth = dispatcher.queue_depth()
    if depth >= settings.max_queue_depth:
        retry = settings.retry_after_seconds
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"the fleet is busy: {depth} jobs are waiting (limit {settings.max_queue_depth}); "
            f"retry in {retry}s",
            headers={"Retry-After": str(retry)},
        )


async def _existing(store: JobStore, job_id: str) -> Job:
    """The job an earlier request with the same key created (it may be a moment behind)."""
    deadline = time.monotonic() + 5
    while (job := await asyncio.to_thread(store.find, job_id)) is None:
        if time.monotonic() >= deadline:
            raise HTTPException(
                409, f"a request with this Idempotency-Key is still creating {job_id}"
            )
        await asyncio.sleep(0.05)
    return job


@router.post("/{job_id}/retry", response_model=JobPublic)
def retry_job(job_id: str, store: StoreDep, dispatcher: DispatcherDep, caller: OperatorKey) -> Job:
    """Takes a job off the dead-letter list and queues it with a fresh set of attempts."""
    job = _own_job(store, job_id, caller, "retry")
    if job.status is not JobStatus.DEAD:
        raise HTTPException(409, f"job {job_id} is {job.status.value}; only dead jobs are retried")
    job = store.update(job_id, status=JobStatus.QUEUED, attempts=0, finished_at=None)
    dispatcher.submit(job)
    return job


@router.get("/{job_id}/diff", response_class=Response, responses=DIFF_RESPONSE)
def job_diff(job_id: str, store: StoreDep, settings: SettingsDep, caller: ViewerKey) -> Response:
    """The unified diff of the job's commits against its base. Read from the repo cache, so
    any node that shares it answers, whichever worker ran the job."""
    work = _work_of(settings, store.get(job_id))
    diff = RepoCache(settings).diff(work.url, work.branch, work.base)
    return Response(diff, media_type="text/x-diff")


@router.get("/{job_id}/bundle", response_class=Response, responses=BUNDLE_RESPONSE)
def job_bundle(job_id: str, store: StoreDep, settings: SettingsDep, caller: ViewerKey) -> Response:
    """A git bundle of the job's commits past its base, for ``agenticore checkout``."""
    job = store.get(job_id)
    work = _work_of(settings, job)
    if work.head == work.base:
        raise HTTPException(
            404, f"job {job_id} has no commits past its base {work.base[:12]}: nothing to fetch"
        )
    bundle = RepoCache(settings).bundle(work.url, work.branch, work.base)
    disposition = f'attachment; filename="agenticore-{job.short_id}.bundle"'
    return Response(bundle, media_type="application/octet-stream",
                    headers={"Content-Disposition": disposition})  # fmt: skip


@dataclass(frozen=True)
class _Work:
    url: str
    branch: str
    base: str
    head: str


def _work_of(settings: Settings, job: Job) -> _Work:
    """Where the job's work is: its branch in the repo cache, from its base; else 404."""
    if job.repo_url is None:
        raise HTTPException(404, f"job {job.id} ran without a repository: it has no branch")
    if job.branch is None or job.base_sha is None:
        raise HTTPException(404, f"job {job.id} is {job.status.value} and has no branch yet")
    head = RepoCache(settings).branch_head(job.repo_url, job.branch)
    if head is None:
        raise HTTPException(
            404,
            f"branch {job.branch} of job {job.id} is not in this node's repo cache: "
            "the API and the workers must share REPOS_ROOT",
        )
    return _Work(job.repo_url, job.branch, job.base_sha, head)


async def _wait_for_end(store: JobStore, job_id: str, timeout: float) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = await asyncio.to_thread(store.get, job_id)
        if job.terminal or time.monotonic() >= deadline:
            return job
        await asyncio.sleep(_WAIT_POLL_SECONDS)
