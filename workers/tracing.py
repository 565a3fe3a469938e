"""Tracing of the Celery side: publish and run spans (``opentelemetry-instrumentation-celery``)
on top of ``agenticore.telemetry``, which decides from the ``OTEL_*`` variables whether
tracing is on at all."""

from __future__ import annotations

from agenticore import telemetry

__all__ = ["start_tracing"]


def start_tracing(service_name: str) -> bool:
    """Configures tracing for this process and traces Celery messages it sends and runs;
    returns whether tracing is on (off: nothing is instrumented, nothing costs)."""
    if not telemetry.configure(service_name):
        return False
    from opentelemetry.instrumentation.celery import CeleryInstrumentor  # only when on

    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=telemetry.provider())
    return True
