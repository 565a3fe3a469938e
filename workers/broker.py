"""What is waiting in the broker: queue depth (backpressure, autoscaling)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import redis
from celery import Celery
from kombu.transport.redis import PRIORITY_STEPS, Channel

from agenticore.models import CELERY_PRIORITY, priority_name

__all__ = ["queue_depth", "queue_depths"]


def queue_depth(celery: Celery) -> int:
    """Messages waiting in the job queue (running and held ones are not in it)."""
    if _is_filesystem(celery):  # by name alone: admission asks on every submission
        return sum(1 for _ in _message_files(celery))
    return sum(queue_depths(celery).values())


def queue_depths(celery: Celery) -> dict[str, int]:
    """Messages waiting in the job queue by job priority (``interactive``, ``normal``,
    ``batch``); messages sent with another Celery priority count in the nearest one."""
    depths = Counter({name: 0 for name in ("interactive", "normal", "batch")})
    if _is_filesystem(celery):
        depths.update(priority_name(_message_priority(path)) for path in _message_files(celery))
        return dict(depths)
    queue = f"{_prefix(celery)}{celery.conf.task_default_queue}"
    with _redis(celery) as client:
        pipe = client.pipeline(transaction=False)
        # kombu keeps one list per priority step: "<queue>", "<queue><sep>3", ...; each holds
        # the Celery priorities from its step up to the next one
        for step in PRIORITY_STEPS:
            pipe.llen(f"{queue}{Channel.sep}{step}" if step else queue)
        for step, count in zip(PRIORITY_STEPS, pipe.execute(), strict=True):
            depths[priority_name(step)] += int(count)
    return dict(depths)


def _is_filesystem(celery: Celery) -> bool:
    return str(celery.conf.broker_url).startswith("filesystem://")


def _redis(celery: Celery) -> redis.Redis:
    # a plain client: kombu's own prefixes some commands and not others (LRANGE, HVALS)
    # bounded: /status, /metrics and admission must answer while Redis is unreachable
    return redis.Redis.from_url(celery.conf.broker_url, socket_timeout=10,
                                socket_connect_timeout=3)  # fmt: skip


def _prefix(celery: Celery) -> str:
    return str((celery.conf.broker_transport_options or {}).get("global_keyprefix", ""))


def _message_files(celery: Celery) -> Iterator[Path]:
    folder = Path(celery.conf.broker_transport_options["data_folder_in"])
    suffix = f".{celery.conf.task_default_queue}.msg"
    for name in os.listdir(folder):
        if name.endswith(suffix):
            yield folder / name


def _message_priority(path: Path) -> int:
    try:
        priority = json.loads(path.read_bytes())["properties"].get("priority")
    except (OSError, ValueError, KeyError, AttributeError):
        priority = None  # taken by a worker meanwhile, or unreadable: counted all the same
    return priority if isinstance(priority, int) else CELERY_PRIORITY["normal"]
