"""Task names: the contract between senders (API, reconciler, chains) and the workers."""

from __future__ import annotations

__all__ = ["OPEN_PULL_REQUEST", "RUN_JOB"]

RUN_JOB = "agenticore.run_job"
OPEN_PULL_REQUEST = "agenticore.open_pull_request"
