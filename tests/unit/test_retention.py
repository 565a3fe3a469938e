"""Retention: finished jobs past RETENTION_DAYS go, whole; others stay. Transcripts keep
their tail."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from agenticore.config import Settings
from agenticore.jobs import JobStore, idempotency_digest
from agenticore.models import Job, JobSpec, JobStatus, PrStatus, utcnow
from agenticore.retention import Retention
from agenticore.transcripts import CappedFile


def finished(store: JobStore, days_ago: float, **fields: object) -> Job:
    job = store.create(Job.from_spec(JobSpec(task="x", idempotency_key="k")))
    store.mark_sent(job.id)
    store.update(job.id, status=JobStatus.RUNNING)
    ended = utcnow() - timedelta(days=days_ago)
    return store.update(job.id, status=JobStatus.SUCCEEDED, finished_at=ended, **fields)


def test_given_old_and_recent_jobs_then_only_the_old_ones_are_swept_whole(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    for backend in ("redis", "embedded"):
        settings = make_settings(backend, retention_days=14, home=tmp_path / backend)
        store = JobStore(settings)
        store.rebuild_index()
        old, recent = finished(store, 15), finished(store, 1)
        pending = finished(store, 20, pr_status=PrStatus.PENDING)
        (settings.jobs_dir / old.id).mkdir(parents=True, exist_ok=True)
        (settings.jobs_dir / old.id / "transcript.jsonl").write_text("{}\n")
        digest = idempotency_digest(None, "k")
        store.claim_idempotency_key(digest, old.id)
        forgotten: list[str] = []

        swept = Retention(settings, store, forget_result=forgotten.append).sweep()

        assert swept == forgotten == [old.id], backend
        assert store.find(old.id) is None and not (settings.jobs_dir / old.id).exists()
        assert not (settings.jobs_dir / "idempotency" / f"{digest}.json").exists()
        assert [j.id for j in store.list_jobs()[0]] == [pending.id, recent.id]
        assert store.find(pending.id) is not None, "a pending PR step keeps its record"


def test_given_a_transcript_past_its_cap_then_it_keeps_whole_lines_of_its_tail(
    tmp_path: Path,
) -> None:
    path = tmp_path / "transcript.jsonl"
    with CappedFile(path, cap=1000) as transcript:
        for n in range(200):
            transcript.write(json.dumps({"n": n}).encode() + b"\n")

    lines = path.read_bytes().splitlines()
    marker = json.loads(lines[0])
    assert path.stat().st_size <= 1000
    assert marker["subtype"] == "transcript_truncated" and marker["dropped_bytes"] > 0
    assert [json.loads(line)["n"] for line in lines[1:]][-1] == 199, "the tail is kept"
    assert all(line.startswith(b"{") for line in lines), "whole lines only"


def test_given_a_transcript_being_written_then_each_line_is_on_disk_before_it_closes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "transcript.jsonl"
    with CappedFile(path, cap=None) as transcript:
        transcript.write(b'{"type":"result","subtype":"success"}\n')

        on_disk = path.read_bytes()  # what a killed worker would leave

    assert on_disk == b'{"type":"result","subtype":"success"}\n'
