"""What Flower, task events and worker logs show as a task's arguments.

Task messages carry job ids, and ``run_job.delay(spec)`` carries a whole spec whose task
text or repo URL may hold a token: every message of ours gets a short, redacted summary as
``argsrepr``/``kwargsrepr`` instead (the job id, the task's start, the repo without its
userinfo, the profile).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from agenticore.models import Job
from agenticore.redaction import redact_text

__all__ = ["argument_summary", "describe", "job_summary"]

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


def argument_summary(value: object) -> str:
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
