"""The fleet's state as Prometheus gauges, read from the store when scraped.

Counts of events (``agenticore.metrics``) live in the processes that make them; the state
of the fleet lives in the store (Redis, or the embedded files), so the API reads it at
scrape time: the queue per priority, the oldest queued job, jobs running, permits in use,
breakers, workers and dead letters. Each read is one or a few store calls, however long
the queue or the history. A store that does not answer leaves its gauges out of that
scrape (logged once until it answers again); it never fails the scrape.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from agenticore.agents import BACKENDS
from agenticore.breaker import BreakerState, CircuitBreaker
from agenticore.config import Settings
from agenticore.errors import LockTimeout, StoreUnavailable
from agenticore.fleet import WorkerRegistry
from agenticore.jobs import JobStore
from agenticore.models import JobStatus
from agenticore.permits import PermitGate
from agenticore.repos import repo_key

__all__ = ["FleetCollector"]

log = logging.getLogger(__name__)

_WORKER_STATES = ("online", "draining", "offline")
_UNANSWERED = (redis.RedisError, sqlite3.Error, OSError, StoreUnavailable, LockTimeout)

QueueDepths = Callable[[], dict[str, int]]


class FleetCollector(Collector):
    """``queue_depths`` reads the broker (``workers.broker.queue_depths``): messages
    waiting per priority name."""

    def __init__(self, settings: Settings, store: JobStore, queue_depths: QueueDepths) -> None:
        self.settings = settings
        self.store = store
        self.queue_depths = queue_depths
        self._failing: set[str] = set()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, read in (
            ("queue", self._queue),
            ("jobs", self._jobs),
            ("permits", self._permits),
            ("breakers", self._breakers),
            ("workers", self._workers),
        ):
            try:
                families = list(read())
            except _UNANSWERED as exc:
                if name not in self._failing:
                    log.warning("metrics: %s gauges left out: the store did not answer (%s)",
                                name, exc)  # fmt: skip
                self._failing.add(name)
                continue
            self._failing.discard(name)
            yield from families

    def _queue(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "agenticore_queue_depth", "Job messages waiting in the broker.", labels=["priority"]
        )
        for priority, count in sorted(self.queue_depths().items()):
            depth.add_metric([priority], count)
        yield depth

    def _jobs(self) -> Iterator[GaugeMetricFamily]:
        index = self.store.index
        running, dead = index.count(JobStatus.RUNNING), index.count(JobStatus.DEAD)
        yield GaugeMetricFamily(
            "agenticore_oldest_queued_job_age_seconds",
            "Age of the oldest job in status queued (in the broker, deferred or watched); "
            "0 if none.",
            value=self._oldest_queued_age(),
        )
        yield GaugeMetricFamily(
            "agenticore_jobs_in_flight", "Jobs in status running.", value=running
        )
        yield GaugeMetricFamily(
            "agenticore_dead_letter_jobs", "Jobs in the dead-letter list (status dead).", value=dead
        )

    def _oldest_queued_age(self) -> float:
        job = self.store.longest_queued()
        return 0.0 if job is None else round(time.time() - job.waiting_since.timestamp(), 3)

    def _permits(self) -> Iterator[GaugeMetricFamily]:
        gate = PermitGate(self.settings)
        family = GaugeMetricFamily(
            "agenticore_permits_in_use", "Live permit leases per scope.", labels=["scope"]
        )
        nodes = [f"node:{r.name}" for r in WorkerRegistry(self.settings).all()]
        profiles = [f"profile:{name}" for name in sorted(self.settings.profile_max_jobs)]
        repos = [f"repo:{repo_key(url)}" for url in sorted(self.settings.repo_max_jobs)]
        for scope in ["fleet", *nodes, *profiles, *repos]:
            family.add_metric([scope], gate.in_use(scope))
        yield family

    def _breakers(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "agenticore_breaker_open",
            "1 while an agent backend's circuit breaker is open or probing, else 0.",
            labels=["agent"],
        )
        for name in BACKENDS:
            state = CircuitBreaker(self.settings, name).status().state
            family.add_metric([name], 0 if state is BreakerState.CLOSED else 1)
        yield family

    def _workers(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "agenticore_workers", "Known workers by heartbeat state.", labels=["state"]
        )
        now = time.time()
        records = WorkerRegistry(self.settings).all()
        states = [r.current_state(self.settings.lease_seconds, now) for r in records]
        for state in _WORKER_STATES:
            family.add_metric([state], states.count(state))
        yield family
