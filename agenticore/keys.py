"""The whole Redis key schema, in one place.

All keys live under ``<prefix>:`` (``AGENTICORE_REDIS_KEY_PREFIX``), Celery's under
``<prefix>:celery:`` via ``global_keyprefix``.

    <prefix>:job:<id>              hash, one field per Job attribute (JSON values), TTL
    <prefix>:jobs                  sorted set, all job ids (score 0, ids sort by time)
    <prefix>:jobs:<status>         sorted set, ids currently in that status
    <prefix>:jobs:pr:pending       sorted set, ids whose PR step has not settled
    <prefix>:idem:<sha256(key)>    string, job id owning an Idempotency-Key, TTL
    <prefix>:breaker:<name>        hash, circuit breaker state of an agent backend
    <prefix>:worker:<name>         hash, a worker's declared state and last heartbeat
    <prefix>:workers               set, names of known workers
    <prefix>:lock:<name>           redis-py Lock (repo clones, job updates)
    <prefix>:permits:<scope>       sorted set, permit holders, score = lease expiry (unix s)
    <prefix>:session:<uuid>        string, JSON {id, name} of the key that first ran a session, TTL
    <prefix>:apikey:<id>           hash, an API key: name, role, created, revoked, argon2id hash
    <prefix>:apikeys               set, ids of all API keys (revoked ones too)
"""

from __future__ import annotations

__all__ = ["KeySchema"]


class KeySchema:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def jobs_index(self) -> str:
        return f"{self.prefix}:jobs"

    def jobs_by_status(self, status: str) -> str:
        return f"{self.prefix}:jobs:{status}"

    def pr_pending(self) -> str:
        return f"{self.prefix}:jobs:pr:pending"

    def lock(self, name: str) -> str:
        return f"{self.prefix}:lock:{name}"

    def permits(self, scope: str) -> str:
        return f"{self.prefix}:permits:{scope}"

    def celery_prefix(self) -> str:
        return f"{self.prefix}:celery:"

    def idempotency(self, digest: str) -> str:
        return f"{self.prefix}:idem:{digest}"

    def breaker(self, name: str) -> str:
        return f"{self.prefix}:breaker:{name}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def session_owner(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}"

    def api_key(self, key_id: str) -> str:
        return f"{self.prefix}:apikey:{key_id}"

    def api_keys(self) -> str:
        return f"{self.prefix}:apikeys"
