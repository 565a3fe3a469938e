"""Prometheus metrics of what happens to jobs, counted where it happens.

The job store calls ``job_created`` and ``job_changed`` after each write it made under the
job's lock, so whichever process changes a job counts the change, exactly once: the API a
submission or the cancel of a queued job, a worker's pool process a run, the reconciler a
dead letter. Prometheus adds the processes up (``sum(...)``).

A Celery worker is prefork: its pool processes count into prometheus-client's multiprocess
files (``PROMETHEUS_MULTIPROC_DIR``, set by ``agenticore worker`` before Celery starts, since
prometheus-client picks its value store when it is imported) and the worker's main process
serves their sum on its own port (``serve``). The API serves its own counters with the
fleet's gauges (``agenticore.gauges``) at ``GET /metrics``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from agenticore.models import Job, JobStatus

__all__ = [
    "clone_timer",
    "exposition",
    "fetch_timer",
    "job_changed",
    "job_created",
    "multiprocess_dir",
    "prepare_multiprocess_dir",
    "remove_private_dir",
    "serve",
]

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# the folder ``prepare_multiprocess_dir`` makes when the operator named none
_PRIVATE_PREFIX = "agenticore-metrics-"

# agent runs take seconds to hours; git clones up to CLONE_TIMEOUT_SECONDS
_RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
_WAIT_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 7200)
_GIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# usage fields the agent reports -> the ``kind`` label (the price table's names)
_TOKEN_KINDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_creation_input_tokens": "cache_write",
    "cache_read_input_tokens": "cache_read",
}


@dataclass(frozen=True)
class _Metrics:
    submitted: Counter
    finished: Counter
    duration: Histogram
    queue_wait: Histogram
    cost: Counter
    tokens: Counter
    clone: Histogram
    fetch: Histogram
    pr_steps: Counter


@lru_cache(maxsize=1)
def _metrics() -> _Metrics:
    """Created on first use, in the process that uses them."""
    return _Metrics(
        submitted=Counter(
            "agenticore_jobs_submitted", "Jobs stored for the first time.", ["profile", "priority"]
        ),
        finished=Counter(
            "agenticore_jobs_finished",
            "Jobs that reached a final status (a retried dead job counts again).",
            ["status", "profile", "agent"],
        ),
        duration=Histogram(
            "agenticore_job_duration_seconds",
            "Wall time of a finished run, from its start to its end.",
            buckets=_RUN_BUCKETS,
        ),
        queue_wait=Histogram(
            "agenticore_job_queue_wait_seconds",
            "Time a job waited queued before a run started.",
            buckets=_WAIT_BUCKETS,
        ),
        cost=Counter("agenticore_agent_cost_usd", "Agent cost reported per attempt, in USD."),
        tokens=Counter("agenticore_agent_tokens", "Agent tokens reported per attempt.", ["kind"]),
        clone=Histogram(
            "agenticore_repo_clone_seconds",
            "First clones into the repo cache.",
            buckets=_GIT_BUCKETS,
        ),
        fetch=Histogram(
            "agenticore_repo_fetch_seconds",
            "Fetches of a cached repo before a job.",
            buckets=_GIT_BUCKETS,
        ),
        pr_steps=Counter(
            "agenticore_pr_steps", "Pull request steps that settled, by outcome.", ["status"]
        ),
    )


# -- hooks (the job store and the repo cache call these) --------------------------------


def job_created(job: Job) -> None:
    _counting(_created, job)


def job_changed(before: Job, after: Job, changes: Mapping[str, Any]) -> None:
    """``changes``: the fields this write set (a run records its cost once per attempt)."""
    _counting(_changed, before, after, changes)


@contextmanager
def clone_timer() -> Iterator[None]:
    with _timed("clone"):
        yield


@contextmanager
def fetch_timer() -> Iterator[None]:
    with _timed("fetch"):
        yield


def _created(job: Job) -> None:
    _metrics().submitted.labels(profile=job.profile, priority=job.priority).inc()


def _changed(before: Job, after: Job, changes: Mapping[str, Any]) -> None:
    metrics = _metrics()
    if after.status is JobStatus.RUNNING and before.status is JobStatus.QUEUED and after.started_at:
        queued = before.queued_at or before.created_at
        metrics.queue_wait.observe(max(0.0, (after.started_at - queued).total_seconds()))
    if after.terminal and not before.terminal:
        metrics.finished.labels(status=after.status.value, profile=after.profile,
                                agent=after.agent).inc()  # fmt: skip
        if before.status is JobStatus.RUNNING and after.started_at and after.finished_at:
            seconds = (after.finished_at - after.started_at).total_seconds()
            metrics.duration.observe(max(0.0, seconds))
    cost = changes.get("cost_usd")
    if isinstance(cost, int | float) and cost > 0:
        metrics.cost.inc(cost)
    usage = changes.get("usage")
    for field, kind in _TOKEN_KINDS.items():
        count = usage.get(field) if isinstance(usage, dict) else None
        if isinstance(count, int | float) and count > 0:
            metrics.tokens.labels(kind=kind).inc(count)
    pr = after.pr_status
    if pr is not None and pr.final and pr != before.pr_status:
        metrics.pr_steps.labels(status=pr.value).inc()


def _counting(hook: Callable[..., object], *args: Any) -> None:
    """A metric that cannot be written (the multiprocess folder full or gone) must not fail
    the store write it follows, which has happened already."""
    try:
        hook(*args)
    except Exception as exc:  # whatever it is, the job's own write stands
        log.warning("metrics: could not count a job change (%s)", exc)


@contextmanager
def _timed(which: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        histogram = _metrics().clone if which == "clone" else _metrics().fetch
        _counting(histogram.observe, time.monotonic() - start)


# -- exposition ---------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """This process's metrics (or, in multiprocess mode, every process's sum) and
    ``extra``'s, in the Prometheus text format."""
    registry = _registry()
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


def serve(host: str, port: int) -> tuple[str, int] | None:
    """Serves the metrics on ``host:port`` (0: a free port) from a daemon thread; returns
    the address bound, or None (logged) if it could not bind: metrics never stop a worker."""
    try:
        from prometheus_client import start_http_server

        server, _ = start_http_server(port, addr=host, registry=_registry())
    except OSError as exc:
        log.warning("metrics: cannot serve on %s:%s (%s); this worker has no metrics", host,
                    port, exc)  # fmt: skip
        return None
    bound = (host, int(server.server_port))
    log.info("metrics served on http://%s:%d/metrics", *bound)
    return bound


def _registry() -> CollectorRegistry:
    _metrics()  # every family shows from the first scrape on, at zero
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Own())
    return registry


class _Own(Collector):
    """This process's default registry, inside another registry."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()


# -- prefork bookkeeping -----------------------------------------------------------------


def prepare_multiprocess_dir() -> Path:
    """The multiprocess folder for a worker about to start: the operator's
    ``PROMETHEUS_MULTIPROC_DIR`` emptied (counts of an earlier run would add up again), else a
    fresh private temp folder. Exported to the environment for the worker's processes."""
    given = multiprocess_dir()
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
    else:  # node-local and never shared: the worker writes it on every job change
        path = Path(tempfile.mkdtemp(prefix=_PRIVATE_PREFIX))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def remove_private_dir() -> None:
    """The worker stops: removes the temp folder ``prepare_multiprocess_dir`` made (never
    one the operator named)."""
    folder = multiprocess_dir()
    if folder and Path(folder).name.startswith(_PRIVATE_PREFIX):
        shutil.rmtree(folder, ignore_errors=True)
