"""Every error Agenticore raises on purpose.

    AgenticoreError
    ├── InvalidRequest            bad input from a caller (HTTP 422, CLI exit 2)
    │   ├── InvalidRepoURL        repo_url not allowed or malformed      (.repo)
    │   └── ProfileNotFound       no such profile                        (.profile)
    ├── JobNotFound               no record for the id (HTTP 404)        (.job_id)
    ├── InvalidTransition         e.g. a finished job asked to run again (.job_id)
    │   └── StaleAttempt          a newer attempt owns the job now       (.attempt)
    ├── StoreUnavailable          the job store cannot be written (HTTP 503)
    │   └── StorageFull           no space left for it (HTTP 507)
    ├── LockTimeout               a repo or job lock could not be taken  (.name)
    ├── NoPermit                  a limit is full: defer, never drop     (.reason, .retry_after)
    ├── RetryLater                a step failed transiently; try again   (.job_id, .retry_after)
    ├── RepoError                 clone/fetch/worktree/push failed       (.repo, .job_id)
    ├── ForgeError                the PR provider refused or failed      (.repo, .status,
    │                                                                     .retry_after)
    ├── AgentError                the agent could not be started         (.job_id)
    ├── ConfigurationError        a setting the process cannot start with
    └── JobFailed                 a job (or its PR step) ended without success: the
                                  task ends in FAILURE with the job's error (.job_id)

Messages never include credentials: URLs pass through ``redact_url`` first.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "AgenticoreError",
    "ConfigurationError",
    "ForgeError",
    "InvalidRepoURL",
    "InvalidRequest",
    "InvalidTransition",
    "JobFailed",
    "JobNotFound",
    "LockTimeout",
    "NoPermit",
    "ProfileNotFound",
    "RepoError",
    "RetryLater",
    "StaleAttempt",
    "StorageFull",
    "StoreUnavailable",
]


class AgenticoreError(Exception):
    """Base of the tree; ``str(err)`` is a message fit for a user."""


class InvalidRequest(AgenticoreError):
    pass


class InvalidRepoURL(InvalidRequest):
    def __init__(self, message: str, *, repo: str) -> None:
        super().__init__(message)
        self.repo = repo


class ProfileNotFound(InvalidRequest):
    def __init__(self, profile: str, available: list[str]) -> None:
        names = ", ".join(available) or "none"
        super().__init__(f"unknown profile {profile!r}; available: {names}")
        self.profile = profile
        self.available = available


class JobNotFound(AgenticoreError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found")
        self.job_id = job_id


class InvalidTransition(AgenticoreError):
    def __init__(self, job_id: str, current: str, wanted: str) -> None:
        super().__init__(f"job {job_id} is {current}; it cannot become {wanted}")
        self.job_id = job_id
        self.current = current
        self.wanted = wanted


class StaleAttempt(InvalidTransition):
    """A delivery that lost its lease wrote after the job was handed on: its writes (and
    its cleanup) would clobber the attempt that owns the job now."""

    def __init__(self, job_id: str, attempt: int, current: str) -> None:
        AgenticoreError.__init__(
            self, f"job {job_id}: attempt {attempt} was superseded (the job is {current})"
        )
        self.job_id = job_id
        self.current = current
        self.wanted = current
        self.attempt = attempt


class StoreUnavailable(AgenticoreError):
    pass


class StorageFull(StoreUnavailable):
    """The disk under the job store is full: nothing new is accepted until there is room."""


class LockTimeout(AgenticoreError):
    def __init__(self, name: str, waited: float) -> None:
        super().__init__(f"lock {name!r} not acquired within {waited:.0f}s")
        self.name = name


class NoPermit(AgenticoreError):
    """A concurrency limit is reached: the job must wait, never be dropped."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(f"no permit: {reason}; retry in {retry_after:.1f}s")
        self.reason = reason
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type[NoPermit], tuple[str, float]]:
        # Exception pickles self.args (the message) by default, which __init__ cannot take
        return type(self), (self.reason, self.retry_after)


class RetryLater(AgenticoreError):
    """A step failed in a way another try may fix, and it has tries left."""

    def __init__(self, message: str, *, job_id: str, retry_after: float) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.retry_after = retry_after


class RepoError(AgenticoreError):
    """``transient``: talking to the remote failed (network, auth); another try may work."""

    def __init__(
        self, message: str, *, repo: str, job_id: str | None = None, transient: bool = False
    ) -> None:
        super().__init__(message)
        self.repo = repo
        self.job_id = job_id
        self.transient = transient


class ForgeError(AgenticoreError):
    """A forge API call failed. ``transient``: another try may work (auth being fixed, 5xx,
    rate limits, network); ``retry_after``: the wait the forge asked for, in seconds."""

    def __init__(
        self,
        message: str,
        *,
        repo: str,
        job_id: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.repo = repo
        self.job_id = job_id
        self.status = status
        self.retry_after = retry_after
        self.transient = transient


class AgentError(AgenticoreError):
    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class ConfigurationError(AgenticoreError):
    """A setting (e.g. an ``OTEL_*`` variable) names something this install cannot do."""


class JobFailed(AgenticoreError):
    """A job ended failed, timed_out or dead, or its PR step failed: raised by the worker's
    task so the task ends in FAILURE, with the job's error as the message. Celery stores
    exceptions as JSON (type, module, ``args``) and rebuilds them as ``cls(*args)``, so the
    message is the only argument; ``job_id`` is there for whoever caught it in the worker."""

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id
