"""The whole Redis key schema, in one place.

All keys live under ``<prefix>:`` (``AGENTICORE_REDIS_KEY_PREFIX``), Celery's under
``<prefix>:celery:`` via ``global_keyprefix``. Job records themselves are files
(``HOME/jobs``); the ``jobs``/``due`` keys index them and are rebuilt from the files when
Redis comes back empty (``agenticore.index``).

    <prefix>:jobs                  sorted set, all job ids (score 0, ids sort by time)
    <prefix>:jobs:<status>         sorted set, ids currently in that status
    <prefix>:due:watch             sorted set, queued ids to look at, score = when (unix s)
    <prefix>:due:pr                sorted set, ids whose PR step is pending, score = due time
    <prefix>:due:finished          sorted set, finished ids, score = finish time (retention)
    <prefix>:index:built           string, set once the indexes above hold every job record
    <prefix>:breaker:<name>        hash, circuit breaker state of an agent backend
    <prefix>:worker:<name>         hash, a worker's declared state and last heartbeat
    <prefix>:workers               set, names of known workers
    <prefix>:lock:<name>           redis-py Lock (repo clones, job updates)
    <prefix>:permits:<scope>       sorted set, permit holders, score = lease expiry (unix s)
    <prefix>:session:<uuid>        string, JSON {id, name} of the key that first ran a session, TTL
"""

from __future__ import annotations

__all__ = ["KeySchema"]


class KeySchema:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def jobs_index(self) -> str:
        return f"{self.prefix}:jobs"

    def jobs_by_status(self, status: str) -> str:
        return f"{self.prefix}:jobs:{status}"

    def schedule(self, name: str) -> str:
        return f"{self.prefix}:due:{name}"

    def index_built(self) -> str:
        return f"{self.prefix}:index:built"

    def lock(self, name: str) -> str:
        return f"{self.prefix}:lock:{name}"

    def permits(self, scope: str) -> str:
        return f"{self.prefix}:permits:{scope}"

    def celery_prefix(self) -> str:
        return f"{self.prefix}:celery:"

    def breaker(self, name: str) -> str:
        return f"{self.prefix}:breaker:{name}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def session_owner(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}"
