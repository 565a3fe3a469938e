"""The reconciler hands on what nothing takes care of, and only that: runs whose lease
lapsed for a whole lease period, queued jobs whose message never went or was lost, PR steps
lost with their worker, and everything queued when the index (Redis) was lost."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from agenticore.config import Settings
from agenticore.connections import redis_client
from agenticore.jobs import JobStore
from agenticore.locks import exclusive
from agenticore.models import Job, JobSpec, JobStatus, PrStatus, utcnow
from agenticore.permits import Limit, PermitGate, job_scope
from agenticore.reconciler import Reconciler, pr_step_key

LEASE = 1.0


@pytest.fixture(params=["redis", "embedded"])
def lease_settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Settings:
    settings = make_settings(request.param, lease_seconds=LEASE, max_attempts=2)
    JobStore(settings).rebuild_index()  # a fleet that has run before: its index is complete
    return settings


class Sent(list[str]):
    """A ``requeue`` that records what it sent and marks it sent, as ``enqueue`` does."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.store = JobStore(settings)

    def __call__(self, job: Job) -> None:
        self.append(job.id)
        self.store.mark_sent(job.id)


def running_job(
    settings: Settings, attempts: int = 1, age: float = 5, auto_pr: bool = False
) -> Job:
    store = JobStore(settings)
    repo = {"repo_url": "https://github.com/acme/widgets", "auto_pr": True} if auto_pr else {}
    job = store.create(Job.from_spec(JobSpec(task="x", **repo)))
    started = utcnow() - timedelta(seconds=age)
    store.mark_sent(job.id)
    return store.update(job.id, status=JobStatus.RUNNING, attempts=attempts, started_at=started)


def passes_a_lease_apart(reconciler: Reconciler) -> tuple[list[str], list[str]]:
    first = reconciler.run_once()
    time.sleep(LEASE + 0.1)
    return first, reconciler.run_once()


def test_given_a_running_job_without_a_lease_for_a_lease_period_then_it_is_requeued(
    lease_settings: Settings,
) -> None:
    sent = Sent(lease_settings)
    job = running_job(lease_settings)

    first, second = passes_a_lease_apart(Reconciler(lease_settings, sent))

    stored = JobStore(lease_settings).get(job.id)
    assert first == [], "one look without a lease is not enough: its holder may take it back"
    assert second == sent == [job.id]
    assert stored.status is JobStatus.QUEUED
    assert (stored.error or "").startswith("lease_expired")


def test_given_a_holder_that_takes_its_lease_back_in_time_then_the_job_is_left_alone(
    lease_settings: Settings,
) -> None:
    job = running_job(lease_settings)
    reconciler = Reconciler(lease_settings, Sent(lease_settings))

    assert reconciler.run_once() == []
    PermitGate(lease_settings, lease_seconds=30).try_acquire("w", [Limit(job_scope(job.id), 1)])
    time.sleep(LEASE + 0.1)

    assert reconciler.run_once() == []
    assert JobStore(lease_settings).get(job.id).status is JobStatus.RUNNING


def test_given_a_running_job_with_a_live_lease_then_it_is_left_alone(
    lease_settings: Settings,
) -> None:
    job = running_job(lease_settings)
    PermitGate(lease_settings, lease_seconds=30).try_acquire("w", [Limit(job_scope(job.id), 1)])

    assert passes_a_lease_apart(Reconciler(lease_settings, print)) == ([], [])
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
    sent = Sent(lease_settings)
    job = running_job(lease_settings, attempts=2)
    with_pr = running_job(lease_settings, attempts=2, auto_pr=True)

    passes_a_lease_apart(Reconciler(lease_settings, sent))

    assert sent == []
    assert JobStore(lease_settings).get(job.id).status is JobStatus.DEAD
    assert JobStore(lease_settings).get(job.id).pr_status is None, "no PR step was to follow"
    dead_with_pr = JobStore(lease_settings).get(with_pr.id)
    assert dead_with_pr.status is JobStatus.DEAD
    assert dead_with_pr.pr_status is PrStatus.SKIPPED, "no run's task ends to settle its step"


def test_given_another_leader_then_this_pass_does_nothing(lease_settings: Settings) -> None:
    job = running_job(lease_settings)

    with exclusive(lease_settings, "reconciler", hold=10, wait=1):
        handed = passes_a_lease_apart(Reconciler(lease_settings, print))

    assert handed == ([], [])
    assert JobStore(lease_settings).get(job.id).status is JobStatus.RUNNING


def test_given_a_job_stored_but_never_sent_then_it_is_sent_once_its_watch_is_due(
    lease_settings: Settings,
) -> None:
    store = JobStore(lease_settings)
    lost = store.create(Job.from_spec(JobSpec(task="the API died before sending it")))
    waiting = store.create(Job.from_spec(JobSpec(task="sent, waiting in a long queue")))
    store.mark_sent(waiting.id)
    sent = Sent(lease_settings)
    reconciler = Reconciler(lease_settings, sent)

    first, second = passes_a_lease_apart(reconciler)
    third = reconciler.run_once()

    assert first == [], "a job between storing and sending is given a lease period"
    assert second == sent == [lost.id]
    assert third == [], "sent once: no longer watched"


