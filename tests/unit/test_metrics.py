"""Job metrics counted by the store as jobs change, and their exposition."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from agenticore import metrics
from agenticore.config import Settings
from agenticore.jobs import JobStore
from agenticore.models import Job, JobSpec, JobStatus, PrStatus, utcnow
from agenticore.repos import RepoCache
from tests.helpers import make_remote

USAGE = {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 7}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def job_metrics() -> dict[str, float]:
    """The job metrics one succeeded job (profile "metrics", batch) moves, read now."""
    return {
        "submitted": value("agenticore_jobs_submitted_total", profile="metrics", priority="batch"),
        "finished": value(
            "agenticore_jobs_finished_total", status="succeeded", profile="metrics", agent="claude"
        ),
        "waits": value("agenticore_job_queue_wait_seconds_count"),
        "durations": value("agenticore_job_duration_seconds_count"),
        "duration_sum": value("agenticore_job_duration_seconds_sum"),
        "cost": value("agenticore_agent_cost_usd_total"),
        "input": value("agenticore_agent_tokens_total", kind="input"),
        "cache_read": value("agenticore_agent_tokens_total", kind="cache_read"),
        "opened": value("agenticore_pr_steps_total", status="opened"),
    }


def test_given_a_job_when_it_runs_to_success_then_each_job_metric_moves_once(
    settings: Settings,
) -> None:
    store = JobStore(settings)
    before = job_metrics()

    job = store.create(Job.from_spec(JobSpec(task="x", profile="metrics", priority="batch")))
    store.create(job)  # the same id again: stored once, counted once
    started = utcnow()
    store.update(job.id, status=JobStatus.RUNNING, started_at=started)
    store.update(job.id, status=JobStatus.SUCCEEDED, finished_at=started + timedelta(seconds=42),
                 cost_usd=0.25, usage=USAGE, pr_status=PrStatus.PENDING)  # fmt: skip
    store.update(job.id, pr_status=PrStatus.OPENED)
    store.update(job.id, pr_url="https://example/pr/1")  # no change of pr_status: not again

    moved = job_metrics()
    delta = {name: round(moved[name] - before[name], 6) for name in before}
    assert delta == {
        "submitted": 1, "finished": 1, "waits": 1, "durations": 1, "duration_sum": 42,
        "cost": 0.25, "input": 100, "cache_read": 7, "opened": 1,
    }  # fmt: skip


def test_given_a_job_handed_back_to_the_queue_when_it_runs_again_then_its_wait_counts_from_then(
    settings: Settings,
) -> None:
    store = JobStore(settings)
    job = store.create(Job.from_spec(JobSpec(task="x")))
    store.update(job.id, status=JobStatus.RUNNING, started_at=utcnow() - timedelta(hours=5))
    cost = value("agenticore_agent_cost_usd_total")
    store.update(job.id, status=JobStatus.QUEUED, cost_usd=0.5)  # an infra failure: again
    waits = value("agenticore_job_queue_wait_seconds_sum")

    store.update(job.id, status=JobStatus.RUNNING, started_at=utcnow())

    assert value("agenticore_job_queue_wait_seconds_sum") - waits < 60, "not the 5 hours"
    assert value("agenticore_agent_cost_usd_total") - cost == 0.5, "each attempt's cost counts"


def test_given_a_queued_job_cancelled_then_it_finishes_without_a_duration(
    settings: Settings,
) -> None:
    store = JobStore(settings)
    job = store.create(Job.from_spec(JobSpec(task="x", profile="cancelme")))
    labels = {"status": "cancelled", "profile": "cancelme", "agent": "claude"}
    cancelled = value("agenticore_jobs_finished_total", **labels)
    durations = value("agenticore_job_duration_seconds_count")

    store.update(job.id, status=JobStatus.CANCELLED, finished_at=utcnow())

    assert value("agenticore_jobs_finished_total", **labels) == cancelled + 1
    assert value("agenticore_job_duration_seconds_count") == durations


def test_given_a_repo_when_cloned_then_fetched_then_each_git_timing_moves(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    remote = make_remote(tmp_path / "remotes")
    cache = RepoCache(make_settings())
    clones = value("agenticore_repo_clone_seconds_count")
    fetches = value("agenticore_repo_fetch_seconds_count")

    cache.ensure(str(remote))
    cache.ensure(str(remote))

    assert value("agenticore_repo_clone_seconds_count") == clones + 1
    assert value("agenticore_repo_fetch_seconds_count") == fetches + 1


def test_given_no_job_yet_when_exposed_then_every_job_metric_is_declared() -> None:
    text = metrics.exposition().decode()

    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "agenticore_jobs_submitted", "agenticore_jobs_finished",
        "agenticore_job_duration_seconds", "agenticore_job_queue_wait_seconds",
        "agenticore_agent_cost_usd", "agenticore_agent_tokens",
        "agenticore_repo_clone_seconds", "agenticore_repo_fetch_seconds",
        "agenticore_pr_steps",
    } <= names  # fmt: skip
