"""Indexes over the job records: which jobs are in which status, which need watching.

The records themselves are the JSON files (``JobStore``); an index only says where to look,
so it can be lost and rebuilt from the files at any time. Two kinds of entries:

* Listings, newest first: every job, and the jobs in each status.
* Schedules, by time: queued jobs whose message may be lost (``watch``: just created, or
  deferred with a countdown a worker holds in memory), PR steps not yet settled
  (``pr``: due at ``pr_due_at``), finished jobs (``finished``: for retention).

The reconciler reads schedules by due time with a limit, so its cost per pass follows the
jobs that need it, never the length of the queue or the history.

With Redis, each is a sorted set (``agenticore.keys``); embedded, a SQLite file beside the
job records. ``built()`` says whether the index is complete: false for a Redis that came
back empty (no persistence, failover, flush) or an index file that is gone.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Protocol

import redis

from agenticore.files import make_dirs
from agenticore.keys import KeySchema
from agenticore.models import TERMINAL, Job, JobStatus, PrStatus

__all__ = ["JobIndex", "RedisIndex", "Schedule", "SqliteIndex"]

Schedule = Literal["watch", "pr", "finished"]


class JobIndex(Protocol):
    def record(self, job: Job, previous: Job | None, watch_at: float | None) -> None:
        """Puts ``job`` where its fields say; ``watch_at`` (unix s) schedules a queued job
        to be looked at (None: leave its schedule as it is)."""

    def forget(self, job_ids: Iterable[str]) -> None: ...

    def page(self, status: JobStatus | None, limit: int, before: str | None) -> list[str]:
        """Ids, newest first, older than ``before``."""

    def due(self, schedule: Schedule, until: float, limit: int) -> list[str]:
        """Ids scheduled at or before ``until``, earliest first."""

    def schedule(self, schedule: Schedule, job_id: str, at: float | None) -> None:
        """(Re)schedules one entry; None removes it."""

    def count(self, status: JobStatus) -> int: ...

    def oldest(self, status: JobStatus, limit: int) -> list[str]:
        """Ids in ``status``, oldest first (ids sort by creation time)."""

    def built(self) -> bool: ...

    def reset(self) -> None:
        """Empties the index, which is then not built until ``mark_built``."""

    def mark_built(self) -> None: ...


def _pr_due(job: Job) -> float | None:
    if job.pr_status is not PrStatus.PENDING:
        return None
    due = job.pr_due_at or job.finished_at or job.created_at
    return due.timestamp()


def _finished(job: Job) -> float | None:
    if job.status not in TERMINAL:
        return None
    return (job.finished_at or job.created_at).timestamp()


class RedisIndex:
    def __init__(self, client: redis.Redis, keys: KeySchema) -> None:
        self.client = client
        self.keys = keys

    def record(self, job: Job, previous: Job | None, watch_at: float | None) -> None:
        keys = self.keys
        pipe = self.client.pipeline(transaction=True)
        pipe.zadd(keys.jobs_index(), {job.id: 0})
        # unknown before (new, or re-recorded by a rebuild): out of every other status
        was = [previous.status] if previous is not None else list(JobStatus)
        for status in was:
            if status is not job.status:
                pipe.zrem(keys.jobs_by_status(status.value), job.id)
        pipe.zadd(keys.jobs_by_status(job.status.value), {job.id: 0})
        self._set(pipe, "pr", job.id, _pr_due(job))
        self._set(pipe, "finished", job.id, _finished(job))
        if job.status is not JobStatus.QUEUED:
            pipe.zrem(keys.schedule("watch"), job.id)
        elif watch_at is not None:
            pipe.zadd(keys.schedule("watch"), {job.id: watch_at})
        pipe.execute()

    def forget(self, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        if not ids:
            return
        pipe = self.client.pipeline(transaction=True)
        for name in self._all_sets():
            pipe.zrem(name, *ids)
        pipe.execute()

    def page(self, status: JobStatus | None, limit: int, before: str | None) -> list[str]:
        name = self.keys.jobs_by_status(status.value) if status else self.keys.jobs_index()
        upper = f"({before}" if before else "+"
        ids: list[str] = self.client.zrevrangebylex(name, upper, "-", start=0, num=limit)  # type: ignore[assignment]
        return ids

    def due(self, schedule: Schedule, until: float, limit: int) -> list[str]:
        ids: list[str] = self.client.zrangebyscore(  # type: ignore[assignment]
            self.keys.schedule(schedule), "-inf", until, start=0, num=limit
        )
        return ids

    def schedule(self, schedule: Schedule, job_id: str, at: float | None) -> None:
        pipe = self.client.pipeline(transaction=False)
        self._set(pipe, schedule, job_id, at)
        pipe.execute()

    def count(self, status: JobStatus) -> int:
        return int(self.client.zcard(self.keys.jobs_by_status(status.value)))

    def oldest(self, status: JobStatus, limit: int) -> list[str]:
        name = self.keys.jobs_by_status(status.value)
        ids: list[str] = self.client.zrangebylex(name, "-", "+", start=0, num=limit)  # type: ignore[assignment]
        return ids

    def built(self) -> bool:
        return bool(self.client.exists(self.keys.index_built()))

    def reset(self) -> None:
        self.client.delete(self.keys.index_built(), *self._all_sets())

    def mark_built(self) -> None:
        self.client.set(self.keys.index_built(), str(time.time()))

    def _set(
        self, pipe: redis.client.Pipeline, schedule: Schedule, job_id: str, at: float | None
    ) -> None:
        if at is None:
            pipe.zrem(self.keys.schedule(schedule), job_id)
        else:
            pipe.zadd(self.keys.schedule(schedule), {job_id: at})

    def _all_sets(self) -> list[str]:
        statuses = [self.keys.jobs_by_status(status.value) for status in JobStatus]
        schedules = [self.keys.schedule(name) for name in ("watch", "pr", "finished")]
        return [self.keys.jobs_index(), *statuses, *schedules]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    watch REAL,
    pr REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, id);
CREATE INDEX IF NOT EXISTS jobs_watch ON jobs (watch) WHERE watch IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_pr ON jobs (pr) WHERE pr IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished) WHERE finished IS NOT NULL;
CREATE TABLE IF NOT EXISTS built (at REAL NOT NULL);
"""


