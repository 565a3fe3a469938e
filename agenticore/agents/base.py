"""The contract every agent backend fulfils."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from agenticore.config import Settings
from agenticore.models import Job, JobStatus
from agenticore.profiles import JobConfig, Profile
from agenticore.supervisor import ProcessResult

__all__ = ["AgentBackend", "AgentOutcome", "AgentStream", "apply_stop"]


@dataclass
class AgentOutcome:
    status: JobStatus
    error: str | None = None
    result: str | None = None
    cost_usd: float | None = None
    usage: dict[str, Any] | None = None
    num_turns: int | None = None
    session_id: str | None = None
    duration_ms: int | None = None
    exit_code: int | None = None
    # infra: the agent or its provider broke (crash, auth, API): counts for the breaker and
    # is retried; retryable alone: our side broke (clone failed), retried, breaker untouched
    infra: bool = False
    retryable: bool = False


class AgentStream(Protocol):
    """Consumes the agent's stdout one line at a time."""

    session_id: str | None
    result: dict[str, Any] | None  # the final report, in the backend's own shape

    def feed(self, line: bytes) -> dict[str, Any] | None: ...


class AgentBackend(Protocol):
    name: str

    def command(
        self, settings: Settings, profile: Profile, job: Job, config: JobConfig, *, resume: bool
    ) -> list[str]: ...

    def prompt_input(self, job: Job) -> bytes | None:
        """What the agent reads on stdin, or None for /dev/null.

        The task is data: given here rather than in ``command``'s argv, it is never parsed as
        an option, is not bound by the kernel's argument limits and does not show in ``ps``.
        """
        ...

    def environment(
        self, base: dict[str, str], profile: Profile, config: JobConfig
    ) -> dict[str, str]: ...

    def new_stream(self) -> AgentStream: ...

    def outcome(self, stream: AgentStream, process: ProcessResult) -> AgentOutcome: ...

    def transcript_name(self) -> str: ...


def apply_stop(outcome: AgentOutcome, process: ProcessResult) -> None:
    """Why the supervisor ended the run decides the status, whatever the agent reported."""
    reason = process.stop_reason or ""
    if reason == "timeout":
        outcome.status = JobStatus.TIMED_OUT
        outcome.error = f"timeout: no result within {process.duration:.0f}s; agent terminated"
    elif reason == "cancelled":
        outcome.status = JobStatus.CANCELLED
        outcome.error = "cancelled"
    elif reason == "stalled":
        outcome.status = JobStatus.FAILED
        outcome.error = "stalled: the agent printed nothing for too long; agent terminated"
    elif reason == "memory_exceeded":
        outcome.status = JobStatus.FAILED
        peak = f" (peak seen {process.peak_rss_mb:.0f} MB RSS)" if process.peak_rss_mb else ""
        outcome.error = f"memory_exceeded: the agent's processes passed their memory limit{peak}"
    else:
        outcome.status = JobStatus.FAILED
        outcome.error = reason
