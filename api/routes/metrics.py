"""/metrics: Prometheus metrics of the API process and the fleet's state (role viewer)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from agenticore import metrics
from agenticore.apikeys import Role
from agenticore.gauges import FleetCollector
from api.deps import DispatcherDep, SettingsDep, StoreDep, require

__all__ = ["router"]

router = APIRouter(tags=["metrics"], dependencies=[Depends(require(Role.VIEWER))])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def prometheus_metrics(
    request: Request, settings: SettingsDep, store: StoreDep, dispatcher: DispatcherDep
) -> Response:
    # one collector per app: it remembers which store reads failed, to log them once
    collector: FleetCollector | None = getattr(request.app.state, "fleet_collector", None)
    if collector is None:
        collector = FleetCollector(settings, store, dispatcher.queue_depths)
        request.app.state.fleet_collector = collector
    body = await asyncio.to_thread(metrics.exposition, [collector])
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
