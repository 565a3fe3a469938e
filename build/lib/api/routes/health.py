"""/healthz (the process answers) and /readyz (broker and job store answer)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status

from api.deps import DispatcherDep, SettingsDep, StoreDep
from api.schemas import Readiness

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness)
async def readyz(
    response: Response, settings: SettingsDep, store: StoreDep, dispatcher: DispatcherDep
) -> Readiness:
    broker, store_state = await asyncio.gather(_check(dispatcher.ping_broker), _check(store.ping))
    ready = broker == "ok" and store_state == "ok"
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    backend = "embedded" if settings.embedded else "redis"
    return Readiness(ready=ready, broker=broker, store=store_state, backend=backend)


async def _check(probe: object) -> str:
    try:
        await asyncio.wait_for(asyncio.to_thread(probe), timeout=5)  # type: ignore[arg-type]
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"[:300]
    return "ok"
