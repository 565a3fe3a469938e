"""What is waiting in the broker: queue depth (backpressure, autoscaling)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import redis
from celery import Celery

__all__ = ["queue_depth"]

# Redis keeps one list per priority step: "<queue>", "<queue>\x06\x163", ...
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def queue_depth(celery: Celery) -> int:
    """Messages waiting in the job queue (running and held ones are not in it)."""
    if _is_filesystem(celery):
        return sum(1 for _ in _message_files(celery))
    with _redis(celery) as client:
        return sum(int(client.llen(name)) for name in _queue_lists(celery))


def _is_filesystem(celery: Celery) -> bool:
    return str(celery.conf.broker_url).startswith("filesystem://")


def _redis(celery: Celery) -> redis.Redis:
    # a plain client: kombu's own prefixes some commands and not others (LRANGE, HVALS)
    return redis.Redis.from_url(celery.conf.broker_url, socket_timeout=10)


def _prefix(celery: Celery) -> str:
    return str((celery.conf.broker_transport_options or {}).get("global_keyprefix", ""))


def _queue_lists(celery: Celery) -> list[str]:
    queue = f"{_prefix(celery)}{celery.conf.task_default_queue}"
    return [f"{queue}{suffix}" for suffix in _PRIORITY_SUFFIXES]


def _message_files(celery: Celery) -> Iterator[Path]:
    folder = Path(celery.conf.broker_transport_options["data_folder_in"])
    suffix = f".{celery.conf.task_default_queue}.msg"
    for name in os.listdir(folder):
        if name.endswith(suffix):
            yield folder / name
