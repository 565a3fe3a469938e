"""/scaling against a real Redis: what KEDA would read, with jobs in every place a job can
be (every priority list, running, deferred out of any list)."""

from __future__ import annotations

from pathlib import Path

from agenticore.jobs import JobStore
from agenticore.models import Job, JobSpec, JobStatus, utcnow
from tests.unit.api.conftest import secured_api
from workers.app import enqueue, make_celery


def test_given_queued_running_and_deferred_jobs_then_scaling_counts_them_all(
    tmp_path: Path, redis_url: str
) -> None:
    with secured_api(tmp_path, redis_url, max_parallel_jobs=3) as api:
        store = JobStore(api.settings)
        store.rebuild_index()  # as the reconciler leaves it
        celery = make_celery(api.settings)
        try:
            # given: waiting at every priority, no worker to take them
            for priority in ("interactive", "normal", "normal", "batch"):
                job = store.create(Job.from_spec(JobSpec(task="x", priority=priority)))
                enqueue(celery, job, store)
        finally:
            celery.close()
        for _ in range(2):  # running
            job = store.create(Job.from_spec(JobSpec(task="x")))
            store.update(job.id, status=JobStatus.RUNNING, started_at=utcnow())
        deferred = store.create(Job.from_spec(JobSpec(task="x")))  # a countdown held unacked
        store.defer(deferred.id, 30)

        # when
        body = api.http.get("/scaling").json()
        per_two = api.http.get("/scaling", params={"jobs_per_worker": 2}).json()
        refused = api.http.get("/scaling", headers={"Authorization": ""})

    # then
    assert body["waiting_by_priority"] == {"interactive": 1, "normal": 2, "batch": 1}
    assert (body["waiting"], body["running"], body["held"]) == (4, 2, 1)
    assert body["in_flight"] == 3 and body["demand"] == 7
    assert body["jobs_per_worker"] == 3 and body["desired_workers"] == 3  # ceil(7 / 3)
    assert per_two["desired_workers"] == 4
    assert refused.status_code == 401


def test_given_no_worker_ever_ran_then_scaling_still_sees_the_first_job(
    tmp_path: Path, redis_url: str
) -> None:
    """Scaled to zero, no reconciler has built the index: the records are read instead."""
    with secured_api(tmp_path, redis_url) as api:
        store = JobStore(api.settings)
        store.create(Job.from_spec(JobSpec(task="x")))  # stored, its message not sent yet

        body = api.http.get("/scaling").json()

    assert store.index_ready() is False
    assert body["demand"] == 1 and body["desired_workers"] == 1
