"""The job store: a JSON file per job, the one copy of each record, plus indexes.

A record is written whole (temp file + rename, fsync) under the job's lock, and every
update reads the file it replaces: no field a newer write set can be lost to a stale copy.
With several nodes, ``HOME/jobs`` is shared (an RWX volume) like the repo cache.

Indexes (``agenticore.index``: Redis sorted sets, or SQLite when embedded) list the jobs by
status and schedule the ones the reconciler watches. They are derived from the files: an
index that Redis lost, or one a failed write left behind (``index.dirty``), is rebuilt from
them, and until then listings read the files.

Updates check the status machine, so a finished job never goes back, and may be fenced by
attempt number, so a delivery that lost its lease cannot overwrite the attempt after it.

Idempotency claims are files too (``HOME/jobs/idempotency``): a claim is bound to its job
only once the job is stored and enqueued, and released if either fails.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from agenticore import metrics
from agenticore.config import Settings
from agenticore.connections import redis_client
from agenticore.errors import (
    InvalidTransition,
    JobNotFound,
    StaleAttempt,
    StorageFull,
    StoreUnavailable,
)
from agenticore.files import atomic_write, private_dir
from agenticore.index import JobIndex, RedisIndex, Schedule, SqliteIndex
from agenticore.interrupts import sigterm_deferred
from agenticore.keys import KeySchema
from agenticore.locks import exclusive
from agenticore.models import (
    Job,
    JobStatus,
    Submitter,
    can_transition,
    utcnow,
    valid_job_id,
)
from agenticore.redaction import redact_text

__all__ = ["JobStore", "idempotency_digest"]

log = logging.getLogger(__name__)

_LOCK_HOLD_SECONDS = 30.0
# record fields whose text comes from agents, git or forges: redacted on every write
_FREE_TEXT = {"result", "error", "pr_error"}
# errors that mean "the index did not answer", not a bug
_INDEX_ERRORS = (redis.RedisError, sqlite3.Error, OSError)
# the first queued ids read to find the job waiting longest (see longest_queued)
_OLDEST_SAMPLE = 50
# a claim whose request never bound it (the API process died) may be taken over after this
_ABANDONED_CLAIM_SECONDS = 60.0


def idempotency_digest(submitter_id: str | None, key: str) -> str:
    """The name of a claim: scoped to the caller's key, so another caller's Idempotency-Key
    never returns (or blocks) this caller's job."""
    return hashlib.sha256(f"{submitter_id or ''}\n{key}".encode()).hexdigest()


class JobStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis_client(settings)
        self.keys = KeySchema(settings.redis_key_prefix)
        self.dir = settings.jobs_dir
        self.index: JobIndex = (
            SqliteIndex(self.dir / "index.sqlite3")
            if self.redis is None
            else RedisIndex(self.redis, self.keys)
        )

    # -- reads -------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        job = self.find(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def find(self, job_id: str) -> Job | None:
        if not valid_job_id(job_id):
            return None
        return self._read_file(job_id)

    def list_jobs(
        self, *, status: JobStatus | None = None, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[Job], str | None]:
        """Newest first. ``cursor`` is the last id of the previous page."""
        jobs = self._list_indexed(status, limit, cursor) if self.index_ready() else None
        if jobs is None:
            jobs = self._list_files(status, limit, cursor)
        return jobs, (jobs[-1].id if len(jobs) == limit else None)

    def longest_queued(self) -> Job | None:
        """The queued job (in the broker, deferred or held back) that has waited longest.

        Ids sort by creation, so it is among the first queued ids but for a job handed
        back to the queue later (``queued_at``): a sample of the first ones is read. From
        the index only (scrapes and ``/status`` ask often): ``StoreUnavailable`` while it is
        not ready, e.g. being rebuilt after Redis lost it.
        """
        if not self.index_ready():
            raise StoreUnavailable("the job index is not ready (it is being rebuilt)")
        try:
            sample = self.index.oldest(JobStatus.QUEUED, _OLDEST_SAMPLE)
        except _INDEX_ERRORS as exc:
            raise StoreUnavailable(f"the job index did not answer: {exc}") from exc
        found = [(job_id, self._read_file(job_id)) for job_id in sample]
        self._repair(JobStatus.QUEUED, found)
        queued = [job for _, job in found if job is not None and _matches(job, JobStatus.QUEUED)]
        return min(queued, key=lambda job: job.waiting_since, default=None)

    def all_jobs(self, status: JobStatus) -> Iterator[Job]:
        """Every job in ``status``, newest first, page by page."""
        cursor = None
        while True:
            jobs, cursor = self.list_jobs(status=status, limit=200, cursor=cursor)
            yield from jobs
            if cursor is None:
                return

    def due(self, schedule: Schedule, until: datetime, limit: int) -> list[Job]:
        """Jobs on ``schedule`` due by ``until``, earliest first; entries whose record is
        gone are dropped."""
        ids = self.index.due(schedule, until.timestamp(), limit)
        jobs = {job_id: self._read_file(job_id) for job_id in ids}
        self._forget_quietly([job_id for job_id, job in jobs.items() if job is None])
        return [job for job in jobs.values() if job is not None]

    def index_built(self) -> bool:
        """Whether the index was built at all: False after Redis came back empty."""
        return self.index.built()

    def index_ready(self) -> bool:
        """Whether the index holds every record: built, and no write to it has failed."""
        if (self.dir / "index.dirty").exists():
            return False
        try:
            return self.index.built()
        except _INDEX_ERRORS as exc:
            log.warning("job index unavailable (%s); reading the files", exc)
            return False

    # -- writes ------------------------------------------------------------------------

    def create(self, job: Job) -> Job:
        """Stores a new job; creating an id that exists returns the stored job unchanged.
        A new queued job is watched until its message is sent (``mark_sent``)."""
        with self.locked(job.id):
            existing = self.find(job.id)
            if existing is not None:
                return existing
            private_dir(self.dir, home=self.settings.home)
            job = job.model_copy(update=_redacted(job.model_dump(include=_FREE_TEXT)))
            self._write(job, previous=None, watch_at=time.time() + self.settings.lease_seconds)
            metrics.job_created(job)
            return job

    def update(
        self,
        job_id: str,
        *,
        status: JobStatus | None = None,
        attempt: int | None = None,
        held: bool = False,
        **fields: Any,
    ) -> Job:
        """Changes fields, and the status if given, atomically with respect to other updates.

        ``attempt`` fences a delivery: the update is refused with ``StaleAttempt`` unless
        the job still runs that attempt (or was cancelled during it). ``held`` says the
        caller holds the job's lock already (``locked``).
        """
        if not held:
            with self.locked(job_id):
                return self.update(job_id, status=status, attempt=attempt, held=True, **fields)
        job = self.get(job_id)
        if attempt is not None and (
            job.attempts != attempt or job.status in (JobStatus.QUEUED, JobStatus.DEAD)
        ):
            raise StaleAttempt(job_id, attempt, job.status.value)
        changes = _redacted(fields)
        requeued = False
        if status is not None:
            rerun = status is JobStatus.RUNNING
            if (status != job.status or rerun) and not can_transition(job.status, status):
                raise InvalidTransition(job_id, job.status.value, status.value)
            changes["status"] = status
            requeued = status is JobStatus.QUEUED and job.status is not JobStatus.QUEUED
            if requeued:
                changes["queued_at"] = utcnow()
        updated = job.model_copy(update=changes)
        # a job handed back to the queue is watched until its message is sent again
        watch = time.time() + self.settings.lease_seconds if requeued else None
        self._write(updated, previous=job, watch_at=watch)
        metrics.job_changed(job, updated, changes)
        return updated

    @contextmanager
    def locked(self, job_id: str) -> Iterator[None]:
        """The job's lock: what is read inside stays true until the block ends."""
        # the file store shares one lock: per-job lock files would pile up forever
        name = f"job:{job_id}" if self.redis is not None else "jobs"
        with exclusive(self.settings, name, hold=_LOCK_HOLD_SECONDS, wait=_LOCK_HOLD_SECONDS):
            yield

    def mark_sent(self, job_id: str) -> None:
        """Its message is in the broker: the job needs no watching while it waits there."""
        self._schedule_quietly("watch", job_id, None)

    def defer(self, job_id: str, seconds: float) -> None:
        """A countdown holds the job's message (in a worker's memory, on the embedded
        broker): look for it only once the countdown and a lease have passed."""
        at = time.time() + seconds + self.settings.lease_seconds
        self._schedule_quietly("watch", job_id, at)

    def reschedule(self, schedule: Schedule, job_id: str, at: datetime | None) -> None:
        self._schedule_quietly(schedule, job_id, at.timestamp() if at else None)

    def delete(self, job_id: str) -> None:
        """Removes a job's record, its folder (transcripts, logs), its idempotency claim and
        its index entries. For retention: the caller decides the job has had its time."""
        job = self.find(job_id)
        if job is not None and job.idempotency_key:
            owner = job.submitted_by.id if job.submitted_by else None
            digest = idempotency_digest(owner, job.idempotency_key)
            self._claim_path(digest).unlink(missing_ok=True)
        shutil.rmtree(self.dir / job_id, ignore_errors=True)
        self._path(job_id).unlink(missing_ok=True)
        self._forget_quietly([job_id])

    def rebuild_index(self) -> list[Job]:
        """Rebuilds the index from the files; returns the queued jobs (their messages may
        be gone with what the index lost, so the caller sends them again). Each is watched
        again as if just stored: what a dropped schedule would have caught is caught."""
        (self.dir / "index.dirty").unlink(missing_ok=True)
        self.index.reset()
        queued = []
        watch = time.time() + self.settings.lease_seconds
        for job_id in self._ids():
            with self.locked(job_id):  # not a stale copy over an update made meanwhile
                job = self._read_file(job_id)
                if job is not None:
                    self.index.record(job, previous=None, watch_at=watch)
            if job is not None and job.status is JobStatus.QUEUED:
                queued.append(job)
        self.index.mark_built()
        log.warning("job index rebuilt from the files; %d queued jobs", len(queued))
        return queued

    # -- idempotency -------------------------------------------------------------------

    def claim_idempotency_key(self, digest: str, job_id: str) -> str:
        """Claims ``digest`` (see ``idempotency_digest``) for ``job_id`` unless another job
        holds it; returns the holder. A claim another request left unbound, whose job was
        never stored, is taken over once it is ``_ABANDONED_CLAIM_SECONDS`` old."""
        path = self._claim_path(digest)
        claim = json.dumps({"job_id": job_id, "bound": False, "at": time.time()})
        for _ in range(3):
            with _storing("an idempotency claim"):
                _create_once(path, claim)
            try:
                held = json.loads(path.read_text())
            except FileNotFoundError:
                continue  # released meanwhile: claim again
            holder = str(held["job_id"])
            abandoned = time.time() - float(held["at"]) > _ABANDONED_CLAIM_SECONDS
            if holder == job_id or held["bound"] or not abandoned or self.find(holder):
                return holder
            path.unlink(missing_ok=True)
        return job_id

    def bind_idempotency_key(self, digest: str, job_id: str) -> None:
        """The claim's job is stored and enqueued: repeats return it from now on (unless
        another request took the claim over meanwhile: then that one holds it)."""
        path = self._claim_path(digest)
        try:
            if json.loads(path.read_text())["job_id"] != job_id:
                return
        except FileNotFoundError:
            pass
        bound = json.dumps({"job_id": job_id, "bound": True, "at": time.time()})
        with _storing("an idempotency claim"):
            atomic_write(path, bound)

    def release_idempotency_key(self, digest: str, job_id: str) -> None:
        """The request failed: a retry with the same key creates the job anew."""
        path = self._claim_path(digest)
        try:
            if json.loads(path.read_text())["job_id"] == job_id:
                path.unlink(missing_ok=True)
        except FileNotFoundError:
            pass

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

    def _write(self, job: Job, previous: Job | None, watch_at: float | None) -> None:
        with sigterm_deferred():  # the record and its index entries, never one alone
            self._write_both(job, previous, watch_at)

    def _write_both(self, job: Job, previous: Job | None, watch_at: float | None) -> None:
        self._write_file(job)
        self._claim_session(job)
        try:
            self.index.record(job, previous, watch_at)
        except _INDEX_ERRORS as exc:
            # the file holds the record; the index is rebuilt from the files before it is
            # trusted again, so a listing or the reconciler never misses this job
            log.warning("job %s: index write failed (%s); marked for a rebuild", job.id, exc)
            self._mark_dirty()

    def _mark_dirty(self) -> None:
        try:
            (self.dir / "index.dirty").touch()
        except OSError as exc:
            log.error("cannot mark the job index for a rebuild: %s", exc)

    def _schedule_quietly(self, schedule: Schedule, job_id: str, at: float | None) -> None:
        try:
            self.index.schedule(schedule, job_id, at)
        except _INDEX_ERRORS as exc:
            log.warning("job %s: index write failed (%s); marked for a rebuild", job_id, exc)
            self._mark_dirty()

    def _forget_quietly(self, job_ids: list[str]) -> None:
        if not job_ids:
            return
        try:
            self.index.forget(job_ids)
        except _INDEX_ERRORS as exc:
            log.warning("index cleanup failed (%s)", exc)

    def _list_indexed(
        self, status: JobStatus | None, limit: int, cursor: str | None
    ) -> list[Job] | None:
        """A page through the index; entries that disagree with their files are stale (a
        write between file and index was cut short) and are skipped and dropped."""
        jobs: list[Job] = []
        try:
            while len(jobs) < limit:
                ids = self.index.page(status, limit - len(jobs), cursor)
                if not ids:
                    break
                found = [(job_id, self._read_file(job_id)) for job_id in ids]
                self._repair(status, found)
                jobs += [job for _, job in found if job is not None and _matches(job, status)]
                cursor = ids[-1]
        except _INDEX_ERRORS as exc:
            log.warning("listing from the index failed (%s); reading the files", exc)
            return None
        return jobs

    def _repair(self, status: JobStatus | None, found: list[tuple[str, Job | None]]) -> None:
        self.index.forget(job_id for job_id, job in found if job is None)
        for _, job in found:
            if job is not None and not _matches(job, status):
                assert status is not None  # every record matches "any status"
                self.index.record(job, job.model_copy(update={"status": status}), None)

    def _list_files(self, status: JobStatus | None, limit: int, cursor: str | None) -> list[Job]:
        jobs: list[Job] = []
        for job in self._files(before=cursor):
            if _matches(job, status):
                jobs.append(job)
                if len(jobs) == limit:
                    break
        return jobs

    def _files(self, before: str | None = None) -> Iterator[Job]:
        """Every record, newest first (ids sort by creation time)."""
        for job_id in self._ids():
            if before and job_id >= before:
                continue
            job = self._read_file(job_id)
            if job is not None:
                yield job

    def _ids(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted((p.stem for p in self.dir.glob("*.json") if valid_job_id(p.stem)),
                      reverse=True)  # fmt: skip

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

    def _claim_path(self, digest: str) -> Path:
        return self.dir / "idempotency" / f"{digest}.json"

    def _path(self, job_id: str) -> Path:
        return self.dir / f"{job_id}.json"

    def _write_file(self, job: Job) -> None:
        with _storing(f"job {job.id}"):
            atomic_write(self._path(job.id), job.model_dump_json(indent=2))

    def _read_file(self, job_id: str) -> Job | None:
        path = self._path(job_id)
        try:
            return Job.model_validate_json(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            # writes are whole, so only a hand edit or a foreign file gets here: one record
            # that cannot be read must not stop every listing and reconciler pass
            log.error("job record %s is unreadable (%s); moved aside", path, exc)
            path.replace(path.with_suffix(".unreadable"))
            return None


def _matches(job: Job, status: JobStatus | None) -> bool:
    return status is None or job.status is status


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


@contextmanager
def _storing(what: str) -> Iterator[None]:
    """A failed write surfaces as the store's error, a full disk as ``StorageFull``."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(f"job store full: cannot write {what}: {exc}") from exc
        raise StoreUnavailable(f"job store unwritable: {what}: {exc}") from exc
