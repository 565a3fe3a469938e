"""Circuit breakers per agent backend, shared by every worker through the store.

A breaker opens after ``threshold`` consecutive infrastructure failures of its backend (a
crash without a result, auth or API errors; not an agent that ran and reported failure).
While open, jobs for that backend are deferred, not failed. After ``cooldown`` it is
half-open: one probe job may run; its success closes the breaker, its failure reopens it.

State lives in a Redis hash ``<prefix>:breaker:<name>`` or, without Redis, in
``HOME/breakers/<name>.json`` under a file lock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from agenticore.config import Settings
from agenticore.connections import redis_client
from agenticore.files import atomic_write
from agenticore.keys import KeySchema
from agenticore.locks import exclusive

__all__ = ["BreakerState", "BreakerStatus", "CircuitBreaker"]

_LOCK_SECONDS = 10.0


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class BreakerStatus:
    name: str
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float | None = None
    probe_started_at: float | None = None
    last_error: str | None = None

    def retry_in(self, cooldown: float, now: float) -> float:
        if self.state is BreakerState.CLOSED or self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + cooldown - now)


class CircuitBreaker:
    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name
        self.threshold = settings.breaker_threshold
        self.cooldown = settings.breaker_cooldown_seconds
        self._redis = redis_client(settings)
        self._key = KeySchema(settings.redis_key_prefix).breaker(name)
        self._file = settings.home / "breakers" / f"{name}.json"

    def allow(self) -> float:
        """0 if a job may run now, else the seconds to wait before asking again."""
        if self._quiet():
            return 0.0
        with self._state() as status:
            now = time.time()
            if status.state is BreakerState.CLOSED:
                return 0.0
            wait = status.retry_in(self.cooldown, now)
            if wait > 0:
                return wait
            # cooled down: let exactly one probe through; a stuck probe frees its slot
            probe_busy = status.probe_started_at and now - status.probe_started_at < self.cooldown
            if status.state is BreakerState.HALF_OPEN and probe_busy:
                return self.cooldown
            status.state = BreakerState.HALF_OPEN
            status.probe_started_at = now
            return 0.0

    def record_success(self) -> None:
        if self._quiet():
            return
        with self._state() as status:
            if status.state is not BreakerState.CLOSED or status.failures:
                status.state, status.failures = BreakerState.CLOSED, 0
                status.opened_at = status.probe_started_at = None

    def record_failure(self, error: str) -> None:
        with self._state() as status:
            status.failures += 1
            status.last_error = error[:500]
            if status.state is BreakerState.HALF_OPEN or status.failures >= self.threshold:
                status.state = BreakerState.OPEN
                status.opened_at = time.time()
                status.probe_started_at = None

    def status(self) -> BreakerStatus:
        with self._state() as status:
            return status

    def _quiet(self) -> bool:
        """Closed with no failures counted: the common case, answered without the lock."""
        state = self._load()
        return state.get("state", "closed") == "closed" and not state.get("failures")

    @contextmanager
    def _state(self) -> Iterator[BreakerStatus]:
        """Read-modify-write of the shared state under a lock (short: a few fields)."""
        with exclusive(
            self.settings, f"breaker:{self.name}", hold=_LOCK_SECONDS, wait=_LOCK_SECONDS
        ):
            before = self._load()
            status = BreakerStatus(**{**before, "name": self.name}) if before else None
            status = status or BreakerStatus(self.name)
            status.state = BreakerState(status.state)
            yield status
            after = asdict(status) | {"state": status.state.value}
            if after != before:
                self._save(after)

    def _load(self) -> dict[str, Any]:
        if self._redis is not None:
            raw: dict[str, str] = self._redis.hgetall(self._key)  # type: ignore[assignment]
            return {k: json.loads(v) for k, v in raw.items()}
        try:
            data: dict[str, Any] = json.loads(self._file.read_text())
        except FileNotFoundError:
            return {}
        return data

    def _save(self, data: dict[str, Any]) -> None:
        if self._redis is not None:
            self._redis.hset(self._key, mapping={k: json.dumps(v) for k, v in data.items()})
            return
        atomic_write(self._file, json.dumps(data), durable=False)
