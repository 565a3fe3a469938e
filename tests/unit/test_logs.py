"""JSON log lines: one object per record, masked, with the job and trace they belong to."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from agenticore import logs

TOKEN = "ghp_" + "J5onLine" * 4 + "abcd"


@pytest.fixture
def json_lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through a handler set up as ``logs.install`` sets up every handler
    in JSON mode (install itself would touch every handler of the test session)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RedactingFilter())
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(f"test.json.{id(stream)}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_given_json_logs_when_a_job_logs_then_one_masked_object_carries_the_job(
    json_lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_lines

    with logs.job_context(job_id="job-1", task_id="task-1", worker="agenticore@node-a"):
        logger.warning("pushing with %s", TOKEN)
        try:
            raise RuntimeError(f"push refused for {TOKEN}")
        except RuntimeError:
            logger.exception("push failed")
    logger.info("no job here")

    pushed, failed, idle = records(stream)
    assert pushed["message"] == "pushing with ***" and pushed["level"] == "WARNING"
    assert pushed["logger"] == logger.name and str(pushed["time"]).endswith("+00:00")
    assert {k: pushed[k] for k in ("job_id", "task_id", "worker")} == {
        "job_id": "job-1", "task_id": "task-1", "worker": "agenticore@node-a",
    }  # fmt: skip
    assert "RuntimeError: push refused for ***" in str(failed["exc"])
    assert TOKEN not in stream.getvalue()
    assert idle["job_id"] is None and idle["task_id"] is None and "exc" not in idle


def test_given_a_current_span_when_a_line_is_logged_then_it_carries_the_trace_id(
    json_lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_lines
    tracer = TracerProvider().get_tracer("test")

    with tracer.start_as_current_span("run") as span:
        logger.info("inside")
    logger.info("outside")

    inside, outside = records(stream)
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert outside["trace_id"] is None


def test_given_celery_received_line_when_formatted_then_task_and_job_id_come_from_its_data(
    json_lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_lines
    logs.task_ids_are_job_ids("agenticore.run_job")

    logger.info("Task received", extra={"data": {"id": "job-9", "name": "agenticore.run_job"}})
    logger.info("Task received", extra={"data": {"id": "step-3", "name": "other.task"}})

    run, other = records(stream)
    assert run["task_id"] == run["job_id"] == "job-9"
    assert other["task_id"] == "step-3" and other["job_id"] is None
