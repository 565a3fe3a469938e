"""Agent profiles: a folder ``PROFILES_DIR/<name>/`` holding ``profile.yml`` and optionally
``CLAUDE.md``, ``settings.json`` and ``mcp.json``. Built-in profiles ship with the package;
a folder of the same name in ``PROFILES_DIR`` overrides one.

``materialize`` writes a job's own config dir (used as ``CLAUDE_CONFIG_DIR``) and
``build_cli_args`` turns a profile plus a job into the agent's argv (flags only: the task
goes to the agent on stdin).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from agenticore import telemetry
from agenticore.config import Settings
from agenticore.errors import InvalidRequest, ProfileNotFound
from agenticore.files import make_dirs, open_beneath, remove_path
from agenticore.models import PROFILE_NAME, Job, JobSpec, valid_job_id

__all__ = [
    "JobConfig",
    "Profile",
    "build_cli_args",
    "carry_session",
    "job_from_spec",
    "list_profiles",
    "load_profile",
    "materialize",
]

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).parent / "builtin_profiles"

PermissionMode = Literal["default", "acceptEdits", "plan", "auto", "dontAsk", "bypassPermissions"]


class Profile(BaseModel):
    model_config = {"extra": "forbid"}

    name: str
    path: Path
    description: str = ""
    model: str | None = None
    max_turns: int | None = Field(default=None, ge=1)
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_attempts: int | None = Field(default=None, ge=1)
    permission_mode: PermissionMode | None = None
    allowed_tools: list[str] = Field(default_factory=list)
    disallowed_tools: list[str] = Field(default_factory=list)
    append_system_prompt: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    timeout: int | None = Field(default=None, ge=1)
    auto_pr: bool = False
    pr_labels: list[str] = Field(default_factory=list)
    pr_reviewers: list[str] = Field(default_factory=list)
    pr_draft: bool | None = None

    @property
    def claude_md(self) -> Path | None:
        return _existing(self.path / "CLAUDE.md")

    @property
    def settings_file(self) -> Path | None:
        return _existing(self.path / "settings.json")

    @property
    def mcp_file(self) -> Path | None:
        return _existing(self.path / "mcp.json")


class JobConfig(BaseModel):
    """Where ``materialize`` put a job's agent configuration."""

    home: Path  # the agent's HOME, which it owns
    config_dir: Path
    mcp_config: Path | None = None


def list_profiles(settings: Settings) -> list[Profile]:
    """Every loadable profile; a broken one is logged and left out, not fatal to the rest."""
    names = {p.name for root in _roots(settings) if root.is_dir() for p in root.iterdir()}
    profiles = []
    for name in sorted(names):
        if PROFILE_NAME.match(name) and _find(settings, name):
            try:
                profiles.append(load_profile(settings, name))
            except InvalidRequest as exc:
                log.warning("skipping profile %s: %s", name, exc)
    return profiles


def load_profile(settings: Settings, name: str) -> Profile:
    folder = _find(settings, name) if PROFILE_NAME.match(name) else None
    if folder is None:
        raise ProfileNotFound(name, [p.name for p in list_profiles(settings)])
    try:
        data = yaml.safe_load((folder / "profile.yml").read_text()) or {}
        profile = Profile.model_validate({**data, "name": name, "path": folder})
    except (yaml.YAMLError, ValidationError, TypeError) as exc:
        raise InvalidRequest(f"profile {name!r} is invalid: {exc}") from exc
    telemetry.register_header_secrets(profile.env)  # the agent's OTLP credentials
    return profile


def job_from_spec(settings: Settings, spec: JobSpec, job_id: str | None = None) -> Job:
    """A new job record, its profile checked and its ``auto_pr`` settled now: whether a PR
    step follows the run is part of what gets enqueued."""
    size, limit = len(spec.task.encode()), settings.max_task_bytes
    if size > limit:
        raise InvalidRequest(f"task is {size} bytes (UTF-8); the limit is {limit} (MAX_TASK_BYTES)")
    if job_id is not None and not valid_job_id(job_id):
        raise InvalidRequest("job ids use letters, digits, '_' and '-' (at most 64)")
    profile = load_profile(settings, spec.profile)
    job = Job.from_spec(spec, job_id)
    job.trace_context = telemetry.carrier() or None
    if job.auto_pr is None:
        job.auto_pr = profile.auto_pr and job.repo_url is not None
    return job


def build_cli_args(
    profile: Profile,
    job: Job,
    *,
    claude_bin: str = "claude",
    resume: bool = False,
    mcp_config: Path | None = None,
) -> list[str]:
    """The ``claude -p`` argv for a job. ``job.session_id`` is resumed or created.

    The task is not in it, whatever it says: with no prompt operand, print mode reads the
    prompt from stdin (``ClaudeBackend.prompt_input``). As an operand a task starting with
    ``-`` would be parsed as an option (``--dangerously-skip-permissions`` included), a long
    one fails with E2BIG, and any shows in ``ps``. Every value here comes from the profile or
    the job's validated fields and is passed as an option's argument, never as an operand.
    """
    assert job.session_id is not None, "the runner assigns a session id before building args"
    argv = [claude_bin, "-p", "--output-format", "stream-json", "--verbose"]
    model = job.model or profile.model
    if model:
        argv += ["--model", model]
    argv += ["--resume", job.session_id] if resume else ["--session-id", job.session_id]
    max_turns = job.max_turns or profile.max_turns
    if max_turns:
        argv += ["--max-turns", str(max_turns)]
    max_cost = job.max_cost_usd or profile.max_cost_usd
    if max_cost:
        argv += ["--max-budget-usd", f"{max_cost:g}"]
    if profile.permission_mode:
        argv += ["--permission-mode", profile.permission_mode]
    if profile.allowed_tools:
        argv += ["--allowedTools", ",".join(profile.allowed_tools)]
    if profile.disallowed_tools:
        argv += ["--disallowedTools", ",".join(profile.disallowed_tools)]
    if profile.append_system_prompt:
        argv += ["--append-system-prompt", profile.append_system_prompt]
    if mcp_config is not None:
        argv += ["--mcp-config", str(mcp_config)]
    return argv


