"""Agent backends: how to start an agent CLI and read what it reports."""

from __future__ import annotations

from collections.abc import Callable

from agenticore.agents.base import AgentBackend, AgentOutcome
from agenticore.agents.claude import ClaudeBackend
from agenticore.errors import InvalidRequest

__all__ = ["BACKENDS", "AgentBackend", "AgentOutcome", "get_backend"]

BACKENDS: dict[str, Callable[[], AgentBackend]] = {"claude": ClaudeBackend}


def get_backend(name: str) -> AgentBackend:
    try:
        return BACKENDS[name]()
    except KeyError:
        raise InvalidRequest(f"unknown agent {name!r}; available: {', '.join(BACKENDS)}") from None
