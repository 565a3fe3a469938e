"""What Flower, task events and worker logs show as a task's arguments.

Task messages carry job ids, and ``run_job.delay(spec)`` carries a whole spec whose task
text or repo URL may hold a token: every message of ours gets a short, redacted summary as
``argsrepr``/``kwargsrepr`` instead (the job id, the task's start, the repo without its
userinfo, the profile).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from celery import Task

from agenticore.models import Job
from agenticore.redaction import redact_text

__all__ = ["JobTask", "describe", "job_summary"]

_SUMMARY_CHARS = 60


def describe(
    *, job_id: str | None = None, task: object = None, repo_url: object = None,
    profile: object = None,
) -> str:  # fmt: skip
    """What Flower, task events and worker logs show as a task's arguments: the job id, the
    task's start, the repo without its userinfo and the profile, never a secret (task
    messages carry whole specs; a task text or URL may hold a token)."""
    parts = [f"job_id={_short(job_id)!r}"] if job_id is not None else []
    if isinstance(task, str):
        # masked before it is cut: a token cut in half would no longer be recognised
        text = " ".join(redact_text(task[:4096]).split())
        cut = text[:_SUMMARY_CHARS] + ("…" if len(text) > _SUMMARY_CHARS else "")
        parts.append(f"task={cut!r}")
    if isinstance(repo_url, str):
        parts.append(f"repo={_plain_url(repo_url)!r}")
    if isinstance(profile, str):
        parts.append(f"profile={_short(profile)!r}")
    return " ".join(parts)


def job_summary(job: Job) -> str:
    return describe(job_id=job.id, task=job.task, repo_url=job.repo_url, profile=job.profile)


def _value_repr(value: object) -> str:
    """One argument of our tasks: a job id, or a job spec (``run_job.delay(spec)``)."""
    if isinstance(value, str):
        return describe(job_id=value)
    if isinstance(value, dict):
        return describe(task=value.get("task"), repo_url=value.get("repo_url"),
                        profile=value.get("profile"))  # fmt: skip
    return f"<{type(value).__name__}>"


def _short(text: str) -> str:
    return redact_text(text[:80])


def _plain_url(url: str) -> str:
    try:
        parts = urlsplit(url[:300])
    except ValueError:
        return "<invalid url>"
    if parts.scheme and "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])  # no userinfo at all
    return redact_text(urlunsplit(parts))


class JobTask(Task):
    """Our tasks' base: however they are sent (``delay``, a chain, a retry), the message
    carries a summary of its arguments as ``argsrepr``/``kwargsrepr``, not the raw spec."""

    def apply_async(self, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        if options.get("argsrepr") is None:
            options["argsrepr"] = f"({', '.join(_value_repr(a) for a in args or ())})"
        if options.get("kwargsrepr") is None:
            pairs = (f"{k!r}: {_value_repr(v)}" for k, v in (kwargs or {}).items())
            options["kwargsrepr"] = "{" + ", ".join(pairs) + "}"
        return super().apply_async(args, kwargs, *rest, **options)