def materialize(
    settings: Settings, profile: Profile, job: Job, *, link_login: bool = True
) -> JobConfig:
    """Writes the agent's home ``HOME/agents/<id>/``: ``.claude/{settings.json,CLAUDE.md}``
    (its ``CLAUDE_CONFIG_DIR``), ``.mcp.json`` and ``tmp/``. The agent owns this folder, so
    nothing of the worker's goes in it but the agent's own login: linked to the worker
    user's, or copied (``link_login=False``) for an agent under another uid."""
    home = settings.agent_homes_dir / job.id
    make_dirs(settings.agent_homes_dir, 0o711)
    home.mkdir(mode=0o700, exist_ok=True)
    # an earlier attempt's agent owned what is in its home: rebuilt, never written through
    for name in (".claude", ".mcp.json", "tmp"):
        remove_path(home / name)
    config_dir = home / ".claude"
    config_dir.mkdir(mode=0o700)
    (home / "tmp").mkdir(mode=0o700)
    (config_dir / "settings.json").write_text(json.dumps(_settings_json(profile), indent=2))
    if profile.claude_md is not None:
        shutil.copyfile(profile.claude_md, config_dir / "CLAUDE.md")
    mcp_config = None
    if profile.mcp_file is not None:
        mcp_config = home / ".mcp.json"
        mcp_config.write_text(json.dumps(_mcp_json(profile.mcp_file), indent=2))
    _carry_login(config_dir, link=link_login)
    return JobConfig(home=home, config_dir=config_dir, mcp_config=mcp_config)


def carry_session(
    settings: Settings,
    session_id: str,
    config_dir: Path,
    cwd: Path,
    *,
    ran_it: Callable[[str], bool],
) -> bool:
    """Copies the newest transcript of ``session_id`` where ``--resume`` looks for it, from
    the home of a job that ran that session (``ran_it(job_id)``, from the job records: an
    agent cannot place a transcript in another session's name).

    The CLI keeps sessions per config dir and per working directory; every job has its own
    of both, so a resumed session must be carried over. Agent homes are the agents', so the
    transcript is opened without following any symlink. Returns False if none was found.
    """
    # the id goes into a glob and a file name: only a canonical UUID may (no "*", "/", "..")
    if not _canonical_uuid(session_id):
        raise InvalidRequest("session_id must be a UUID")
    newest: tuple[float, int] | None = None
    for found in settings.agent_homes_dir.glob(f"*/.claude/projects/*/{session_id}.jsonl"):
        job_id, slug = found.parts[-5], found.parts[-2]
        if not ran_it(job_id):
            continue
        fd = open_beneath(settings.agent_homes_dir, [job_id, ".claude", "projects", slug,
                                                      found.name])  # fmt: skip
        if fd is None:
            continue
        mtime = os.fstat(fd).st_mtime
        if newest is None or mtime > newest[0]:
            if newest is not None:
                os.close(newest[1])
            newest = (mtime, fd)
        else:
            os.close(fd)
    if newest is None:
        return False
    target = config_dir / "projects" / project_dir_name(cwd) / f"{session_id}.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(newest[1], "rb") as source, target.open("wb") as copy:
        shutil.copyfileobj(source, copy)
    return True


def _canonical_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def project_dir_name(cwd: Path) -> str:
    """The CLI's folder name for a working directory: non-alphanumerics become '-'."""
    return re.sub(r"[^A-Za-z0-9]", "-", str(cwd))


def _settings_json(profile: Profile) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if profile.settings_file is not None:
        data = json.loads(profile.settings_file.read_text())
    permissions = data.setdefault("permissions", {})
    if profile.permission_mode:
        permissions.setdefault("defaultMode", profile.permission_mode)
    if profile.allowed_tools:
        permissions.setdefault("allow", list(profile.allowed_tools))
    if profile.disallowed_tools:
        permissions.setdefault("deny", list(profile.disallowed_tools))
    if profile.model:
        data.setdefault("model", profile.model)
    return data


def _mcp_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("mcpServers", {}), dict):
        raise InvalidRequest(f"{path} must hold {{'mcpServers': {{...}}}}")
    return data if "mcpServers" in data else {"mcpServers": data}


def _carry_login(config_dir: Path, *, link: bool) -> None:
    # a per-job CLAUDE_CONFIG_DIR hides the user's login; API keys in env need no link
    credentials = Path("~/.claude/.credentials.json").expanduser()
    target = config_dir / ".credentials.json"
    if not credentials.is_file() or target.exists():
        return
    if link:
        target.symlink_to(credentials)
    else:
        shutil.copyfile(credentials, target)
        target.chmod(0o600)


def _roots(settings: Settings) -> list[Path]:
    return [settings.user_profiles_dir, BUILTIN_DIR]


def _find(settings: Settings, name: str) -> Path | None:
    for root in _roots(settings):
        if (root / name / "profile.yml").is_file():
            return root / name
    return None


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None
