"""/scaling: the demand KEDA's ``metrics-api`` trigger reads to size the workers."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from agenticore.apikeys import Role
from agenticore.scaling import read_demand
from api.deps import DispatcherDep, SettingsDep, StoreDep, require
from api.schemas import ScalingPublic

__all__ = ["router"]

router = APIRouter(tags=["status"], dependencies=[Depends(require(Role.VIEWER))])


@router.get("/scaling", response_model=ScalingPublic)
async def scaling(
    settings: SettingsDep,
    store: StoreDep,
    dispatcher: DispatcherDep,
    jobs_per_worker: Annotated[
        int | None, Query(ge=1, le=1000, description="default: MAX_PARALLEL_JOBS")
    ] = None,
) -> ScalingPublic:
    depths = await asyncio.to_thread(dispatcher.queue_depths)
    demand = await asyncio.to_thread(read_demand, store, depths)
    per_worker = jobs_per_worker or settings.max_parallel_jobs
    return ScalingPublic(
        waiting=demand.waiting,
        waiting_by_priority=depths,
        running=demand.running,
        held=demand.held,
        in_flight=demand.in_flight,
        demand=demand.total,
        jobs_per_worker=per_worker,
        desired_workers=demand.desired_workers(per_worker),
    )
