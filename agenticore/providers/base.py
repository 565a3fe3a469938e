"""What every pull request provider offers, and how forge failures are classified."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Protocol

from agenticore.errors import ForgeError
from agenticore.redaction import redact_text

__all__ = [
    "Proposal",
    "PullRequest",
    "PullRequestProvider",
    "is_transient",
    "refused",
    "retry_after",
    "unreachable",
]

# worth another try: bad or rotating credentials, throttling, conflicts and server trouble
_TRANSIENT_STATUSES = frozenset({401, 403, 408, 409, 429})


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str
    open: bool


@dataclass(frozen=True)
class Proposal:
    """The pull request a job asks for."""

    head: str
    base: str
    title: str
    body: str
    draft: bool
    labels: list[str] = field(default_factory=list)
    reviewers: list[str] = field(default_factory=list)


class PullRequestProvider(Protocol):
    def find(self, head: str) -> PullRequest | None:
        """The pull request whose source is ``head``, open ones first, closed ones too."""

    def create(self, proposal: Proposal) -> PullRequest: ...

    def update(self, number: int, proposal: Proposal) -> PullRequest:
        """Rewrites title and description (the labels and reviewers stay as they are)."""

    def add_labels(self, number: int, labels: list[str]) -> None: ...

    def request_reviewers(self, number: int, reviewers: list[str]) -> None:
        """``org/team`` names request a team, other names a user."""

    def close(self) -> None: ...


def refused(
    forge: str,
    action: str,
    project: str,
    *,
    status: int,
    reason: str,
    headers: Mapping[str, str] | None,
    repo: str,
) -> ForgeError:
    """The forge answered with an error status."""
    return ForgeError(
        redact_text(f"{forge} could not {action} in {project}: HTTP {status} {reason}".rstrip()),
        repo=repo,
        status=status,
        retry_after=retry_after(headers),
        transient=is_transient(status),
    )


def unreachable(forge: str, action: str, exc: Exception, *, repo: str) -> ForgeError:
    """No answer at all (network, timeout): worth another try."""
    return ForgeError(
        redact_text(f"{forge} could not {action}: {type(exc).__name__}: {exc}"),
        repo=repo,
        transient=True,
    )


def is_transient(status: int | None) -> bool:
    """``None`` means no answer at all (network), which is worth another try too."""
    return status is None or status in _TRANSIENT_STATUSES or status >= 500


def retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds the forge asked us to wait: ``Retry-After`` (seconds or an HTTP date), else
    the reset time of an exhausted rate limit (GitHub's ``x-ratelimit-*``, GitLab's
    ``RateLimit-*``)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    now = time.time() if now is None else now
    value = lower.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                return None
    for prefix in ("x-ratelimit-", "ratelimit-"):
        if lower.get(f"{prefix}remaining") == "0" and lower.get(f"{prefix}reset", "").isdigit():
            return max(0.0, float(lower[f"{prefix}reset"]) - now)
    return None
