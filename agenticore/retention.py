"""Retention: finished jobs do not pile up forever.

Past ``RETENTION_DAYS`` after it finished, a job's record, folder (transcripts, logs),
idempotency claim, index entries, task result, agent home and any kept worktree are
removed, and its branch in the repo cache too when the work is safe elsewhere (merged or
pushed; see ``RepoCache.discard_branch``). The reconciler's leader sweeps one batch per
pass, oldest first, so a pass costs the same however long the history is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from agenticore.config import Settings
from agenticore.errors import RepoError
from agenticore.files import remove_path
from agenticore.jobs import JobStore
from agenticore.models import Job, PrStatus, utcnow
from agenticore.repos import RepoCache

__all__ = ["Retention"]

log = logging.getLogger(__name__)

BATCH = 100


class Retention:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        *,
        forget_result: Callable[[str], object] | None = None,
        repos: RepoCache | None = None,
    ) -> None:
        """``forget_result`` drops a job's task result from the result backend."""
        self.settings = settings
        self.store = store
        self.forget_result = forget_result
        self.repos = repos or RepoCache(settings)

    def sweep(self) -> list[str]:
        """Removes one batch of jobs past retention; returns their ids."""
        if not self.settings.retention_days:
            return []
        cutoff = utcnow() - timedelta(days=self.settings.retention_days)
        swept = []
        for job in self.store.due("finished", cutoff, BATCH):
            if job.pr_status is PrStatus.PENDING:
                # its PR step still needs the record (the reconciler resends it): next period
                self.store.reschedule("finished", job.id, utcnow())
                continue
            if self.remove(job):
                swept.append(job.id)
        return swept

    def remove(self, job: Job) -> bool:
        """Removes ``job`` unless it changed since it was read (a retry queued it again)."""
        with self.store.locked(job.id):
            current = self.store.find(job.id)
            if (
                current is None
                or current.status is not job.status
                or (current.finished_at != job.finished_at)
            ):
                return False
            self._remove(current)
        return True

    def _remove(self, job: Job) -> None:
        try:
            self.repos.remove_workspace(job)  # a kept worktree: its commits are adopted first
            self.repos.discard_branch(job)
        except RepoError as exc:
            log.warning("job %s: repo cleanup failed (%s); its branch stays", job.id, exc)
        remove_path(self.settings.agent_homes_dir / job.id)
        if self.forget_result is not None:
            self.forget_result(job.id)
        self.store.delete(job.id)
