"""The contract every agent backend fulfils."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from agenticore.config import Settings
from agenticore.models import Job, JobStatus
from agenticore.profiles import JobConfig, Profile
from agenticore.supervisor import ProcessResult

__all__ = ["AgentBackend", "AgentOutcome", "AgentStream"]


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
    extra: dict[str, Any] = field(default_factory=dict)


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

    def environment(
        self, base: dict[str, str], profile: Profile, config: JobConfig
    ) -> dict[str, str]: ...

    def new_stream(self) -> AgentStream: ...

    def outcome(self, stream: AgentStream, process: ProcessResult) -> AgentOutcome: ...

    def transcript_name(self) -> str: ...
