"""The ASGI app: ``uvicorn api.main:app`` or ``agenticore serve``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from agenticore import __version__, logs, telemetry
from agenticore.apikeys import KeyStore, exposure_error
from agenticore.config import Settings, get_settings
from agenticore.errors import (
    AgenticoreError,
    InvalidRequest,
    InvalidTransition,
    JobNotFound,
    LockTimeout,
    StorageFull,
    StoreUnavailable,
)
from agenticore.jobs import JobStore
from api.auth import Authenticate
from api.deps import AppState
from api.dispatch import Dispatcher
from api.limits import BodyLimit
from api.routes import health, jobs, keys, metrics, profiles, scaling, status
from api.schemas import ERROR_RESPONSES
from workers.tracing import start_tracing

__all__ = ["app", "create_app"]

_STATUS_BY_ERROR: list[tuple[type[AgenticoreError], int]] = [
    (InvalidRequest, 422),
    (JobNotFound, 404),
    (InvalidTransition, 409),
    (StorageFull, 507),
    (StoreUnavailable, 503),
    (LockTimeout, 503),
]


def create_app(settings: Settings | None = None) -> FastAPI:
    # uvicorn has configured logging by now: mask secrets in every line (access log too)
    logs.install(log_format=(settings or get_settings()).log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = settings or get_settings()
        if reason := exposure_error(resolved, resolved.host):  # `agenticore serve` checks too
            raise RuntimeError(reason)
        store = JobStore(resolved)
        dispatcher = Dispatcher(resolved, store)
        app.state.agenticore = AppState(resolved, store, dispatcher, KeyStore(resolved))
        yield
        dispatcher.close()
        telemetry.shutdown()

    app = FastAPI(
        title="Agenticore", version=__version__, lifespan=lifespan, responses=ERROR_RESPONSES
    )
    app.add_middleware(BodyLimit, limit=lambda: (settings or get_settings()).max_body_bytes)
    app.add_middleware(Authenticate)  # outermost: no key, nothing of the body is read
    app.include_router(jobs.router)
    app.include_router(profiles.router)
    app.include_router(health.router)
    app.include_router(status.router)
    app.include_router(keys.router)
    app.include_router(metrics.router)
    app.include_router(scaling.router)
    app.add_exception_handler(AgenticoreError, _agenticore_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    if start_tracing("agenticore-api"):  # POST /jobs starts each job's trace
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=telemetry.provider(),
            excluded_urls="healthz,readyz,metrics,scaling",
            exclude_spans=["receive", "send"],
        )  # fmt: skip
    return app


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with where and what, never the submitted value back (it may hold a secret)."""
    errors = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": errors})


async def _agenticore_error(request: Request, exc: AgenticoreError) -> JSONResponse:
    code = next((code for kind, code in _STATUS_BY_ERROR if isinstance(exc, kind)), 500)
    return JSONResponse(status_code=code, content={"detail": str(exc)})


app = create_app()
