"""The API's only way to the workers: messages by task name, never task bodies."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agenticore.config import Settings
from agenticore.models import Job
from workers.app import enqueue, make_celery

__all__ = ["Dispatcher"]


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celery = make_celery(settings)

    def submit(self, job: Job) -> None:
        enqueue(self.celery, job)

    def cancel(self, job_id: str) -> None:
        self.celery.control.revoke(job_id, terminate=True, signal="SIGTERM")

    def queue_depth(self) -> int:
        """Messages waiting in the job queue (running jobs are not in it)."""
        queue = self.celery.conf.task_default_queue
        if self.settings.redis_url is None:
            folder = Path(self.celery.conf.broker_transport_options["data_folder_in"])
            return sum(1 for name in os.listdir(folder) if name.endswith(f".{queue}.msg"))
        # one list per priority step: "<queue>", "<queue>\x06\x163", ...; the channel's
        # client adds the global key prefix itself
        names = [queue] + [f"{queue}\x06\x16{step}" for step in (3, 6, 9)]
        with self.celery.connection_for_write() as conn:
            client = conn.default_channel.client
            return sum(int(client.llen(name)) for name in names)

    def ping_broker(self, timeout: float = 2.0) -> None:
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)

    def workers(self, timeout: float = 1.0) -> dict[str, int]:
        """Workers that answered, with the number of jobs each is running."""
        replies: dict[str, Any] | None = self.celery.control.inspect(timeout=timeout).active()
        return {name: len(active or []) for name, active in sorted((replies or {}).items())}

    def close(self) -> None:
        self.celery.close()
