"""The pull request step that follows a successful run.

The run has already committed the agent's work to the job branch in the repo cache, so the
step needs no worktree and runs on any node that shares the cache. It commits what is left
in a kept worktree (``keep_worktree``), pushes the job branch, opens the pull request (or
finds the one an earlier delivery opened and updates it) and records it on the job. Every
step is idempotent, so a retried or redelivered step never opens a second pull request; the
job's own lease keeps two deliveries from running it at once.

The run's status is never changed here: only the ``pr_*`` fields, ``commit_sha`` and, once
the step is final, the worktree.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

from agenticore import telemetry
from agenticore.config import Settings
from agenticore.errors import ForgeError, InvalidRequest, RepoError, RetryLater
from agenticore.forges import resolve_forge
from agenticore.jobs import JobStore
from agenticore.models import Job, JobStatus, PrStatus, utcnow
from agenticore.permits import job_gate, job_lease
from agenticore.profiles import Profile, load_profile
from agenticore.providers import Proposal, PullRequest, PullRequestProvider, provider_for
from agenticore.redaction import redact_text
from agenticore.repos import RepoCache
from agenticore.retries import backoff_seconds

__all__ = ["PullRequestStep", "commit_message", "pr_body", "pr_title"]

log = logging.getLogger(__name__)

SUBJECT_MAX = 72
_BODY_MAX = 60_000  # GitHub refuses bodies over 65536 characters
_DIRECTIVE = re.compile(r"^\s*@\w")  # instruction lines for tools, not words for a title


class PullRequestStep:
    def __init__(self, settings: Settings, store: JobStore | None = None) -> None:
        self.settings = settings
        self.store = store or JobStore(settings)
        self.repos = RepoCache(settings)
        self.gate = job_gate(settings)

    def run(self, job_id: str) -> Job:
        """Takes the job's PR step as far as it goes. Returns the job with a final
        ``pr_status``, or raises ``RetryLater`` (a transient failure with attempts left) or
        ``NoPermit`` (another delivery holds the job) for the caller to try again later."""
        job = self.store.get(job_id)
        if job.pr_status is not None and job.pr_status.final:
            return job
        if not job.terminal:
            raise InvalidRequest(f"job {job_id} is {job.status.value}; its PR step runs after it")
        with job_lease(self.gate, job_id), telemetry.span("job.pr_step") as span:
            job = self._run_leased(job_id)
            telemetry.record_outcome(span, {
                "agenticore.job_id": job_id,
                "agenticore.pr_status": job.pr_status and job.pr_status.value,
                "agenticore.pr_url": job.pr_url,
            }, error=job.pr_error if job.pr_status is PrStatus.FAILED else None)  # fmt: skip
            return job

    def _run_leased(self, job_id: str) -> Job:
        job = self.store.get(job_id)  # re-read under the lease: another delivery may be done
        if job.pr_status is not None and job.pr_status.final:
            return job
        if job.status is not JobStatus.SUCCEEDED:
            return self._settle(job, PrStatus.SKIPPED, error=f"the run {job.status.value}")
        if job.repo_url is None or job.branch is None:
            return self._settle(job, PrStatus.SKIPPED, error="the job has no repository")
        job = self.store.update(job_id, pr_status=PrStatus.PENDING, pr_due_at=utcnow(),
                                pr_attempts=job.pr_attempts + 1)  # fmt: skip
        try:
            return self._open(job)
        except (ForgeError, RepoError) as exc:
            return self._failed(job, exc)
        except Exception as exc:  # a bug or an odd repo state must still settle the step
            log.exception("job %s: PR step failed inside Agenticore", job_id)
            error = f"internal_error: {type(exc).__name__}: {redact_text(str(exc))}"
            return self._settle(job, PrStatus.FAILED, error=error)

    def _open(self, job: Job) -> Job:
        assert job.repo_url is not None and job.branch is not None
        forge = resolve_forge(self.settings, job.repo_url)
        workspace = self.repos.existing_workspace(job)
        if workspace is not None:  # else the branch in the cache already holds the work
            self.repos.commit_all(workspace, commit_message(job))
        base = job.base_sha or f"refs/remotes/origin/{job.base_ref}"
        if self.repos.commits_since(job.repo_url, job.branch, base) == 0:
            return self._settle(job, PrStatus.NO_CHANGES)
        sha = self.repos.push(job.repo_url, job.branch)
        proposal = self._proposal(job)
        provider = provider_for(self.settings, forge)
        try:
            pull = _open_once(provider, proposal)
            warnings = _decorate(provider, pull, proposal)
        finally:
            provider.close()
        log.info("job %s: pull request %s", job.id, pull.url)
        return self._settle(job, PrStatus.OPENED, pull=pull, commit_sha=sha,
                            error="; ".join(warnings) or None)  # fmt: skip

    def _proposal(self, job: Job) -> Proposal:
        profile = self._profile(job)
        draft = next(d for d in (job.pr_draft, profile.pr_draft, self.settings.pr_draft)
                     if d is not None)  # fmt: skip
        assert job.branch is not None and job.base_ref is not None
        return Proposal(
            head=job.branch,
            base=job.base_ref,
            title=pr_title(job.task),
            body=pr_body(job, self._link(job)),
            draft=draft,
            labels=list(job.pr_labels if job.pr_labels is not None else profile.pr_labels),
            reviewers=list(
                job.pr_reviewers if job.pr_reviewers is not None else profile.pr_reviewers
            ),
        )

    def _profile(self, job: Job) -> Profile:
        try:
            return load_profile(self.settings, job.profile)
        except InvalidRequest:
            # removed or broken since the run: the job's own fields and config still apply
            return load_profile(self.settings, "default")

    def _link(self, job: Job) -> str:
        base = self.settings.public_url or self.settings.api_url
        return f"{base.rstrip('/')}/jobs/{job.id}"

    def _failed(self, job: Job, exc: ForgeError | RepoError) -> Job:
        error = redact_text(str(exc))
        if exc.transient and job.pr_attempts < self.settings.pr_max_attempts:
            delay = backoff_seconds(
                job.pr_attempts,
                base=self.settings.pr_retry_backoff_seconds,
                cap=self.settings.pr_retry_backoff_max_seconds,
            )
            wait = max(delay, getattr(exc, "retry_after", None) or 0.0)
            due = utcnow() + timedelta(seconds=wait)
            self.store.update(job.id, pr_error=error, pr_due_at=due)
            log.warning("job %s: PR attempt %d failed (%s); retry in %.0fs",
                        job.id, job.pr_attempts, error, wait)  # fmt: skip
            raise RetryLater(error, job_id=job.id, retry_after=wait) from None
        log.error("job %s: PR step failed for good: %s", job.id, error)
        return self._settle(job, PrStatus.FAILED, error=error)

    def _settle(
        self,
        job: Job,
        status: PrStatus,
        *,
        pull: PullRequest | None = None,
        error: str | None = None,
        **fields: Any,
    ) -> Job:
        """Records a final PR status, then lets the worktree go (unless the job keeps it)."""
        if pull is not None:
            fields |= {"pr_url": pull.url, "pr_number": pull.number}
        job = self.store.update(job.id, pr_status=status, pr_error=error, pr_due_at=None,
                                **fields)  # fmt: skip
        if not job.keep_worktree:
            try:
                self.repos.remove_workspace(job)
            except RepoError as exc:
                log.warning("job %s: worktree cleanup failed: %s", job.id, exc)
        return job


def _open_once(provider: PullRequestProvider, proposal: Proposal) -> PullRequest:
    """The branch's pull request: found and updated if an earlier delivery opened it, else
    opened now. A 409/422 on create means one appeared meanwhile (one per head is allowed)."""
    found = provider.find(proposal.head)
    if found is None:
        try:
            return provider.create(proposal)
        except ForgeError as exc:
            if exc.status not in (409, 422) or (found := provider.find(proposal.head)) is None:
                raise
    return provider.update(found.number, proposal)


def _decorate(provider: PullRequestProvider, pull: PullRequest, proposal: Proposal) -> list[str]:
    """Labels and reviewers; both are idempotent, so a redelivery simply adds them again.
    A refusal that won't change on retry (no such user) is a warning, not a failed PR."""
    warnings = []
    for what, names, call in (
        ("labels", proposal.labels, provider.add_labels),
        ("reviewers", proposal.reviewers, provider.request_reviewers),
    ):
        if not names:
            continue
        try:
            call(pull.number, names)
        except ForgeError as exc:
            if exc.transient:
                raise
            warnings.append(f"{what} not set: {exc}")
    return warnings


