"""Tracing in-process, with the SDK's in-memory exporter: a job's own spans share its trace
and the agent gets a TRACEPARENT of it; without OTEL variables nothing is traced."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agenticore import telemetry
from agenticore.config import Settings
from agenticore.errors import ConfigurationError
from agenticore.jobs import JobStore
from agenticore.models import Job, JobSpec, JobStatus
from agenticore.profiles import job_from_spec
from agenticore.redaction import redact_text
from agenticore.runner import JobRunner
from tests.fake_collector import memory_spans
from tests.helpers import make_remote

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with memory_spans() as (exporter, _):
        yield exporter


def traced_job(settings: Settings, task: str, **spec: object) -> Job:
    """A job created inside a request's span, as the API creates it."""
    with telemetry.span("POST /jobs"):
        created = job_from_spec(settings, JobSpec(task=task, **spec))  # type: ignore[arg-type]
        return JobStore(settings).create(created)


def reported(job: Job, name: str) -> str:
    """What the fake agent's ``@fake env NAME`` saw (its transcript says NAME=<value>)."""
    for line in Path(job.transcript_path or "").read_text().splitlines():
        event = json.loads(line)
        for part in event.get("message", {}).get("content", []) if event["type"] == "user" else []:
            if str(part.get("content", "")).startswith(f"{name}="):
                return str(part["content"]).removeprefix(f"{name}=")
    raise AssertionError(f"the agent did not report {name}")


def by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in finished}


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_given_otel_variables_then_tracing_is_on_only_when_they_ask_for_an_exporter(
    environ: dict[str, str], exporters: list[str]
) -> None:
    assert telemetry.tracing_configured(environ) == exporters
    assert (telemetry.build_provider("svc", environ) is None) == (not exporters)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "use otlp, console or none"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
         "opentelemetry-exporter-otlp-proto-grpc"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
         "use http/protobuf or grpc"),
    ],
)  # fmt: skip
def test_given_an_exporter_this_install_cannot_do_then_a_clear_error(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        telemetry.build_provider("svc", environ)


def test_given_otel_service_name_then_it_wins_over_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"OTEL_TRACES_EXPORTER": "console"}
    ours = telemetry.build_provider("agenticore-worker", environ)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "fleet-a")
    theirs = telemetry.build_provider("agenticore-worker", environ)

    assert ours is not None and ours.resource.attributes["service.name"] == "agenticore-worker"
    assert theirs is not None and theirs.resource.attributes["service.name"] == "fleet-a"


def test_given_otlp_headers_then_their_values_are_masked_in_what_we_log() -> None:
    headers = "x-team=hcKey12345,Authorization=Basic%20dXNlcjpwYXNzd29yZA=="
    telemetry.register_header_secrets({"OTEL_EXPORTER_OTLP_HEADERS": headers})

    text = redact_text("export failed: hcKey12345 / Basic dXNlcjpwYXNzd29yZA==")
    assert "hcKey12345" not in text and "dXNlcjpwYXNzd29yZA" not in text


def test_given_no_otel_variables_when_a_job_runs_then_nothing_is_traced_and_no_traceparent(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    job = traced_job(settings, "@fake env TRACEPARENT")
    with telemetry.attached({"traceparent": TRACEPARENT}):
        assert telemetry.carrier() == {} and telemetry.agent_env() == {}
        done = JobRunner(settings).run(job.id, worker="test-worker")

    assert job.trace_context is None
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert reported(done, "TRACEPARENT") == "<unset>"


def test_given_tracing_when_a_repo_job_runs_then_its_spans_share_its_trace_and_the_agent_gets_it(
    make_settings: Callable[..., Settings], tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    settings = make_settings()
    job = traced_job(
        settings, "@fake env TRACEPARENT\n@fake cost 0.5", repo_url=str(make_remote(tmp_path))
    )
    request = by_name(spans.get_finished_spans())["POST /jobs"]
    assert request.context is not None
    trace_id = request.context.trace_id

    # the worker runs it in the message's context (the Celery run span), here the stored one
    with telemetry.attached(job.trace_context):
        done = JobRunner(settings).run(job.id, worker="test-worker")

    assert done.status is JobStatus.SUCCEEDED, done.error
    assert job.trace_context is not None
    assert job.trace_context["traceparent"].split("-")[1] == f"{trace_id:032x}"
    finished = by_name(spans.get_finished_spans())
    assert {"repo.clone", "job.worktree", "job.materialize", "agent.run"} <= set(finished)
    assert {s.context.trace_id for s in finished.values() if s.context} == {trace_id}
    run = finished["agent.run"]
    assert run.context is not None and run.attributes is not None
    assert run.attributes["agenticore.job_id"] == job.id
    assert run.attributes["agenticore.cost_usd"] == 0.5
    assert run.attributes["agenticore.session_id"] == done.session_id
    assert run.attributes["agenticore.exit_code"] == 0
    assert run.attributes["agenticore.status"] == "succeeded"
    assert run.attributes["agenticore.num_turns"] == done.num_turns
    _, agent_trace, parent, _ = reported(done, "TRACEPARENT").split("-")
    assert (agent_trace, parent) == (f"{trace_id:032x}", f"{run.context.span_id:016x}")


def test_given_a_profile_with_agent_telemetry_then_it_reaches_the_agent_and_the_workers_does_not(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://the-workers-collector:4318")
    settings = make_settings()
    profile = settings.user_profiles_dir / "traced"
    profile.mkdir(parents=True)
    (profile / "profile.yml").write_text(
        "env:\n"
        "  CLAUDE_CODE_ENABLE_TELEMETRY: '1'\n"
        "  OTEL_LOGS_EXPORTER: otlp\n"
        "  OTEL_EXPORTER_OTLP_HEADERS: 'x-api-key=agentCollectorKey42'\n"
    )
    names = ["CLAUDE_CODE_ENABLE_TELEMETRY", "OTEL_LOGS_EXPORTER", "OTEL_EXPORTER_OTLP_HEADERS",
             "OTEL_EXPORTER_OTLP_ENDPOINT"]  # fmt: skip
    task = "\n".join(f"@fake env {name}" for name in names)

    done = JobRunner(settings).run(traced_job(settings, task, profile="traced").id)

    assert done.status is JobStatus.SUCCEEDED, done.error
    assert reported(done, "CLAUDE_CODE_ENABLE_TELEMETRY") == "1"
    assert reported(done, "OTEL_LOGS_EXPORTER") == "otlp"
    assert reported(done, "OTEL_EXPORTER_OTLP_ENDPOINT") == "<unset>", "the worker's stays"
    assert reported(done, "OTEL_EXPORTER_OTLP_HEADERS") == "x-api-key=***"
    assert "agentCollectorKey42" not in Path(done.transcript_path or "").read_text()
