"""The job state machine and the input contract."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from agenticore.models import TERMINAL, Job, JobSpec, JobStatus, can_transition, new_job_id


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
