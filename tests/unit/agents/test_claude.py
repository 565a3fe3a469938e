"""Reading Claude Code's stream-json and mapping it to a job outcome."""

from __future__ import annotations

import json

import pytest

from agenticore.agents.claude import ClaudeBackend, ClaudeStream
from agenticore.models import Job, JobSpec, JobStatus
from agenticore.supervisor import ProcessResult

RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "result": "Done.",
    "session_id": "s-1",
    "total_cost_usd": 0.12,
    "usage": {"input_tokens": 10, "output_tokens": 20},
    "num_turns": 3,
    "duration_ms": 1500,
}


def stream_of(*events: object) -> ClaudeStream:
    stream = ClaudeStream()
    for event in events:
        stream.feed(event if isinstance(event, bytes) else json.dumps(event).encode() + b"\n")
    return stream


def test_given_noise_and_events_then_only_events_count_and_the_session_is_kept() -> None:
    stream = stream_of(
        b"hook says hi\n",
        b"[1, 2]\n",
        {"type": "system", "subtype": "init", "session_id": "s-1"},
        {"type": "assistant", "message": {"content": []}, "session_id": "s-1"},
        RESULT,
    )

    assert stream.events == 3 and stream.assistant_turns == 1
    assert stream.session_id == "s-1" and stream.result == RESULT


def test_given_a_success_result_and_exit_0_then_the_job_succeeded_with_its_numbers() -> None:
    outcome = ClaudeBackend().outcome(stream_of(RESULT), ProcessResult(exit_code=0))

    assert outcome.status is JobStatus.SUCCEEDED and outcome.error is None
    assert (outcome.result, outcome.cost_usd, outcome.num_turns, outcome.duration_ms) == (
        "Done.", 0.12, 3, 1500,
    )  # fmt: skip
    assert outcome.usage == {"input_tokens": 10, "output_tokens": 20}


@pytest.mark.parametrize(
    ("events", "process", "status", "error"),
    [
        ([], ProcessResult(exit_code=143), JobStatus.FAILED, "agent_terminated"),
        (
            [],
            ProcessResult(exit_code=-9),
            JobStatus.FAILED,
            "agent_killed: the agent died from signal 9",
        ),
        ([], ProcessResult(exit_code=0), JobStatus.FAILED, "no_result"),
        (
            [],
            ProcessResult(exit_code=2, stderr_tail="x\nboom"),
            JobStatus.FAILED,
            "agent_crashed: exit code 2 without a result event: boom",
        ),
        ([RESULT], ProcessResult(exit_code=1), JobStatus.FAILED, "agent_exit: exit code 1"),
        (
            [],
            ProcessResult(exit_code=143, stop_reason="timeout", duration=5),
            JobStatus.TIMED_OUT,
            "timeout",
        ),
        (
            [],
            ProcessResult(exit_code=143, stop_reason="cancelled"),
            JobStatus.CANCELLED,
            "cancelled",
        ),
        (
            [RESULT | {"is_error": True, "subtype": "error_max_turns", "errors": ["max turns"]}],
            ProcessResult(exit_code=1),
            JobStatus.FAILED,
            "agent_error: error_max_turns: max turns",
        ),
    ],
)
def test_given_an_unhappy_run_then_the_outcome_names_the_cause(
    events: list[object], process: ProcessResult, status: JobStatus, error: str
) -> None:
    outcome = ClaudeBackend().outcome(stream_of(*events), process)

    assert outcome.status is status
    assert (outcome.error or "").startswith(error), outcome.error


def test_given_a_secret_in_stderr_then_the_error_redacts_it() -> None:
    process = ProcessResult(exit_code=1, stderr_tail="fatal: https://u:ghp_x@github.com/a/b failed")

    outcome = ClaudeBackend().outcome(stream_of(), process)

    assert "ghp_x" not in (outcome.error or "")


@pytest.mark.parametrize(
    ("events", "exit_code", "infra"),
    [
        ([], 3, True),
        ([], -9, True),
        ([], 1, False),
        ([RESULT | {"is_error": True, "result": "Invalid API key · Please run /login"}], 1, True),
        (
            [
                RESULT
                | {
                    "is_error": True,
                    "subtype": "error_during_execution",
                    "terminal_reason": "api_error",
                    "errors": ["API Error: 529"],
                }
            ],
            1,
            True,
        ),
        (
            [RESULT | {"is_error": True, "subtype": "error_during_execution", "errors": ["bad"]}],
            1,
            False,
        ),
        (
            [RESULT | {"is_error": True, "subtype": "error_max_turns", "errors": ["turns"]}],
            1,
            False,
        ),
        ([RESULT], 0, False),
    ],
)
def test_given_a_failure_then_provider_and_crash_failures_count_as_infrastructure(
    events: list[object], exit_code: int, infra: bool
) -> None:
    outcome = ClaudeBackend().outcome(stream_of(*events), ProcessResult(exit_code=exit_code))

    assert outcome.infra is infra, outcome.error


def test_given_a_job_then_its_task_is_the_prompt_on_stdin_as_utf8() -> None:
    task = "--dangerously-skip-permissions\nRésumé 日本"
    job = Job.from_spec(JobSpec(task=task))

    assert ClaudeBackend().prompt_input(job) == task.encode("utf-8")
