"""Request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from agenticore.apikeys import Role
from agenticore.models import JobSpec, JobStatus, PrStatus, Submitter

__all__ = [
    "BUNDLE_RESPONSE",
    "DIFF_RESPONSE",
    "ERROR_RESPONSES",
    "ApiKeyCreate",
    "ApiKeyCreated",
    "ApiKeyPublic",
    "ApiKeysPublic",
    "BreakerPublic",
    "ErrorResponse",
    "FleetStatus",
    "JobCreate",
    "JobPublic",
    "JobsPublic",
    "ProfilePublic",
    "ProfilesPublic",
    "Readiness",
    "WorkerPublic",
]


class JobCreate(JobSpec):
    wait: bool = Field(default=False, description="hold the request until the job ends")
    wait_timeout_seconds: float | None = Field(default=None, gt=0, le=86400)


class JobPublic(BaseModel):
    id: str
    status: JobStatus
    task: str
    repo_url: str | None
    base_ref: str | None
    profile: str
    model: str | None
    agent: str
    session_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    worker_state: str | None
    attempts: int
    exit_code: int | None
    result: str | None
    error: str | None
    cost_usd: float | None
    usage: dict[str, Any] | None
    num_turns: int | None
    duration_ms: int | None
    transcript_path: str | None
    changed_files: list[str] | None
    salvaged: bool
    priority: str
    timeout_seconds: int | None
    max_turns: int | None
    max_cost_usd: float | None
    max_attempts: int | None
    keep_worktree: bool
    worktree_path: str | None
    auto_pr: bool | None
    pr_labels: list[str] | None
    pr_reviewers: list[str] | None
    pr_draft: bool | None
    branch: str | None
    base_sha: str | None
    commit_sha: str | None
    pr_status: PrStatus | None
    pr_url: str | None
    pr_number: int | None
    pr_error: str | None
    pr_attempts: int
    submitted_by: Submitter | None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int
    next_cursor: str | None


class ProfilePublic(BaseModel):
    name: str
    description: str
    model: str | None
    max_turns: int | None
    permission_mode: str | None
    timeout: int | None


class ProfilesPublic(BaseModel):
    data: list[ProfilePublic]
    count: int


class Readiness(BaseModel):
    ready: bool
    broker: str
    store: str
    backend: str


class WorkerPublic(BaseModel):
    name: str
    state: str
    running: int
    permits_in_use: int
    last_seen: datetime | None = Field(description="its last heartbeat")
    metrics_url: str | None = None  # where the worker serves Prometheus metrics


class BreakerPublic(BaseModel):
    name: str
    state: str
    failures: int
    retry_in_seconds: float
    last_error: str | None


class OldestQueuedJob(BaseModel):
    id: str
    waiting_since: datetime = Field(description="created, or handed back to the queue")
    age_seconds: float


class FleetStatus(BaseModel):
    checked_at: datetime = Field(description="when this answer was put together")
    workers: list[WorkerPublic]
    breakers: list[BreakerPublic]
    queue_depth: int = Field(description="messages waiting in the broker, all priorities")
    queue_depth_by_priority: dict[str, int]
    oldest_queued_job: OldestQueuedJob | None = Field(
        description="the longest-waiting queued job: in the broker, deferred or held back"
    )
    running: int


class ScalingPublic(BaseModel):
    waiting: int = Field(description="messages in the broker, every priority list")
    waiting_by_priority: dict[str, int]
    running: int
    held: int = Field(description="queued jobs in no list: deferred, held by a limit, unsent")
    in_flight: int = Field(description="running + held")
    demand: int = Field(description="waiting + in_flight: scale on this")
    jobs_per_worker: int
    desired_workers: int = Field(description="ceil(demand / jobs_per_worker)")


class ApiKeyCreate(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=100)
    role: Role


class ApiKeyPublic(BaseModel):
    id: str
    name: str
    role: Role
    created: datetime
    revoked: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="the secret key; shown this once, never stored")


class ApiKeysPublic(BaseModel):
    data: list[ApiKeyPublic]
    count: int


class ValidationIssue(BaseModel):
    """One thing wrong with a request: where (``loc``) and what, never the value sent."""

    loc: list[str | int]
    msg: str
    type: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: a message, or for malformed requests the list of issues."""

    detail: str | list[ValidationIssue]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


# documented on every route, so clients (and schema checks) know each answer they can get
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("the body could not be read as JSON text (e.g. not UTF-8)"),
    401: _error("no API key, or an unknown or revoked one"),
    403: _error("the key's role, or the job's owner, does not allow this"),
    404: _error("no such job, key or profile"),
    409: _error("the job's state does not allow this"),
    413: _error("the request body is larger than MAX_BODY_BYTES"),
    422: _error("invalid input: a message, or the issues found (loc, msg, type)"),
    429: _error("the fleet is busy (MAX_QUEUE_DEPTH); see Retry-After"),
    503: _error("the job store or the broker is unavailable"),
    507: _error("the disk under the job store is full"),
}


def _file(media_type: str, description: str, binary: bool = False) -> dict[int | str, Any]:
    schema = {"type": "string"} | ({"format": "binary"} if binary else {})
    return {200: {"content": {media_type: {"schema": schema}}, "description": description}}


DIFF_RESPONSE = _file(
    "text/x-diff",
    "the unified diff of the job branch against its base (empty: no changes); for a running "
    "job, what the branch holds so far (the run commits its work when it ends)",
)
BUNDLE_RESPONSE = _file(
    "application/octet-stream",
    "a git bundle of the job branch's commits past its base: "
    "`git fetch <file> refs/heads/<branch>:refs/heads/<branch>` in a clone that has the base",
    binary=True,
)
