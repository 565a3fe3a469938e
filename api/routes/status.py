"""/status: workers, breakers and the queue, for people and autoscalers; /dlq: dead jobs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from agenticore.agents import BACKENDS
from agenticore.apikeys import Role
from agenticore.breaker import CircuitBreaker
from agenticore.config import Settings
from agenticore.errors import StoreUnavailable
from agenticore.fleet import WorkerRecord, WorkerRegistry
from agenticore.jobs import JobStore
from agenticore.models import Job, JobStatus, utcnow
from agenticore.permits import PermitGate
from api.deps import DispatcherDep, SettingsDep, StoreDep, require
from api.schemas import (
    BreakerPublic,
    FleetStatus,
    JobPublic,
    JobsPublic,
    OldestQueuedJob,
    WorkerPublic,
)

__all__ = ["router"]

router = APIRouter(tags=["status"], dependencies=[Depends(require(Role.VIEWER))])


@router.get("/status", response_model=FleetStatus)
async def fleet_status(
    settings: SettingsDep, dispatcher: DispatcherDep, store: StoreDep
) -> FleetStatus:
    workers, depths, oldest = await asyncio.gather(
        asyncio.to_thread(dispatcher.workers),
        asyncio.to_thread(dispatcher.queue_depths),
        asyncio.to_thread(_longest_queued, store),
    )
    gate = PermitGate(settings)
    checked_at = utcnow()
    now = checked_at.timestamp()
    registry = {r.name: r for r in await asyncio.to_thread(WorkerRegistry(settings).all)}
    breakers = []
    for name in BACKENDS:
        state = CircuitBreaker(settings, name).status()
        breakers.append(
            BreakerPublic(
                name=name,
                state=state.state.value,
                failures=state.failures,
                retry_in_seconds=round(state.retry_in(settings.breaker_cooldown_seconds, now), 1),
                last_error=state.last_error,
            )
        )
    names = sorted(set(workers) | set(registry))
    return FleetStatus(
        checked_at=checked_at,
        workers=[
            WorkerPublic(
                name=name,
                state=_worker_state(registry.get(name), workers.get(name), settings, now),
                running=workers.get(name) or 0,
                permits_in_use=gate.in_use(f"node:{name}"),
                last_seen=_moment(registry[name].last_seen) if name in registry else None,
                metrics_url=registry[name].metrics_url if name in registry else None,
            )
            for name in names
        ],
        breakers=breakers,
        queue_depth=sum(depths.values()),
        queue_depth_by_priority=depths,
        oldest_queued_job=_oldest(oldest, now),
        running=gate.in_use("fleet"),
    )


def _longest_queued(store: JobStore) -> Job | None:
    try:
        return store.longest_queued()
    except StoreUnavailable:  # the index is being rebuilt: the rest of the status stands
        return None


def _oldest(job: Job | None, now: float) -> OldestQueuedJob | None:
    if job is None:
        return None
    since = job.waiting_since
    age = max(0.0, now - since.timestamp())
    return OldestQueuedJob(id=job.id, waiting_since=since, age_seconds=round(age, 1))


def _moment(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


def _worker_state(
    record: WorkerRecord | None, running: int | None, settings: Settings, now: float
) -> str:
    """draining as declared; offline without a fresh heartbeat; degraded if it beats but
    does not answer the broker's control messages; else busy or online."""
    declared = record.current_state(settings.lease_seconds, now) if record else None
    if declared == "draining":
        return declared
    if running is None:  # no answer to the control ping
        return "degraded" if declared == "online" else "offline"
    return "busy" if running else "online"


@router.get("/dlq", response_model=JobsPublic)
def dead_letters(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> JobsPublic:
    jobs, next_cursor = store.list_jobs(status=JobStatus.DEAD, limit=limit, cursor=cursor)
    data = [JobPublic.model_validate(job, from_attributes=True) for job in jobs]
    return JobsPublic(data=data, count=len(data), next_cursor=next_cursor)