def test_given_a_deferred_job_then_it_is_not_sent_again_while_its_countdown_runs(
    lease_settings: Settings,
) -> None:
    store = JobStore(lease_settings)
    deferred = store.create(Job.from_spec(JobSpec(task="waits for a permit")))
    store.defer(deferred.id, 30)  # a worker holds its countdown in memory
    sent = Sent(lease_settings)

    assert passes_a_lease_apart(Reconciler(lease_settings, sent)) == ([], [])
    store.defer(deferred.id, 0)  # the countdown ran out long ago and nobody ran it
    time.sleep(LEASE + 0.1)
    assert Reconciler(lease_settings, sent).run_once() == [deferred.id]


def test_given_the_index_lost_then_it_is_rebuilt_and_queued_jobs_are_sent_again(
    lease_settings: Settings,
) -> None:
    store = JobStore(lease_settings)
    queued = [store.create(Job.from_spec(JobSpec(task=f"q{n}"))) for n in range(3)]
    for job in queued:
        store.mark_sent(job.id)
    running = running_job(lease_settings)
    done = store.create(Job.from_spec(JobSpec(task="done")))
    store.update(done.id, status=JobStatus.CANCELLED)
    lose_index(lease_settings)
    sent = Sent(lease_settings)

    handed = Reconciler(lease_settings, sent).run_once()

    assert sorted(handed) == sorted(sent) == sorted(job.id for job in queued)
    assert store.index_ready()
    listed = {status: [j.id for j in store.list_jobs(status=status)[0]] for status in JobStatus}
    assert sorted(listed[JobStatus.QUEUED]) == sorted(job.id for job in queued)
    assert listed[JobStatus.RUNNING] == [running.id]
    assert listed[JobStatus.CANCELLED] == [done.id]


def test_given_an_index_a_failed_write_left_behind_then_it_is_rebuilt_without_resending(
    lease_settings: Settings,
) -> None:
    store = JobStore(lease_settings)
    job = store.create(Job.from_spec(JobSpec(task="q")))
    store.mark_sent(job.id)
    (lease_settings.jobs_dir / "index.dirty").touch()  # what a failed index write leaves
    sent = Sent(lease_settings)

    assert Reconciler(lease_settings, sent).run_once() == []
    assert sent == [] and store.index_ready()


def lose_index(settings: Settings) -> None:
    """Redis restarted empty (its keys under the prefix are gone), or the SQLite file."""
    client = redis_client(settings)
    if client is None:
        (settings.jobs_dir / "index.sqlite3").unlink()
        return
    for key in client.scan_iter(f"{settings.redis_key_prefix}:*"):
        client.delete(key)


def pending_pr_step(settings: Settings, due_ago: float = 5, retry_in: float | None = None) -> Job:
    store = JobStore(settings)
    job = store.create(Job.from_spec(JobSpec(task="x", repo_url="https://github.com/a/b")))
    store.mark_sent(job.id)
    due = (
        utcnow() + timedelta(seconds=retry_in)
        if retry_in
        else utcnow() - timedelta(seconds=due_ago)
    )
    store.update(job.id, status=JobStatus.RUNNING, attempts=1)
    return store.update(job.id, status=JobStatus.SUCCEEDED, pr_status=PrStatus.PENDING,
                        pr_due_at=due)  # fmt: skip


def pr_reconciler(settings: Settings, sent: list[str]) -> Reconciler:
    return Reconciler(settings, print, resend_pr_step=lambda job: sent.append(job.id))


def test_given_a_pr_step_lost_with_its_worker_then_it_is_sent_again_once(
    lease_settings: Settings,
) -> None:
    lost = pending_pr_step(lease_settings)
    sent: list[str] = []
    reconciler = pr_reconciler(lease_settings, sent)

    first, second = reconciler.run_once(), reconciler.run_once()

    assert first == [pr_step_key(lost.id)] and sent == [lost.id]
    assert second == [], "sent once, then given several lease periods to show up"


def test_given_pr_steps_that_are_fine_then_none_is_sent_again(lease_settings: Settings) -> None:
    running = pending_pr_step(lease_settings)
    PermitGate(lease_settings, lease_seconds=30).try_acquire("w", [Limit(job_scope(running.id), 1)])
    pending_pr_step(lease_settings, retry_in=60)  # backing off
    pending_pr_step(lease_settings, due_ago=0)  # fresh
    settled = pending_pr_step(lease_settings)
    JobStore(lease_settings).update(settled.id, pr_status=PrStatus.OPENED)
    sent: list[str] = []
    reconciler = pr_reconciler(lease_settings, sent)

    for _ in range(3):
        reconciler.run_once()

    assert sent == []


def test_given_a_slow_pass_then_the_leader_lock_is_extended_as_it_goes(
    lease_settings: Settings,
) -> None:
    """Each step ends by extending the lock, so a pass longer than the lock's hold keeps
    it; a contender in the meantime finds it taken."""
    contended: list[bool] = []

    def slow_requeue(job: Job) -> None:
        time.sleep(LEASE * 0.7)
        JobStore(lease_settings).mark_sent(job.id)

    def contender() -> list[str]:
        contended.append(Reconciler(lease_settings, print).run_once() == [])
        return []

    store = JobStore(lease_settings)
    for n in range(2):
        store.create(Job.from_spec(JobSpec(task=f"never sent {n}")))
    lose_index(lease_settings)  # every queued job is sent again: the first step is slow
    reconciler = Reconciler(lease_settings, slow_requeue, sweep=contender)

    reconciler.run_once()

    assert contended == [True], "the lock was still held when the sweep step ran"
