"""One Redis client per URL per process. Creating a client opens no connection."""

from __future__ import annotations

import os
from functools import lru_cache

import redis

from agenticore.config import Settings

__all__ = ["redis_client"]


def redis_client(settings: Settings) -> redis.Redis | None:
    if settings.redis_url is None:
        return None
    return _client(settings.redis_url, os.getpid())


@lru_cache(maxsize=8)
def _client(url: str, pid: int) -> redis.Redis:
    # keyed by pid: a pool inherited through fork() would share sockets with the parent
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=3,
        socket_timeout=10,
        health_check_interval=30,
        retry_on_timeout=True,
    )
