"""Log lines pass through the redaction layer before any handler writes them.

``install()`` puts one ``RedactingFilter`` on every handler that exists when it runs (the
root logger's, every named logger's, and logging's last-resort handler), so records logged
anywhere, by us or a library, are masked however they propagate. Call it once logging is
configured: the worker does (Celery's logging signals), the API (``create_app``) and the CLI.

With ``LOG_FORMAT=json`` it also gives every handler ``JsonFormatter``: one JSON object per
line (``time``, ``level``, ``logger``, ``message``, ``exc``) with ``job_id``, ``task_id``,
``trace_id`` and ``worker``, null when the line is about no job. The job fields come from
``job_context`` (the worker enters it around each task), the trace id from the current
OpenTelemetry span. Formatters run after the handler's filters, so they see masked text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime

from opentelemetry import trace

from agenticore.redaction import redact_text

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "enter_job",
    "install",
    "job_context",
    "leave_job",
    "set_worker",
    "task_ids_are_job_ids",
]

_plain = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Masks secrets in the message (with its arguments) and the traceback of a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        # judge the merged message: a secret may sit in any argument
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            _mask(record, redacted)
        if record.exc_info and not record.exc_text:
            # formatters use exc_text when it is set, so the raw traceback is never printed
            record.exc_text = _plain.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def _mask(record: logging.LogRecord, redacted: str) -> None:
    """Masks ``msg`` and each argument in place, so formatters that read the arguments
    themselves (uvicorn's access log unpacks them) still work; if that does not give the
    same text as masking the merged message, the merged message replaces both."""
    record.msg = _masked(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_masked(arg) for arg in record.args)
    elif isinstance(record.args, Mapping):
        record.args = {key: _masked(value) for key, value in record.args.items()}
    try:
        piecewise = record.getMessage()
    except (TypeError, ValueError):
        piecewise = None
    if piecewise != redacted:
        record.msg, record.args = redacted, None


def _masked(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value  # "%d" and friends still get a number
    if isinstance(value, str):
        return redact_text(value)
    return _Redacted(value)


class _Redacted:
    """An argument that is not text, shown through the redaction layer in either form."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return redact_text(str(self.value))

    def __repr__(self) -> str:
        return redact_text(repr(self.value))


_JOB_FIELDS = ("job_id", "task_id", "worker")
_job: ContextVar[dict[str, str] | None] = ContextVar("agenticore_log_job", default=None)
_process: dict[str, str] = {}  # fields of every line this process logs (its worker name)
_job_tasks: set[str] = set()  # task names whose task id is the job id


def enter_job(**fields: str | None) -> Token[dict[str, str] | None]:
    """Lines logged from here on (in this context) carry these ``job_id``/``task_id``/
    ``worker``; ``leave_job`` with the token ends that."""
    return _job.set({name: value for name, value in fields.items() if value})


def leave_job(token: Token[dict[str, str] | None]) -> None:
    _job.reset(token)


@contextmanager
def job_context(**fields: str | None) -> Iterator[None]:
    token = enter_job(**fields)
    try:
        yield
    finally:
        leave_job(token)


def set_worker(name: str) -> None:
    """The worker this process belongs to, on every line it logs."""
    _process["worker"] = name


def task_ids_are_job_ids(*task_names: str) -> None:
    """Lines a task queue logs about these tasks (Celery's "received" has the task's id
    and name in ``record.data``) carry the task id as the job id too."""
    _job_tasks.update(task_names)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the message and traceback masked once more, in case a
    handler without the filter uses it."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        entry |= _fields_of(record)
        exc = record.exc_text or (self.formatException(record.exc_info) if record.exc_info else "")
        if exc:
            entry["exc"] = redact_text(exc)
        if record.stack_info:
            entry["stack"] = redact_text(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _fields_of(record: logging.LogRecord) -> dict[str, str | None]:
    fields: dict[str, str | None] = dict.fromkeys(_JOB_FIELDS)
    fields |= _process | (_job.get() or {})
    data = getattr(record, "data", None)
    if isinstance(data, Mapping) and isinstance(data.get("id"), str):
        fields["task_id"] = fields["task_id"] or data["id"]
        if data.get("name") in _job_tasks:
            fields["job_id"] = fields["job_id"] or data["id"]
    for name in _JOB_FIELDS:  # logger.info(..., extra={"job_id": ...}) wins
        given = getattr(record, name, None)
        if isinstance(given, str):
            fields[name] = given
    span = trace.get_current_span().get_span_context()
    fields["trace_id"] = format(span.trace_id, "032x") if span.is_valid else None
    return fields


_filter = RedactingFilter()
_json = JsonFormatter()


def install(*loggers: logging.Logger, log_format: str = "text") -> None:
    """Adds the filter to the handlers of ``loggers``, the root logger and every logger
    known so far, and with ``log_format="json"`` the JSON formatter (Python's warnings
    then go through logging too). Safe to call again: a handler gets the filter once."""
    if log_format == "json":
        root = logging.getLogger()
        if not root.handlers:
            # what logging's last resort would print, but JSON; captured warnings need a
            # real handler (captureWarnings gives "py.warnings" a NullHandler otherwise)
            root.addHandler(logging.StreamHandler())
    known = [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    handlers = [handler for logger in (*loggers, logging.getLogger(), *known)
                for handler in logger.handlers]  # fmt: skip
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if _filter not in handler.filters:
            handler.addFilter(_filter)
        if log_format == "json":
            handler.setFormatter(_json)
    if log_format == "json":
        logging.captureWarnings(True)
