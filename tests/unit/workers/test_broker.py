"""Reading the broker: how many jobs wait, at every priority; sending marks a job sent."""

from __future__ import annotations

from datetime import timedelta

from agenticore.config import Settings
from agenticore.jobs import JobStore
from agenticore.models import Job, JobSpec, utcnow
from workers.app import enqueue, make_celery
from workers.broker import queue_depth, queue_depths


def test_given_waiting_jobs_at_every_priority_then_all_count_and_none_is_watched(
    settings: Settings,
) -> None:
    celery = make_celery(settings)
    store = JobStore(settings)
    store.rebuild_index()
    jobs = [
        store.create(Job.from_spec(JobSpec(task="x", priority=level)))
        for level in ("batch", "normal", "interactive")
    ]
    try:
        for job in jobs:
            enqueue(celery, job, store)

        assert queue_depth(celery) == 3
        assert queue_depths(celery) == {"interactive": 1, "normal": 1, "batch": 1}
        assert store.due("watch", utcnow() + timedelta(days=1), 10) == [], "sent: not watched"
    finally:
        celery.close()
