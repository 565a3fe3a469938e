"""The job store: a Redis hash per job (with TTL) plus a JSON file per job, always.

Writes go to the file first (atomic temp file + rename), then to Redis. Reads prefer Redis
and fall back to the file, so a job outlives a Redis restart or an expired TTL. Without
Redis the file store alone serves. Updates run under a lock and check the status machine,
so a finished job never goes back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from agenticore.config import Settings
from agenticore.connections import redis_client
from agenticore.errors import InvalidTransition, JobNotFound, StoreUnavailable
from agenticore.files import atomic_write, private_dir
from agenticore.keys import KeySchema
from agenticore.locks import exclusive
from agenticore.models import (
    Job,
    JobStatus,
    PrStatus,
    Submitter,
    can_transition,
    valid_job_id,
)
from agenticore.redaction import redact_text

__all__ = ["JobStore"]

log = logging.getLogger(__name__)

_LOCK_HOLD_SECONDS = 30.0
# record fields whose text comes from agents, git or forges: redacted on every write
_FREE_TEXT = {"result", "error", "pr_error"}


class JobStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis_client(settings)
        self.keys = KeySchema(settings.redis_key_prefix)
        self.dir = settings.jobs_dir

    # -- reads -------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        job = self.find(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def find(self, job_id: str) -> Job | None:
        if not valid_job_id(job_id):
            return None
        return self._read_redis(job_id) or self._read_file(job_id)

    def list_jobs(
        self, *, status: JobStatus | None = None, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[Job], str | None]:
        """Newest first. ``cursor`` is the last id of the previous page."""
        index = self.keys.jobs_by_status(status.value) if status else self.keys.jobs_index()
        return self._page(index, lambda job: status is None or job.status is status,
                          limit, cursor)  # fmt: skip

    def all_jobs(self, status: JobStatus) -> Iterator[Job]:
        """Every job in ``status``, newest first, page by page."""
        return self._every(self.keys.jobs_by_status(status.value), lambda j: j.status is status)

    def pending_pr_steps(self) -> Iterator[Job]:
        """Every job whose PR step has not settled (``pr_status: pending``), newest first."""
        return self._every(self.keys.pr_pending(), lambda j: j.pr_status is PrStatus.PENDING)

    # -- writes ------------------------------------------------------------------------

    def create(self, job: Job) -> Job:
        """Stores a new job; creating an id that exists returns the stored job unchanged."""
        with self._locked(job.id):
            existing = self.find(job.id)
            if existing is not None:
                return existing
            private_dir(self.dir, home=self.settings.home)
            job = job.model_copy(update=_redacted(job.model_dump(include=_FREE_TEXT)))
            self._write(job, previous=None)
            return job

    def update(self, job_id: str, *, status: JobStatus | None = None, **fields: Any) -> Job:
        """Changes fields, and the status if given, atomically with respect to other updates."""
        with self._locked(job_id):
            job = self.get(job_id)
            changes = _redacted(fields)
            if status is not None:
                rerun = status is JobStatus.RUNNING
                if (status != job.status or rerun) and not can_transition(job.status, status):
                    raise InvalidTransition(job_id, job.status.value, status.value)
                changes["status"] = status
            updated = job.model_copy(update=changes)
            self._write(updated, previous=job.status)
            return updated

    def claim_idempotency_key(self, key: str, job_id: str) -> str:
        """Binds ``key`` to ``job_id`` unless another job holds it; returns the holder.

        Keys live as long as job records in Redis (``JOB_TTL_SECONDS``).
        """
        digest = hashlib.sha256(key.encode()).hexdigest()
        ttl = self.settings.job_ttl_seconds
        if self.redis is not None:
            name = self.keys.idempotency(digest)
            if self.redis.set(name, job_id, nx=True, ex=ttl):
                return job_id
            holder = self.redis.get(name)
            return str(holder) if holder else self.claim_idempotency_key(key, job_id)
        path = self.dir / "idempotency" / f"{digest}.json"
        with self._locked("idempotency"):
            try:
                claim = json.loads(path.read_text())
                if claim["expires"] > time.time():
                    return str(claim["job_id"])
            except FileNotFoundError:
                pass
            atomic_write(path, json.dumps({"job_id": job_id, "expires": time.time() + ttl}))
        return job_id

    def ping(self) -> None:
        """Raises StoreUnavailable unless every configured backend answers."""
        try:
            private_dir(self.dir, home=self.settings.home)
            if not os.access(self.dir, os.W_OK):
                raise StoreUnavailable(f"job directory {self.dir} is not writable")
            if self.redis is not None:
                self.redis.ping()
        except (OSError, redis.RedisError) as exc:
            raise StoreUnavailable(f"job store unavailable: {exc}") from exc

    # -- internals ---------------------------------------------------------------------

    @contextmanager
    def _locked(self, job_id: str) -> Iterator[None]:
        # the file store shares one lock: per-job lock files would pile up forever
        name = f"job:{job_id}" if self.redis is not None else "jobs"
        with exclusive(self.settings, name, hold=_LOCK_HOLD_SECONDS, wait=_LOCK_HOLD_SECONDS):
            yield

    def _page(
        self, index: str, match: Callable[[Job], bool], limit: int, cursor: str | None
    ) -> tuple[list[Job], str | None]:
        """One page from a Redis index, or from the files filtered by ``match``."""
        jobs = self._list_redis(index, limit, cursor)
        if jobs is None:
            jobs = self._list_files(match, limit, cursor)
        return jobs, (jobs[-1].id if len(jobs) == limit else None)

    def _every(self, index: str, match: Callable[[Job], bool]) -> Iterator[Job]:
        cursor = None
        while True:
            jobs, cursor = self._page(index, match, 200, cursor)
            yield from jobs
            if cursor is None:
                return

    def _write(self, job: Job, previous: JobStatus | None) -> None:
        self._write_file(job)
        self._claim_session(job)
        if self.redis is None:
            return
        key = self.keys.job(job.id)
        fields: dict[FieldT, EncodableT] = {
            k: json.dumps(v) for k, v in job.model_dump(mode="json").items()
        }
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(key, mapping=fields)
            pipe.expire(key, self.settings.job_ttl_seconds)
            pipe.zadd(self.keys.jobs_index(), {job.id: 0})
            if previous is not None and previous != job.status:
                pipe.zrem(self.keys.jobs_by_status(previous.value), job.id)
            pipe.zadd(self.keys.jobs_by_status(job.status.value), {job.id: 0})
            if job.pr_status is PrStatus.PENDING:
                pipe.zadd(self.keys.pr_pending(), {job.id: 0})
            else:
                pipe.zrem(self.keys.pr_pending(), job.id)
            pipe.execute()
        except redis.RedisError as exc:
            # the file already holds the record: degrade, do not fail the job
            log.warning("job %s: Redis write failed (%s); kept in the file store", job.id, exc)

    def session_owner(self, session_id: str) -> Submitter | None:
        """The key whose job first ran ``session_id``: Redis, else the file index; None if
        no job with a submitter has used it."""
        if not valid_job_id(session_id):
            return None
        if self.redis is not None:
            try:
                raw = self.redis.get(self.keys.session_owner(session_id))
            except redis.RedisError as exc:
                log.warning("session %s: Redis read failed (%s); using the file index",
                            session_id, exc)  # fmt: skip
                raw = None
            if raw:
                return Submitter.model_validate_json(str(raw))
        try:
            return Submitter.model_validate_json(self._session_path(session_id).read_text())
        except FileNotFoundError:
            return None

    def _claim_session(self, job: Job) -> None:
        """Records who owns the job's session, first writer wins: a later job resuming it
        (an admin's, say) does not take it over."""
        if job.session_id is None or job.submitted_by is None or not valid_job_id(job.session_id):
            return
        path = self._session_path(job.session_id)
        if not path.exists():
            _create_once(path, job.submitted_by.model_dump_json())
        if self.redis is None:
            return
        owner = path.read_text()  # the winner, whichever writer it was
        try:
            key = self.keys.session_owner(job.session_id)
            self.redis.set(key, owner, nx=True, ex=self.settings.job_ttl_seconds)
        except redis.RedisError as exc:
            log.warning("session %s: Redis write failed (%s); kept in the file index",
                        job.session_id, exc)  # fmt: skip

    def _session_path(self, session_id: str) -> Path:
        return self.dir / "sessions" / session_id

    def _path(self, job_id: str) -> Path:
        return self.dir / f"{job_id}.json"

    def _write_file(self, job: Job) -> None:
        atomic_write(self._path(job.id), job.model_dump_json(indent=2))

    def _read_file(self, job_id: str) -> Job | None:
        try:
            return Job.model_validate_json(self._path(job_id).read_text())
        except FileNotFoundError:
            return None

    def _read_redis(self, job_id: str) -> Job | None:
        if self.redis is None:
            return None
        try:
            raw: dict[str, str] = self.redis.hgetall(self.keys.job(job_id))  # type: ignore[assignment]
        except redis.RedisError as exc:
            log.warning("job %s: Redis read failed (%s); using the file store", job_id, exc)
            return None
        return _decode(raw) if raw else None

    def _list_redis(self, index: str, limit: int, cursor: str | None) -> list[Job] | None:
        if self.redis is None:
            return None
        jobs: list[Job] = []
        try:
            while len(jobs) < limit:
                upper = f"({cursor}" if cursor else "+"
                want = limit - len(jobs)
                ids: list[str] = self.redis.zrevrangebylex(index, upper, "-", start=0, num=want)  # type: ignore[assignment]
                if not ids:
                    break
                pipe = self.redis.pipeline(transaction=False)
                for job_id in ids:
                    pipe.hgetall(self.keys.job(job_id))
                records: list[dict[str, str]] = pipe.execute()
                expired = [job_id for job_id, raw in zip(ids, records, strict=True) if not raw]
                if expired:  # their TTL ran out: drop them from the index
                    self.redis.zrem(index, *expired)
                jobs += [_decode(raw) for raw in records if raw]
                cursor = ids[-1]
        except redis.RedisError as exc:
            log.warning("listing from Redis failed (%s); using the file store", exc)
            return None
        return jobs

    def _list_files(
        self, match: Callable[[Job], bool], limit: int, cursor: str | None
    ) -> list[Job]:
        if not self.dir.is_dir():
            return []
        names = sorted((p.stem for p in self.dir.glob("*.json")), reverse=True)
        jobs: list[Job] = []
        for job_id in names:
            if cursor and job_id >= cursor:
                continue
            job = self._read_file(job_id)
            if job is not None and match(job):
                jobs.append(job)
                if len(jobs) == limit:
                    break
        return jobs


def _create_once(path: Path, text: str) -> None:
    """Writes ``path`` unless it exists; of racing writers exactly one wins, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)  # fails if the name exists, unlike rename
    except FileExistsError:
        pass
    finally:
        Path(tmp).unlink(missing_ok=True)


def _redacted(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with the free text agents and forges write masked by the redaction layer:
    whatever an agent or a forge echoes back (a token it read, a URL with a password) is
    stored, listed and logged masked."""
    return {
        name: redact_text(value) if name in _FREE_TEXT and isinstance(value, str) else value
        for name, value in fields.items()
    }


def _decode(raw: dict[str, str]) -> Job:
    return Job.model_validate({k: json.loads(v) for k, v in raw.items()})
