"""OpenTelemetry tracing: one trace per job, from ``POST /jobs`` to the agent's own telemetry.

Configured only through the standard ``OTEL_*`` variables. Tracing is on when
``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``; ``none`` is off) or an
OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``),
and ``OTEL_SDK_DISABLED`` is not ``true``. Otherwise nothing is set up and every helper here
returns at once: ``span`` is a null context, ``carrier`` is empty.

A job's trace context (``traceparent``, ``tracestate``) is stored on its record when it is
created, so whoever sends the job again (the reconciler, a retry) sends it inside the job's
trace (``attached``). The agent gets ``TRACEPARENT`` (``agent_env``) from the ``agent.run``
span, so Claude Code's own telemetry, when its profile turns it on, joins the trace.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode, Tracer

from agenticore.errors import ConfigurationError
from agenticore.redaction import register_secret

if TYPE_CHECKING:  # the SDK loads only when tracing is configured
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "SpanKind",
    "agent_env",
    "attached",
    "build_provider",
    "carrier",
    "check",
    "configure",
    "enabled",
    "flush",
    "install",
    "provider",
    "record_outcome",
    "register_header_secrets",
    "shutdown",
    "span",
    "tracing_configured",
]

log = logging.getLogger(__name__)

_SCOPE = "agenticore"
# every signal's headers: a profile may turn on the agent's metrics and logs exporters too
_HEADER_VARIABLES = tuple(
    f"OTEL_EXPORTER_OTLP{signal}_HEADERS" for signal in ("", "_TRACES", "_METRICS", "_LOGS")
)


class _State:
    provider: TracerProvider | None = None
    tracer: Tracer | None = None
    pid: int | None = None  # the process that configured it (a fork inherits the provider)


_state = _State()


def enabled() -> bool:
    return _state.tracer is not None


def provider() -> TracerProvider | None:
    """The provider spans go to, for instrumentations (None: tracing is off)."""
    return _state.provider


def tracing_configured(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The exporters the standard variables ask for; empty means tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if named:
        return [n for n in (p.strip() for p in named.split(",")) if n and n != "none"]
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return ["otlp"] if any(environ.get(name) for name in endpoints) else []


def configure(service_name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Sets up tracing for this process if the standard variables ask for it; returns
    whether it is on. Idempotent; a forked child keeps its parent's provider (the SDK
    restarts its export thread, the exporter connects anew per process)."""
    if _state.pid is not None:
        return enabled()
    _state.pid = os.getpid()
    tracer_provider = build_provider(service_name, environ)
    if tracer_provider is None:
        return False
    trace.set_tracer_provider(tracer_provider)  # the libraries we call trace into it too
    install(tracer_provider)
    log.info("tracing on: %s exporting to %s", service_name,
             ", ".join(tracing_configured(environ)))  # fmt: skip
    return True


def build_provider(service_name: str, environ: Mapping[str, str]) -> TracerProvider | None:
    """The provider the variables ask for (batched export to each exporter), or None.
    Raises ``ConfigurationError`` for an exporter or protocol this install cannot do."""
    exporters = tracing_configured(environ)
    if not exporters:
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    factories = [_exporter(name, environ) for name in exporters]  # all checked first
    register_header_secrets(environ)
    tracer_provider = TracerProvider(resource=_resource(service_name))
    for factory in factories:
        tracer_provider.add_span_processor(BatchSpanProcessor(_per_process(factory)))
    return tracer_provider


def check(environ: Mapping[str, str] = os.environ) -> None:
    """Raises ``ConfigurationError`` if the variables ask for an exporter or protocol this
    install cannot do: ``agenticore serve`` and ``worker`` refuse to start, rather than
    run untraced."""
    for name in tracing_configured(environ):
        _exporter(name, environ)


def install(tracer_provider: TracerProvider | None) -> None:
    """Sends our spans to ``tracer_provider`` (``configure`` does; tests pass an in-memory
    one); None turns tracing off again."""
    _state.provider = tracer_provider
    _state.tracer = tracer_provider.get_tracer(_SCOPE) if tracer_provider is not None else None


def shutdown() -> None:
    """Exports what is buffered, then stops (a process that ends calls it)."""
    if _state.provider is not None:
        _state.provider.shutdown()


