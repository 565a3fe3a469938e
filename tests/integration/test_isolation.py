"""A hostile agent on a real fleet: it must find no forge token and no Redis password, and
nothing it plants may run in the worker (given a worker running as root, which isolates)."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agenticore.config import Settings
from agenticore.errors import RepoError
from agenticore.models import Job, JobSpec
from agenticore.repos import RepoCache, repo_key
from agenticore.sandbox import JOB_UID_BASE, as_user, for_job, resolve_identity
from tests.conftest import FORGE_TOKEN, Fleet, forge_settings, running_fleet
from tests.fake_forge import FakeForge
from tests.helpers import FAKE_CLAUDE, free_port, git, make_remote, wait_for

pytestmark = [pytest.mark.integration]
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="isolation needs a worker run as root")

REDIS_PASSWORD = "redis-pw-Kq93vXz0aT7mB2"
AWS_SECRET = "aws-secret-Hn2Lq8ZpW4xY7c"
HOSTILE = Path(__file__).resolve().parents[1] / "hostile_agent.py"


@pytest.fixture(scope="module")
def sandbox_root() -> Iterator[Path]:
    """A folder the agent's uid can reach (pytest's own tmp folders are private to root),
    holding the fleet's home, the agents' programs and a drop box for what they find."""
    root = Path(tempfile.mkdtemp(prefix="agenticore-iso-", dir="/tmp"))
    root.chmod(0o711)
    (root / "bin").mkdir(mode=0o755)
    for source, name in ((FAKE_CLAUDE, "claude"), (HOSTILE, "hostile")):
        shutil.copy(source, root / "bin" / name)
        (root / "bin" / name).chmod(0o755)
    drop = root / "drop"
    drop.mkdir()
    drop.chmod(0o1777)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def protected_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis that wants a password, so the worker holds one worth stealing."""
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--requirepass", REDIS_PASSWORD,
         "--dir", str(tmp_path_factory.mktemp("redis-pw"))],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    try:
        wait_for(lambda: _pings(url), timeout=10, what="redis-server with a password")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def hostile_fleet(
    sandbox_root: Path,
    protected_redis: str,
    forge: FakeForge,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Fleet]:
    # secrets a worker's environment may hold besides ours
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/ssh-agent.sock")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-model-key-the-agent-may-have")
    home = sandbox_root / f"home-{free_port()}"
    settings = {
        "claude_bin": str(sandbox_root / "bin" / "claude"),
        "agent_user": "auto",
        **forge_settings(forge),
    }
    with running_fleet("redis", home, protected_redis, **settings) as fleet:
        yield fleet


@root_only
@pytest.mark.slow
def test_given_root_and_a_reachable_home_then_each_job_gets_a_uid_of_its_own(
    sandbox_root: Path,
) -> None:
    settings = Settings(home=sandbox_root / "home-check", agent_user="auto")

    agent = resolve_identity(settings)

    assert agent.isolated and agent.per_job, agent.reason
    assert for_job(agent, "a").uid != for_job(agent, "b").uid


@root_only
@pytest.mark.slow
def test_given_a_hostile_agent_then_it_finds_no_secret_and_runs_nothing_in_the_worker(
    hostile_fleet: Fleet, sandbox_root: Path, forge: FakeForge
) -> None:
    drop = sandbox_root / "drop"
    task = (
        "Add notes\n"
        f"@fake exec {sandbox_root / 'bin' / 'hostile'} {drop}\n"
        "@fake write NOTES.md notes from a hostile agent\n"
        "@fake commit docs: notes\n"
        "@fake env AWS_SECRET_ACCESS_KEY\n@fake env SSH_AUTH_SOCK\n@fake env ANTHROPIC_API_KEY"
    )
    job = hostile_fleet.submit(task=task, repo_url=f"{forge.url}/acme/widgets.git", auto_pr=True)

    done = _settled(hostile_fleet, job["id"])

    assert done["status"] == "succeeded", done["error"]
    assert done["pr_status"] == "opened", done["pr_error"]
    seen = _read_all(drop, "seen-")
    uid = for_job(resolve_identity(hostile_fleet.settings), done["id"]).uid
    assert f"uid={uid} " in seen and uid >= JOB_UID_BASE, "the agent ran as its job's own uid"
    _assert_no_secret(drop)
    assert list(drop.glob("evil-ran-*")) == [], "the worker ran the agent's program"
    transcript = Path(done["transcript_path"]).read_text()
    assert "AWS_SECRET_ACCESS_KEY=<unset>" in transcript
    assert "SSH_AUTH_SOCK=<unset>" in transcript
    assert "ANTHROPIC_API_KEY=<unset>" not in transcript, "its own model key reaches it"
    # what it planted stayed out of the shared cache, and its commit reached the PR
    cache = Path(done["worktree_path"]).parents[1] / "repos"
    config = "\n".join(p.read_text() for p in cache.glob("*/repo/config"))
    assert "fsmonitor" not in config and "hooksPath" not in config and "evil" not in config
    pushed = git(forge.git_root / "acme" / "widgets.git", "log", "--format=%s", done["branch"])
    assert "docs: notes" in pushed.splitlines()


