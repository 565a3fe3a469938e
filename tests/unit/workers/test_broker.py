"""Reading the broker: which jobs wait, and how many."""

from __future__ import annotations

from agenticore.config import Settings
from agenticore.models import Job, JobSpec
from workers.app import enqueue, make_celery
from workers.broker import job_ids_in_broker, queue_depth


def test_given_waiting_jobs_then_the_broker_reports_their_ids_and_count(settings: Settings) -> None:
    celery = make_celery(settings)
    jobs = [
        Job.from_spec(JobSpec(task="x", priority=level))
        for level in ("batch", "normal", "interactive")
    ]
    try:
        for job in jobs:
            enqueue(celery, job)

        assert job_ids_in_broker(celery) == {job.id for job in jobs}
        assert queue_depth(celery) == 3
    finally:
        celery.close()
