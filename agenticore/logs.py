"""Log lines pass through the redaction layer before any handler writes them.

``install()`` puts one ``RedactingFilter`` on every handler that exists when it runs (the
root logger's, every named logger's, and logging's last-resort handler), so records logged
anywhere, by us or a library, are masked however they propagate. Call it once logging is
configured: the worker does (Celery's logging signals), the API (``create_app``) and the CLI.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from agenticore.redaction import redact_text

__all__ = ["RedactingFilter", "install"]

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


_filter = RedactingFilter()


def install(*loggers: logging.Logger) -> None:
    """Adds the filter to the handlers of ``loggers``, the root logger and every logger
    known so far. Safe to call again: a handler gets the filter once."""
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
