"""Runs one job from its stored record to a recorded outcome. Framework-free and idempotent:
a finished job is left alone, a redelivered one runs again as a new attempt.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from agenticore import telemetry
from agenticore.agents import AgentOutcome, get_backend
from agenticore.breaker import CircuitBreaker
from agenticore.budgets import Budget, CostMeter, price_for
from agenticore.cgroups import MemoryCgroup
from agenticore.config import Settings
from agenticore.errors import (
    AgentError,
    AgenticoreError,
    InvalidTransition,
    LockTimeout,
    NoPermit,
    RepoError,
    StaleAttempt,
    StoreUnavailable,
)
from agenticore.interrupts import Terminated, sigterm_deferred, sigterm_raises
from agenticore.jobs import JobStore
from agenticore.models import Job, JobStatus, pr_fields_after_run, utcnow
from agenticore.permits import Limit, Permit, job_gate, job_lease
from agenticore.profiles import Profile, carry_session, load_profile, materialize
from agenticore.pulls import commit_message
from agenticore.redaction import redact_text
from agenticore.repos import RepoCache, Workspace, repo_key
from agenticore.sandbox import hand_over, sandboxed
from agenticore.supervisor import ProcessResult, ProcessSpec, supervise

__all__ = ["JobRunner"]

log = logging.getLogger(__name__)

# the breaker's state is in Redis (or a locked file); these mean it did not answer now
_BREAKER_UNAVAILABLE = (redis.RedisError, LockTimeout, OSError)


@dataclass
class _Delivery:
    """One delivery's hold on its job: the lease, and the attempt it started."""

    permit: Permit | None = None
    attempt: int | None = None
    superseded: bool = False  # the job was handed on while this delivery ran it

    def owns(self, job: Job) -> bool:
        if self.attempt is None:
            return True  # not started: the lease alone decides
        handed_on = job.status in (JobStatus.QUEUED, JobStatus.DEAD)
        return job.attempts == self.attempt and not handed_on


