"""The Celery app. Creating it opens no connection; configuration loads on first use."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import task_revoked, worker_ready, worker_shutdown

import celeryconfig
from agenticore.config import Settings, get_settings
from agenticore.jobs import JobStore
from agenticore.models import CELERY_PRIORITY, Job
from agenticore.reconciler import Reconciler
from agenticore.supervisor import kill_process_group

__all__ = ["RUN_JOB", "app", "enqueue", "make_celery"]

RUN_JOB = "agenticore.run_job"


def make_celery(settings: Settings | None = None, include: list[str] | None = None) -> Celery:
    """An app for explicit settings; ``None`` reads ``celeryconfig`` lazily, as the CLI does."""
    celery = Celery("agenticore", set_as_current=settings is None, include=include)
    celery.config_from_object(celeryconfig if settings is None else celeryconfig.build(settings))
    celery.on_after_configure.connect(_create_broker_folders, weak=False)
    return celery


def enqueue(celery: Celery, job: Job) -> None:
    """Sends ``run_job`` for a stored job; the job id doubles as the task id, so revoke and
    result lookups need no mapping."""
    celery.send_task(RUN_JOB, args=[job.id], task_id=job.id, priority=CELERY_PRIORITY[job.priority])


def _create_broker_folders(sender: Celery, **_: Any) -> None:
    # kombu's filesystem transport expects its folders to exist
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        if key in options:
            Path(options[key]).mkdir(parents=True, exist_ok=True)
    backend = str(sender.conf.result_backend or "")
    if backend.startswith("file://"):
        Path(backend.removeprefix("file://")).mkdir(parents=True, exist_ok=True)


@task_revoked.connect
def _kill_revoked_agent(request: Any = None, terminated: bool = False, **_: Any) -> None:
    """Backstop in the main worker process: the agent runs in its own process group, which
    terminating the pool process does not reach (and SIGKILL of it would orphan)."""
    if not terminated or request is None:
        return
    job = JobStore(get_settings()).find(str(request.id))
    if job is not None and job.agent_pid:
        kill_process_group(job.agent_pid)


_reconciler_stop = threading.Event()


@worker_ready.connect
def _start_reconciler(sender: Any = None, **_: Any) -> None:
    """Every worker runs the reconciler loop; a lock makes one of them lead each pass."""
    celery = sender.app

    reconciler = Reconciler(get_settings(), lambda job: enqueue(celery, job))
    threading.Thread(
        target=reconciler.loop, args=(_reconciler_stop,), name="reconciler", daemon=True
    ).start()


@worker_shutdown.connect
def _stop_reconciler(**_: Any) -> None:
    _reconciler_stop.set()


app = make_celery(include=["workers.tasks"])
