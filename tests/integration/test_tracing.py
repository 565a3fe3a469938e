"""One trace per job: across real processes (the API and a prefork worker export over
OTLP/HTTP to a fake collector, configured only by the standard OTEL_* variables), and in
this process with the SDK's in-memory exporter."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from agenticore import telemetry
from agenticore.apikeys import KeyStore, Role
from agenticore.config import Settings
from agenticore.models import JobStatus
from agenticore.runner import JobRunner
from api.main import create_app
from tests.conftest import Fleet, bearer, forge_settings, running_fleet
from tests.fake_collector import ExportedSpan, FakeCollector, memory_spans
from tests.fake_forge import FakeForge
from tests.helpers import free_port, make_remote, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MESSAGE_ID = "messaging.message.id"  # the Celery task id: the job id for run_job

JOB_SPANS = [
    "POST /jobs",
    "apply_async/agenticore.run_job",
    "run/agenticore.run_job",
    "repo.clone",
    "job.worktree",
    "job.materialize",
    "agent.run",
    "apply_async/agenticore.open_pull_request",
    "run/agenticore.open_pull_request",
    "job.pr_step",
]


@pytest.fixture
def traced_fleet(
    tmp_path: Path, redis_url: str, forge: FakeForge, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Fleet, FakeCollector]]:
    with FakeCollector() as collector:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export within moments
        with running_fleet("redis", tmp_path / "home", redis_url, **forge_settings(forge)) as fleet:
            yield fleet, collector


def agent_saw(transcript: Path, name: str) -> str:
    """What the fake agent's ``@fake env NAME`` reported (a tool result: NAME=<value>)."""
    for line in transcript.read_text().splitlines():
        event = json.loads(line)
        for part in event.get("message", {}).get("content", []) if event["type"] == "user" else []:
            if str(part.get("content", "")).startswith(f"{name}="):
                return str(part["content"]).removeprefix(f"{name}=")
    raise AssertionError(f"the agent did not report {name}")


def test_given_otel_variables_when_a_pr_job_runs_on_the_fleet_then_all_its_spans_share_one_trace(
    traced_fleet: tuple[Fleet, FakeCollector], forge: FakeForge
) -> None:
    fleet, collector = traced_fleet
    task = "Add a greeting\n@fake env TRACEPARENT\n@fake write src/hi.py print('hi')\n"
    job = fleet.submit(task=task, repo_url=f"{forge.url}/acme/widgets.git", auto_pr=True)

    done = wait_for(
        lambda: j if (j := fleet.job(job["id"]))["pr_status"] not in (None, "pending") else None,
        timeout=90, interval=0.2, what="the job and its PR step",
    )  # fmt: skip

    assert done["status"] == "succeeded" and done["pr_status"] == "opened", done
    spans: dict[str, ExportedSpan] = wait_for(
        lambda: seen if len(seen := {n: s[0] for n in JOB_SPANS if (s := collector.named(n))})
        == len(JOB_SPANS) else None,
        timeout=30, what="every span of the job at the collector",
    )  # fmt: skip
    trace_ids = {name: span.trace_id for name, span in spans.items()}
    assert set(trace_ids.values()) == {spans["POST /jobs"].trace_id}, trace_ids
    assert spans["POST /jobs"].service == "agenticore-api"
    assert spans["agent.run"].service == "agenticore-worker"
    parents = {name: span.parent_id for name, span in spans.items()}
    assert parents["run/agenticore.run_job"] == spans["apply_async/agenticore.run_job"].span_id
    assert parents["apply_async/agenticore.run_job"] == spans["POST /jobs"].span_id
    pr_send = "apply_async/agenticore.open_pull_request"
    assert parents[pr_send] == spans["run/agenticore.run_job"].span_id, "sent by the run"
    assert spans["agent.run"].attributes["agenticore.job_id"] == job["id"]
    assert spans["agent.run"].attributes["agenticore.session_id"] == done["session_id"]
    assert spans["job.pr_step"].attributes["agenticore.pr_status"] == "opened"
    transcript = fleet.settings.jobs_dir / job["id"] / "transcript.jsonl"
    _, trace_id, parent, _ = agent_saw(transcript, "TRACEPARENT").split("-")
    assert (trace_id, parent) == (spans["agent.run"].trace_id, spans["agent.run"].span_id)
    assert not collector.named("GET /healthz"), "health probes are not traced"


