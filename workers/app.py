"""The Celery app. Creating it opens no connection; configuration loads on first use."""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

import redis
from billiard.util import set_pdeathsig
from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_init,
    task_postrun,
    task_prerun,
    task_revoked,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

import celeryconfig
from agenticore import logs, metrics, telemetry
from agenticore.config import Settings, get_settings
from agenticore.errors import StoreUnavailable
from agenticore.files import private_dir
from agenticore.fleet import WorkerRegistry
from agenticore.jobs import JobStore
from agenticore.models import CELERY_PRIORITY, Job
from agenticore.reconciler import Reconciler
from agenticore.retention import Retention
from agenticore.sandbox import startup_warning
from agenticore.supervisor import kill_process_group
from workers.names import OPEN_PULL_REQUEST, RUN_JOB
from workers.summaries import job_summary
from workers.tracing import start_tracing

__all__ = [
    "OPEN_PULL_REQUEST",
    "RUN_JOB",
    "app",
    "enqueue",
    "make_celery",
    "send_pr_step",
]

log = logging.getLogger(__name__)


def make_celery(settings: Settings | None = None, include: list[str] | None = None) -> Celery:
    """An app for explicit settings; ``None`` reads ``celeryconfig`` lazily, as the CLI does."""
    celery = Celery("agenticore", set_as_current=settings is None, include=include)
    celery.config_from_object(celeryconfig if settings is None else celeryconfig.build(settings))
    celery.on_after_configure.connect(_create_broker_folders, weak=False)
    return celery


def enqueue(celery: Celery, job: Job, store: JobStore) -> None:
    """Sends ``run_job`` for a stored job and stops watching it (the message is in the
    broker now); the job id doubles as the task id, so revoke and result lookups need no
    mapping. It is sent inside the job's trace, whoever sends it (API, reconciler, retry)."""
    with telemetry.attached(job.trace_context):
        celery.send_task(RUN_JOB, args=[job.id], task_id=job.id,
                         priority=CELERY_PRIORITY[job.priority],
                         argsrepr=job_summary(job), kwargsrepr="{}")  # fmt: skip
    store.mark_sent(job.id)


def send_pr_step(celery: Celery, job: Job) -> None:
    """Sends ``open_pull_request`` for a job whose run left its PR step pending."""
    with telemetry.attached(job.trace_context):
        celery.send_task(OPEN_PULL_REQUEST, args=[job.id], priority=CELERY_PRIORITY[job.priority],
                         argsrepr=job_summary(job), kwargsrepr="{}")  # fmt: skip


def _create_broker_folders(sender: Celery, **_: Any) -> None:
    # kombu's filesystem transport expects its folders to exist; they hold task messages and
    # results, so only the worker's user may read them (celeryconfig: HOME/celery/<folder>)
    options = sender.conf.broker_transport_options or {}
    folders = [Path(options[key]) for key in
               ("data_folder_in", "data_folder_out", "processed_folder", "control_folder")
               if key in options]  # fmt: skip
    backend = str(sender.conf.result_backend or "")
    if backend.startswith("file://"):
        folders.append(Path(backend.removeprefix("file://")))
    for folder in folders:
        private_dir(folder.parent, home=folder.parent.parent)
        private_dir(folder)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_logs(logger: logging.Logger | None = None, **_: Any) -> None:
    """No worker log line shows a secret: Celery logs task arguments and exceptions too.
    With ``LOG_FORMAT=json`` every line is a JSON object."""
    logs.install(*([logger] if logger is not None else []), log_format=get_settings().log_format)


@celeryd_init.connect
def _name_worker_in_logs(sender: Any = None, **_: Any) -> None:
    """Before the worker warns about anything (running as root, ...): its lines carry its
    name and, with JSON logs, even those early warnings are JSON."""
    logs.set_worker(str(sender))  # the node name, as jobs record it
    logs.task_ids_are_job_ids(RUN_JOB)  # "received" lines: the job id is the task id
    logs.install(log_format=get_settings().log_format)


_log_contexts: dict[str, Any] = {}


@task_prerun.connect
def _enter_job_log_context(
    task_id: str | None = None, task: Any = None, args: Any = None, **_: Any
) -> None:
    """Every line logged while a task runs, Celery's own "succeeded"/"raised" lines too,
    carries its job id (the argument, or the task id of a spec), task id and worker."""
    if task_id is None:
        return
    first = (args or [None])[0]
    job_id = first if isinstance(first, str) else task_id
    hostname = getattr(task.request, "hostname", None) if task is not None else None
    _log_contexts[task_id] = logs.enter_job(job_id=job_id, task_id=task_id, worker=hostname)


@task_postrun.connect
def _leave_job_log_context(task_id: str | None = None, **_: Any) -> None:
    token = _log_contexts.pop(task_id or "", None)
    if token is not None:
        logs.leave_job(token)


