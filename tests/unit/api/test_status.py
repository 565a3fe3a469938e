"""How /status names a worker's state from its heartbeat and its answer to a ping."""

from __future__ import annotations

import pytest

from agenticore.config import Settings
from agenticore.fleet import WorkerRecord
from api.routes.status import _worker_state

NOW = 1_000_000.0
SETTINGS = Settings(lease_seconds=10)


@pytest.mark.parametrize(
    ("declared", "seen_ago", "running", "state"),
    [
        ("online", 1, 0, "online"),
        ("online", 1, 2, "busy"),
        ("draining", 1, 1, "draining"),
        ("online", 1, None, "degraded"),  # heartbeats, but no answer to the ping
        ("online", 60, None, "offline"),  # heartbeat too old, no answer
        ("draining", 60, None, "offline"),
        ("online", 60, 1, "busy"),  # answers the ping: alive whatever the heartbeat says
        (None, None, 0, "online"),  # answered before its first heartbeat
    ],
)
def test_given_heartbeat_and_ping_then_the_state_follows(
    declared: str | None, seen_ago: float | None, running: int | None, state: str
) -> None:
    record = WorkerRecord("w", declared, NOW - seen_ago) if declared and seen_ago else None

    assert _worker_state(record, running, SETTINGS, NOW) == state
