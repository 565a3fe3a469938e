"""Reading the broker: which runs and PR steps wait, and how many."""

from __future__ import annotations

from agenticore.config import Settings
from agenticore.models import Job, JobSpec
from agenticore.reconciler import pr_step_key
from workers.app import enqueue, make_celery, send_pr_step
from workers.broker import messages_in_broker, queue_depth
from workers.names import OPEN_PULL_REQUEST, RUN_JOB


def test_given_waiting_jobs_then_the_broker_reports_their_ids_and_count(settings: Settings) -> None:
    celery = make_celery(settings)
    jobs = [
        Job.from_spec(JobSpec(task="x", priority=level))
        for level in ("batch", "normal", "interactive")
    ]
    try:
        for job in jobs:
            enqueue(celery, job)

        assert messages_in_broker(celery).waiting == {job.id for job in jobs}
        assert queue_depth(celery) == 3
    finally:
        celery.close()


def test_given_pr_steps_sent_or_chained_then_the_broker_names_them_by_job(
    settings: Settings,
) -> None:
    celery = make_celery(settings)
    sent, chained = Job.from_spec(JobSpec(task="a")), Job.from_spec(JobSpec(task="b"))
    try:
        send_pr_step(celery, sent)
        # what a user's chain leaves behind once its run returned: a task id of its own
        celery.signature(OPEN_PULL_REQUEST, args=(chained.id,)).apply_async()
        celery.signature(RUN_JOB, args=(sent.id,), task_id=sent.id).apply_async()

        waiting = messages_in_broker(celery).waiting

        assert waiting == {pr_step_key(sent.id), pr_step_key(chained.id), sent.id}
    finally:
        celery.close()
