"""The job record and its state machine."""

from __future__ import annotations

import os
import re
import time
import uuid
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, field_validator, model_validator

from agenticore.redaction import has_credentials

__all__ = [
    "CELERY_PRIORITY",
    "TERMINAL",
    "Job",
    "JobSpec",
    "JobStatus",
    "PrStatus",
    "Submitter",
    "can_transition",
    "new_job_id",
    "pr_fields_after_run",
    "priority_name",
    "utcnow",
    "valid_job_id",
]

# Patterns end in \Z, not $: "$" also matches before a trailing newline, which would let
# "main\n" through as a ref or a name.
PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
# git check-ref-format, simplified: no spaces, control chars, "..", "@{", leading "-"
GIT_REF = re.compile(r"^(?!-)(?!.*\.\.)(?!.*@\{)[^\s~^:?*\[\\\x00-\x1f\x7f]{1,200}\Z")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/\[\]-]{0,127}\Z")
# job ids become file and folder names (HOME/jobs/<id>.json, worktrees/<id>): UUIDs and
# Celery task ids fit; "/", "." and control characters do not
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# the default of MAX_TASK_BYTES, and the cap no setting can lift (UTF-8 bytes, not chars)
DEFAULT_MAX_TASK_BYTES = 256 * 1024
TASK_BYTES_CAP = 4 * 1024 * 1024


Priority = Literal["interactive", "normal", "batch"]
# labels, users and "org/team" names as forges accept them
PrName = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f,]{1,100}$")]
# printable: the key is echoed in headers and logs (the Idempotency-Key header too)
IDEMPOTENCY_KEY_PATTERN = r"^[^\x00-\x1f\x7f]{1,200}$"
IdempotencyKey = Annotated[str, StringConstraints(pattern=IDEMPOTENCY_KEY_PATTERN)]

# Celery message priorities; on Redis a lower number is served first. Steps 0/3/6/9 are
# separate lists, so each level sits in its own one.
CELERY_PRIORITY: dict[str, int] = {"interactive": 0, "normal": 5, "batch": 9}


def priority_name(celery_priority: int) -> str:
    """The job priority a Celery priority counts as: the one of its Redis step (0-2, 3-8,
    9), so a message sent with another number is counted where Redis serves it."""
    if celery_priority < 3:
        return "interactive"
    return "batch" if celery_priority >= 9 else "normal"


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    DEAD = "dead"  # out of attempts after infrastructure failures; re-queued only on request

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


class PrStatus(str, Enum):
    """Where a job's pull request step stands; it never changes the run's own status."""

    PENDING = "pending"  # the run succeeded and the PR step is on its way
    OPENED = "opened"  # a pull request exists for the job branch (opened or found)
    NO_CHANGES = "no_changes"  # the agent changed nothing: no branch pushed, no PR
    SKIPPED = "skipped"  # the run did not succeed
    FAILED = "failed"  # pushing or the provider failed past its attempts; see pr_error

    @property
    def final(self) -> bool:
        return self is not PrStatus.PENDING


TERMINAL = frozenset(
    {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.TIMED_OUT,
        JobStatus.DEAD,
    }
)

_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    # running -> running is a redelivered attempt; running -> queued hands a job back
    JobStatus.RUNNING: frozenset({JobStatus.RUNNING, JobStatus.QUEUED} | TERMINAL),
    # the dead-letter list is the one way back: an explicit retry
    JobStatus.DEAD: frozenset({JobStatus.QUEUED}),
}


def can_transition(current: JobStatus, wanted: JobStatus) -> bool:
    return wanted in _ALLOWED.get(current, frozenset())


_last_stamp = 0


