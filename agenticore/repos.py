"""The shared repo cache and per-job worktrees.

    REPOS_ROOT/<sha256(url)[:12]>/repo       bare repo, cloned once, fetched per job (0750,
                                             in a group only that repo's agents get)
    WORKTREE_ROOT/<job_id>                   the job's worktree, the agent's (0700)
    HOME/agents/<job_id>/git                 its git folder: HEAD (detached), index, commondir
    HOME/agents/<job_id>/git-objects         where the agent's own commits land

Clone, fetch and worktree changes of one repo are serialized by a lock named after the
repo (Redis lock across hosts, flock on one host), so N concurrent first jobs clone once.

The worktree is the agent's, so the worker treats it as data. Its git commands name the
cache as ``--git-dir`` (never the worktree's ``.git``, which is checked to still point at
the job's git folder), use a private index, and run with hooks, fsmonitor and credential
helpers switched off. Whatever reads what the agent wrote (its files, index, HEAD, objects
and their alternates) runs as the agent's uid, so it reads with the agent's rights. The
agent reads the cache through git alternates and writes its commits to its own object
folder; the worker adopts them (objects re-hashed by ``index-pack``) onto the job branch
``agenticore/<short id>``, which lives only in the cache. The authenticated push runs in
the cache, so it never executes anything the agent wrote.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import git

from agenticore import metrics, telemetry
from agenticore.config import Settings
from agenticore.errors import InvalidRepoURL, RepoError
from agenticore.files import atomic_write, make_dirs, open_beneath, read_beneath, remove_path
from agenticore.forges import SCP_LIKE, git_auth_env
from agenticore.locks import exclusive
from agenticore.models import GIT_REF, Job
from agenticore.redaction import has_credentials, redact_text, redact_url
from agenticore.sandbox import (
    AgentIdentity,
    as_user,
    for_job,
    group_for,
    hand_over,
    resolve_identity,
)

__all__ = ["RepoCache", "Workspace", "repo_key", "validate_repo_url"]

log = logging.getLogger(__name__)

# never prompt for credentials: a job must fail, not hang on a tty that isn't there
_PROMPTLESS = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}
_REMOTE_COMMANDS = frozenset({"fetch", "remote", "clone", "ls-remote", "push"})
# every git command the worker runs: nothing configured anywhere may make it execute code
_HARDENED = (
    "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-c", "credential.helper=",
    "-c", "core.askPass=", "-c", "protocol.ext.allow=never", "-c", "commit.gpgSign=false",
    "-c", "core.untrackedCache=false", "-c", "gc.auto=0", "-c", "maintenance.auto=false",
)  # fmt: skip
# only the cache's own config counts (user-level config is agent-writable when the agent
# shares the worker's uid), and that config holds only what we wrote (``_check_config``)
_CONFIG_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
_OUR_CONFIG = re.compile(
    r"^(core\.(repositoryformatversion|filemode|bare|logallrefupdates|symlinks|ignorecase)"
    r"|remote\.origin\.(url|fetch))$"
)
_GIT_ENV = _PROMPTLESS | _CONFIG_ENV
# repo cache configs found holding only our keys, by their stat stamp: checked once, not per
# git command
_clean_configs: dict[Path, tuple[int, int, int, int]] = {}
_OBJECT_ID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_ABBREV_ID = re.compile(r"^[0-9a-f]{7,64}$")
_HEAD_MAX_BYTES = 512


def _agent_objects_env(workspace: Workspace) -> dict[str, str]:
    assert workspace.repo_dir is not None and workspace.objects is not None
    return {
        "GIT_OBJECT_DIRECTORY": str(workspace.objects),
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(workspace.repo_dir / "objects"),
    }


def _ours(key: str, value: str) -> bool:
    """Whether a value of one of our config keys is one we write: an agent that shares the
    worker's uid must not map ``origin`` onto the job branches (``fetch --prune`` would
    rewrite or delete them)."""
    return key != "remote.origin.fetch" or value == "+refs/heads/*:refs/remotes/origin/*"


def _scratch_files(root: Path, limit: int = 1000) -> list[str]:
    """Files the agent left in a scratch folder (links not followed), at most ``limit``."""
    found: list[str] = []
    for folder, _, files in os.walk(root):
        found += [str(Path(folder, name).relative_to(root)) for name in files]
        if len(found) >= limit:
            break
    return sorted(found)[:limit]


def _agent(workspace: Workspace) -> AgentIdentity:
    assert workspace.agent is not None, "workspaces are made by RepoCache"
    return workspace.agent


def repo_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def validate_repo_url(url: str, *, allow_local: bool) -> str:
    """Returns the URL to clone, or raises InvalidRepoURL with a reason."""
    parts = urlsplit(url)
    if parts.scheme in ("https", "ssh"):
        if not parts.hostname:
            raise InvalidRepoURL(f"repo_url {redact_url(url)!r} has no host", repo=redact_url(url))
        if has_credentials(url):
            raise InvalidRepoURL(
                "repo_url must not embed credentials; configure a token instead",
                repo=redact_url(url),
            )
        return url
    if not parts.scheme and SCP_LIKE.match(url):
        return url
    if parts.scheme == "http" and parts.hostname and allow_local:
        return url  # plain HTTP only where local repos are allowed: a test or a dev box
    if parts.scheme == "file" or (not parts.scheme and url.startswith(("/", "./", "../", "~"))):
        if not allow_local:
            raise InvalidRepoURL(
                "local repositories are disabled; set AGENTICORE_ALLOW_LOCAL_REPOS=true",
                repo=url,
            )
        path = Path(parts.path if parts.scheme == "file" else url).expanduser().resolve()
        if not path.exists():
            raise InvalidRepoURL(f"local repository {path} does not exist", repo=url)
        return str(path)
    raise InvalidRepoURL(
        f"unsupported repo_url {redact_url(url)!r}: use https://, ssh:// or git@host:path",
        repo=redact_url(url),
    )


@dataclass(frozen=True)
class Workspace:
    path: Path
    branch: str | None = None
    base_ref: str | None = None
    base_sha: str | None = None
    repo_dir: Path | None = None  # the cache, for jobs with a repo
    gitdir: Path | None = None  # the worktree's own git folder (HEAD, index), the agent's
    objects: Path | None = None  # the agent's own object folder
    agent: AgentIdentity | None = None  # who the job's agent runs as


class RepoCache:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def agent_of(self, job: Job) -> AgentIdentity:
        """Who ``job``'s agent runs as (and the worker's commands over its files): with its
        repo cache's group, the one way into that cache for another uid."""
        agent = for_job(resolve_identity(self.settings), job.id)
        if not agent.isolated or job.repo_url is None:
            return agent
        return replace(agent, groups=(group_for(repo_key(job.repo_url)),))

    def repo_dir(self, url: str) -> Path:
        return self.settings.repos_dir / repo_key(url) / "repo"

    def ensure(self, url: str) -> bool:
        """Clones on first use, fetches afterwards. Returns True if this call cloned."""
        source = validate_repo_url(url, allow_local=self.settings.allow_local_repos)
        with self._lock(url):
            self._guard(url)  # before the clone: not a moment open to other agents
            traced = {"agenticore.repo_url": redact_url(url)}
            if self.repo_dir(url).is_dir():
                self._check_origin(url, source)
                with metrics.fetch_timer(), telemetry.span("repo.fetch", traced):
                    self._git(url, self.repo_dir(url), "fetch", "--prune", "--tags", "origin")
                return False
            with metrics.clone_timer(), telemetry.span("repo.clone", traced):
                self._clone(url, source)
            return True

    def create_workspace(self, job: Job) -> Workspace:
        """The job's own working directory, the agent's: a worktree of its repo with HEAD
        detached at the job branch, or an empty scratch dir.

        The worktree's git folder lives in the agent's own space, not in the cache, so no
        git command of the cache ever reads a file the agent wrote; the cache never lists
        it (it is no ``git worktree``). Its files are checked out as the agent, so the
        worker never writes into, nor changes the owner of, anything inside it.
        """
        path = self.settings.worktrees_dir / job.id
        self._prepare_root(self.settings.worktrees_dir)
        if job.repo_url is None:
            workspace = Workspace(path=path, agent=self.agent_of(job))
            path.mkdir(mode=0o700, exist_ok=True)
            hand_over([path], _agent(workspace))
            return workspace
        with self._lock(job.repo_url):
            base_ref, base_sha = self._resolve_base(job.repo_url, job.base_ref)
            workspace = self._workspace(job, base_ref, base_sha)
            if (path / ".git").exists():
                # a redelivered attempt continues in the worktree its predecessor left
                self._sync_agent_head(workspace)
                return workspace
            head = self._head_of(workspace)
            if head is None:
                self._data_git(workspace, "branch", workspace.branch or "", base_sha)
                head = base_sha
            self._checkout(workspace, head)
        return workspace

    def existing_workspace(self, job: Job) -> Workspace | None:
        """The run's worktree, if it is still there."""
        if job.repo_url is None or job.branch is None:
            return None
        workspace = self._workspace(job, job.base_ref, job.base_sha)
        return workspace if (workspace.path / ".git").exists() else None

    def agent_git_env(self, workspace: Workspace) -> dict[str, str]:
        """Environment that lets the agent use git in its worktree without writing the cache:
        new objects go to its own folder, the cache's objects are read as alternates."""
        if workspace.repo_dir is None or workspace.objects is None:
            return {}
        return _agent_objects_env(workspace) | {
            # the worktree belongs to the agent's uid, the cache to the worker's
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": "safe.directory",
            "GIT_CONFIG_VALUE_0": "*",
            "GIT_CONFIG_KEY_1": "gc.auto",
            "GIT_CONFIG_VALUE_1": "0",
        }

    def remove_workspace(self, job: Job) -> None:
        """Deletes the worktree, after adopting any commits the agent made in it."""
        path = self.settings.worktrees_dir / job.id
        if job.repo_url is not None and self.repo_dir(job.repo_url).is_dir():
            workspace = self._workspace(job, job.base_ref, job.base_sha)
            with self._lock(job.repo_url):
                # no .git: nothing of the agent's left to adopt (the run committed its work)
                gitfile = os.path.lexists(path / ".git")
                if job.branch is not None and gitfile and self._head_of(workspace) is not None:
                    try:
                        self._adopt(workspace)
                    except RepoError as exc:
                        log.warning("job %s: agent commits not adopted: %s", job.id, exc)
            for folder in (workspace.gitdir, workspace.objects):
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)

    def changes(self, workspace: Workspace) -> tuple[list[str], str | None]:
        """The files the job changed and the job branch head, once it is past the base (the
        agent's own commits, adopted, count); in a scratch folder, the files the agent left."""
        if workspace.branch is None:
            return _scratch_files(workspace.path), None
        assert workspace.repo_dir is not None and workspace.base_sha is not None
        head = self._adopt(workspace)
        if head == workspace.base_sha:
            return [], None
        return self._changed_files(workspace.repo_dir, workspace.base_sha, head), head

    def salvage(self, workspace: Workspace, job_id: str, reason: str) -> str | None:
        """Commits whatever the agent left as work in progress; returns the commit, if any."""
        if workspace.branch is None:
            return None
        message = f"WIP: salvaged by Agenticore ({reason})\n\nAgenticore-Job: {job_id}"
        return self.commit_all(workspace, message)

    def commit_all(self, workspace: Workspace, message: str) -> str | None:
        """Commits the agent's commits and every change left in its worktree onto the job
        branch, as Agenticore; returns the new commit, or None when nothing was left over."""
        head = self._adopt(workspace)
        with self._snapshot(workspace, head) as (tree, changed):
            if not changed:
                return None
            name, email = self.settings.git_author_name, self.settings.git_author_email
            identity = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                        for what, value in (("NAME", name), ("EMAIL", email))}  # fmt: skip
            # the tree's objects are in the agent's folder; the commit joins them there
            commit = self._data_git(workspace, "commit-tree", tree, "-p", head, "-m", message,
                                    env=identity | _agent_objects_env(workspace),
                                    as_agent=True)  # fmt: skip
        self._import(workspace, commit, head)
        self._data_git(workspace, "update-ref", f"refs/heads/{workspace.branch}", commit, head)
        return commit

    def commits_since(self, url: str, branch: str, base: str) -> int:
        """How many commits the job branch has that ``base`` does not."""
        out = self._git(url, self.repo_dir(url), "rev-list", "--count",
                        f"{base}..refs/heads/{branch}")  # fmt: skip
        return int(out)

    def push(self, url: str, branch: str) -> str:
        """Pushes the job branch from the cache to the repo's remote; returns the pushed
        commit. Credentials reach git only through this command's environment."""
        ref = f"refs/heads/{branch}"
        self._git(url, self.repo_dir(url), "push", "--quiet", "origin", f"{ref}:{ref}")
        return self._git(url, self.repo_dir(url), "rev-parse", "--verify", ref)

    def discard_branch(self, job: Job) -> bool:
        """Deletes a finished job's branch from the cache when its work is safe elsewhere:
        merged into its base on the remote (as the last fetch saw it), pushed as it is, or
        never past its base. A branch with unpushed work stays. True if deleted."""
        if job.repo_url is None or job.branch is None or not self.repo_dir(job.repo_url).is_dir():
            return False
        url, ref = job.repo_url, f"refs/heads/{job.branch}"
        with self._lock(url):
            head = self._rev(url, ref)
            if head is None:
                return False
            keepers = [f"refs/remotes/origin/{job.branch}", job.base_sha]
            if job.base_ref:
                keepers.append(f"refs/remotes/origin/{job.base_ref}")
            if not any(self._holds(url, keeper, head) for keeper in keepers if keeper):
                return False
            self._git(url, self.repo_dir(url), "update-ref", "-d", ref, head)
        return True

    def branch_head(self, url: str, branch: str) -> str | None:
        """The job branch's commit in this node's cache, or None if the cache lacks it."""
        if not self.repo_dir(url).is_dir():
            return None
        return self._rev(url, f"refs/heads/{branch}^{{commit}}")

    def diff(self, url: str, branch: str, base: str) -> bytes:
        """The unified diff of the job branch against ``base``, exactly as git prints it
        (binary files included, so ``git apply`` takes it). Runs on the cache only."""
        plain = ("--no-color", "--no-ext-diff", "--no-textconv", "--binary")
        return self._git_bytes(url, self.repo_dir(url), "diff", *plain, base,
                               f"refs/heads/{branch}")  # fmt: skip

    def bundle(self, url: str, branch: str, base: str) -> bytes:
        """A ``git bundle`` of the job branch's commits past ``base``: a clone that has
        ``base`` fetches the branch from it. Raises RepoError when there are none."""
        with tempfile.TemporaryDirectory(prefix="agenticore-bundle-") as tmp:
            target = Path(tmp) / "job.bundle"
            self._git(url, self.repo_dir(url), "bundle", "create", "--quiet", str(target),
                      f"{base}..refs/heads/{branch}")  # fmt: skip
            return target.read_bytes()

    # -- internals ---------------------------------------------------------------------

    def _holds(self, url: str, keeper: str, commit: str) -> bool:
        """Whether ``keeper`` (a ref or commit of the cache) contains ``commit``."""
        if self._rev(url, f"{keeper}^{{commit}}") is None:
            return False
        try:
            self._git(url, self.repo_dir(url), "merge-base", "--is-ancestor", commit, keeper)
        except RepoError:
            return False
        return True

    def _lock(self, url: str):  # type: ignore[no-untyped-def]
        hold = self.settings.clone_timeout_seconds + 60
        return exclusive(self.settings, f"repo:{repo_key(url)}", hold=hold, wait=hold)

    def _workspace(self, job: Job, base_ref: str | None, base_sha: str | None) -> Workspace:
        assert job.repo_url is not None
        home = self.settings.agent_homes_dir / job.id
        return Workspace(
            path=self.settings.worktrees_dir / job.id,
            branch=f"agenticore/{job.short_id}",
            base_ref=base_ref,
            base_sha=base_sha,
            repo_dir=self.repo_dir(job.repo_url),
            gitdir=home / "git",
            objects=home / "git-objects",
            agent=self.agent_of(job),
        )

    def _guard(self, url: str) -> None:
        """Only jobs of this repo may read its cache (another tenant's code, other jobs'
        branches): its folder is 0750, in a group of its own that only those jobs' agents
        get, under a root others may pass but not list. Made so before anything is cloned
        into it. Agents that share the worker's uid need none of this."""
        folder = self.repo_dir(url).parent
        self._prepare_root(folder.parent)
        folder.mkdir(mode=0o750, exist_ok=True)
        if not resolve_identity(self.settings).isolated:
            return
        gid, info = group_for(repo_key(url)), folder.stat()
        if info.st_gid != gid or stat.S_IMODE(info.st_mode) != 0o750:
            os.chown(folder, info.st_uid, gid)
            folder.chmod(0o750)

    def _check_origin(self, url: str, source: str) -> None:
        """The cache found under this URL's key must be this URL's: a key is a short hash."""
        origin = self._git(url, self.repo_dir(url), "config", "--get", "remote.origin.url")
        if origin != source:
            raise RepoError(
                f"the repo cache for {redact_url(url)} holds another repository",
                repo=redact_url(url),
            )

    def _prepare_root(self, root: Path) -> None:
        """Agents pass through the worktree root to their own worktree, never list it."""
        make_dirs(root, 0o711)
        if root.is_relative_to(self.settings.home):
            root.chmod(0o711)

    def _checkout(self, workspace: Workspace, head: str) -> None:
        """A linked worktree by hand: the git folder (HEAD detached at ``head``, index,
        ``commondir`` pointing at the cache) and the files, checked out as the agent. The
        folders are made and filled as ours, then handed over: nothing to follow meanwhile."""
        assert workspace.gitdir is not None and workspace.objects is not None
        assert workspace.repo_dir is not None
        home = workspace.gitdir.parent
        self._prepare_root(home.parent)
        home.mkdir(mode=0o700, exist_ok=True)
        for folder in (workspace.path, workspace.gitdir, workspace.objects):
            remove_path(folder)
            folder.mkdir(mode=0o700)
        files = {
            "HEAD": f"{head}\n",
            "commondir": f"{workspace.repo_dir}\n",
            "gitdir": f"{workspace.path / '.git'}\n",
        }
        for name, text in files.items():
            atomic_write(workspace.gitdir / name, text, durable=False)
        atomic_write(workspace.path / ".git", f"gitdir: {workspace.gitdir}\n", durable=False)
        hand_over([home, workspace.path], _agent(workspace))
        self._data_git(workspace, "read-tree", "--reset", "-u", head, work_tree=True,
                       env={"GIT_INDEX_FILE": str(workspace.gitdir / "index")},
                       as_agent=True)  # fmt: skip

    def _check_gitfile(self, workspace: Workspace) -> None:
        """The worktree's ``.git`` must still be the file we wrote, pointing at its git
        folder: an agent that replaced it gets its run refused, not its repository trusted."""
        dotgit = workspace.path / ".git"
        # from the worktree root (ours): the agent may not swap the worktree itself
        content = read_beneath(dotgit.parent.parent, [dotgit.parent.name, dotgit.name], 4096)
        if content is None or content.decode("utf-8", "replace").strip() != (
            f"gitdir: {workspace.gitdir}"
        ):
            raise RepoError(
                f"worktree_tampered: {dotgit} no longer points at the job's git folder",
                repo=str(workspace.repo_dir),
            )

    def _head_of(self, workspace: Workspace) -> str | None:
        """The job branch's commit in the cache, or None if the branch does not exist."""
        try:
            return self._data_git(
                workspace, "rev-parse", "--verify", "--quiet", f"refs/heads/{workspace.branch}"
            )
        except RepoError:
            return None

    def _agent_head(self, workspace: Workspace) -> str | None:
        """The commit the agent's worktree HEAD names (data the agent wrote: checked)."""
        raw = read_beneath(*self._agent_file(workspace, "HEAD"), _HEAD_MAX_BYTES) or b""
        text = raw.decode("ascii", "replace").strip()
        if _OBJECT_ID.match(text):
            return text
        ref = text.removeprefix("ref: ")
        if ref != text and ref.startswith("refs/heads/") and GIT_REF.match(ref):
            # an agent that shares the worker's uid could make a branch in the cache
            try:
                return self._data_git(workspace, "rev-parse", "--verify", "--quiet",
                                      f"{ref}^{{commit}}", alternates=True)  # fmt: skip
            except RepoError:
                return None
        return None

    def _adopt(self, workspace: Workspace) -> str:
        """Moves the job branch to the agent's HEAD, copying the agent's new objects into the
        cache (``index-pack`` re-hashes them, so a forged object cannot slip in). Returns
        the branch head."""
        assert workspace.repo_dir is not None
        self._check_config(workspace.repo_dir)
        head = self._head_of(workspace)
        if head is None:
            raise RepoError(f"job branch {workspace.branch} is missing from the cache",
                            repo=str(workspace.repo_dir))  # fmt: skip
        self._check_gitfile(workspace)
        agent = self._agent_head(workspace)
        if agent is None or agent == head:
            return head
        try:
            self._data_git(workspace, "cat-file", "-e", f"{agent}^{{commit}}", alternates=True)
        except RepoError:
            log.warning("%s: the agent's HEAD %s is not a commit; ignored", workspace.path, agent)
            return head
        if self._contains(workspace, head, agent):
            return head  # adopted earlier, with our own commits (salvage, leftovers) on top
        self._import(workspace, agent, head)
        self._data_git(workspace, "update-ref", f"refs/heads/{workspace.branch}", agent, head)
        return agent

    def _import(self, workspace: Workspace, commit: str, head: str) -> None:
        """Copies what ``commit`` needs beyond ``head`` from the agent's objects into the
        cache, every object re-hashed on the way in."""
        with tempfile.TemporaryDirectory(prefix="agenticore-adopt-") as tmp:
            revs, pack = Path(tmp) / "revs", Path(tmp) / "pack"
            revs.write_text(f"{commit}\n^{head}\n")
            with revs.open("rb") as stdin, pack.open("wb") as stdout:
                self._data_git(workspace, "pack-objects", "--revs", "--stdout", "--quiet",
                               alternates=True, stdin=stdin, stdout=stdout)  # fmt: skip
            with pack.open("rb") as stdin:
                self._data_git(workspace, "index-pack", "--stdin", "--fix-thin", stdin=stdin)

    def _contains(self, workspace: Workspace, head: str, commit: str) -> bool:
        try:
            self._data_git(workspace, "merge-base", "--is-ancestor", commit, head,
                           alternates=True)  # fmt: skip
        except RepoError:
            return False
        return True

    def _sync_agent_head(self, workspace: Workspace) -> None:
        """Points a reused worktree's HEAD and index at the job branch, which may have moved
        past the agent's last commit (salvage), so the next attempt builds on all of it."""
        assert workspace.gitdir is not None
        head = self._adopt(workspace)
        # as the agent: the folder is its own, and may by now be a link to anywhere
        index = {"GIT_INDEX_FILE": str(workspace.gitdir / "index")}
        self._data_git(workspace, "read-tree", head, env=index, as_agent=True)
        self._data_git(workspace, "update-ref", "--no-deref", "HEAD", head, as_agent=True,
                       git_dir=workspace.gitdir)  # fmt: skip

    @contextmanager
    def _snapshot(self, workspace: Workspace, head: str) -> Iterator[tuple[str, list[str]]]:
        """The worktree's files as a tree on top of ``head``, built in a private index, and
        the paths that differ from ``head``. Run as the agent: the worktree is its, so
        whatever a file in it points at is read with the agent's rights, never ours; the
        new objects go to the agent's folder."""
        with tempfile.TemporaryDirectory(prefix="agenticore-index-") as tmp:
            index = Path(tmp) / "index"
            # the agent's own index as a head start (its stat data spares rehashing every
            # file); it can only mislead a snapshot of the agent's own work, taken as the agent
            if not self._copy_agent_index(workspace, index):
                index.unlink(missing_ok=True)
            hand_over([Path(tmp)], _agent(workspace))
            env = {"GIT_INDEX_FILE": str(index)} | _agent_objects_env(workspace)
            try:
                if not index.exists():
                    raise RepoError("no index to start from", repo=str(workspace.repo_dir))
                self._data_git(workspace, "add", "-A", env=env, work_tree=True, as_agent=True)
            except RepoError:  # none, or one git cannot use here (a split index): from head
                index.unlink(missing_ok=True)
                self._data_git(workspace, "read-tree", head, env=env, as_agent=True)
                self._data_git(workspace, "add", "-A", env=env, work_tree=True, as_agent=True)
            names = self._data_git(workspace, "diff-index", "--cached", "--name-only", "-z",
                                   head, env=env, as_agent=True)  # fmt: skip
            tree = self._data_git(workspace, "write-tree", env=env, as_agent=True)
            yield tree, sorted(name for name in names.split("\0") if name)

    def _copy_agent_index(self, workspace: Workspace, target: Path) -> bool:
        fd = open_beneath(*self._agent_file(workspace, "index"))
        if fd is None:
            return False
        with os.fdopen(fd, "rb") as source, target.open("wb") as copy:
            shutil.copyfileobj(source, copy)
        return True

    @staticmethod
    def _agent_file(workspace: Workspace, name: str) -> tuple[Path, list[str]]:
        """A file of the worktree's git folder, as a root of ours (the agent homes) and the
        names beneath it, to be opened without following any link the agent made."""
        assert workspace.gitdir is not None
        home = workspace.gitdir.parent
        return home.parent, [home.name, workspace.gitdir.name, name]

    def _data_git(
        self,
        workspace: Workspace,
        *args: str,
        env: dict[str, str] | None = None,
        alternates: bool = False,
        work_tree: bool = False,
        as_agent: bool = False,
        git_dir: Path | None = None,
        stdin: BinaryIO | None = None,
        stdout: BinaryIO | None = None,
    ) -> str:
        """A local git command on the cache, in a minimal environment (a file the agent swaps
        in as a symlink to ``/proc/self/environ`` finds nothing in it). ``work_tree``: with
        the worktree's files as its work tree (never its ``.git``); ``alternates``: seeing
        the agent's objects too; ``as_agent``: run as the agent's uid."""
        assert workspace.repo_dir is not None and workspace.objects is not None
        extra = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}
        if alternates:  # the agent's objects, and whatever their alternates name: its rights
            extra["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = str(workspace.objects)
            as_agent = True
        extra |= env or {}
        where = [f"--git-dir={git_dir or workspace.repo_dir}"]
        if work_tree:
            where.append(f"--work-tree={workspace.path}")
        argv = ["git", *_HARDENED, *where, *args]
        if as_agent:
            argv = as_user(argv, _agent(workspace))
        try:
            done = subprocess.run(
                argv,
                cwd=workspace.path if work_tree else workspace.repo_dir,
                env=_GIT_ENV | extra,
                stdin=stdin or subprocess.DEVNULL,
                stdout=stdout or subprocess.PIPE,
                stderr=subprocess.PIPE,
                timeout=self.settings.clone_timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RepoError(f"git {args[0]} timed out in {workspace.path}",
                            repo=str(workspace.repo_dir)) from None  # fmt: skip
        if done.returncode != 0:
            detail = redact_text(done.stderr.decode("utf-8", "replace").strip())
            raise RepoError(f"git {args[0]} failed in {workspace.path}: {detail}",
                            repo=str(workspace.repo_dir)) from None  # fmt: skip
        return done.stdout.decode("utf-8", "replace").strip() if stdout is None else ""

    def _check_config(self, repo_dir: Path) -> None:
        """Puts the cache's config back to the keys Agenticore writes, should anything else
        have appeared in it (an agent that shares the worker's uid can write it): no filter,
        hook, fsmonitor, ssh command or include of its ever runs in the worker."""
        config = repo_dir / "config"
        try:
            info = config.stat()
        except FileNotFoundError:
            return
        # ctime cannot be set back by a writer: an unchanged stamp is an unchanged file
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if _clean_configs.get(config) == stamp:
            return
        listing = self._git(str(repo_dir), repo_dir, "config", "--file", str(config),
                            "--no-includes", "--list", "-z")  # fmt: skip
        entries = [item.split("\n", 1) for item in listing.split("\0") if item]
        kept = [(key, value) for key, value, *_ in ([*e, ""] for e in entries)
                if _OUR_CONFIG.match(key) and _ours(key, value)]  # fmt: skip
        if len(kept) == len(entries):
            _clean_configs[config] = stamp
            return
        log.warning("%s: unexpected keys in the repo cache's config, removed: %s", repo_dir,
                    sorted({e[0] for e in entries} - {k for k, _ in kept}))  # fmt: skip
        fresh = config.with_name(".config.agenticore")
        fresh.unlink(missing_ok=True)
        for key, value in kept:
            self._git(str(repo_dir), repo_dir, "config", "--file", str(fresh), "--add", key, value)
        os.replace(fresh, config)

    def _clone(self, url: str, source: str) -> None:
        final = self.repo_dir(url)
        staging = final.with_name("repo.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        # init + fetch instead of clone --bare: remote-tracking refs stay under
        # refs/remotes/origin, so fetch --prune never touches the job branches in refs/heads
        try:
            self._git(url, staging, "init", "--bare", "--quiet")
            self._git(url, staging, "remote", "add", "origin", source)
            self._git(url, staging, "fetch", "--prune", "--tags", "origin")
            self._git(url, staging, "remote", "set-head", "origin", "--auto")
        except RepoError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        staging.rename(final)
        log.info("cloned %s into %s", redact_url(url), final)

    def _resolve_base(self, url: str, base_ref: str | None) -> tuple[str, str]:
        """A remote branch, a tag, or a commit that one of them contains: never a job branch
        of this cache, which may hold another job's unpushed work."""
        name = base_ref or self._default_branch(url)
        for candidate in (f"refs/remotes/origin/{name}", f"refs/tags/{name}"):
            sha = self._rev(url, f"{candidate}^{{commit}}")
            if sha is not None:
                return name, sha
        sha = self._rev(url, f"{name}^{{commit}}") if _ABBREV_ID.match(name) else None
        if sha is not None and self._published(url, sha):
            return name, sha
        raise RepoError(f"base_ref {name!r} not found in {redact_url(url)}", repo=redact_url(url))

    def _rev(self, url: str, spec: str) -> str | None:
        try:
            return self._git(url, self.repo_dir(url), "rev-parse", "--verify", "--quiet", spec)
        except RepoError:
            return None

    def _published(self, url: str, sha: str) -> bool:
        refs = self._git(url, self.repo_dir(url), "for-each-ref", "--count=1", f"--contains={sha}",
                         "--format=%(refname)", "refs/remotes/origin", "refs/tags")  # fmt: skip
        return bool(refs)

    def _default_branch(self, url: str) -> str:
        try:
            ref = self._git(url, self.repo_dir(url), "symbolic-ref", "--short",
                            "refs/remotes/origin/HEAD")  # fmt: skip
        except RepoError:
            raise RepoError(
                f"{redact_url(url)} has no default branch (empty repository?)", repo=redact_url(url)
            ) from None
        return ref.removeprefix("origin/")

    def _git(self, url: str, cwd: Path, *args: str) -> str:
        return self._git_bytes(url, cwd, *args).decode("utf-8", "replace").strip()

    def _git_bytes(self, url: str, cwd: Path, *args: str) -> bytes:
        remote = args[0] in _REMOTE_COMMANDS
        env = _GIT_ENV | git_auth_env(self.settings, url) if remote else _GIT_ENV
        if args[0] not in ("init", "config"):  # config: how _check_config reads and writes
            self._check_config(cwd)
        try:
            out: bytes = git.Git(cwd).execute(
                ["git", *_HARDENED, *args],
                env=env,
                kill_after_timeout=self.settings.clone_timeout_seconds,
                stdout_as_string=False,
                strip_newline_in_stdout=False,
            )
        except git.GitCommandError as exc:
            detail = redact_text(str(exc.stderr or exc).strip())
            raise RepoError(
                f"git {args[0]} failed for {redact_url(url)}: {detail}",
                repo=redact_url(url),
                transient=remote,
            ) from None
        return out

    def _changed_files(self, repo_dir: Path, base: str, head: str) -> list[str]:
        names = self._git_bytes(str(repo_dir), repo_dir, "diff", "--name-only", "--no-renames",
                                "-z", base, head)  # fmt: skip
        return sorted(name.decode("utf-8", "replace") for name in names.split(b"\0") if name)
