"""The job store on Redis + files, and on files alone."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import pytest

from agenticore.config import Settings
from agenticore.connections import redis_client
from agenticore.errors import InvalidTransition, JobNotFound
from agenticore.jobs import JobStore
from agenticore.keys import KeySchema
from agenticore.models import Job, JobSpec, JobStatus


def new_job(store: JobStore, task: str = "x") -> Job:
    return store.create(Job.from_spec(JobSpec(task=task)))


def test_given_a_job_when_it_runs_to_the_end_then_every_read_sees_the_latest_state(
    settings: Settings,
) -> None:
    store = JobStore(settings)
    job = new_job(store)

    store.update(job.id, status=JobStatus.RUNNING, worker="w1")
    store.update(job.id, status=JobStatus.SUCCEEDED, result="done", cost_usd=0.5)

    stored = store.get(job.id)
    assert (stored.status, stored.result, stored.cost_usd, stored.worker) == (
        JobStatus.SUCCEEDED, "done", 0.5, "w1",
    )  # fmt: skip
    on_disk = json.loads((settings.jobs_dir / f"{job.id}.json").read_text())
    assert on_disk["status"] == "succeeded", "the file is always written"


def test_given_a_finished_job_when_asked_to_run_again_then_the_transition_is_refused(
    settings: Settings,
) -> None:
    store = JobStore(settings)
    job = new_job(store)
    store.update(job.id, status=JobStatus.CANCELLED)

    with pytest.raises(InvalidTransition, match="is cancelled; it cannot become running"):
        store.update(job.id, status=JobStatus.RUNNING)
    assert store.get(job.id).status is JobStatus.CANCELLED


def test_given_an_existing_id_when_created_again_then_the_stored_job_is_kept(
    settings: Settings,
) -> None:
    store = JobStore(settings)
    job = new_job(store, "first")

    again = store.create(Job.from_spec(JobSpec(task="second"), job.id))

    assert again.task == "first" and store.get(job.id).task == "first"


def test_given_unknown_or_hostile_ids_then_not_found(settings: Settings) -> None:
    store = JobStore(settings)

    for job_id in ("nope", "../../etc/passwd", "", "a" * 100):
        assert store.find(job_id) is None
        with pytest.raises(JobNotFound):
            store.get(job_id)


def test_given_many_jobs_when_listed_then_pages_are_newest_first_and_filterable(
    settings: Settings,
) -> None:
    store = JobStore(settings)
    ids = [new_job(store, f"job {n}").id for n in range(7)]
    for job_id in ids[::2]:
        store.update(job_id, status=JobStatus.RUNNING)

    pages, cursor = [], None
    while True:
        page, cursor = store.list_jobs(limit=3, cursor=cursor)
        pages.append([j.id for j in page])
        if cursor is None:
            break
    running, _ = store.list_jobs(status=JobStatus.RUNNING, limit=10)
    queued, _ = store.list_jobs(status=JobStatus.QUEUED, limit=10)

    assert [i for page in pages for i in page] == ids[::-1]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [j.id for j in running] == ids[::2][::-1]
    assert [j.id for j in queued] == ids[1::2][::-1]


def test_given_concurrent_updates_then_none_is_lost(settings: Settings) -> None:
    store = JobStore(settings)
    job = new_job(store)
    store.update(job.id, status=JobStatus.RUNNING, num_turns=0)

    def bump() -> None:
        for _ in range(10):
            with store._locked(job.id):  # the same lock update() takes
                current = store.get(job.id).num_turns or 0
                store._write(store.get(job.id).model_copy(update={"num_turns": current + 1}), None)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert store.get(job.id).num_turns == 40


def test_given_redis_when_a_job_is_written_then_it_is_a_hash_with_ttl_in_the_index(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings("redis", job_ttl_seconds=600)
    store = JobStore(settings)
    job = new_job(store)
    client = redis_client(settings)
    keys = KeySchema(settings.redis_key_prefix)
    assert client is not None

    assert json.loads(client.hget(keys.job(job.id), "status")) == "queued"  # type: ignore[arg-type]
    assert 0 < client.ttl(keys.job(job.id)) <= 600  # type: ignore[operator]
    assert client.zscore(keys.jobs_index(), job.id) == 0
    assert client.zscore(keys.jobs_by_status("queued"), job.id) == 0


def test_given_a_redis_record_expired_then_reads_fall_back_to_the_file(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings("redis")
    store = JobStore(settings)
    job = new_job(store)
    store.update(job.id, status=JobStatus.RUNNING)
    client = redis_client(settings)
    assert client is not None

    client.delete(KeySchema(settings.redis_key_prefix).job(job.id))

    assert store.get(job.id).status is JobStatus.RUNNING
    assert store.list_jobs()[0] == [], "the Redis index drops expired entries"


def test_given_redis_down_then_the_file_store_keeps_serving(
    make_settings: Callable[..., Settings],
) -> None:
    working = make_settings("redis")
    job = new_job(JobStore(working))
    broken = working.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    store = JobStore(broken)

    updated = store.update(job.id, status=JobStatus.RUNNING)

    assert updated.status is JobStatus.RUNNING
    assert store.get(job.id).status is JobStatus.RUNNING
    assert [j.id for j in store.list_jobs()[0]] == [job.id]


def test_given_expired_records_at_the_top_when_listed_then_the_page_is_still_full(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings("redis")
    store = JobStore(settings)
    ids = [new_job(store, f"job {n}").id for n in range(5)]
    client = redis_client(settings)
    assert client is not None
    for job_id in ids[-2:]:
        client.delete(KeySchema(settings.redis_key_prefix).job(job_id))

    page, cursor = store.list_jobs(limit=3)

    assert [j.id for j in page] == ids[2::-1]
    assert cursor == ids[0]
