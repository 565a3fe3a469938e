"""Fleet gauges read from the store at scrape time, on Redis and on the embedded index."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agenticore.breaker import CircuitBreaker
from agenticore.config import Settings
from agenticore.fleet import WorkerRegistry
from agenticore.gauges import FleetCollector
from agenticore.jobs import JobStore
from agenticore.models import Job, JobSpec, JobStatus, utcnow
from agenticore.permits import Limit, PermitGate
from tests.helpers import free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(collector: FleetCollector) -> Samples:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def indexed_store(settings: Settings) -> JobStore:
    """A store whose index is ready, as the reconciler leaves it on its first pass."""
    store = JobStore(settings)
    store.rebuild_index()
    return store


def depths() -> dict[str, int]:
    return {"interactive": 0, "normal": 3, "batch": 1}


def test_given_an_empty_fleet_when_scraped_then_every_gauge_is_there_at_zero(
    settings: Settings,
) -> None:
    samples = scrape(FleetCollector(settings, indexed_store(settings), depths))

    assert samples[("agenticore_oldest_queued_job_age_seconds", ())] == 0
    assert samples[("agenticore_jobs_in_flight", ())] == 0
    assert samples[("agenticore_dead_letter_jobs", ())] == 0
    assert samples[("agenticore_breaker_open", (("agent", "claude"),))] == 0
    assert samples[("agenticore_permits_in_use", (("scope", "fleet"),))] == 0
    assert samples[("agenticore_queue_depth", (("priority", "normal"),))] == 3
    assert samples[("agenticore_workers", (("state", "online"),))] == 0


def test_given_jobs_permits_a_breaker_and_a_worker_when_scraped_then_the_gauges_show_them(
    settings: Settings,
) -> None:
    store = indexed_store(settings)
    old = Job.from_spec(JobSpec(task="old")).model_copy(
        update={"created_at": utcnow() - timedelta(minutes=30)}
    )
    store.create(old)
    store.create(Job.from_spec(JobSpec(task="new")))
    running = store.create(Job.from_spec(JobSpec(task="runs")))
    store.update(running.id, status=JobStatus.RUNNING, started_at=utcnow())
    dead = store.create(Job.from_spec(JobSpec(task="dies")))
    store.update(dead.id, status=JobStatus.RUNNING, started_at=utcnow())
    store.update(dead.id, status=JobStatus.DEAD, finished_at=utcnow())
    WorkerRegistry(settings).beat("agenticore@w1")
    PermitGate(settings).try_acquire("h1", [Limit("node:agenticore@w1", 2), Limit("fleet", 5)])
    breaker = CircuitBreaker(settings, "claude")
    for _ in range(settings.breaker_threshold):
        breaker.record_failure("agent_crashed")

    samples = scrape(FleetCollector(settings, store, depths))

    assert 30 * 60 <= samples[("agenticore_oldest_queued_job_age_seconds", ())] < 31 * 60
    assert samples[("agenticore_jobs_in_flight", ())] == 1
    assert samples[("agenticore_dead_letter_jobs", ())] == 1
    assert samples[("agenticore_breaker_open", (("agent", "claude"),))] == 1
    assert samples[("agenticore_permits_in_use", (("scope", "fleet"),))] == 1
    assert samples[("agenticore_permits_in_use", (("scope", "node:agenticore@w1"),))] == 1
    assert samples[("agenticore_workers", (("state", "online"),))] == 1


def test_given_a_retried_dead_job_when_scraped_then_its_age_counts_from_the_retry(
    settings: Settings,
) -> None:
    store = indexed_store(settings)
    job = Job.from_spec(JobSpec(task="x")).model_copy(
        update={"created_at": utcnow() - timedelta(days=2)}
    )
    store.create(job)
    store.update(job.id, status=JobStatus.RUNNING, started_at=utcnow())
    store.update(job.id, status=JobStatus.DEAD, finished_at=utcnow())

    store.update(job.id, status=JobStatus.QUEUED, attempts=0, finished_at=None)

    samples = scrape(FleetCollector(settings, store, depths))
    assert samples[("agenticore_oldest_queued_job_age_seconds", ())] < 60


def test_given_an_index_not_yet_rebuilt_when_scraped_then_the_job_gauges_are_left_out(
    settings: Settings,
) -> None:
    store = indexed_store(settings)
    store.create(Job.from_spec(JobSpec(task="waits")))
    (settings.jobs_dir / "index.dirty").touch()  # a failed index write: rebuilt before use

    samples = scrape(FleetCollector(settings, store, depths))

    assert ("agenticore_oldest_queued_job_age_seconds", ()) not in samples, "no guess"
    assert samples[("agenticore_queue_depth", (("priority", "normal"),))] == 3


def test_given_redis_down_when_scraped_then_the_scrape_answers_without_the_store_gauges(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings("redis", redis_url=f"redis://127.0.0.1:{free_port()}/0")

    samples = scrape(FleetCollector(settings, JobStore(settings), depths))

    assert samples[("agenticore_queue_depth", (("priority", "batch"),))] == 1
    assert ("agenticore_jobs_in_flight", ()) not in samples
    assert ("agenticore_breaker_open", (("agent", "claude"),)) not in samples
