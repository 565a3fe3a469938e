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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta

from agenticore.config import Settings
from agenticore.errors import InvalidTransition, LockTimeout
from agenticore.jobs import JobStore
from agenticore.locks import exclusive
from agenticore.models import Job, JobStatus, utcnow
from agenticore.permits import PermitGate
from agenticore.runner import job_scope

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        requeue: Callable[[Job], object],
        *,
        in_broker: Callable[[], set[str]] | None = None,
        store: JobStore | None = None,
    ) -> None:
        """``in_broker`` lists the job ids that have a message in the broker; without it
        queued jobs are not checked."""
        self.settings = settings
        self.requeue = requeue
        self.in_broker = in_broker
        self.store = store or JobStore(settings)
        self.gate = PermitGate(settings, lease_seconds=settings.lease_seconds)
        self._unsent: set[str] = set()  # queued jobs missing from the broker last pass

    def run_once(self) -> list[str]:
        """One pass, if this process wins the leader lock; returns the jobs it handed on."""
        try:
            with exclusive(self.settings, "reconciler", hold=self.settings.lease_seconds, wait=0):
                handed = [job.id for job in self._lost_jobs() if self._hand_on(job)]
                return handed + self._resend_unsent()
        except LockTimeout:
            return []  # another worker leads this round

    def _resend_unsent(self) -> list[str]:
        if self.in_broker is None:
            return []
        queued = list(self.store.all_jobs(JobStatus.QUEUED))
        present = self.in_broker()
        missing = {job.id for job in queued} - present
        resent = [job for job in queued if job.id in missing & self._unsent]
        for job in resent:
            self.requeue(job)
        self._unsent = missing - {job.id for job in resent}
        return [job.id for job in resent]

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