@worker_init.connect
def _start_tracing(**_: Any) -> None:
    # before the pool forks: its processes inherit the provider (the SDK restarts its
    # export thread in each, the exporter connects anew per process); solo and threads
    # pools run tasks right here
    start_tracing("agenticore-worker")


@worker_process_shutdown.connect
@worker_shutdown.connect
def _flush_spans(**_: Any) -> None:
    telemetry.shutdown()


@worker_process_init.connect
def _init_pool_process(**_: Any) -> None:
    # a pool process may set up handlers of its own after the fork
    logs.install(log_format=get_settings().log_format)
    # Celery has the kernel SIGKILL pool processes when the main process dies: a job whose
    # agent just finished would lose its result and run again. A pool process outlives it
    # instead, records the job it is running, and then ends (``_end_if_orphaned``).
    set_pdeathsig(0)
    _pool_parent.append(os.getppid())


_pool_parent: list[int] = []


@task_postrun.connect
def _end_if_orphaned(**_: Any) -> None:
    """A pool process whose main process died takes no further job: it ends here."""
    if _pool_parent and os.getppid() != _pool_parent[0]:
        log.warning("the worker's main process is gone; this pool process ends")
        telemetry.shutdown()
        os._exit(0)


@task_revoked.connect
def _kill_revoked_agent(
    request: Any = None, terminated: bool = False, signum: Any = None, **_: Any
) -> None:
    """Backstop in the main worker process: the agent runs in its own process group, which
    terminating the pool process does not reach (and SIGKILL of it would orphan).

    Only for a revoke that signalled the pool process (``signum`` is the signal's number): a
    run that ended cancelled by itself (``run_job`` raised Celery's ``Terminated`` with the
    job's error) has no agent left, and its record's pid may be another host's."""
    if not terminated or request is None or not isinstance(signum, int):
        return
    job = JobStore(get_settings()).find(str(request.id))
    if job is not None and job.agent_pid:
        kill_process_group(job.agent_pid)


_duties_stop = threading.Event()


@worker_ready.connect
def _start_fleet_duties(sender: Any = None, **_: Any) -> None:
    """Every worker's main process heartbeats and takes part in reconciliation."""
    settings = get_settings()
    warning = startup_warning(settings)
    if warning:
        log.warning("%s", warning)
    WorkerRegistry(settings).set_state(sender.hostname, "online")  # a restart undrains
    threading.Thread(
        target=_fleet_duties,
        args=(sender.app, sender.hostname, _duties_stop),
        name="fleet-duties",
        daemon=True,
    ).start()
    try:
        _serve_metrics(settings, sender.hostname)
    except Exception:  # metrics never stop a worker (a Redis blip recording the address)
        log.exception("metrics: this worker's metrics address was not recorded")


@worker_shutdown.connect
def _stop_fleet_duties(sender: Any = None, **_: Any) -> None:
    _duties_stop.set()
    try:
        if sender is not None:
            WorkerRegistry(get_settings()).set_state(sender.hostname, "offline")
    finally:
        metrics.remove_private_dir()


def _serve_metrics(settings: Settings, name: str) -> None:
    """The main process serves the pool's metrics (see ``agenticore.metrics``)."""
    if not metrics.multiprocess_dir():
        log.warning("PROMETHEUS_MULTIPROC_DIR is unset (start workers with `agenticore "
                    "worker`): the metrics miss what pool processes count")  # fmt: skip
    bound = metrics.serve(settings.worker_metrics_host, settings.worker_metrics_port)
    if bound is not None:
        host = socket.getfqdn() if bound[0] in ("0.0.0.0", "::", "") else bound[0]
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{bound[1]}/metrics"
        WorkerRegistry(settings).set_metrics_url(name, url)


def _fleet_duties(celery: Celery, name: str, stop: threading.Event) -> None:
    """Every half lease: heartbeat, then one reconciler pass (if this worker leads it)."""
    settings = get_settings()
    store = JobStore(settings)
    registry = WorkerRegistry(settings)
    # results of the embedded broker are files no result_expires sweep (beat) ever removes
    retention = Retention(settings, store, forget_result=lambda i: celery.AsyncResult(i).forget())
    reconciler = Reconciler(
        settings,
        lambda job: enqueue(celery, job, store),
        resend_pr_step=lambda job: send_pr_step(celery, job),
        sweep=retention.sweep,
        store=store,
    )
    while True:
        try:
            registry.beat(name)
            handed = reconciler.run_once()
            if handed:
                log.warning("reconciler handed on lost jobs: %s", handed)
        except (redis.RedisError, StoreUnavailable) as exc:
            log.warning("fleet duties: the store did not answer (%s); trying again", exc)
        except Exception:  # a bug must not end the loop for good
            log.exception("fleet duties failed; trying again next round")
        if stop.wait(settings.lease_seconds / 2):
            return


app = make_celery(include=["workers.tasks"])
