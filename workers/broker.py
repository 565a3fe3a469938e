"""What is waiting in the broker: queue depth (backpressure, autoscaling) and which runs
and PR steps have a message at all (the reconciler's check for lost ones)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from agenticore.reconciler import BrokerView, pr_step_key
from workers.names import OPEN_PULL_REQUEST

__all__ = ["messages_in_broker", "queue_depth"]

# Redis keeps one list per priority step: "<queue>", "<queue>\x06\x163", ...
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def queue_depth(celery: Celery) -> int:
    """Messages waiting in the job queue (running and held ones are not in it)."""
    if _is_filesystem(celery):
        return sum(1 for _ in _message_files(celery))
    with _redis(celery) as client:
        return sum(int(client.llen(name)) for name in _queue_lists(celery))


def messages_in_broker(celery: Celery) -> BrokerView:
    """Every message waiting in the queue or held unacknowledged by a worker, as job ids
    (runs) and ``pr_step_key``s (PR steps).

    The embedded broker hands a message over for good once a worker takes it, so there
    nothing is ever held; the reconciler's duplicate of a held message is harmless.
    """
    if _is_filesystem(celery):
        return BrokerView(
            waiting={_key(json.loads(path.read_bytes())) for path in _message_files(celery)}
        )
    with _redis(celery) as client:
        payloads = [raw for name in _queue_lists(celery) for raw in client.lrange(name, 0, -1)]
        held = [json.loads(raw)[0] for raw in client.hvals(_prefix(celery) + "unacked")]
    return BrokerView(
        waiting={_key(json.loads(raw)) for raw in payloads}, held={_key(m) for m in held}
    )


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


def _key(message: dict[str, Any]) -> str:
    """The task id of a run (= the job id); a PR step's job id comes from its arguments,
    since a chain built by a user gives it a task id of its own."""
    headers = message.get("headers", {})
    if headers.get("task") != OPEN_PULL_REQUEST:
        return str(headers.get("id", ""))
    body = message.get("body", "")
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = json.loads(body)[0]
    return pr_step_key(str(args[0])) if args else ""
