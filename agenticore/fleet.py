"""Who is in the fleet: each worker's heartbeat and declared state.

Workers write ``online`` (or ``draining``) with a timestamp every half lease; readers
derive ``offline`` from a heartbeat older than two leases. ``busy`` and ``degraded`` come
from live data at read time (jobs in flight, an open breaker), so they are not stored.

Redis: hash ``<prefix>:worker:<name>`` with a TTL, names in the set ``<prefix>:workers``.
Without Redis: ``HOME/workers/<name>.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from agenticore.config import Settings
from agenticore.connections import redis_client
from agenticore.files import atomic_write
from agenticore.keys import KeySchema

__all__ = ["WorkerRecord", "WorkerRegistry"]

_FORGET_AFTER_SECONDS = 86400  # an offline worker stays listed for a day


@dataclass
class WorkerRecord:
    name: str
    state: str  # online | draining (as declared); offline is derived
    last_seen: float
    metrics_url: str | None = None  # where its main process serves Prometheus metrics

    def current_state(self, lease_seconds: float, now: float) -> str:
        return "offline" if now - self.last_seen > 2 * lease_seconds else self.state


class WorkerRegistry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis_client(settings)
        self.keys = KeySchema(settings.redis_key_prefix)
        self.dir = settings.home / "workers"

    def beat(self, name: str) -> WorkerRecord:
        """Refreshes the heartbeat, keeping a declared ``draining``."""
        current = self.get(name)
        state = current.state if current and current.state == "draining" else "online"
        return self._save(WorkerRecord(name, state, time.time(), _metrics_url(current)))

    def set_state(self, name: str, state: str) -> WorkerRecord:
        return self._save(WorkerRecord(name, state, time.time(), _metrics_url(self.get(name))))

    def set_metrics_url(self, name: str, url: str | None) -> WorkerRecord:
        current = self.get(name)
        state = current.state if current else "online"
        return self._save(WorkerRecord(name, state, time.time(), url))

    def get(self, name: str) -> WorkerRecord | None:
        if self.redis is not None:
            raw: dict[str, str] = self.redis.hgetall(self.keys.worker(name))  # type: ignore[assignment]
            return _record(name, raw) if raw else None
        try:
            data = json.loads(self._path(name).read_text())
        except FileNotFoundError:
            return None
        return WorkerRecord(**data)

    def all(self) -> list[WorkerRecord]:
        if self.redis is not None:
            names: set[str] = self.redis.smembers(self.keys.workers())  # type: ignore[assignment]
        else:
            names = {p.stem for p in self.dir.glob("*.json")} if self.dir.is_dir() else set()
        records = [record for name in sorted(names) if (record := self.get(name))]
        if self.redis is not None:
            gone = names - {r.name for r in records}
            if gone:  # their hash expired
                self.redis.srem(self.keys.workers(), *gone)
        return records

    def _save(self, record: WorkerRecord) -> WorkerRecord:
        if self.redis is not None:
            key = self.keys.worker(record.name)
            pipe = self.redis.pipeline()
            pipe.hset(key, mapping={"state": record.state, "last_seen": str(record.last_seen)})
            if record.metrics_url:
                pipe.hset(key, "metrics_url", record.metrics_url)
            else:
                pipe.hdel(key, "metrics_url")
            pipe.expire(key, _FORGET_AFTER_SECONDS)
            pipe.sadd(self.keys.workers(), record.name)
            pipe.execute()
            return record
        atomic_write(self._path(record.name), json.dumps(asdict(record)), durable=False)
        return record

    def _path(self, name: str) -> Path:
        return self.dir / f"{name.replace('/', '_')}.json"


def _record(name: str, raw: dict[str, str]) -> WorkerRecord:
    last_seen = float(raw.get("last_seen", 0))
    return WorkerRecord(name, raw.get("state", "online"), last_seen, raw.get("metrics_url"))


def _metrics_url(record: WorkerRecord | None) -> str | None:
    return record.metrics_url if record else None