def flush(timeout_seconds: float = 2.0) -> None:
    """Exports what is buffered, waiting at most ``timeout_seconds`` (a process about to be
    ended by a signal must not hang on a collector that does not answer)."""
    if _state.provider is not None:
        _state.provider.force_flush(timeout_millis=int(timeout_seconds * 1000))


def span(
    name: str, attributes: Mapping[str, Any] | None = None, kind: SpanKind = SpanKind.INTERNAL
) -> AbstractContextManager[Span]:
    """A context manager: a span of ours, current while it runs (a null context when
    tracing is off). Yields the span, to add attributes to."""
    if _state.tracer is None:
        return nullcontext(INVALID_SPAN)
    return _state.tracer.start_as_current_span(name, kind=kind, attributes=_clean(attributes))


def record_outcome(target: Span, attributes: Mapping[str, Any], error: str | None = None) -> None:
    """Sets the attributes that have a value (None is no attribute value) and, with an
    ``error``, marks the span failed."""
    if not target.is_recording():
        return
    target.set_attributes(_clean(attributes))
    if error:
        target.set_status(Status(StatusCode.ERROR, error))


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``, ``tracestate``); empty
    when tracing is off or nothing is being traced."""
    if _state.tracer is None or not trace.get_current_span().get_span_context().is_valid:
        return {}
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return {k: v for k, v in headers.items() if k in ("traceparent", "tracestate")}


@contextmanager
def _attach(stored: otel_context.Context) -> Iterator[None]:
    token = otel_context.attach(stored)
    try:
        yield
    finally:
        otel_context.detach(token)


def attached(headers: Mapping[str, str] | None) -> AbstractContextManager[None]:
    """A context manager: runs its body inside a stored trace context (a job's), so a span
    started there joins that trace. Code already tracing inside that trace (the job's own
    run) keeps its nearer parent. A null context without one or with tracing off."""
    if _state.tracer is None or not headers or "traceparent" not in headers:
        return nullcontext()
    stored = propagate.extract(dict(headers))
    stored_trace = trace.get_current_span(stored).get_span_context()
    current = trace.get_current_span().get_span_context()
    if not stored_trace.is_valid or current.trace_id == stored_trace.trace_id:
        return nullcontext()  # (an invalid current span has trace id 0, no valid one's)
    return _attach(stored)


def agent_env() -> dict[str, str]:
    """``TRACEPARENT`` (and ``TRACESTATE``) for a child process, from the current span."""
    return {name.upper(): value for name, value in carrier().items()}


def register_header_secrets(environ: Mapping[str, str]) -> None:
    """OTLP headers carry credentials (``Authorization=Bearer …``, API keys): their values
    are masked wherever we log or store text."""
    for variable in _HEADER_VARIABLES:
        for pair in environ.get(variable, "").split(","):
            _, _, value = pair.partition("=")
            register_secret(unquote(value.strip()) or None)


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (attributes or {}).items() if v is not None}


def _resource(service_name: str) -> Resource:
    """``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` win over our default name."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    detected = Resource.create()
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        detected = detected.merge(Resource({SERVICE_NAME: service_name}))
    return detected


def _exporter(name: str, environ: Mapping[str, str]) -> Callable[[], SpanExporter]:
    """A factory of the exporter ``name``; the OTLP ones read their endpoint, headers,
    timeout and TLS settings from the standard variables themselves."""
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter
    if name != "otlp":
        raise ConfigurationError(f"OTEL_TRACES_EXPORTER={name!r}: use otlp, console or none")
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError:
            raise ConfigurationError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc "
                "installed; or use http/protobuf"
            ) from None
        factory: Callable[[], SpanExporter] = GrpcSpanExporter
        return factory
    raise ConfigurationError(f"OTLP protocol {protocol!r}: use http/protobuf or grpc")


def _per_process(make: Callable[[], SpanExporter]) -> SpanExporter:
    """An exporter made anew in each process: a prefork pool process inherits its parent's
    provider, but must not share its parent's HTTP connections."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class PerProcess(SpanExporter):
        def __init__(self) -> None:
            self._exporter: SpanExporter | None = None
            self._pid = 0

        def _current(self) -> SpanExporter:
            if self._exporter is None or self._pid != os.getpid():
                self._exporter, self._pid = make(), os.getpid()
            return self._exporter

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return self._current().export(spans)

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return self._current().force_flush(timeout_millis)

        def shutdown(self) -> None:
            if self._exporter is not None and self._pid == os.getpid():
                self._exporter.shutdown()

    return PerProcess()
