"""Where the agent runs: under its own uid, in its own pid namespace, with an allow-listed
environment, so that nothing it can inspect holds the worker's secrets.

The agent is untrusted code: a repository's files or a task's text can steer it. When the
worker may switch users (it runs as root), every agent process runs under a uid of its
job's own (``AGENT_USER=auto``; or one named user for all) inside ``unshare --pid
--mount-proc``: the kernel then refuses it the worker's
``/proc/<pid>/environ`` and memory (another uid) and every other job's files and processes,
it cannot even see the worker's processes (its own pid namespace), and whatever it leaves
running dies with it (the namespace's init is killed when the job's process group is).
Files the worker keeps to itself (job records, the embedded broker, keys) are 0600/0700;
the agent owns only its worktree and its home.

Where it cannot apply (a non-root worker, or an agent that could not reach its worktree
through a private folder such as ``/root``), agents run as the worker's own uid; the worker
warns once at startup. The environment allow-list and the worker's hardened git commands
(``repos.py``) hold in both modes.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from agenticore.config import Settings
from agenticore.errors import AgentError

__all__ = [
    "AgentIdentity",
    "agent_environment",
    "as_user",
    "for_job",
    "group_for",
    "hand_over",
    "resolve_identity",
    "sandboxed",
    "startup_warning",
]

# per-job uids: above any account's (2^30 …), a 2^31-wide range keyed by the job id; every
# job's agent has the one primary group AGENT_GID, so it never equals a repo cache's group
JOB_UID_BASE = 1 << 30
JOB_UID_SPAN = 1 << 31
AGENT_GID = JOB_UID_BASE - 1
# what any program needs to run sensibly; nothing here identifies or authenticates anyone
_BASE_NAMES = frozenset({"PATH", "LANG", "LANGUAGE", "TERM", "TZ", "COLORTERM", "NO_COLOR"})
# not OTEL_: the worker's own exporter settings (and their credentials) are not the agent's;
# a profile's env turns the agent's telemetry on
_BASE_PREFIXES = ("LC_",)
# an agent needs its provider's proxy as much as its key
_PROXY_NAMES = frozenset(
    {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}
)


@dataclass(frozen=True)
class AgentIdentity:
    """Who the agent runs as. ``isolated`` is False when it shares the worker's uid;
    ``per_job``: every job gets a uid of its own (``for_job``)."""

    uid: int
    gid: int
    name: str
    isolated: bool
    reason: str = ""  # why not isolated
    per_job: bool = False
    groups: tuple[int, ...] = ()  # supplementary groups: the job's repo cache


def resolve_identity(settings: Settings) -> AgentIdentity:
    """The agents' identity for these settings (see the module docstring); ``for_job``
    narrows it to one job's.

    An explicitly named ``AGENT_USER`` that cannot be used is an error; ``auto`` falls back
    to the worker's uid and says why in ``reason``.
    """
    return _resolve(
        settings.agent_user,
        tuple(_agent_paths(settings)),
        settings.claude_bin,
    )


def group_for(name: str) -> int:
    """A gid of its own for ``name`` (a repo cache), in the range of per-job uids."""
    return _in_job_range(f"group:{name}")  # never AGENT_GID: that lies below the range


def for_job(agent: AgentIdentity, job_id: str) -> AgentIdentity:
    """The uid one job's agent runs as: with ``AGENT_USER=auto``, one derived from the job
    id in a range no account uses, so no two jobs' agents can touch each other's files or
    processes; else ``agent`` itself."""
    if not agent.per_job:
        return agent
    uid = _in_job_range(job_id)
    return AgentIdentity(uid, AGENT_GID, f"agent-{uid}", isolated=True, per_job=True)


@lru_cache(maxsize=8)
def _resolve(wanted: str, paths: tuple[Path, ...], agent_bin: str) -> AgentIdentity:
    me = AgentIdentity(os.getuid(), os.getgid(), _user_name(os.getuid()), isolated=False)
    if wanted == "none":
        return _shared(me, "AGENT_USER=none")
    if os.geteuid() != 0:
        if wanted != "auto":
            raise AgentError(f"sandbox: AGENT_USER={wanted!r} needs a worker running as root")
        return _shared(me, "the worker does not run as root, so it cannot switch users")
    missing = [tool for tool in ("unshare", "setpriv") if shutil.which(tool) is None]
    if missing:
        return _fail_or_share(wanted, me, f"{' and '.join(missing)} (util-linux) not on PATH")
    if wanted == "auto":
        agent = AgentIdentity(JOB_UID_BASE, AGENT_GID, "agent-<per job>", True, per_job=True)
    else:
        try:
            user = _lookup(wanted)
        except KeyError as exc:
            raise AgentError(f"sandbox: cannot run agents as {wanted!r}: {exc.args[0]}") from None
        if user.pw_uid == 0:
            raise AgentError(f"sandbox: AGENT_USER={wanted!r} is root; pick an unprivileged user")
        agent = AgentIdentity(user.pw_uid, user.pw_gid, user.pw_name, isolated=True)
    executable = shutil.which(agent_bin) or agent_bin
    for path in (*paths, Path(executable)):
        blocker = _blocked_at(path, agent)
        if blocker is not None:
            return _fail_or_share(
                wanted,
                me,
                f"user {agent.name} cannot reach {path} ({blocker} is not searchable by it); "
                "keep AGENTICORE_HOME (or WORKTREE_ROOT/REPOS_ROOT) and the agent binary "
                "outside private folders such as /root",
            )
    return agent


def sandboxed(argv: list[str], agent: AgentIdentity) -> list[str]:
    """The argv that runs ``argv`` as the agent: unchanged when not isolated.

    ``--kill-child`` and the pid namespace make the agent's whole tree die with the group
    leader, daemonized escapees included; ``--no-new-privs`` keeps setuid programs inert.
    """
    if not agent.isolated:
        return argv
    return ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", *as_user(argv, agent)]


def as_user(argv: list[str], agent: AgentIdentity) -> list[str]:
    """The argv that runs ``argv`` with the agent's rights only (no namespace): for the
    worker's own commands over what the agent wrote. Unchanged when not isolated."""
    if not agent.isolated:
        return argv
    groups = f"--groups={','.join(map(str, agent.groups))}" if agent.groups else "--clear-groups"
    return [
        "setpriv", f"--reuid={agent.uid}", f"--regid={agent.gid}", groups, "--no-new-privs",
        "--", *argv,
    ]  # fmt: skip


