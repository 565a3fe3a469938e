"""How many workers the queue asks for: the number an autoscaler (KEDA) sizes the workers by.

Demand is every job that needs a worker's slot now or soon:

* **waiting**: messages in the broker, every priority list counted (on Redis each priority
  step is a list of its own, so a trigger on one list name sees only that step);
* **in flight**: jobs running, plus queued jobs that sit in no list: deferred with a
  countdown a worker holds unacked, held back by a limit, or about to be sent. A scaler
  that counts lists alone scales in on top of these.

``desired_workers = ceil(demand / jobs_per_worker)``, e.g. 0 jobs give 0 (the autoscaler's
minimum holds the floor) and 37 waiting + 6 running at 3 jobs per worker give
ceil(43 / 3) = 15. Running jobs always count, so scale-in never goes below what holds them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from agenticore.jobs import JobStore
from agenticore.models import JobStatus

__all__ = ["Demand", "read_demand"]


@dataclass(frozen=True)
class Demand:
    waiting: int
    running: int
    held: int  # queued, in no broker list

    @property
    def in_flight(self) -> int:
        return self.running + self.held

    @property
    def total(self) -> int:
        return self.waiting + self.in_flight

    def desired_workers(self, jobs_per_worker: int) -> int:
        return math.ceil(self.total / jobs_per_worker)


def read_demand(store: JobStore, waiting_by_priority: Mapping[str, int]) -> Demand:
    """Demand from the broker's lists (``workers.broker.queue_depths``) and the job index,
    or the records themselves while the index is not ready: with no worker running (scaled
    to zero) nobody builds it, and the autoscaler must still see the first job."""
    waiting = sum(waiting_by_priority.values())
    running, queued = (_count(store, status) for status in (JobStatus.RUNNING, JobStatus.QUEUED))
    # a queued job is in a list or held elsewhere; a list may also hold messages of jobs
    # that ended meanwhile (a cancel), which never makes the held count negative
    return Demand(waiting=waiting, running=running, held=max(0, queued - waiting))


def _count(store: JobStore, status: JobStatus) -> int:
    if store.index_ready():
        return store.index.count(status)
    return sum(1 for _ in store.all_jobs(status))  # read from the files
