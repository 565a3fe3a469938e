"""The shared repo cache and per-job worktrees.

    REPOS_ROOT/<sha256(url)[:12]>/repo       bare repo, cloned once, fetched per job
    WORKTREE_ROOT/<job_id>                   the job's worktree on agenticore/<short id>

Clone, fetch and worktree changes of one repo are serialized by a lock named after the
repo (Redis lock across hosts, flock on one host), so N concurrent first jobs clone once.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import git

from agenticore.config import Settings
from agenticore.errors import InvalidRepoURL, RepoError
from agenticore.forges import SCP_LIKE, git_auth_env
from agenticore.locks import exclusive
from agenticore.models import Job
from agenticore.redaction import has_credentials, redact_text, redact_url

__all__ = ["RepoCache", "Workspace", "repo_key", "validate_repo_url"]

log = logging.getLogger(__name__)

# never prompt for credentials: a job must fail, not hang on a tty that isn't there
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}
_REMOTE_COMMANDS = frozenset({"fetch", "remote", "clone", "ls-remote", "push"})


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


class RepoCache:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def repo_dir(self, url: str) -> Path:
        return self.settings.repos_dir / repo_key(url) / "repo"

    def ensure(self, url: str) -> bool:
        """Clones on first use, fetches afterwards. Returns True if this call cloned."""
        source = validate_repo_url(url, allow_local=self.settings.allow_local_repos)
        with self._lock(url):
            if self.repo_dir(url).is_dir():
                self._git(url, self.repo_dir(url), "fetch", "--prune", "--tags", "origin")
                return False
            self._clone(url, source)
            return True

    def create_workspace(self, job: Job) -> Workspace:
        """The job's own working directory: a worktree of its repo, or an empty scratch dir."""
        path = self.settings.worktrees_dir / job.id
        if job.repo_url is None:
            path.mkdir(parents=True, exist_ok=True)
            return Workspace(path=path)
        branch = f"agenticore/{job.short_id}"
        with self._lock(job.repo_url):
            repo_dir = self.repo_dir(job.repo_url)
            base_ref, base_sha = self._resolve_base(job.repo_url, job.base_ref)
            if (path / ".git").exists():
                # a redelivered attempt continues in the worktree its predecessor left
                return Workspace(path=path, branch=branch, base_ref=base_ref, base_sha=base_sha)
            shutil.rmtree(path, ignore_errors=True)
            self._git(job.repo_url, repo_dir, "worktree", "prune")
            if self._has_branch(repo_dir, branch):
                self._git(job.repo_url, repo_dir, "worktree", "add", str(path), branch)
            else:
                self._git(
                    job.repo_url, repo_dir, "worktree", "add", "-b", branch, str(path), base_sha
                )
        return Workspace(path=path, branch=branch, base_ref=base_ref, base_sha=base_sha)

    def remove_workspace(self, job: Job) -> None:
        path = self.settings.worktrees_dir / job.id
        if job.repo_url is not None and self.repo_dir(job.repo_url).is_dir():
            with self._lock(job.repo_url):
                repo_dir = self.repo_dir(job.repo_url)
                if path.exists():
                    self._git(job.repo_url, repo_dir, "worktree", "remove", "--force", str(path))
                self._git(job.repo_url, repo_dir, "worktree", "prune")
        shutil.rmtree(path, ignore_errors=True)

    def changes(self, workspace: Workspace) -> tuple[list[str], str | None]:
        """Files the agent left changed, and the branch head if the agent committed."""
        if workspace.branch is None:
            return sorted(
                str(p.relative_to(workspace.path)) for p in workspace.path.rglob("*") if p.is_file()
            ), None
        repo = git.Repo(workspace.path)
        dirty = [line[3:] for line in repo.git.status("--porcelain", "-uall").splitlines()]
        head = repo.head.commit.hexsha
        return sorted(dirty), (head if head != workspace.base_sha else None)

    def salvage(self, workspace: Workspace, job_id: str, reason: str) -> str | None:
        """Commits whatever the agent left as work in progress; returns the commit, if any."""
        if workspace.branch is None:
            return None
        message = f"WIP: salvaged by Agenticore ({reason})\n\nAgenticore-Job: {job_id}"
        return self.commit_all(workspace.path, message)

    def commit_all(self, path: Path, message: str) -> str | None:
        """Commits every change in the worktree at ``path`` as Agenticore; returns the new
        commit, or None when there was nothing to commit."""
        repo = git.Repo(path)
        repo.git.add("-A")
        if not repo.index.diff("HEAD"):
            return None
        name, email = self.settings.git_author_name, self.settings.git_author_email
        identity = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                    for what, value in (("NAME", name), ("EMAIL", email))}  # fmt: skip
        with repo.git.custom_environment(**_GIT_ENV, **identity):
            repo.git.commit("--no-verify", "-q", "-m", message)
        return repo.head.commit.hexsha

    def commits_since(self, path: Path, base_sha: str) -> int:
        """How many commits the worktree's HEAD has that ``base_sha`` does not."""
        return int(git.Repo(path).git.rev_list("--count", f"{base_sha}..HEAD"))

    def push(self, url: str, path: Path, branch: str) -> str:
        """Pushes ``branch`` from the worktree at ``path`` to the repo's remote; returns the
        pushed commit. Credentials reach git only through this command's environment."""
        ref = f"refs/heads/{branch}"
        self._git(url, path, "push", "--quiet", "origin", f"{ref}:{ref}")
        return git.Repo(path).head.commit.hexsha

    # -- internals ---------------------------------------------------------------------

    def _lock(self, url: str):  # type: ignore[no-untyped-def]
        hold = self.settings.clone_timeout_seconds + 60
        return exclusive(self.settings, f"repo:{repo_key(url)}", hold=hold, wait=hold)

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
        repo = git.Repo(self.repo_dir(url))
        name = base_ref or self._default_branch(url)
        for candidate in (f"refs/remotes/origin/{name}", f"refs/tags/{name}", name):
            try:
                return name, repo.git.rev_parse("--verify", "--quiet", f"{candidate}^{{commit}}")
            except git.GitCommandError:
                continue
        raise RepoError(f"base_ref {name!r} not found in {redact_url(url)}", repo=redact_url(url))

    def _default_branch(self, url: str) -> str:
        repo = git.Repo(self.repo_dir(url))
        try:
            ref: str = repo.git.symbolic_ref("--short", "refs/remotes/origin/HEAD")
        except git.GitCommandError:
            raise RepoError(
                f"{redact_url(url)} has no default branch (empty repository?)", repo=redact_url(url)
            ) from None
        return ref.removeprefix("origin/")

    @staticmethod
    def _has_branch(repo_dir: Path, branch: str) -> bool:
        try:
            git.Repo(repo_dir).git.rev_parse("--verify", "--quiet", f"refs/heads/{branch}")
        except git.GitCommandError:
            return False
        return True

    def _git(self, url: str, cwd: Path, *args: str) -> str:
        remote = args[0] in _REMOTE_COMMANDS
        env = _GIT_ENV | git_auth_env(self.settings, url) if remote else _GIT_ENV
        try:
            out: str = git.Git(cwd).execute(
                ["git", *args],
                env=env,
                kill_after_timeout=self.settings.clone_timeout_seconds,
            )
        except git.GitCommandError as exc:
            detail = redact_text(str(exc.stderr or exc).strip())
            raise RepoError(
                f"git {args[0]} failed for {redact_url(url)}: {detail}",
                repo=redact_url(url),
                transient=remote,
            ) from None
        return out
