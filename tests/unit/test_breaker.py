"""The circuit breaker's states, shared through the store."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from agenticore.breaker import BreakerState, CircuitBreaker
from agenticore.config import Settings


@pytest.fixture(params=["redis", "embedded"])
def breaker_settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Settings:
    return make_settings(request.param, breaker_threshold=3, breaker_cooldown_seconds=0.5)


def test_given_consecutive_infra_failures_then_it_opens_at_the_threshold(
    breaker_settings: Settings,
) -> None:
    breaker = CircuitBreaker(breaker_settings, "claude")

    for _ in range(2):
        breaker.record_failure("agent_crashed")
    assert breaker.allow() == 0 and breaker.status().state is BreakerState.CLOSED
    breaker.record_failure("agent_crashed: exit 3")

    assert breaker.status().state is BreakerState.OPEN
    assert 0 < breaker.allow() <= 0.5
    assert breaker.status().last_error == "agent_crashed: exit 3"


def test_given_a_success_between_failures_then_the_count_starts_over(
    breaker_settings: Settings,
) -> None:
    breaker = CircuitBreaker(breaker_settings, "claude")

    for outcome in ("fail", "fail", "ok", "fail", "fail"):
        breaker.record_success() if outcome == "ok" else breaker.record_failure("x")

    assert breaker.status().state is BreakerState.CLOSED


def test_given_an_open_breaker_after_the_cooldown_then_one_probe_passes_and_decides(
    breaker_settings: Settings,
) -> None:
    breaker = CircuitBreaker(breaker_settings, "claude")
    other_worker = CircuitBreaker(breaker_settings, "claude")
    for _ in range(3):
        breaker.record_failure("x")
    time.sleep(0.6)

    assert breaker.allow() == 0, "the probe"
    assert other_worker.allow() > 0, "only one probe at a time, across workers"
    assert breaker.status().state is BreakerState.HALF_OPEN
    breaker.record_failure("still broken")
    assert other_worker.status().state is BreakerState.OPEN, "a failed probe reopens"

    time.sleep(0.6)
    assert other_worker.allow() == 0
    other_worker.record_success()
    assert breaker.status().state is BreakerState.CLOSED and breaker.allow() == 0


def test_given_two_backends_then_their_breakers_are_independent(
    breaker_settings: Settings,
) -> None:
    for _ in range(3):
        CircuitBreaker(breaker_settings, "claude").record_failure("x")

    assert CircuitBreaker(breaker_settings, "codex").allow() == 0
