"""The API's only way to the workers: messages by task name, never task bodies."""

from __future__ import annotations

from typing import Any

from agenticore.config import Settings
from workers.app import RUN_JOB, make_celery

__all__ = ["Dispatcher"]


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.celery = make_celery(settings)

    def submit(self, job_id: str) -> None:
        # the job id doubles as the task id, so revoke and result lookups need no mapping
        self.celery.send_task(RUN_JOB, args=[job_id], task_id=job_id)

    def cancel(self, job_id: str) -> None:
        self.celery.control.revoke(job_id, terminate=True, signal="SIGTERM")

    def ping_broker(self, timeout: float = 2.0) -> None:
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)

    def workers(self, timeout: float = 1.0) -> list[str]:
        replies: dict[str, Any] | None = self.celery.control.inspect(timeout=timeout).ping()
        return sorted(replies or {})

    def close(self) -> None:
        self.celery.close()
