"""The job state machine and the input contract."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from agenticore.models import (
    TASK_BYTES_CAP,
    TERMINAL,
    Job,
    JobSpec,
    JobStatus,
    can_transition,
    new_job_id,
    valid_job_id,
)


def test_given_a_finished_job_then_it_can_never_change_status() -> None:
    for done in TERMINAL - {JobStatus.DEAD}:
        assert not any(can_transition(done, wanted) for wanted in JobStatus)


def test_given_a_dead_job_then_only_an_explicit_requeue_brings_it_back() -> None:
    assert [s for s in JobStatus if can_transition(JobStatus.DEAD, s)] == [JobStatus.QUEUED]


def test_given_the_lifecycle_then_only_forward_moves_and_hand_backs_are_allowed() -> None:
    assert can_transition(JobStatus.QUEUED, JobStatus.RUNNING)
    assert can_transition(JobStatus.QUEUED, JobStatus.CANCELLED)
    assert not can_transition(JobStatus.QUEUED, JobStatus.SUCCEEDED)
    assert all(can_transition(JobStatus.RUNNING, done) for done in TERMINAL)
    assert can_transition(JobStatus.RUNNING, JobStatus.QUEUED)


def test_given_many_ids_then_they_are_uuid7_and_sort_by_creation() -> None:
    ids = [new_job_id() for _ in range(2000)]

    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {7}


def test_given_a_spec_with_a_session_then_the_job_resumes_it() -> None:
    session = str(uuid.uuid4())
    job = Job.from_spec(JobSpec(task="go on", session_id=session))

    assert job.resume_session == session and job.status is JobStatus.QUEUED
    assert len(job.short_id) == 10 and job.short_id in job.id.replace("-", "")


@pytest.mark.parametrize(
    "bad",
    [
        {"task": "   "},
        {"task": "x", "base_ref": "a..b"},
        {"task": "x", "base_ref": "-x"},
        {"task": "x", "profile": "../etc"},
        {"task": "x", "model": "bad model"},
        {"task": "x", "agent": "gpt"},
        {"task": "x", "timeout_seconds": 0},
        {"task": "x", "unknown": True},
    ],
)
def test_given_bad_specs_then_validation_rejects_them(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate(bad)


def test_given_a_repo_url_with_a_token_then_no_job_can_be_made_from_it() -> None:
    with pytest.raises(ValidationError, match="must not embed credentials") as err:
        JobSpec(task="x", repo_url="https://x-access-token:ghp_SECRET@github.com/a/b.git")

    assert "ghp_SECRET" not in str(err.value).split("input_value")[0]


# -- input limits: control characters, task size, ids that become paths ---------------

CONTROL = ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f"]


@pytest.mark.parametrize("char", CONTROL)
@pytest.mark.parametrize(
    "field",
    ["base_ref", "profile", "model", "pr_labels", "pr_reviewers", "idempotency_key", "repo_url"],
)
def test_given_a_control_character_in_a_ref_or_name_then_the_spec_is_refused(
    field: str, char: str
) -> None:
    # in the middle and at the end: "$" in a pattern would let a trailing newline through
    for value in (f"ma{char}in", f"main{char}"):
        spec: dict[str, object] = {"task": "x", "repo_url": "https://example.com/a/b.git"}
        spec[field] = [value] if field.startswith("pr_") else value
        if field == "repo_url":
            spec[field] = f"https://example.com/a{value}.git"

        with pytest.raises(ValidationError, match=field):
            JobSpec.model_validate(spec)


def test_given_printable_refs_and_names_then_the_spec_is_accepted() -> None:
    spec = JobSpec(
        task="line one\n\tline two\r\n",  # a task is free text: newlines and tabs are fine
        repo_url="https://example.com/a/b.git",
        base_ref="feature/ünïcode-1",
        profile="default",
        model="claude-sonnet-4-5",
        pr_labels=["needs review"],
        pr_reviewers=["org/team"],
        idempotency_key="deploy 2024-01-01 #1",
    )

    assert spec.base_ref == "feature/ünïcode-1" and spec.idempotency_key == "deploy 2024-01-01 #1"


def test_given_a_long_multibyte_task_then_the_model_counts_bytes_and_accepts_it() -> None:
    task = "😀" * 60_000  # 240,000 bytes in UTF-8, under the 256 KiB default

    assert JobSpec(task=task).task == task


def test_given_a_task_past_the_hard_cap_in_bytes_then_the_model_refuses_it() -> None:
    chars = TASK_BYTES_CAP // 4 + 1  # fewer characters than the cap, more bytes

    with pytest.raises(ValidationError, match=f"the cap is {TASK_BYTES_CAP}"):
        JobSpec(task="😀" * chars)


def test_given_a_nul_in_the_task_then_it_is_refused() -> None:
    with pytest.raises(ValidationError, match="NUL"):
        JobSpec(task="fix\x00it")


@pytest.mark.parametrize(
    "job_id",
    ["../../etc/x", "..", ".hidden", "a/b", "a\\b", "-leading", "_leading", "a" * 65, "",
     "a.json", "a b", "x\n", "x\x00"],
)  # fmt: skip
def test_given_an_id_that_is_no_safe_file_name_then_no_job_record_can_hold_it(
    job_id: str,
) -> None:
    assert not valid_job_id(job_id)
    with pytest.raises(ValidationError, match="job ids use"):
        Job(id=job_id, task="x")


@pytest.mark.parametrize(
    "job_id", [new_job_id(), str(uuid.uuid4()), "celery_task-1", "a", "A" * 64]
)
def test_given_uuids_and_celery_task_ids_then_they_are_valid_job_ids(job_id: str) -> None:
    assert valid_job_id(job_id) and Job(id=job_id, task="x").id == job_id
