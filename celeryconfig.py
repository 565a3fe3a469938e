"""Celery settings for Agenticore, derived from ``agenticore.config``.

``celery -A workers.app`` loads this module lazily; ``build(settings)`` serves apps made for
explicit settings (the API's dispatcher, tests). Redis when ``AGENTICORE_REDIS_URL`` is set,
otherwise the embedded default: kombu's ``filesystem://`` broker and a ``file://`` result
backend under ``AGENTICORE_HOME``, so one machine needs no Redis at all.
"""

from __future__ import annotations

from typing import Any

from agenticore.config import Settings, get_settings
from agenticore.keys import KeySchema
from agenticore.models import CELERY_PRIORITY

QUEUE = "agenticore"


def build(settings: Settings) -> dict[str, Any]:
    common: dict[str, Any] = {
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # a job is acknowledged only once it has run; a lost worker's job comes back
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": QUEUE,
        "task_track_started": True,
        # messages sent without a priority (run_job.delay) count as "normal"
        "task_default_priority": CELERY_PRIORITY["normal"],
        "result_expires": settings.job_ttl_seconds,
        "result_extended": True,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_concurrency": settings.max_parallel_jobs,
        # Flower sees every job from its first event: without these a worker sends task
        # events only once Flower's periodic enable_events reaches it, after the first jobs
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "enable_utc": True,
    }
    if settings.redis_url is None:
        return common | _embedded(settings)
    prefix = KeySchema(settings.redis_key_prefix).celery_prefix()
    # redelivery of an unacked job waits for visibility_timeout: it must exceed the longest
    # run, or Redis hands a running job to a second worker
    visibility = int(settings.longest_run_seconds) + 300
    return common | {
        "broker_url": settings.redis_url,
        # kombu's Redis transport, with acks that survive a connection lost mid-task
        "broker_transport": "workers.transport:Transport",
        "result_backend": settings.redis_url,
        "broker_transport_options": {
            "visibility_timeout": visibility,
            "global_keyprefix": prefix,
            "unacked_restore_interval": 1,
        },
        "result_backend_transport_options": {
            "global_keyprefix": prefix,
            # an unreachable Redis fails a submission in seconds (503), not after 20 retries
            "retry_policy": {
                "max_retries": 2,
                "interval_start": 0,
                "interval_step": 0.5,
                "interval_max": 1,
            },
        },
    }


def _embedded(settings: Settings) -> dict[str, Any]:
    root = settings.celery_dir
    return {
        # the host is this machine; without one kombu warns "No hostname was supplied"
        # for every connection made from the URL (the worker's, Flower's, `conf` replies)
        "broker_url": "filesystem://localhost/",
        # kombu's filesystem transport, with atomic writes (see workers/filesystem.py)
        "broker_transport": "workers.filesystem:Transport",
        "result_backend": f"file://{root / 'results'}",
        "broker_transport_options": {
            "data_folder_in": str(root / "queue"),
            "data_folder_out": str(root / "queue"),
            "processed_folder": str(root / "processed"),
            "control_folder": str(root / "control"),
            "store_processed": False,
            "polling_interval": 0.2,
        },
    }


globals().update(build(get_settings()))
