"""Where tests collect spans: ``FakeCollector``, a small OTLP/HTTP trace collector that
processes under test export to (``OTEL_TRACES_EXPORTER=otlp``, ``OTEL_EXPORTER_OTLP_ENDPOINT``
pointing at it), and ``memory_spans`` for this process (the SDK's in-memory exporter)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agenticore import telemetry


@contextmanager
def memory_spans() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    """Our spans go to memory while it lasts (as ``telemetry.configure`` would send them
    out); the provider is for instrumentations the test turns on."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.install(provider)
    try:
        yield exporter, provider
    finally:
        telemetry.install(None)


@dataclass(frozen=True)
class ExportedSpan:
    name: str
    service: str
    trace_id: str  # hex, as in a traceparent
    span_id: str
    parent_id: str  # "" for a root span
    attributes: dict[str, Any] = field(default_factory=dict)


class FakeCollector:
    """Serves ``POST /v1/traces`` (protobuf) on a free port; ``spans`` is what came in
    (unless ``keep_spans`` is off: a benchmark's sink only counts them, in ``count``)."""

    def __init__(self, keep_spans: bool = True) -> None:
        self.spans: list[ExportedSpan] = []
        self.count = 0
        self.keep_spans = keep_spans
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeCollector:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self, request: ExportTraceServiceRequest) -> None:
        count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        if not self.keep_spans:
            with self._lock:
                self.count += count
            return
        spans = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(ExportedSpan(
                        name=span.name,
                        service=str(resource.get("service.name", "")),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        attributes=_attributes(span.attributes),
                    ))  # fmt: skip
        with self._lock:
            self.spans.extend(spans)
            self.count += count

    def named(self, name: str) -> list[ExportedSpan]:
        with self._lock:
            return [span for span in self.spans if span.name == name]


def _attributes(pairs: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        values[pair.key] = getattr(pair.value, kind) if kind else None
    return values


def _handler(collector: FakeCollector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            collector.received(request)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return Handler