def new_job_id() -> str:
    """A UUIDv7 whose 12 ``rand_a`` bits hold sub-millisecond time (RFC 9562, method 3).

    Ids sort by creation time, which the store's newest-first index relies on.
    """
    global _last_stamp
    # 48 bits of milliseconds + 12 bits of the millisecond's fraction, kept monotonic
    stamp = max(time.time_ns() * 4096 // 1_000_000, _last_stamp + 1)
    _last_stamp = stamp
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (stamp >> 12) << 80 | 0x7 << 76 | (stamp & 0xFFF) << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def utcnow() -> datetime:
    return datetime.now(UTC)


def pr_fields_after_run(status: JobStatus) -> dict[str, Any]:
    """The record of a PR step that was to follow a run ending in ``status``: pending for a
    succeeded run (the step settles it), else settled as skipped, since a run that did not
    succeed ends its task in FAILURE and a chained step never runs after that."""
    if status is JobStatus.SUCCEEDED:
        return {"pr_status": PrStatus.PENDING, "pr_due_at": utcnow()}
    if not status.terminal:
        return {}  # another attempt follows
    return {"pr_status": PrStatus.SKIPPED, "pr_error": f"the run {status.value}",
            "pr_due_at": None}  # fmt: skip


def valid_job_id(job_id: str) -> bool:
    """Whether ``job_id`` is safe as a file or folder name (see ``JOB_ID``)."""
    return JOB_ID.match(job_id) is not None


class JobSpec(BaseModel):
    """What a caller asks for; validated the same way by the API, the CLI and the task."""

    model_config = {"extra": "forbid"}

    # chars <= bytes, so max_length is a cheap first cut; the validator counts the bytes
    task: str = Field(min_length=1, max_length=TASK_BYTES_CAP)
    repo_url: str | None = Field(default=None, max_length=2048)
    base_ref: str | None = None
    profile: str = "default"
    model: str | None = None
    agent: Literal["claude"] = "claude"
    session_id: str | None = Field(default=None, description="resume this agent session")
    timeout_seconds: int | None = Field(default=None, ge=1, le=7 * 86400)
    max_turns: int | None = Field(default=None, ge=1, le=10_000)
    max_cost_usd: float | None = Field(default=None, gt=0, le=10_000)
    max_attempts: int | None = Field(default=None, ge=1, le=20)
    keep_worktree: bool = False
    idempotency_key: IdempotencyKey | None = None
    priority: Priority = "normal"
    auto_pr: bool | None = Field(default=None, description="open a PR; unset = the profile's")
    pr_labels: list[PrName] | None = Field(default=None, max_length=20)
    pr_reviewers: list[PrName] | None = Field(default=None, max_length=20)
    pr_draft: bool | None = Field(default=None, description="unset = profile, then config")

    @field_validator("task")
    @classmethod
    def _task_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("task must not be blank")
        if "\x00" in value:  # C strings (argv, the agent, git) end at NUL: never meant
            raise ValueError("task must not contain NUL characters")
        size = len(value.encode())
        if size > TASK_BYTES_CAP:
            raise ValueError(f"task is {size} bytes (UTF-8); the cap is {TASK_BYTES_CAP}")
        return value

    @field_validator("repo_url")
    @classmethod
    def _repo_without_secrets(cls, value: str | None) -> str | None:
        # checked here, not only in the API, so no entry point can store a token
        if value is not None and has_credentials(value.strip()):
            raise ValueError("repo_url must not embed credentials; configure a token instead")
        if value is not None and CONTROL_CHARS.search(value.strip()):
            raise ValueError("repo_url must not contain control characters")
        return value.strip() or None if value is not None else None

    @model_validator(mode="after")
    def _pr_needs_repo(self) -> JobSpec:
        if self.auto_pr and self.repo_url is None:
            raise ValueError("auto_pr needs a repo_url: there is nothing to open a PR against")
        return self

    @field_validator("base_ref")
    @classmethod
    def _valid_ref(cls, value: str | None) -> str | None:
        if value is not None and not GIT_REF.match(value):
            raise ValueError(f"{value!r} is not a valid git ref")
        return value

    @field_validator("profile")
    @classmethod
    def _valid_profile(cls, value: str) -> str:
        if not PROFILE_NAME.match(value):
            raise ValueError("profile names use letters, digits, '.', '_' and '-'")
        return value

    @field_validator("model")
    @classmethod
    def _valid_model(cls, value: str | None) -> str | None:
        if value is not None and not MODEL_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid model name")
        return value

    @field_validator("session_id")
    @classmethod
    def _valid_session(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("session_id must be a UUID") from None


class Submitter(BaseModel):
    """The API key a job was submitted with: its id (not secret) and name."""

    id: str
    name: str


class Job(JobSpec):
    """The stored record. Only the store and the runner change it."""

    model_config = {"extra": "ignore"}

    id: str
    status: JobStatus = JobStatus.QUEUED
    created_at: datetime = Field(default_factory=utcnow)
    queued_at: datetime | None = None  # when it was last handed back to the queue
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    worker_state: str | None = None  # "draining" while its worker drains
    attempts: int = 0
    resume_session: str | None = None
    agent_pid: int | None = None
    exit_code: int | None = None
    result: str | None = None
    error: str | None = None
    cost_usd: float | None = None
    usage: dict[str, Any] | None = None
    num_turns: int | None = None
    duration_ms: int | None = None
    transcript_path: str | None = None
    worktree_path: str | None = None
    changed_files: list[str] | None = None
    salvaged: bool = False
    branch: str | None = None
    base_sha: str | None = None
    commit_sha: str | None = None
    pr_status: PrStatus | None = None
    pr_url: str | None = None
    pr_number: int | None = None
    pr_error: str | None = None
    pr_attempts: int = 0
    pr_due_at: datetime | None = None  # a pending PR step should show progress by then
    submitted_by: Submitter | None = None  # set by the API from the caller's key
    # W3C traceparent/tracestate of the trace the job was created in: every send of the job
    # (and of its PR step) joins it, so a job is one trace however often it is re-sent
    trace_context: dict[str, str] | None = None

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        # every entry point (API, CLI, a caller-chosen Celery task id) builds paths from it
        if not valid_job_id(value):
            raise ValueError("job ids use letters, digits, '_' and '-' (at most 64)")
        return value

    @classmethod
    def from_spec(cls, spec: JobSpec, job_id: str | None = None) -> Job:
        return cls(id=job_id or new_job_id(), resume_session=spec.session_id, **spec.model_dump())

    @property
    def short_id(self) -> str:
        """Random tail of the id: unique enough for branch names, unlike the time prefix."""
        return self.id.replace("-", "")[-10:]

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def waiting_since(self) -> datetime:
        """When it last joined the queue: created, or handed back (a retried dead job)."""
        return self.queued_at or self.created_at

    def attempts_left(self, default: int) -> bool:
        """Whether another attempt is allowed (the job's own limit, else ``default``)."""
        return self.attempts < (self.max_attempts or default)
