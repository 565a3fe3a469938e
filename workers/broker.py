"""What is waiting in the broker: queue depth (backpressure, autoscaling)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import redis
from celery import Celery

from agenticore.models import CELERY_PRIORITY

__all__ = ["queue_depth", "queue_depths"]

# Redis keeps one list per priority step: "<queue>", "<queue>\x06\x163", ...
_PRIORITY_STEPS = (0, 3, 6, 9)
_PRIORITY_SUFFIXES = tuple(f"\x06\x16{step}" if step else "" for step in _PRIORITY_STEPS)


def queue_depth(celery: Celery) -> int:
    """Messages waiting in the job queue (running and held ones are not in it)."""
    if _is_filesystem(celery):
        return sum(1 for _ in _message_files(celery))
    with _redis(celery) as client:
        return sum(int(client.llen(name)) for name in _queue_lists(celery))


def queue_depths(celery: Celery) -> dict[str, int]:
    """``queue_depth`` per job priority name (``interactive``, ``normal``, ``batch``)."""
    depths = dict.fromkeys(CELERY_PRIORITY, 0)
    if _is_filesystem(celery):
        for path in _message_files(celery):
            depths[_priority_name(_file_priority(path))] += 1
        return depths
    with _redis(celery) as client:
        pipe = client.pipeline(transaction=False)
        for name in _queue_lists(celery):
            pipe.llen(name)
        for step, count in zip(_PRIORITY_STEPS, pipe.execute(), strict=True):
            depths[_priority_name(step)] += int(count)
    return depths


def _priority_name(value: int) -> str:
    """The job priority whose messages sit at ``value``'s priority step."""
    return min(CELERY_PRIORITY, key=lambda name: abs(_step(CELERY_PRIORITY[name]) - _step(value)))


def _step(value: int) -> int:
    # kombu's Redis transport rounds a priority down to its step
    return max(step for step in _PRIORITY_STEPS if step <= value)


def _file_priority(path: Path) -> int:
    try:
        message = json.loads(path.read_bytes())
        return int(message.get("properties", {}).get("priority") or 0)
    except (OSError, ValueError, AttributeError, TypeError):
        return CELERY_PRIORITY["normal"]  # taken meanwhile, or not ours to read


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