@root_only
@pytest.mark.slow
def test_given_an_agent_that_replaces_dot_git_then_the_worker_refuses_it_and_runs_nothing(
    hostile_fleet: Fleet, sandbox_root: Path, forge: FakeForge
) -> None:
    drop = sandbox_root / "drop"
    task = f"Break out\n@fake exec {sandbox_root / 'bin' / 'hostile'} {drop} replace-dotgit"
    job = hostile_fleet.submit(task=task, repo_url=f"{forge.url}/acme/widgets.git", auto_pr=True)

    done = _settled(hostile_fleet, job["id"])

    assert done["status"] == "failed" and "worktree_tampered" in done["error"], done["error"]
    assert list(drop.glob("evil-ran-*")) == []
    _assert_no_secret(drop)
    assert git(forge.git_root / "acme" / "widgets.git", "branch", "--list", done["branch"]) == ""


@root_only
@pytest.mark.slow
def test_given_two_jobs_then_one_agent_can_touch_nothing_of_the_other(
    hostile_fleet: Fleet, sandbox_root: Path, forge: FakeForge
) -> None:
    repo = f"{forge.url}/acme/widgets.git"
    victim = hostile_fleet.submit(task="Keep this\n@fake write PRIVATE.md victim's work",
                                  repo_url=repo, keep_worktree=True)  # fmt: skip
    victim = _settled(hostile_fleet, victim["id"])
    worktree = Path(victim["worktree_path"])
    targets = [
        worktree,  # another job's files
        worktree / "PRIVATE.md",
        hostile_fleet.settings.agent_homes_dir / victim["id"],  # its home: config, sessions
        hostile_fleet.settings.repos_dir / repo_key(repo) / "repo" / "config",  # its repo
    ]
    probe = sandbox_root / "bin" / "probe"
    probe.write_text(
        "#!/usr/bin/python3\nimport os, sys\nfor path in sys.argv[1:]:\n    try:\n"
        "        os.listdir(path) if os.path.isdir(path) else open(path, 'a' if path.endswith"
        "('.md') else 'r').close()\n        print('REACHED', path)\n"
        "    except OSError as exc:\n        print('DENIED', exc)\n"
    )
    probe.chmod(0o755)

    attacker = hostile_fleet.submit(
        task=f"Snoop\n@fake exec {probe} {' '.join(map(str, targets))}",
        repo_url=f"{forge.url}/gl/group/proj.git",  # another tenant's repository
    )
    attacker = _settled(hostile_fleet, attacker["id"])

    assert attacker["status"] == "succeeded", attacker["error"]
    transcript = Path(attacker["transcript_path"]).read_text()
    assert "REACHED" not in transcript and transcript.count("DENIED") == len(targets)
    assert (worktree / "PRIVATE.md").read_text() == "victim's work"


@root_only
@pytest.mark.slow
def test_given_an_agent_whose_objects_borrow_another_repo_then_nothing_of_it_is_adopted(
    hostile_fleet: Fleet, sandbox_root: Path, forge: FakeForge
) -> None:
    victim_repo = f"{forge.url}/acme/widgets.git"
    task = "Secret\n@fake write SECRET.md tenant secret\n@fake commit secret work"
    victim = _settled(hostile_fleet, hostile_fleet.submit(task=task, repo_url=victim_repo)["id"])
    assert victim["commit_sha"], victim["error"]
    settings = hostile_fleet.settings
    victim_objects = settings.repos_dir / repo_key(victim_repo) / "repo" / "objects"
    # the agent points its own objects at the other cache and forges a commit on top of it
    thief = sandbox_root / "bin" / "borrow"
    thief.write_text(
        "#!/bin/sh\nset -e\n"
        f'echo "{victim_objects}" > "$GIT_OBJECT_DIRECTORY/info/alternates" || '
        'mkdir -p "$GIT_OBJECT_DIRECTORY/info" && '
        f'echo "{victim_objects}" > "$GIT_OBJECT_DIRECTORY/info/alternates"\n'
        f'c=$(printf "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\\nparent {victim["commit_sha"]}'
        '\\nauthor a <a@b> 0 +0000\\ncommitter a <a@b> 0 +0000\\n\\nborrowed\\n" | '
        "git hash-object -t commit -w --literally --stdin)\n"
        'git update-ref --no-deref HEAD "$c"\n'
    )
    thief.chmod(0o755)

    job = hostile_fleet.submit(task=f"Borrow\n@fake exec {thief}",
                               repo_url=f"{forge.url}/gl/group/proj.git")  # fmt: skip
    done = _settled(hostile_fleet, job["id"])

    own_cache = settings.repos_dir / repo_key(f"{forge.url}/gl/group/proj.git") / "repo"
    borrowed = subprocess.run(["git", "--git-dir", str(own_cache), "cat-file", "-e",
                               str(victim["commit_sha"])], capture_output=True)  # fmt: skip
    assert borrowed.returncode != 0, "the other repo's commit reached this repo's cache"
    assert done["status"] == "failed", "a job whose work cannot be adopted does not succeed"