def agent_environment(
    base: Mapping[str, str],
    *,
    home: Path,
    allow: Callable[[str], bool],
    extra: Mapping[str, str],
) -> dict[str, str]:
    """The agent's environment, built from an allow-list: PATH, locale, terminal and
    proxy settings, the names the backend ``allow``s (its model credentials), then ``extra``
    (the profile's env). Nothing else of the worker's passes: not its Redis URL, forge
    tokens, cloud keys (``AWS_*``), SSH agent or Celery settings."""
    names = _BASE_NAMES | _PROXY_NAMES
    env = {k: v for k, v in base.items() if k in names or k.startswith(_BASE_PREFIXES) or allow(k)}
    env |= {
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
        "SHELL": "/bin/sh",
    }
    env.update(extra)
    return env


def hand_over(paths: Iterable[Path], agent: AgentIdentity) -> None:
    """Makes the job's own files and folders the agent's, recursively. A no-op when the
    agent shares the worker's uid.

    The walk goes by folder descriptors (``os.fwalk``), never by path, and never follows a
    symlink: a folder swapped for a link meanwhile is not entered, and each name is changed
    relative to the folder it was found in. Each folder changes owner after its content,
    so nothing is the agent's to swap before the walk is past it."""
    if not agent.isolated:
        return
    for root in paths:
        if root.is_symlink() or not root.exists():
            continue
        if root.is_dir():
            for _, dirs, files, fd in os.fwalk(root, topdown=False, follow_symlinks=False):
                for name in (*dirs, *files):
                    os.chown(name, agent.uid, agent.gid, dir_fd=fd, follow_symlinks=False)
        os.chown(root, agent.uid, agent.gid, follow_symlinks=False)


def startup_warning(settings: Settings) -> str | None:
    """What the worker says once at startup when agents are not isolated (None if they are)."""
    agent = resolve_identity(settings)
    if agent.isolated:
        return None
    return (
        f"agents run as the worker's own user ({agent.name}): {agent.reason}. A hostile agent "
        "could read this worker's secrets (forge tokens, the Redis password) through /proc; "
        "see 'Deploying safely' in SECURITY.md."
    )


def _in_job_range(text: str) -> int:
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return JOB_UID_BASE + digest % JOB_UID_SPAN


def _agent_paths(settings: Settings) -> list[Path]:
    return [settings.worktrees_dir, settings.agent_homes_dir, settings.repos_dir]


def _shared(me: AgentIdentity, reason: str) -> AgentIdentity:
    return AgentIdentity(me.uid, me.gid, me.name, isolated=False, reason=reason)


def _fail_or_share(wanted: str, me: AgentIdentity, reason: str) -> AgentIdentity:
    if wanted != "auto":
        raise AgentError(f"sandbox: cannot run agents as {wanted!r}: {reason}")
    return _shared(me, reason)


def _lookup(wanted: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(wanted)) if wanted.isdigit() else pwd.getpwnam(wanted)
    except KeyError:
        raise KeyError(f"no such user: {wanted}") from None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _blocked_at(path: Path, agent: AgentIdentity) -> Path | None:
    """The first existing ancestor of ``path`` the agent may not pass through, if any."""
    path = path.absolute()
    for folder in reversed([path, *path.parents]):
        try:
            info = folder.stat()
        except FileNotFoundError:
            return None  # created later by the worker, under modes it chooses
        if not stat.S_ISDIR(info.st_mode):
            continue
        if info.st_uid == agent.uid:
            bit = stat.S_IXUSR
        elif info.st_gid == agent.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return folder
    return None
