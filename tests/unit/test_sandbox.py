"""Who the agent runs as, and how: identity resolution, the wrapped argv, the allow-list."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agenticore.config import Settings
from agenticore.errors import AgentError
from agenticore.sandbox import (
    AGENT_GID,
    JOB_UID_BASE,
    AgentIdentity,
    agent_environment,
    for_job,
    group_for,
    hand_over,
    resolve_identity,
    sandboxed,
    startup_warning,
)
from agenticore.supervisor import ProcessSpec, supervise

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
NOBODY = AgentIdentity(65534, 65534, "nobody", isolated=True)


def test_given_agent_user_none_then_the_agent_shares_the_worker_uid_and_startup_warns(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(agent_user="none")

    agent = resolve_identity(settings)

    assert not agent.isolated and agent.uid == os.getuid()
    warning = startup_warning(settings)
    assert warning is not None and "/proc" in warning and "AGENT_USER" in warning


@root_only
def test_given_a_home_behind_a_private_folder_then_auto_falls_back_and_says_why(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    settings = make_settings(home=private / "home", agent_user="auto")

    agent = resolve_identity(settings)

    assert not agent.isolated
    assert str(private) in agent.reason and "not searchable" in agent.reason


@root_only
def test_given_an_explicit_user_that_cannot_work_then_jobs_refuse_rather_than_share(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with pytest.raises(AgentError, match="no such user"):
        resolve_identity(make_settings(agent_user="no-such-user-here"))
    with pytest.raises(AgentError, match="root"):
        resolve_identity(make_settings(agent_user="root"))
    private = tmp_path / "locked"
    private.mkdir(mode=0o700)
    with pytest.raises(AgentError, match="cannot reach"):
        resolve_identity(make_settings(home=private / "home", agent_user="nobody"))


def test_given_an_isolated_agent_then_its_argv_runs_it_in_a_pid_namespace_as_its_uid() -> None:
    argv = sandboxed(["claude", "-p"], NOBODY)

    assert argv[: argv.index("setpriv")] == [
        "unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
    ]  # fmt: skip
    assert "--reuid=65534" in argv and "--clear-groups" in argv and "--no-new-privs" in argv
    assert argv[-3:] == ["--", "claude", "-p"]
    shared = AgentIdentity(0, 0, "root", isolated=False)
    assert sandboxed(["claude", "-p"], shared) == ["claude", "-p"]


@root_only
def test_given_the_wrapped_argv_then_the_agent_sees_neither_our_uid_nor_our_processes(
    tmp_path: Path,
) -> None:
    probe = (
        "import os; print(os.getuid(), sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
    )
    out = subprocess.run(
        sandboxed(["/usr/bin/python3", "-c", probe], NOBODY),
        capture_output=True, text=True, check=True, cwd="/", env={"PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip

    uid, pids = out.split(" ", 1)
    assert uid == "65534" and pids.strip() == "[1]", "alone in its own pid namespace"


def test_given_a_worker_env_then_only_allowed_names_and_the_profile_env_pass(
    tmp_path: Path,
) -> None:
    base = {
        "PATH": "/usr/bin", "LC_ALL": "C", "OTEL_EXPORTER_OTLP_HEADERS": "x-key=worker-secret",
        "HTTPS_PROXY": "http://proxy", "AWS_ACCESS_KEY_ID": "AKIA", "SSH_AUTH_SOCK": "/s",
        "AGENTICORE_REDIS_URL": "redis://:pw@h", "CELERY_X": "1", "MODEL_KEY": "k",
        "HOME": "/root",
    }  # fmt: skip

    env = agent_environment(
        base, home=tmp_path, allow=lambda name: name == "MODEL_KEY", extra={"FROM_PROFILE": "1"}
    )

    assert set(env) == {
        "PATH", "LC_ALL", "HTTPS_PROXY", "MODEL_KEY",
        "FROM_PROFILE", "HOME", "TMPDIR", "SHELL",
    }  # fmt: skip
    assert env["HOME"] == str(tmp_path)


@root_only
def test_given_job_folders_then_hand_over_gives_them_to_the_agent_but_not_link_targets(
    tmp_path: Path,
) -> None:
    job = tmp_path / "job"
    (job / "sub").mkdir(parents=True)
    (job / "sub" / "file").write_text("x")
    outside = tmp_path / "outside"
    outside.write_text("worker's")
    (job / "link").symlink_to(outside)

    hand_over([job], NOBODY)

    for path in (job, job / "sub", job / "sub" / "file", job / "link"):
        assert path.lstat().st_uid == 65534, path
    assert outside.stat().st_uid == 0, "a symlink's target stays the worker's"


def test_given_auto_then_each_job_gets_a_stable_uid_of_its_own_above_every_account() -> None:
    auto = AgentIdentity(JOB_UID_BASE, AGENT_GID, "agent-<per job>", True, per_job=True)

    first, again, other = for_job(auto, "job-a"), for_job(auto, "job-a"), for_job(auto, "job-b")

    assert first == again and first.uid != other.uid
    assert first.uid >= JOB_UID_BASE and first.gid == AGENT_GID and first.isolated
    assert group_for("some repo") != AGENT_GID, "no job's own group opens a repo cache"
    assert for_job(NOBODY, "job-a") == NOBODY, "a named user serves every job"


ESCAPEE = """
import os, sys, time
print("started", flush=True)
if os.fork() == 0:
    os.setsid()  # out of the job's process group
    hog = bytearray(300 * 1024 * 1024)
    for i in range(0, len(hog), 4096):
        hog[i] = 1
    time.sleep(60)
time.sleep(60)
"""


@root_only
@pytest.mark.parametrize("by_uid", [True, False])
def test_given_an_agent_child_that_leaves_its_group_then_its_uid_still_counts_for_memory(
    tmp_path: Path, by_uid: bool
) -> None:
    agent = AgentIdentity(JOB_UID_BASE + 4242, AGENT_GID, "agent-test", True, per_job=True)
    spec = ProcessSpec(
        argv=sandboxed(["/usr/bin/python3", "-c", ESCAPEE], agent),
        cwd=Path("/"),
        env={"PATH": "/usr/bin:/bin"},
        transcript=tmp_path / "transcript.log",
        stderr=tmp_path / "stderr.log",
        timeout=8,
        grace=1,
        max_rss_mb=100,
        owner_uid=agent.uid if by_uid else None,
    )

    result = supervise(spec, on_line=lambda line: None)

    if by_uid:
        assert result.stop_reason == "memory_exceeded" and result.peak_rss_mb > 100
    else:  # what the group alone sees: the escapee's memory goes unnoticed
        assert result.stop_reason == "timeout"
