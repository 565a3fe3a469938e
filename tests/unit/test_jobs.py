"""The job store on Redis + files, and on files alone."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from agenticore.config import Settings
from agenticore.connections import redis_client
from agenticore.errors import (
    InvalidTransition,
    JobNotFound,
    StaleAttempt,
    StorageFull,
    StoreUnavailable,
)
from agenticore.jobs import JobStore, idempotency_digest
from agenticore.keys import KeySchema
from agenticore.models import Job, JobSpec, JobStatus, PrStatus
from tests.helpers import TinyDisk

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


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


def test_given_queued_and_running_jobs_then_the_index_finds_the_longest_waiting_one(
    settings: Settings,
) -> None:
    store = JobStore(settings)
    store.rebuild_index()
    first, second, _ = (new_job(store, f"job {n}").id for n in range(3))
    store.update(first, status=JobStatus.RUNNING)

    indexed = store.longest_queued()
    (settings.jobs_dir / "index.dirty").touch()  # the index is not trusted until rebuilt
    with pytest.raises(StoreUnavailable, match="not ready"):
        store.longest_queued()
    store.rebuild_index()

    assert indexed is not None and indexed.id == second
    assert store.longest_queued() == indexed


def test_given_concurrent_updates_then_none_is_lost(settings: Settings) -> None:
    store = JobStore(settings)
    job = new_job(store)
    store.update(job.id, status=JobStatus.RUNNING, num_turns=0)

    def bump() -> None:
        for _ in range(10):
            with store.locked(job.id):  # the same lock update() takes
                current = store.get(job.id).num_turns or 0
                store.update(job.id, num_turns=current + 1, held=True)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert store.get(job.id).num_turns == 40


def test_given_redis_when_a_job_is_written_then_the_file_is_the_record_and_redis_indexes_it(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings("redis")
    store = JobStore(settings)
    job = new_job(store)
    client = redis_client(settings)
    keys = KeySchema(settings.redis_key_prefix)
    assert client is not None

    assert client.keys(f"{settings.redis_key_prefix}:job:*") == [], "one copy: the file"
    assert client.zscore(keys.jobs_index(), job.id) == 0
    assert client.zscore(keys.jobs_by_status("queued"), job.id) == 0
    assert client.zscore(keys.schedule("watch"), job.id) is not None, "watched until sent"

    store.mark_sent(job.id)

    assert client.zscore(keys.schedule("watch"), job.id) is None


def test_given_a_record_deleted_then_its_index_entries_go_on_the_next_listing(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings("redis")
    store = JobStore(settings)
    store.rebuild_index()
    ids = [new_job(store, f"job {n}").id for n in range(5)]
    for job_id in ids[-2:]:
        (settings.jobs_dir / f"{job_id}.json").unlink()

    page, cursor = store.list_jobs(limit=3)

    assert [j.id for j in page] == ids[2::-1], "the page is still full"
    assert cursor == ids[0]
    client = redis_client(settings)
    assert client is not None
    assert client.zscore(KeySchema(settings.redis_key_prefix).jobs_index(), ids[-1]) is None


def test_given_redis_down_then_the_file_store_keeps_serving_and_the_index_is_rebuilt_after(
    make_settings: Callable[..., Settings],
) -> None:
    working = make_settings("redis")
    job = new_job(JobStore(working))
    JobStore(working).rebuild_index()
    broken = working.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    store = JobStore(broken)

    updated = store.update(job.id, status=JobStatus.RUNNING, result="kept")

    assert updated.status is JobStatus.RUNNING
    assert store.get(job.id).status is JobStatus.RUNNING
    assert [j.id for j in store.list_jobs()[0]] == [job.id]
    # given Redis back, with an index that missed the write
    back = JobStore(working)
    assert not back.index_ready(), "a failed index write marks the index for a rebuild"
    assert [j.id for j in back.list_jobs(status=JobStatus.RUNNING)[0]] == [job.id]
    back.rebuild_index()
    assert back.index_ready()
    assert [j.id for j in back.list_jobs(status=JobStatus.RUNNING)[0]] == [job.id]
    assert back.list_jobs(status=JobStatus.QUEUED)[0] == []


def test_given_a_stale_index_entry_then_an_update_never_loses_a_newer_field(
    settings: Settings,
) -> None:
    """The file is read under the lock for every update, whatever the index says."""
    store = JobStore(settings)
    job = new_job(store)
    store.update(job.id, status=JobStatus.RUNNING)
    store.update(job.id, status=JobStatus.SUCCEEDED, result="the agent's work")
    # an index left saying "running" (a write to it failed)
    store.index.record(store.get(job.id).model_copy(update={"status": JobStatus.RUNNING}),
                       store.get(job.id), None)  # fmt: skip

    store.update(job.id, pr_status=PrStatus.OPENED)

    final = store.get(job.id)
    assert (final.status, final.result, final.pr_status) == (
        JobStatus.SUCCEEDED, "the agent's work", PrStatus.OPENED)  # fmt: skip
    assert store.list_jobs(status=JobStatus.RUNNING)[0] == []


def test_given_an_attempt_that_was_handed_on_then_its_writes_are_refused(
    settings: Settings,
) -> None:
    store = JobStore(settings)
    job = new_job(store)
    store.update(job.id, status=JobStatus.RUNNING, attempts=1)
    store.update(job.id, status=JobStatus.QUEUED, error="lease_expired")

    with pytest.raises(StaleAttempt):
        store.update(job.id, attempt=1, status=JobStatus.SUCCEEDED, result="late")
    store.update(job.id, status=JobStatus.RUNNING, attempts=2)
    with pytest.raises(StaleAttempt):
        store.update(job.id, attempt=1, result="late")

    assert store.get(job.id).result is None
    assert store.update(job.id, attempt=2, result="mine").result == "mine"


def test_given_an_idempotency_claim_then_it_binds_only_once_released_or_bound(
    settings: Settings,
) -> None:
    store = JobStore(settings)
    digest = idempotency_digest("key-id", "order-42")

    assert store.claim_idempotency_key(digest, "job-a") == "job-a"
    assert store.claim_idempotency_key(digest, "job-b") == "job-a", "a claim in flight holds"
    store.release_idempotency_key(digest, "job-a")  # its request failed
    assert store.claim_idempotency_key(digest, "job-b") == "job-b"
    store.bind_idempotency_key(digest, "job-b")
    assert store.claim_idempotency_key(digest, "job-c") == "job-b"
    assert idempotency_digest("other-key", "order-42") != digest, "scoped to the caller"


def test_given_a_claim_abandoned_without_a_job_then_it_is_taken_over(settings: Settings) -> None:
    store = JobStore(settings)
    digest = idempotency_digest("key-id", "order-43")
    store.claim_idempotency_key(digest, "ghost")
    claim = settings.jobs_dir / "idempotency" / f"{digest}.json"
    claim.write_text(claim.read_text().replace('"at": ', '"at": 1, "was": '))

    assert store.claim_idempotency_key(digest, "job-b") == "job-b"


@root_only
def test_given_a_full_disk_then_writes_raise_storage_full_and_the_record_is_intact(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    disk = TinyDisk(tmp_path / "disk")
    try:
        settings = make_settings("redis", home=disk.path / "home")
        store = JobStore(settings)
        job = new_job(store)
        store.update(job.id, status=JobStatus.RUNNING, attempts=1)
        disk.fill()

        with pytest.raises(StorageFull, match="job store full"):
            store.update(job.id, status=JobStatus.SUCCEEDED, result="done")
        assert store.get(job.id).status is JobStatus.RUNNING, "the record is intact"

        disk.free()
        assert store.update(job.id, status=JobStatus.SUCCEEDED).status is JobStatus.SUCCEEDED
    finally:
        disk.unmount()
