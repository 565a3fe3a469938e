"""A hostile agent on a real fleet: it must find no forge token and no Redis password, and
nothing it plants may run in the worker (given a worker running as root, which isolates)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agenticore.config import Settings
from agenticore.repos import repo_key
from agenticore.sandbox import JOB_UID_BASE, for_job, resolve_identity
from tests.conftest import FORGE_TOKEN, Fleet, forge_settings, running_fleet
from tests.fake_forge import FakeForge
from tests.helpers import FAKE_CLAUDE, free_port, git, wait_for

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
