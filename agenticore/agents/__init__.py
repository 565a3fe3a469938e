"""Agent backends: how to start an agent CLI and read what it reports."""

from __future__ import annotations

from collections.abc import Callable

from agenticore.agents.base import AgentBackend, AgentOutcome
from agenticore.agents.claude import ClaudeBackend
from agenticore.errors import InvalidRequest

__all__ = ["AgentBackend", "AgentOutcome", "get_backend"]

_BACKENDS: dict[str, Callable[[], AgentBackend]] = {"claude": ClaudeBackend}


def get_backend(name: str) -> AgentBackend:
    try:
        return _BACKENDS[name]()
    except KeyError:
        raise InvalidRequest(f"unknown agent {name!r}; available: {', '.join(_BACKENDS)}") from None
