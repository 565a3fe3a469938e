"""How a task ends for each way its job ends, and the revoke backstop's limits."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery.exceptions import Ignore, Terminated

from agenticore.config import get_settings, reset_settings
from agenticore.errors import JobFailed
from agenticore.jobs import JobStore
from agenticore.models import Job, JobSpec, JobStatus
from tests.helpers import pid_alive, wait_for
from workers.app import _kill_revoked_agent
from workers.tasks import _end_as


def job_in(status: JobStatus, error: str | None = None) -> Job:
    return Job.from_spec(JobSpec(task="x")).model_copy(update={"status": status, "error": error})


def test_given_each_final_status_then_the_task_ends_the_way_the_job_did() -> None:
    _end_as(job_in(JobStatus.SUCCEEDED))  # returns: SUCCESS
    for status in (JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.DEAD):
        with pytest.raises(JobFailed, match="agent_crashed: exit 1"):
            _end_as(job_in(status, "agent_crashed: exit 1"))
    with pytest.raises(Terminated, match="cancelled by request"):  # REVOKED
        _end_as(job_in(JobStatus.CANCELLED, "cancelled by request"))


def test_given_a_delivery_whose_attempt_was_handed_on_then_the_task_leaves_its_state() -> None:
    # the job runs elsewhere under the same task id: FAILURE here would be a lie
    with pytest.raises(Ignore):
        _end_as(job_in(JobStatus.RUNNING))


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_given_a_run_that_ended_cancelled_by_itself_then_the_backstop_kills_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen[bytes]
) -> None:
    # given: a cancelled job whose record still names a process group (another host's,
    # or a pid the kernel has handed to someone else since)
    monkeypatch.setenv("AGENTICORE_HOME", str(tmp_path))
    monkeypatch.delenv("AGENTICORE_REDIS_URL", raising=False)
    reset_settings()
    try:
        store = JobStore(get_settings())
        job = store.create(job_in(JobStatus.QUEUED))
        store.update(job.id, status=JobStatus.CANCELLED, agent_pid=sleeper.pid)
        request = SimpleNamespace(id=job.id)

        # when: run_job raised Terminated with the job's error (signum is that text)
        _kill_revoked_agent(request=request, terminated=True, signum="cancelled by request")
        # then
        assert pid_alive(sleeper.pid), "no revoke signalled a pool process: nothing to kill"

        # when: a real revoke with terminate (signum is the signal's number)
        _kill_revoked_agent(request=request, terminated=True, signum=int(signal.SIGTERM))
        # then
        wait_for(lambda: sleeper.poll() is not None, timeout=10, what="the group to die")
    finally:
        reset_settings()
