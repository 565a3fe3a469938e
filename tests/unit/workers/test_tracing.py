"""Sending a job again (reconciler, retry, a stopping worker) joins the trace it was created
in: the Celery publish span hangs under the job's stored context, with the SDK's in-memory
exporter and the real Celery instrumentation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agenticore import telemetry
from agenticore.config import Settings
from agenticore.jobs import JobStore
from agenticore.models import Job, JobSpec
from tests.fake_collector import memory_spans
from workers.app import enqueue, make_celery, send_pr_step

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
STORED = {"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with memory_spans() as (exporter, provider):
        instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
        instrumentor.instrument(tracer_provider=provider)
        try:
            yield exporter
        finally:
            instrumentor.uninstrument()


def test_given_a_job_with_a_stored_trace_when_it_is_sent_again_then_the_publish_joins_it(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    celery = make_celery(settings)
    store = JobStore(settings)
    created = Job.from_spec(JobSpec(task="x"))
    created.trace_context = STORED  # as the API's request span left it
    job = store.get(store.create(created).id)  # the reconciler reads it back
    try:
        with telemetry.span("reconciler pass"):  # another trace is current: the pass's
            enqueue(celery, job, store)
            send_pr_step(celery, job)
    finally:
        celery.close()

    sent = {span.name: span for span in spans.get_finished_spans() if span.kind.name == "PRODUCER"}
    assert set(sent) == {
        "apply_async/agenticore.run_job",
        "apply_async/agenticore.open_pull_request",
    }
    for span in sent.values():
        assert span.context is not None and span.parent is not None
        assert f"{span.context.trace_id:032x}" == TRACE_ID
        assert f"{span.parent.span_id:016x}" == "b7ad6b7169203331"