def test_given_a_lost_worker_when_the_reconciler_sends_its_job_again_then_it_joins_the_jobs_trace(
    traced_fleet: tuple[Fleet, FakeCollector],
) -> None:
    fleet, collector = traced_fleet
    job_id = fleet.start_job("@fake sleep 2\n@fake result survived")
    main = fleet.worker.pid
    pool = Path(f"/proc/{main}/task/{main}/children").read_text().split()

    for pid in [main, *map(int, pool)]:  # the whole node is lost
        os.kill(pid, signal.SIGKILL)
    fleet.worker.wait(timeout=10)
    fleet.replace_worker()  # its reconciler hands the job on once the lease lapsed
    done = fleet.wait_until_final(job_id, timeout=90)

    assert done["status"] == "succeeded" and done["attempts"] == 2, done

    def of_job(name: str) -> list[ExportedSpan]:
        return [s for s in collector.named(name) if s.attributes.get(MESSAGE_ID) == job_id]

    sends = wait_for(lambda: s if len(s := of_job("apply_async/agenticore.run_job")) == 2 else None,
                     timeout=30, what="the API's send and the reconciler's")  # fmt: skip
    request = wait_for(lambda: collector.named("POST /jobs"), timeout=30, what="the request")[0]
    runs = wait_for(lambda: of_job("run/agenticore.run_job"), timeout=30, what="the second run")
    assert {s.trace_id for s in [*sends, *runs]} == {request.trace_id}
    assert {s.parent_id for s in sends} == {request.span_id}, "both hang under the request"
    assert {s.service for s in sends} == {"agenticore-api", "agenticore-worker"}


def test_given_the_in_memory_exporter_when_a_job_is_posted_and_run_then_all_spans_share_a_trace(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """The API in this process (uvicorn in a thread, real HTTP), the job run in this process
    from the context its broker message carries, as the worker's run span would."""
    settings = make_settings()  # embedded: the message is a file to read
    _, key = KeyStore(settings).create("test", Role.OPERATOR)
    app = create_app(settings)
    with memory_spans() as (spans, provider), serving(app, provider) as url:
        response = httpx.post(
            f"{url}/jobs", headers=bearer(key),
            json={"task": "@fake env TRACEPARENT", "repo_url": str(make_remote(tmp_path))},
        )  # fmt: skip
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        message = next((settings.home / "celery").rglob("*.msg")).read_text()
        headers = json.loads(message)["headers"]
        assert headers["id"] == job_id
        with telemetry.attached({"traceparent": headers["traceparent"]}):
            done = JobRunner(settings).run(job_id, worker="test-worker")

    assert done.status is JobStatus.SUCCEEDED, done.error
    finished = {span.name: span for span in spans.get_finished_spans()}
    names = ["POST /jobs", "apply_async/agenticore.run_job", "repo.clone", "job.worktree",
             "job.materialize", "agent.run"]  # fmt: skip
    assert set(names) <= set(finished), sorted(finished)
    context = {name: finished[name].get_span_context() for name in names}
    assert len({c.trace_id for c in context.values()}) == 1, "one trace, API and worker alike"
    _, trace_id, parent, _ = headers["traceparent"].split("-")
    assert parent == f"{context['apply_async/agenticore.run_job'].span_id:016x}"
    _, agent_trace, agent_parent, _ = agent_saw(
        Path(done.transcript_path or ""), "TRACEPARENT"
    ).split("-")
    assert (agent_trace, agent_parent) == (trace_id, f"{context['agent.run'].span_id:016x}")


@contextmanager
def serving(app: FastAPI, provider: TracerProvider) -> Iterator[str]:
    """``app`` traced into ``provider`` (as ``OTEL_*`` variables would have it), served over
    real HTTP from a thread; the Celery messages it sends are traced too."""
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    celery = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    celery.instrument(tracer_provider=provider)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=30, what="the in-process API")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        celery.uninstrument()
        FastAPIInstrumentor.uninstrument_app(app)
