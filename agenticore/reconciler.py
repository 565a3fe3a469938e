"""Finds running jobs whose worker vanished and hands them on.

A running job holds a heartbeat lease (the ``job:<id>`` permit, renewed every third of
``LEASE_SECONDS``). When a worker is SIGKILLed or its node is lost, the lease lapses; the
broker alone would redeliver the job only after ``visibility_timeout``, which must exceed
the longest run (hours). The reconciler closes that gap: one leader at a time (a lock with
a TTL) looks at the running jobs, and each one without a live lease is re-queued, or dead-
lettered once its attempts are spent.

It also looks for queued jobs that have no message anywhere in the broker, waiting or held
by a worker: a worker that died while holding a deferred job's countdown, or an API that
died between storing a job and enqueueing it. A job missing in two passes in a row is
enqueued again. A duplicate message is harmless: the job's lease lets one delivery run it
and the others find it running or finished.

Pending PR steps get the same care. One is lost when its worker died mid-step (its message
then sits unacknowledged with the dead worker until ``visibility_timeout``, or is gone on the
embedded broker) or before sending it. A pending step that holds no lease, is past its
``pr_due_at`` by a lease period and has no message waiting in two passes in a row is sent
again; the step is idempotent, so a duplicate finds the PR and settles at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from agenticore.config import Settings
from agenticore.errors import InvalidTransition, LockTimeout
from agenticore.jobs import JobStore
from agenticore.locks import exclusive
from agenticore.models import Job, JobStatus, utcnow
from agenticore.permits import PermitGate, job_scope

__all__ = ["BrokerView", "Reconciler", "pr_step_key"]

log = logging.getLogger(__name__)


def pr_step_key(job_id: str) -> str:
    """How a job's PR step message shows in a ``BrokerView``."""
    return f"pr:{job_id}"


@dataclass(frozen=True)
class BrokerView:
    """Messages in the broker: job ids for runs, ``pr_step_key``s for PR steps."""

    waiting: set[str] = field(default_factory=set)  # in a queue, not yet taken
    held: set[str] = field(default_factory=set)  # taken by a worker, not acknowledged


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        requeue: Callable[[Job], object],
        *,
        in_broker: Callable[[], BrokerView] | None = None,
        resend_pr_step: Callable[[Job], object] | None = None,
        store: JobStore | None = None,
    ) -> None:
        """``in_broker`` shows the broker's messages; without it queued jobs and PR steps
        are not checked."""
        self.settings = settings
        self.requeue = requeue
        self.in_broker = in_broker
        self.resend_pr_step = resend_pr_step
        self.store = store or JobStore(settings)
        self.gate = PermitGate(settings, lease_seconds=settings.lease_seconds)
        # what was missing from the broker last pass: only twice in a row counts as lost
        self._unsent: set[str] = set()
        self._unsent_pr_steps: set[str] = set()

    def run_once(self) -> list[str]:
        """One pass, if this process wins the leader lock; returns the jobs it handed on."""
        try:
            with exclusive(self.settings, "reconciler", hold=self.settings.lease_seconds, wait=0):
                handed = [job.id for job in self._lost_jobs() if self._hand_on(job)]
                if self.in_broker is None:
                    return handed
                broker = self.in_broker()
                return handed + self._resend_unsent(broker) + self._resend_lost_pr_steps(broker)
        except LockTimeout:
            return []  # another worker leads this round

    def _resend_unsent(self, broker: BrokerView) -> list[str]:
        queued = list(self.store.all_jobs(JobStatus.QUEUED))
        missing = {job.id for job in queued} - broker.waiting - broker.held
        resent = [job for job in queued if job.id in missing & self._unsent]
        for job in resent:
            self.requeue(job)
        self._unsent = missing - {job.id for job in resent}
        return [job.id for job in resent]

    def _resend_lost_pr_steps(self, broker: BrokerView) -> list[str]:
        if self.resend_pr_step is None:
            return []
        # a held message may belong to a dead worker, so only a waiting one counts
        overdue = [job for job in self._overdue_pr_steps()
                   if pr_step_key(job.id) not in broker.waiting]  # fmt: skip
        resent = [job for job in overdue if job.id in self._unsent_pr_steps]
        for job in resent:
            self.resend_pr_step(job)
        self._unsent_pr_steps = {job.id for job in overdue} - {job.id for job in resent}
        return [pr_step_key(job.id) for job in resent]

    def _overdue_pr_steps(self) -> Iterator[Job]:
        overdue = utcnow() - timedelta(seconds=self.settings.lease_seconds)
        for job in self.store.pending_pr_steps():
            due = job.pr_due_at or job.finished_at or job.created_at
            if due < overdue and self.gate.in_use(job_scope(job.id)) == 0:
                yield job

    def _lost_jobs(self) -> Iterator[Job]:
        # a job started moments ago may not have written its first heartbeat everywhere yet
        settled = utcnow() - timedelta(seconds=self.settings.lease_seconds)
        for job in self.store.all_jobs(JobStatus.RUNNING):
            started = job.started_at or job.created_at
            if started < settled and self.gate.in_use(job_scope(job.id)) == 0:
                yield job

    def _hand_on(self, job: Job) -> bool:
        spent = not job.attempts_left(self.settings.max_attempts)
        error = f"lease_expired: attempt {job.attempts} lost its worker"
        try:
            if spent:
                self.store.update(job.id, status=JobStatus.DEAD, finished_at=utcnow(), error=error)
                return True
            job = self.store.update(job.id, status=JobStatus.QUEUED, agent_pid=None, error=error)
        except InvalidTransition:
            return False  # it finished while we looked
        self.requeue(job)
        return True
