"""Finds jobs that nothing is taking care of and hands them on. One leader at a time (a
lock with a TTL, extended while the pass runs) runs a pass every half lease:

1. **A lost index.** When Redis came back empty (no persistence, failover, flush) the job
   indexes are rebuilt from the job files, and every queued job is sent again: its message
   was in the same Redis. An index a failed write left behind is rebuilt without resending.
2. **Lost runs.** A running job holds a heartbeat lease (the ``job:<id>`` permit, renewed
   every third of ``LEASE_SECONDS``). When its worker is SIGKILLed or its node is lost the
   lease lapses; the broker alone would redeliver only after ``visibility_timeout``, which
   must exceed the longest run (hours). A job seen without a lease for a whole lease period
   is re-queued, or dead-lettered once its attempts are spent. The period lets a holder
   whose renewals failed (Redis paused, failed over) take its lease back first; the hand-on
   itself re-checks the lease under the job's lock, the lock the holder takes its lease
   back under, so exactly one of them wins.
3. **Lost messages.** A queued job is watched from when it is stored until its message is
   sent (an API that died in between), and while a countdown holds it (a deferred job,
   whose message sits in a worker's memory on the embedded broker). One still queued, with
   no lease, once its watch time is past, is sent again.
4. **Lost PR steps.** One is lost when its worker died mid-step or before sending it. A
   pending step a lease period past its ``pr_due_at`` with no lease is sent again, then
   looked at again only after ``_PR_RESEND_LEASES`` lease periods.
5. **Retention** (``agenticore.retention``): finished jobs past ``RETENTION_DAYS`` go.

Each step reads only the jobs that need it, through the index, a bounded number per pass:
its cost follows the running jobs and those due, never the length of the queue or of the
history. A duplicate message is harmless: the job's lease lets one delivery run it and the
others find it running or finished.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from agenticore.config import Settings
from agenticore.errors import LockTimeout
from agenticore.jobs import JobStore
from agenticore.locks import exclusive
from agenticore.models import Job, JobStatus, PrStatus, pr_fields_after_run, utcnow
from agenticore.permits import PermitGate, job_scope

__all__ = ["Reconciler", "pr_step_key"]

log = logging.getLogger(__name__)

BATCH = 100  # due jobs looked at per step and pass; the rest wait for the next pass
_PR_RESEND_LEASES = 10


def pr_step_key(job_id: str) -> str:
    """How a resent PR step shows among the ids a pass hands on."""
    return f"pr:{job_id}"


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        requeue: Callable[[Job], object],
        *,
        resend_pr_step: Callable[[Job], object] | None = None,
        sweep: Callable[[], list[str]] | None = None,
        store: JobStore | None = None,
    ) -> None:
        """``requeue`` sends a queued job's message (and marks it sent); ``sweep`` removes
        one batch of jobs past retention and returns their ids."""
        self.settings = settings
        self.requeue = requeue
        self.resend_pr_step = resend_pr_step
        self.sweep = sweep
        self.store = store or JobStore(settings)
        self.gate = PermitGate(settings, lease_seconds=settings.lease_seconds)
        # running jobs seen without a lease, and since when (monotonic seconds)
        self._unleased: dict[str, float] = {}

    def run_once(self) -> list[str]:
        """One pass, if this process wins the leader lock; returns the jobs it handed on
        (PR steps as ``pr_step_key``). Swept jobs are logged, not returned."""
        steps: list[Callable[[], list[str]]] = [
            self._recover_index,
            self._hand_on_lost_runs,
            self._resend_watched,
            self._resend_lost_pr_steps,
        ]
        handed: list[str] = []
        lease = self.settings.lease_seconds
        try:
            with (
                exclusive(self.settings, "reconciler", hold=lease, wait=0) as leader,
                leader.extended(every=lease / 3),
            ):
                for step in steps:
                    handed += step()
                    if leader.lost.is_set():
                        log.warning("reconciler lost its leader lock mid-pass; stopping")
                        return handed
                if self.sweep is not None and (swept := self.sweep()):
                    log.info("retention removed %d finished jobs", len(swept))
        except LockTimeout:
            return []  # another worker leads this round
        return handed

    def _recover_index(self) -> list[str]:
        if self.store.index_ready():
            return []
        lost = not self.store.index_built()
        queued = self.store.rebuild_index()
        if not lost:
            return []
        for job in queued:
            self.requeue(job)
        return [job.id for job in queued]

    def _hand_on_lost_runs(self) -> list[str]:
        settled = utcnow() - timedelta(seconds=self.settings.lease_seconds)
        now = time.monotonic()
        unleased: dict[str, float] = {}
        handed = []
        for job in self.store.all_jobs(JobStatus.RUNNING):
            # a job started moments ago may not hold its lease yet
            if (job.started_at or job.created_at) > settled or self._leased(job):
                continue
            since = unleased[job.id] = self._unleased.get(job.id, now)
            if now - since >= self.settings.lease_seconds and self._hand_on(job):
                handed.append(job.id)
                del unleased[job.id]
        self._unleased = unleased
        return handed

    def _hand_on(self, job: Job) -> bool:
        """Re-queues (or dead-letters) ``job`` if it is still the attempt that was seen and
        still holds no lease, both judged under the job's lock."""
        spent = not job.attempts_left(self.settings.max_attempts)
        error = f"lease_expired: attempt {job.attempts} lost its worker"
        with self.store.locked(job.id):
            current = self.store.get(job.id)
            if current.status is not JobStatus.RUNNING or current.attempts != job.attempts:
                return False  # it finished, or another attempt runs it now
            if self._leased(current):
                return False  # its holder took the lease back
            if spent:
                # an auto_pr job's step is settled here: no task of its run ends to do it
                settled = pr_fields_after_run(JobStatus.DEAD) if current.auto_pr else {}
                self.store.update(job.id, status=JobStatus.DEAD, finished_at=utcnow(),
                                  error=error, held=True, **settled)  # fmt: skip
                return True
            requeued = self.store.update(job.id, status=JobStatus.QUEUED, agent_pid=None,
                                         error=error, held=True)  # fmt: skip
        self.requeue(requeued)
        return True

    def _resend_watched(self) -> list[str]:
        resent = []
        later = utcnow() + timedelta(seconds=self.settings.lease_seconds)
        for job in self.store.due("watch", utcnow(), BATCH):
            if job.status is not JobStatus.QUEUED:
                self.store.reschedule("watch", job.id, None)
            elif self._leased(job):  # a delivery has it; look again later
                self.store.reschedule("watch", job.id, later)
            else:
                self.requeue(job)
                resent.append(job.id)
        return resent

    def _resend_lost_pr_steps(self) -> list[str]:
        if self.resend_pr_step is None:
            return []
        lease = timedelta(seconds=self.settings.lease_seconds)
        again = utcnow() + _PR_RESEND_LEASES * lease
        resent = []
        for job in self.store.due("pr", utcnow() - lease, BATCH):
            if job.pr_status is not PrStatus.PENDING:
                self.store.reschedule("pr", job.id, None)  # settled since the index said so
                continue
            if not self._leased(job):
                self.resend_pr_step(job)
                resent.append(pr_step_key(job.id))
            self.store.reschedule("pr", job.id, again)
        return resent

    def _leased(self, job: Job) -> bool:
        return self.gate.in_use(job_scope(job.id)) > 0