def pr_title(task: str) -> str:
    """The task's first line of prose, at most ``SUBJECT_MAX`` characters."""
    lines = [line.strip() for line in task.splitlines()]
    first = next((line for line in lines if line and not _DIRECTIVE.match(line)), "")
    subject = " ".join(first.split()) or "Agenticore job"
    return subject if len(subject) <= SUBJECT_MAX else subject[: SUBJECT_MAX - 1].rstrip() + "…"


def commit_message(job: Job) -> str:
    return f"{pr_title(job.task)}\n\nAgenticore-Job: {job.id}\n"


def pr_body(job: Job, link: str) -> str:
    summary = redact_text(job.result or "").strip() or "_The agent left no summary._"
    if len(summary) > _BODY_MAX:
        summary = summary[:_BODY_MAX] + "\n\n… (truncated)"
    rows = [
        ("Job", f"[`{job.id}`]({link})"),
        ("Cost", f"${job.cost_usd:.4f}" if job.cost_usd is not None else "unknown"),
        ("Turns", str(job.num_turns) if job.num_turns is not None else "unknown"),
        ("Session", f"`{job.session_id}`" if job.session_id else "none"),
        ("Profile", f"`{job.profile}`"),
        ("Branch", f"`{job.branch}` → `{job.base_ref}`"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (
        f"{summary}\n\n---\n\nOpened by Agenticore for job `{job.id}`.\n\n"
        f"| | |\n|---|---|\n{table}\n"
    )