@root_only
def test_given_a_git_folder_swapped_for_a_link_then_the_worker_writes_nothing_through_it(
    sandbox_root: Path, tmp_path: Path
) -> None:
    settings = Settings(
        home=sandbox_root / f"home-{free_port()}",
        agent_user="auto",
        allow_local_repos=True,
        claude_bin=str(sandbox_root / "bin" / "claude"),
    )
    remote = make_remote(sandbox_root / f"remote-{free_port()}")
    cache = RepoCache(settings)
    cache.ensure(str(remote))
    job = Job.from_spec(JobSpec(task="x", repo_url=str(remote)))
    workspace = cache.create_workspace(job)
    assert workspace.gitdir is not None and workspace.agent is not None
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    # what the job's agent does in its own home, as its own uid
    subprocess.run(as_user(["sh", "-c", 'mv "$0" "$0.old" && ln -s "$1" "$0"',
                            str(workspace.gitdir), str(private)], workspace.agent),
                   check=True)  # fmt: skip

    with contextlib.suppress(RepoError):
        cache.create_workspace(job)  # a redelivered attempt reuses the worktree

    assert list(private.iterdir()) == [], "the worker wrote through the agent's link"
    key_dir = settings.repos_dir / repo_key(str(remote))
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o750
    assert stat.S_IMODE(settings.repos_dir.stat().st_mode) == 0o711


@root_only
@pytest.mark.slow
def test_given_a_pool_process_killed_mid_job_then_the_next_attempt_keeps_the_agents_commit(
    hostile_fleet: Fleet, forge: FakeForge
) -> None:
    task = "Twice\n@fake write A.md first\n@fake commit first try\n@fake sleep 8\n@fake result ok"
    repo = f"{forge.url}/acme/widgets.git"
    job_id = hostile_fleet.submit(task=task, repo_url=repo)["id"]
    agent = wait_for(lambda: hostile_fleet.agent_pid(job_id), timeout=30, what="the agent")
    pool_process = int(Path(f"/proc/{agent}/stat").read_text().split(") ")[1].split()[1])
    head = hostile_fleet.settings.agent_homes_dir / job_id / "git" / "HEAD"
    base = wait_for(lambda: hostile_fleet.job(job_id)["base_sha"], timeout=30, what="base")
    wait_for(lambda: head.read_text().strip() != base, timeout=30, what="the agent's commit")

    os.kill(pool_process, signal.SIGKILL)
    done = hostile_fleet.wait_until_final(job_id, timeout=90)

    assert done["status"] == "succeeded" and done["attempts"] == 2, done["error"]
    cache = hostile_fleet.settings.repos_dir / repo_key(repo) / "repo"
    log = git(cache, "log", "--format=%s", str(done["branch"]))
    assert "first try" in log.splitlines(), "the killed attempt's commit was adopted"


def test_given_agents_that_share_the_workers_uid_then_the_worker_warns_once(fleet: Fleet) -> None:
    # the shared fleet lives in pytest's private tmp folder: no other uid can reach it
    log = (fleet.logs / "worker.log").read_text()

    assert log.count("agents run as the worker's own user") == 1
    assert "SECURITY.md" in log


def _settled(fleet: Fleet, job_id: str) -> dict[str, object]:
    done = fleet.wait_until_final(job_id, timeout=90)
    return wait_for(
        lambda: job if (job := fleet.job(job_id))["pr_status"] != "pending" else None,
        timeout=60,
        what="the PR step",
    ) if done.get("pr_status") == "pending" else done  # fmt: skip


def _assert_no_secret(drop: Path) -> None:
    header = base64.b64encode(f"x-access-token:{FORGE_TOKEN}".encode()).decode()
    found = _read_all(drop, "")
    for secret in (FORGE_TOKEN, header, REDIS_PASSWORD, AWS_SECRET):
        assert secret not in found, f"the agent found a secret ({secret[:6]}…)"
    assert "AGENTICORE_" not in found, "the agent saw the worker's settings"


def _read_all(drop: Path, prefix: str) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in sorted(drop.glob(f"{prefix}*")) if p.is_file()
    )


def _pings(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.RedisError:
        return False
