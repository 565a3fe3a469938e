"""Claude Code, driven headless: ``claude -p --output-format stream-json --verbose``, the task
on stdin (print mode reads its prompt there until EOF when no prompt operand is given).

The stream is one JSON object per line: ``system/init`` first, then ``assistant``/``user``
messages, and a final ``result`` event with cost, usage and turns. SIGTERM makes the CLI
exit 143 without a result; an error result exits 1.
"""

from __future__ import annotations

import json
import signal
from typing import Any

from agenticore.agents.base import AgentOutcome, AgentStream, apply_stop
from agenticore.config import Settings
from agenticore.models import Job, JobStatus
from agenticore.profiles import JobConfig, Profile, build_cli_args
from agenticore.redaction import redact_text
from agenticore.sandbox import agent_environment
from agenticore.supervisor import SIGTERM_EXIT, ProcessResult

__all__ = ["ClaudeBackend", "ClaudeStream"]

# what the CLI needs to reach its model; nothing else of the worker's environment passes
_CREDENTIAL_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_", "CLOUD_ML_", "VERTEX_REGION_")
_CREDENTIAL_NAMES = frozenset({"DISABLE_TELEMETRY", "DISABLE_AUTOUPDATER", "MAX_THINKING_TOKENS"})
# the CLI refuses to start inside another Claude Code session
_NOT_OURS = frozenset({"CLAUDE_CODE_ENTRYPOINT", "CLAUDECODE"})


def _is_model_credential(name: str) -> bool:
    return name in _CREDENTIAL_NAMES or (
        name.startswith(_CREDENTIAL_PREFIXES) and name not in _NOT_OURS
    )


class ClaudeStream:
    """Keeps what matters from the stream: the session id and the result event."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.result: dict[str, Any] | None = None
        self.events = 0
        self.assistant_turns = 0

    def feed(self, line: bytes) -> dict[str, Any] | None:
        try:
            event = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return None  # the CLI and its hooks sometimes print plain text
        if not isinstance(event, dict) or "type" not in event:
            return None
        self.events += 1
        if isinstance(event.get("session_id"), str):
            self.session_id = event["session_id"]
        if event["type"] == "assistant":
            self.assistant_turns += 1
        elif event["type"] == "result":
            self.result = event
        return event


class ClaudeBackend:
    name = "claude"

    def command(
        self, settings: Settings, profile: Profile, job: Job, config: JobConfig, *, resume: bool
    ) -> list[str]:
        """The argv holds flags only: the task travels on stdin (``prompt_input``)."""
        return build_cli_args(
            profile,
            job,
            claude_bin=settings.claude_bin,
            resume=resume,
            mcp_config=config.mcp_config,
        )

    def prompt_input(self, job: Job) -> bytes:
        # as an operand, a task starting with '-' would be an option, a long one E2BIG
        return job.task.encode("utf-8")

    def environment(
        self, base: dict[str, str], profile: Profile, config: JobConfig
    ) -> dict[str, str]:
        env = agent_environment(
            base,
            home=config.home,
            allow=_is_model_credential,
            extra=profile.env,
        )
        env["CLAUDE_CONFIG_DIR"] = str(config.config_dir)
        return env

    def new_stream(self) -> ClaudeStream:
        return ClaudeStream()

    def transcript_name(self) -> str:
        return "transcript.jsonl"

    def outcome(self, stream: AgentStream, process: ProcessResult) -> AgentOutcome:
        outcome = _from_result(stream.result) if stream.result else AgentOutcome(JobStatus.FAILED)
        outcome.exit_code = process.exit_code
        outcome.session_id = stream.session_id
        if process.stop_reason is not None:
            apply_stop(outcome, process)
        elif stream.result is None:
            outcome.error = _missing_result_error(process)
            # exit 1 without a result is the CLI refusing its arguments: retrying won't help
            outcome.infra = process.exit_code != 1
        elif outcome.status is JobStatus.SUCCEEDED and process.exit_code != 0:
            outcome.status = JobStatus.FAILED
            outcome.error = f"agent_exit: exit code {process.exit_code} after a success result"
        return outcome


def _from_result(event: dict[str, Any]) -> AgentOutcome:
    is_error = bool(event.get("is_error"))
    subtype = str(event.get("subtype", "unknown"))
    text = event.get("result")
    outcome = AgentOutcome(
        status=JobStatus.FAILED if is_error else JobStatus.SUCCEEDED,
        result=text if isinstance(text, str) else None,
        cost_usd=_number(event.get("total_cost_usd")),
        usage=event.get("usage") if isinstance(event.get("usage"), dict) else None,
        num_turns=_int(event.get("num_turns")),
        duration_ms=_int(event.get("duration_ms")),
    )
    if is_error:
        errors = event.get("errors") or ([text] if text else [])
        detail = "; ".join(str(e) for e in errors) or "no details"
        outcome.error = f"agent_error: {subtype}: {redact_text(detail)}"
        outcome.infra = _provider_failure(event, detail)
    return outcome


_PROVIDER_SIGNS = ("api error", "invalid api key", "/login", "authentication", "overloaded",
                   "rate limit", "credit balance")  # fmt: skip


def _provider_failure(event: dict[str, Any], detail: str) -> bool:
    """Auth and API errors are the provider's failure, not the task's.

    The CLI reports a failed login as ``subtype: success`` with ``is_error: true``; API
    outages end with ``terminal_reason: api_error``.
    """
    if event.get("subtype") == "success" or event.get("terminal_reason") == "api_error":
        return True
    return any(sign in detail.lower() for sign in _PROVIDER_SIGNS)


def _missing_result_error(process: ProcessResult) -> str:
    code = process.exit_code
    tail = redact_text(process.stderr_tail.splitlines()[-1]) if process.stderr_tail else ""
    suffix = f": {tail}" if tail else ""
    if code in (SIGTERM_EXIT, -signal.SIGTERM):
        return f"agent_terminated: the agent was terminated (exit {code}) before a result{suffix}"
    if code is not None and code < 0:
        return f"agent_killed: the agent died from signal {-code} before a result{suffix}"
    if code == 0:
        return f"no_result: the agent exited 0 without a result event{suffix}"
    if code == 1:
        return f"agent_usage_error: the agent refused to run{suffix}"
    return f"agent_crashed: exit code {code} without a result event{suffix}"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None