class JobRunner:
    def __init__(self, settings: Settings, store: JobStore | None = None) -> None:
        self.settings = settings
        self.store = store or JobStore(settings)
        self.repos = RepoCache(settings)
        self.gate = job_gate(settings)

    def run(self, job_id: str, *, worker: str | None = None, pr_follows: bool = False) -> Job:
        """Runs the job once. Returns it finished, or ``queued`` again for a retry.

        Whatever the run's outcome, the agent's work is committed to the job branch in the
        repo cache; the worktree then goes unless the job asks to keep it. A succeeded run
        gets ``pr_status: pending`` when a PR step follows: the job asks for one
        (``auto_pr``) or the caller chained one (``pr_follows``).

        Raises ``NoPermit`` (breaker open, no free permit) before anything starts: the
        caller defers the job and asks again after ``retry_after``.
        """
        job = self.store.get(job_id)
        if job.terminal:
            log.info("job %s is already %s; nothing to do", job_id, job.status.value)
            return self._settle_pr_step(job, pr_follows or bool(job.auto_pr))
        worker = worker or self.settings.worker_identity()
        breaker = CircuitBreaker(self.settings, job.agent)
        try:
            wait = breaker.allow()
        except _BREAKER_UNAVAILABLE as exc:  # as with a permit store that does not answer
            raise NoPermit(f"circuit breaker store unavailable: {exc}", retry_after=1.0) from exc
        if wait:
            raise NoPermit(f"circuit breaker for {job.agent} is open", retry_after=wait)
        # the job's lease: while one delivery runs it, a duplicate delivery is deferred
        delivery = _Delivery()
        with job_lease(
            self.gate, job.id, self._limits(job, worker),
            take_back=lambda permit: self._take_back(job.id, delivery, permit),
        ) as permit:  # fmt: skip
            delivery.permit = permit
            return self._run_permitted(
                job, worker, breaker, pr_follows or bool(job.auto_pr), delivery
            )

    def _settle_pr_step(self, job: Job, pr_follows: bool) -> Job:
        """A job that ended without this delivery running it (dead-lettered by the
        reconciler, cancelled) while a PR step was to follow: the step is settled as
        skipped, as a run ending here would have (a chained step never runs after it)."""
        if not pr_follows or job.pr_status is not None or job.status is JobStatus.SUCCEEDED:
            return job
        return self.store.update(job.id, **pr_fields_after_run(job.status))

    def _take_back(self, job_id: str, delivery: _Delivery, permit: Permit) -> bool | None:
        """A lapsed lease is taken back only while the job is still this delivery's
        attempt, judged under the job's lock (the reconciler hands on under it too)."""
        try:
            with self.store.locked(job_id):
                current = self.store.find(job_id)
                if current is None or not delivery.owns(current):
                    return False
                return permit.reacquire()
        except (LockTimeout, StoreUnavailable):
            return None  # no answer: nobody else can hand the job on either

    def _run_permitted(
        self, job: Job, worker: str, breaker: CircuitBreaker, pr_follows: bool,
        delivery: _Delivery,
    ) -> Job:  # fmt: skip
        job = self.store.get(job.id)  # re-read under the lease: another delivery may have run it
        if job.terminal:
            return job
        if job.status is JobStatus.RUNNING and not job.attempts_left(self.settings.max_attempts):
            return self.store.update(
                job.id,
                status=JobStatus.DEAD,
                finished_at=utcnow(),
                error=f"worker_lost: the worker running attempt {job.attempts} disappeared",
                **(pr_fields_after_run(JobStatus.DEAD) if pr_follows else {}),
            )
        try:
            job = self._start(job, worker)
        except InvalidTransition:
            return self.store.get(job.id)  # cancelled between the read and the start
        delivery.attempt = job.attempts
        workspaces: list[Workspace] = []
        finished: Job | None = None
        interrupted = False
        try:
            finished = self._attempt(job, breaker, pr_follows, delivery, workspaces)
            return finished
        except Terminated:
            interrupted = True
            raise
        except StaleAttempt as exc:
            # the lease was lost and the job handed on: what is left (the worktree, the
            # record) belongs to the attempt after this one
            log.warning("%s; this delivery stops without touching it", exc)
            delivery.superseded = True
            return self.store.get(job.id)
        finally:
            # the work is on the job branch by now: the worktree is only kept on request
            keep = job.keep_worktree or delivery.superseded
            # cut short while its worktree was being made: what there is of it goes too
            made = bool(workspaces) or (interrupted and self._worktree_exists(job))
            if made and not keep:
                self._cleanup(self.store.find(job.id) or job)  # with the branch it was given

    def _attempt(
        self, job: Job, breaker: CircuitBreaker, pr_follows: bool, delivery: _Delivery,
        workspaces: list[Workspace],
    ) -> Job:  # fmt: skip
        """Prepares, runs and records one attempt; the workspace it made goes in
        ``workspaces`` for the caller to clean up."""
        try:
            left = self._worktree_exists(job)  # by an attempt whose worker was killed
            workspace = self._prepare(job)
            workspaces.append(workspace)
            job = self.store.get(job.id)
            outcome = (left and self._unrecorded_success(job)) or self._traced_execute(
                job, workspace, delivery
            )
            changed, head = self._keep_work(job, workspace)
            return self._finish(
                job, outcome, breaker, changed_files=changed, commit_sha=head,
                pr_pending=pr_follows,
            )  # fmt: skip
        except Terminated:
            # the agent's group is already dead (supervise's finally), and so are our git
            # children; keep its work, record, and let the caller end its process as
            # whoever sent SIGTERM expects
            if self._interrupted(job.id, job.attempts, **self._work_left(job, workspaces)) is None:
                delivery.superseded = True
            raise
        except StaleAttempt:
            raise
        except AgenticoreError as exc:
            return self._finish(job, _failure(exc), breaker, **self._work_left(job, workspaces))
        except Exception as exc:
            log.exception("job %s failed inside Agenticore", job.id)
            error = f"internal_error: {type(exc).__name__}: {redact_text(str(exc))}"
            outcome = AgentOutcome(JobStatus.FAILED, error=error)
            return self._finish(job, outcome, breaker, **self._work_left(job, workspaces))

    # -- steps -------------------------------------------------------------------------

    def _start(self, job: Job, worker: str) -> Job:
        return self.store.update(
            job.id,
            status=JobStatus.RUNNING,
            worker=worker,
            worker_state=None,
            started_at=utcnow(),
            finished_at=None,
            attempts=job.attempts + 1,
            error=None,
        )

    def _prepare(self, job: Job) -> Workspace:
        if job.repo_url is not None:
            self.repos.ensure(job.repo_url)
        with telemetry.span("job.worktree", {"agenticore.job_id": job.id}):
            workspace = self.repos.create_workspace(job)
        self.store.update(
            job.id,
            attempt=job.attempts,
            worktree_path=str(workspace.path),
            branch=workspace.branch,
            base_ref=workspace.base_ref or job.base_ref,
            base_sha=workspace.base_sha,
        )
        return workspace

    def _execute(self, job: Job, workspace: Workspace, delivery: _Delivery) -> AgentOutcome:
        profile = load_profile(self.settings, job.profile)
        backend = get_backend(job.agent)
        # a resumed session keeps its id; a fresh attempt gets a new one (ids are single-use)
        resume = job.resume_session is not None
        session_id = job.resume_session or str(uuid.uuid4())
        budget = self._budget(job, profile)
        job_dir = self.settings.jobs_dir / job.id
        transcript = job_dir / backend.transcript_name()
        # the record shows the limits this run was held to; the argv passes them on
        job = self.store.update(
            job.id,
            attempt=job.attempts,
            session_id=session_id,
            max_turns=budget.max_turns,
            max_cost_usd=budget.max_cost_usd,
            max_attempts=budget.max_attempts,
            transcript_path=str(transcript),
        )
        agent = self.repos.agent_of(job)
        with telemetry.span("job.materialize", {"agenticore.profile": profile.name}):
            config = materialize(self.settings, profile, job, link_login=not agent.isolated)
        if resume and not carry_session(
            self.settings, session_id, config.config_dir, workspace.path,
            ran_it=lambda job_id: self._ran_session(job_id, session_id),
        ):  # fmt: skip
            log.info("job %s: session %s not found locally; the agent decides", job.id, session_id)
        hand_over([config.home], agent)
        argv = backend.command(self.settings, profile, job, config, resume=resume)
        env = backend.environment(dict(os.environ), profile, config)
        spec = ProcessSpec(
            argv=sandboxed(argv, agent),
            cwd=workspace.path,
            env=self._agent_env(env, workspace),
            transcript=transcript,
            stderr=job_dir / "stderr.log",
            timeout=budget.wall_seconds,
            grace=self.settings.kill_grace_seconds,
            stall_seconds=self.settings.stall_seconds,
            max_rss_mb=self.settings.max_agent_rss_mb,
            owner_uid=agent.uid if agent.per_job else None,
            stdin=backend.prompt_input(job),
            transcript_cap=self.settings.max_transcript_mb * 1024 * 1024,
        )
        stream = backend.new_stream()
        model = job.model or profile.model
        meter = CostMeter(price_for(model, self.settings.model_prices), budget)

        def on_line(line: bytes) -> str | None:
            event = stream.feed(line)
            return meter.observe(event) if event is not None else None

        cgroup = None
        if self.settings.max_agent_rss_mb is not None:
            cgroup = MemoryCgroup.create(f"agenticore-{job.id}", self.settings.max_agent_rss_mb)

        def started(pid: int) -> None:
            if cgroup is not None:
                cgroup.add(pid)
            self.store.update(job.id, attempt=job.attempts, agent_pid=pid)

        def salvage(reason: str) -> None:
            sha = self.repos.salvage(workspace, job.id, reason)
            if sha is None:
                return
            try:
                self.store.update(job.id, attempt=job.attempts, salvaged=True, commit_sha=sha)
            except StaleAttempt:
                log.warning("job %s: salvaged %s after losing the job", job.id, sha)

        def should_stop() -> str | None:
            if self._cancel_requested(job.id):
                return "cancelled"
            if delivery.permit is not None and delivery.permit.lost.is_set():
                return "lease_lost: the job's lease could not be kept; it runs again"
            return None

        try:
            with sigterm_raises():
                process = supervise(
                    spec,
                    on_line=on_line,
                    on_start=started,
                    should_stop=should_stop,
                    before_kill=salvage,
                )
            if cgroup is not None and cgroup.oom_killed():
                process.stop_reason = "memory_exceeded"  # the kernel enforced the limit
        finally:
            if cgroup is not None:
                cgroup.remove()
        outcome = backend.outcome(stream, process)
        if delivery.permit is not None and delivery.permit.lost.is_set():
            outcome.retryable = True  # not the agent's failure: the job runs again
        if outcome.session_id not in (None, session_id):
            # the id names whose conversation it is (resume rights, transcripts carried over):
            # it is ours to assign, never the agent's to claim
            log.warning("job %s: the agent reported session %s; keeping %s", job.id,
                        outcome.session_id, session_id)  # fmt: skip
        outcome.session_id = session_id
        if outcome.cost_usd is None and meter.estimated_usd:
            outcome.cost_usd = round(meter.estimated_usd, 6)  # no final figure: the estimate
        return outcome

    def _traced_execute(self, job: Job, workspace: Workspace, delivery: _Delivery) -> AgentOutcome:
        """``_execute`` in the ``agent.run`` span; the agent gets its ``TRACEPARENT``."""
        attributes = {"agenticore.job_id": job.id, "agenticore.attempt": job.attempts}
        with telemetry.span("agent.run", attributes) as span:
            outcome = self._execute(job, workspace, delivery)
            telemetry.record_outcome(span, {
                "agenticore.status": outcome.status.value,
                "agenticore.cost_usd": outcome.cost_usd,
                "agenticore.num_turns": outcome.num_turns,
                "agenticore.session_id": outcome.session_id,
                "agenticore.exit_code": outcome.exit_code,
            }, error=outcome.error)  # fmt: skip
            return outcome

    def _unrecorded_success(self, job: Job) -> AgentOutcome | None:
        """The success of the previous attempt's agent, if its worker was killed after the
        agent ended and before the outcome was recorded: the transcript ends that session
        with a success result, and the worktree it left holds the work. Running the agent
        again would do the job twice."""
        if job.attempts < 2 or job.session_id is None:
            return None
        backend = get_backend(job.agent)
        stream = backend.new_stream()
        try:
            with (self.settings.jobs_dir / job.id / backend.transcript_name()).open("rb") as lines:
                for line in lines:
                    stream.feed(line)
        except OSError:
            return None
        if stream.result is None or stream.result.get("session_id") != job.session_id:
            return None  # no result, or one of an earlier session
        outcome = backend.outcome(stream, ProcessResult(exit_code=0))
        if outcome.status is not JobStatus.SUCCEEDED:
            return None
        outcome.exit_code = None  # it went with the killed worker
        log.warning("job %s: attempt %d's agent succeeded before its worker was lost; "
                    "recorded from its transcript", job.id, job.attempts - 1)  # fmt: skip
        return outcome

    def _keep_work(self, job: Job, workspace: Workspace) -> tuple[list[str], str | None]:
        """Commits what the agent left uncommitted onto the job branch in the cache, so the
        work outlives the worktree. Returns the files the job changed and the branch head
        once it is past the base (the agent's own commits count), else None."""
        if workspace.branch is not None:
            self.repos.commit_all(workspace, commit_message(job))
        return self.repos.changes(workspace)

    def _work_left(self, job: Job, workspaces: list[Workspace]) -> dict[str, Any]:
        """After a run that went wrong: its work kept as far as that still goes (the branch
        keeps whatever was committed before), as fields for the record."""
        if not workspaces:
            return {}
        try:
            changed, head = self._keep_work(job, workspaces[0])
        except AgenticoreError as exc:
            log.warning("job %s: work left in the worktree not committed: %s", job.id, exc)
            return {}
        return {"changed_files": changed, "commit_sha": head}

    def _finish(
        self,
        job: Job,
        outcome: AgentOutcome,
        breaker: CircuitBreaker,
        *,
        changed_files: list[str] | None = None,
        commit_sha: str | None = None,
        pr_pending: bool = False,
    ) -> Job:
        with sigterm_deferred():  # recorded whole, even when a cancel lands meanwhile
            return self._record_outcome(
                job, outcome, breaker, changed_files, commit_sha, pr_pending
            )

    def _record_outcome(
        self,
        job: Job,
        outcome: AgentOutcome,
        breaker: CircuitBreaker,
        changed_files: list[str] | None,
        commit_sha: str | None,
        pr_pending: bool,
    ) -> Job:
        job_id = job.id
        _count_in(breaker, outcome, job_id)
        status = outcome.status
        if outcome.infra or outcome.retryable:
            # another attempt, or the dead-letter list once attempts are spent
            current = self.store.get(job.id)  # holds the limits this run was given
            spent = not current.attempts_left(self.settings.max_attempts)
            status = JobStatus.DEAD if spent else JobStatus.QUEUED
        fields: dict[str, Any] = {
            "finished_at": utcnow() if status.terminal else None,
            "exit_code": outcome.exit_code,
            "result": outcome.result,
            "error": outcome.error,
            "cost_usd": outcome.cost_usd,
            "usage": outcome.usage,
            "num_turns": outcome.num_turns,
            "duration_ms": outcome.duration_ms,
            "agent_pid": None,
            "changed_files": changed_files,
            "commit_sha": commit_sha,
        }
        if outcome.session_id:
            fields["session_id"] = outcome.session_id
        if pr_pending:
            fields |= pr_fields_after_run(status)
        try:
            job = self._record(job_id, status=status, attempt=job.attempts, **fields)
        except StaleAttempt:
            raise
        except InvalidTransition:
            # cancelled while it ran: keep the cancellation, still record what the agent did
            fields.pop("error")
            fields.pop("pr_status", None)
            fields.pop("pr_due_at", None)
            fields.pop("pr_error", None)
            if pr_pending:
                fields |= pr_fields_after_run(JobStatus.CANCELLED)
            job = self._record(job_id, attempt=job.attempts, **fields)
        log.info("job %s ended %s %s", job_id, job.status.value, job.error or "")
        return job

    def _record(self, job_id: str, **changes: Any) -> Job:
        """Writes a run's outcome. A store that cannot be written (a full disk) may have
        room again in a moment: tried for half a lease, then the error goes to the caller,
        which defers the job (its agent is gone, its work is on the job branch)."""
        retrying = Retrying(
            retry=retry_if_exception_type(StoreUnavailable),
            stop=stop_after_delay(self.settings.lease_seconds / 2),
            wait=wait_exponential(multiplier=0.5, max=5),
            reraise=True,
        )
        job: Job = retrying(self.store.update, job_id, **changes)
        return job

    def _ran_session(self, job_id: str, session_id: str) -> bool:
        ran = self.store.find(job_id)
        return ran is not None and ran.session_id == session_id

    def _agent_env(self, env: dict[str, str], workspace: Workspace) -> dict[str, str]:
        """The backend's allow-listed environment, plus what the operator lets through
        (``AGENT_ENV_ALLOW``), what git in the worktree needs and the run's ``TRACEPARENT``."""
        passed = {k: os.environ[k] for k in self.settings.agent_env_allow if k in os.environ}
        return env | passed | self.repos.agent_git_env(workspace) | telemetry.agent_env()

    def _limits(self, job: Job, worker: str) -> list[Limit]:
        settings = self.settings
        limits = [
            Limit(f"node:{worker}", settings.max_parallel_jobs),
            Limit("fleet", settings.fleet_max_jobs),
            Limit(f"profile:{job.profile}", settings.profile_max_jobs.get(job.profile)),
        ]
        if job.repo_url is not None:
            limits.append(
                Limit(f"repo:{repo_key(job.repo_url)}", settings.repo_max_jobs.get(job.repo_url))
            )
        return limits

    def _interrupted(self, job_id: str, attempt: int, **work: Any) -> Job | None:
        """Cancelled jobs stay cancelled; others are handed back for redelivery (unless
        the job was handed on already)."""
        try:
            return self.store.update(
                job_id,
                status=JobStatus.QUEUED,
                attempt=attempt,
                agent_pid=None,
                error="interrupted: the worker stopped during the run; the job is requeued",
                **work,
            )
        except StaleAttempt:
            return None
        except InvalidTransition:
            return self.store.update(job_id, agent_pid=None, **work)

    def _cleanup(self, job: Job) -> None:
        try:
            with sigterm_deferred():  # a cancel or a second SIGTERM waits until it is gone
                self.repos.remove_workspace(job)
        except AgenticoreError as exc:
            log.warning("job %s: worktree cleanup failed: %s", job.id, exc)

    def _worktree_exists(self, job: Job) -> bool:
        return (self.settings.worktrees_dir / job.id).exists()

    def _cancel_requested(self, job_id: str) -> bool:
        job = self.store.find(job_id)
        return job is not None and job.status is JobStatus.CANCELLED

    def _budget(self, job: Job, profile: Profile) -> Budget:
        """Job beats profile beats config; wall time never exceeds the fleet's maximum."""
        wall = job.timeout_seconds or profile.timeout or self.settings.job_timeout_seconds
        return Budget(
            wall_seconds=float(min(wall, self.settings.job_timeout_seconds)),
            max_turns=job.max_turns or profile.max_turns or self.settings.max_turns,
            max_cost_usd=job.max_cost_usd or profile.max_cost_usd or self.settings.max_cost_usd,
            max_attempts=job.max_attempts or profile.max_attempts or self.settings.max_attempts,
        )


def _count_in(breaker: CircuitBreaker, outcome: AgentOutcome, job_id: str) -> None:
    """What the run says about its backend goes to the breaker. A breaker store that does
    not answer now (Redis restarting) loses that count; the run keeps its outcome."""
    try:
        if outcome.infra:
            breaker.record_failure(outcome.error or "")
        elif outcome.status is not JobStatus.CANCELLED:
            breaker.record_success()
    except _BREAKER_UNAVAILABLE as exc:
        log.warning("job %s: circuit breaker not updated (%s)", job_id, exc)


def _failure(exc: AgenticoreError) -> AgentOutcome:
    """A failure before or around the agent: which ones deserve another attempt."""
    outcome = AgentOutcome(JobStatus.FAILED, error=str(exc))
    outcome.infra = isinstance(exc, AgentError)  # the agent could not even start
    transient = isinstance(exc, RepoError) and exc.transient
    outcome.retryable = transient or isinstance(exc, LockTimeout)  # network, contention
    return outcome
