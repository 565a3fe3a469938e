"""The API's only way to the workers: messages by task name, never task bodies."""

from __future__ import annotations

from typing import Any

from agenticore.config import Settings
from agenticore.jobs import JobStore
from agenticore.models import Job
from workers.app import enqueue, make_celery
from workers.broker import queue_depth, queue_depths

__all__ = ["Dispatcher"]


class Dispatcher:
    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self.celery = make_celery(settings)

    def submit(self, job: Job) -> None:
        enqueue(self.celery, job, self.store)

    def cancel(self, job_id: str) -> None:
        self.celery.control.revoke(job_id, terminate=True, signal="SIGTERM")

    def queue_depth(self) -> int:
        return queue_depth(self.celery)

    def queue_depths(self) -> dict[str, int]:
        """Waiting messages per job priority."""
        return queue_depths(self.celery)

    def ping_broker(self, timeout: float = 2.0) -> None:
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)

    def workers(self, timeout: float = 1.0) -> dict[str, int]:
        """Workers that answered, with the number of jobs each is running."""
        replies: dict[str, Any] | None = self.celery.control.inspect(timeout=timeout).active()
        return {name: len(active or []) for name, active in sorted((replies or {}).items())}

    def close(self) -> None:
        self.celery.close()