class SqliteIndex:
    """One host's index (embedded mode): SQLite's own locking serialises the processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def record(self, job: Job, previous: Job | None, watch_at: float | None) -> None:
        watch = None if job.status is not JobStatus.QUEUED else watch_at
        with self._db() as db:
            db.execute(
                "INSERT INTO jobs (id, status, watch, pr, finished) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET status = excluded.status, pr = excluded.pr, "
                "finished = excluded.finished, watch = CASE WHEN excluded.status != 'queued' "
                "THEN NULL ELSE coalesce(excluded.watch, jobs.watch) END",
                (job.id, job.status.value, watch, _pr_due(job), _finished(job)),
            )

    def forget(self, job_ids: Iterable[str]) -> None:
        with self._db() as db:
            db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in job_ids])

    def page(self, status: JobStatus | None, limit: int, before: str | None) -> list[str]:
        where, args = ["id < ?"] if before else [], [before] if before else []
        if status is not None:
            where.append("status = ?")
            args.append(status.value)
        sql = "SELECT id FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        with self._db() as db:
            rows = db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [row[0] for row in rows]

    def due(self, schedule: Schedule, until: float, limit: int) -> list[str]:
        column = _column(schedule)
        with self._db() as db:
            rows = db.execute(
                f"SELECT id FROM jobs WHERE {column} <= ? ORDER BY {column} LIMIT ?",
                (until, limit),
            ).fetchall()
        return [row[0] for row in rows]

    def schedule(self, schedule: Schedule, job_id: str, at: float | None) -> None:
        with self._db() as db:
            db.execute(f"UPDATE jobs SET {_column(schedule)} = ? WHERE id = ?", (at, job_id))

    def count(self, status: JobStatus) -> int:
        with self._db() as db:
            row = db.execute("SELECT count(*) FROM jobs WHERE status = ?", (status.value,))
            return int(row.fetchone()[0])

    def oldest(self, status: JobStatus, limit: int) -> list[str]:
        with self._db() as db:
            rows = db.execute(
                "SELECT id FROM jobs WHERE status = ? ORDER BY id LIMIT ?", (status.value, limit)
            ).fetchall()
        return [row[0] for row in rows]

    def built(self) -> bool:
        if not self.path.exists():
            return False
        with self._db() as db:
            return db.execute("SELECT 1 FROM built").fetchone() is not None

    def reset(self) -> None:
        # a new file, not DELETE: the old one may be what is broken (a torn copy, a WAL
        # that outlived its database); other processes reopen by the inode changing
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        with self._db():
            pass

    def mark_built(self) -> None:
        with self._db() as db:
            db.execute("DELETE FROM built")
            db.execute("INSERT INTO built (at) VALUES (?)", (time.time(),))

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, in a transaction committed when the block ends."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        # a connection is never used across fork() (prefork pool processes), nor kept on an
        # index file that was replaced or deleted
        if connection is None or self._local.key != (os.getpid(), _inode(self.path)):
            if connection is not None and self._local.key[0] == os.getpid():
                connection.close()  # one inherited across fork() is only dropped
            if not self.path.exists():  # a WAL without its database would poison the new one
                for suffix in ("-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            make_dirs(self.path.parent)
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
            self._local.connection = connection
            self._local.key = (os.getpid(), _inode(self.path))
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _column(schedule: Schedule) -> str:
    # a fixed set of names, never input: safe to place in the SQL text
    return {"watch": "watch", "pr": "pr", "finished": "finished"}[schedule]
