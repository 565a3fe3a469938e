"""The reconciler hands on running jobs whose lease lapsed, and only those."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from agenticore.config import Settings
from agenticore.jobs import JobStore
from agenticore.locks import exclusive
from agenticore.models import Job, JobSpec, JobStatus, PrStatus, utcnow
from agenticore.permits import Limit, PermitGate, job_scope
from agenticore.reconciler import BrokerView, Reconciler, pr_step_key


@pytest.fixture(params=["redis", "embedded"])
def lease_settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Settings:
    return make_settings(request.param, lease_seconds=1, max_attempts=2)


def running_job(settings: Settings, attempts: int = 1, age: float = 5) -> Job:
    store = JobStore(settings)
    job = store.create(Job.from_spec(JobSpec(task="x")))
    started = utcnow() - timedelta(seconds=age)
    return store.update(job.id, status=JobStatus.RUNNING, attempts=attempts, started_at=started)


def test_given_a_running_job_without_a_lease_then_it_is_requeued(lease_settings: Settings) -> None:
    requeued: list[str] = []
    job = running_job(lease_settings)

    handed = Reconciler(lease_settings, lambda job: requeued.append(job.id)).run_once()

    stored = JobStore(lease_settings).get(job.id)
    assert handed == requeued == [job.id]
    assert stored.status is JobStatus.QUEUED
    assert (stored.error or "").startswith("lease_expired")


def test_given_a_running_job_with_a_live_lease_then_it_is_left_alone(
    lease_settings: Settings,
) -> None:
    job = running_job(lease_settings)
    PermitGate(lease_settings, lease_seconds=30).try_acquire("w", [Limit(job_scope(job.id), 1)])

    assert Reconciler(lease_settings, print).run_once() == []
    assert JobStore(lease_settings).get(job.id).status is JobStatus.RUNNING


def test_given_a_job_that_just_started_then_it_gets_a_lease_period_of_grace(
    lease_settings: Settings,
) -> None:
    job = running_job(lease_settings, age=0)

    assert Reconciler(lease_settings, print).run_once() == []
    assert JobStore(lease_settings).get(job.id).status is JobStatus.RUNNING


def test_given_a_lost_job_out_of_attempts_then_it_is_dead_lettered(
    lease_settings: Settings,
) -> None:
    requeued: list[str] = []
    job = running_job(lease_settings, attempts=2)

    Reconciler(lease_settings, lambda job: requeued.append(job.id)).run_once()

    assert requeued == []
    assert JobStore(lease_settings).get(job.id).status is JobStatus.DEAD


def test_given_another_leader_then_this_pass_does_nothing(lease_settings: Settings) -> None:
    job = running_job(lease_settings)

    with exclusive(lease_settings, "reconciler", hold=10, wait=1):
        handed = Reconciler(lease_settings, print).run_once()

    assert handed == []
    assert JobStore(lease_settings).get(job.id).status is JobStatus.RUNNING


def test_given_a_queued_job_missing_from_the_broker_twice_then_it_is_enqueued_again(
    lease_settings: Settings,
) -> None:
    store = JobStore(lease_settings)
    lost = store.create(Job.from_spec(JobSpec(task="lost")))
    waiting = store.create(Job.from_spec(JobSpec(task="waiting")))
    sent: list[str] = []
    reconciler = Reconciler(
        lease_settings,
        lambda job: sent.append(job.id),
        in_broker=lambda: BrokerView(waiting={waiting.id}),
    )

    first = reconciler.run_once()
    second = reconciler.run_once()
    third = reconciler.run_once()

    assert first == [], "one miss may be a job between storing and sending"
    assert second == sent == [lost.id]
    assert third == [], "sent once, then given a pass to show up"


def pending_pr_step(settings: Settings, due_ago: float = 5, retry_in: float | None = None) -> Job:
    store = JobStore(settings)
    job = store.create(Job.from_spec(JobSpec(task="x", repo_url="https://github.com/a/b")))
    due = (
        utcnow() + timedelta(seconds=retry_in)
        if retry_in
        else utcnow() - timedelta(seconds=due_ago)
    )
    store.update(job.id, status=JobStatus.RUNNING, attempts=1)
    return store.update(job.id, status=JobStatus.SUCCEEDED, pr_status=PrStatus.PENDING,
                        pr_due_at=due)  # fmt: skip


def pr_reconciler(settings: Settings, sent: list[str], view: BrokerView) -> Reconciler:
    return Reconciler(settings, print, in_broker=lambda: view,
                      resend_pr_step=lambda job: sent.append(job.id))  # fmt: skip


def test_given_a_pr_step_lost_with_its_worker_then_it_is_sent_again_after_two_passes(
    lease_settings: Settings,
) -> None:
    lost = pending_pr_step(lease_settings)
    sent: list[str] = []
    # the dead worker's message still looks held: only a waiting one would count
    reconciler = pr_reconciler(lease_settings, sent, BrokerView(held={pr_step_key(lost.id)}))

    first, second, third = (reconciler.run_once() for _ in range(3))

    assert first == [] and second == [pr_step_key(lost.id)] and sent == [lost.id]
    assert third == [], "sent once, then given a pass to show up"


def test_given_pr_steps_that_are_fine_then_none_is_sent_again(lease_settings: Settings) -> None:
    waiting = pending_pr_step(lease_settings)
    running = pending_pr_step(lease_settings)
    PermitGate(lease_settings, lease_seconds=30).try_acquire("w", [Limit(job_scope(running.id), 1)])
    backing_off = pending_pr_step(lease_settings, retry_in=60)
    fresh = pending_pr_step(lease_settings, due_ago=0)
    settled = pending_pr_step(lease_settings)
    JobStore(lease_settings).update(settled.id, pr_status=PrStatus.OPENED)
    sent: list[str] = []
    view = BrokerView(waiting={pr_step_key(waiting.id)})
    reconciler = pr_reconciler(lease_settings, sent, view)

    for _ in range(3):
        reconciler.run_once()

    assert sent == [], (waiting, running, backing_off, fresh)
    assert [job.id for job in JobStore(lease_settings).pending_pr_steps()] == [
        fresh.id, backing_off.id, running.id, waiting.id]  # fmt: skip
