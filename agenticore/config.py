"""Settings: environment variable > YAML file (``AGENTICORE_CONFIG``) > default.

Every variable carries the ``AGENTICORE_`` prefix, e.g. ``AGENTICORE_REDIS_URL``.
"""

from __future__ import annotations

import json
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from agenticore.budgets import DEFAULT_PRICES, Price
from agenticore.models import DEFAULT_MAX_TASK_BYTES, TASK_BYTES_CAP
from agenticore.redaction import register_secret
from agenticore.urls import parse_location

__all__ = ["ForgeSettings", "Settings", "get_settings", "reset_settings"]

ENV_PREFIX = "AGENTICORE_"


class ForgeSettings(BaseModel):
    """Where pull requests for repos under one URL prefix go (``FORGES`` maps prefixes)."""

    model_config = {"extra": "forbid"}

    provider: Literal["github", "gitlab"]
    api_url: str | None = Field(default=None, description="GitHub Enterprise / self-hosted")
    token: SecretStr | None = Field(default=None, description="else GITHUB_TOKEN / GITLAB_TOKEN")
    project: str | None = Field(default=None, description="owner/name; default: the URL path")


class YamlFileSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``AGENTICORE_CONFIG``; keys may be upper or lower case."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values().get(field_name), field_name, False

    def _values(self) -> dict[str, Any]:
        path = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if not path:
            return {}
        raw = yaml.safe_load(Path(path).expanduser().read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"config file {path} must hold a mapping")
        return {str(k).lower().removeprefix(ENV_PREFIX.lower()): v for k, v in raw.items()}

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._values().items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    redis_url: str | None = Field(
        default=None, description="Redis for broker, results and job store; unset = embedded"
    )
    redis_key_prefix: str = "agenticore"
    home: Path = Field(default=Path("~/.agenticore"), description="data root")
    repos_root: Path | None = None
    worktree_root: Path | None = None
    profiles_dir: Path | None = None
    claude_bin: str = "claude"
    agent_user: str = Field(
        default="auto",
        description="who agents run as: auto (a uid of each job's own when the worker is "
        "root), none (the worker's own), or one user's name/uid for all",
    )
    agent_env_allow: list[str] = Field(
        default_factory=list, description="extra worker env names passed on to agents"
    )
    max_parallel_jobs: int = Field(default=2, ge=1, le=256)
    job_ttl_seconds: int = Field(default=86400, ge=60)
    job_timeout_seconds: int = Field(default=3600, ge=1)
    kill_grace_seconds: float = Field(default=10.0, ge=0)
    stall_seconds: float = Field(default=900.0, gt=0, description="no output this long = stalled")
    max_agent_rss_mb: int | None = Field(default=None, ge=1, description="agent group RSS cap")
    max_cost_usd: float | None = Field(default=None, gt=0, description="default per-job budget")
    max_turns: int | None = Field(default=None, ge=1, description="default per-job turn limit")
    max_attempts: int = Field(default=3, ge=1)
    breaker_threshold: int = Field(default=5, ge=1, description="infra failures to open")
    breaker_cooldown_seconds: float = Field(default=60.0, gt=0)
    fleet_max_jobs: int | None = Field(default=None, ge=1, description="jobs at once, fleet-wide")
    profile_max_jobs: dict[str, int] = Field(default_factory=dict, description="per profile")
    repo_max_jobs: dict[str, int] = Field(default_factory=dict, description="per repo URL")
    lease_seconds: float = Field(
        default=60.0, gt=0, description="permits and running-job heartbeats expire after this"
    )
    retry_backoff_seconds: float = Field(default=10.0, gt=0, description="first retry delay")
    retry_backoff_max_seconds: float = Field(default=600.0, gt=0)
    max_queue_depth: int | None = Field(default=None, ge=1, description="429 beyond this")
    retry_after_seconds: int = Field(default=5, ge=1, description="Retry-After when busy")
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="413 for a larger request body"
    )
    max_task_bytes: int = Field(
        default=DEFAULT_MAX_TASK_BYTES,
        ge=1,
        le=TASK_BYTES_CAP,
        description="422 for a longer task, counted in UTF-8 bytes",
    )
    model_prices: dict[str, Price] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    retention_days: float = Field(
        default=14, ge=0, description="finished jobs are removed after this; 0 keeps them"
    )
    max_transcript_mb: int = Field(default=50, ge=1, description="a transcript keeps its tail")
    clone_timeout_seconds: int = Field(default=600, ge=10)
    allow_local_repos: bool = False
    github_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AGENTICORE_GITHUB_TOKEN", "GITHUB_TOKEN")
    )
    gitlab_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AGENTICORE_GITLAB_TOKEN", "GITLAB_TOKEN")
    )
    github_api_url: str = "https://api.github.com"
    gitlab_api_url: str = "https://gitlab.com/api/v4"
    forges: dict[str, ForgeSettings] = Field(
        default_factory=dict, description="repo URL prefix -> forge; longest prefix wins"
    )
    pr_draft: bool = Field(default=True, description="open pull requests as drafts")
    pr_max_attempts: int = Field(default=5, ge=1, le=50)
    pr_retry_backoff_seconds: float = Field(default=30.0, gt=0)
    pr_retry_backoff_max_seconds: float = Field(default=900.0, gt=0)
    forge_timeout_seconds: float = Field(default=30.0, gt=0)
    # GitHub asks for a pause between writes to stay clear of its secondary rate limit
    github_write_interval_seconds: float = Field(default=1.0, ge=0)
    git_author_name: str = "Agenticore"
    git_author_email: str = "agenticore@localhost"
    port: int = Field(default=8200, ge=1, le=65535)
    host: str = "127.0.0.1"
    auth_disabled: bool = Field(
        default=False, description="no API keys (local use only: loopback addresses)"
    )
    api_key_cache_seconds: float = Field(
        default=60.0, ge=0, le=60, description="how long a verified API key is trusted"
    )
    flower_host: str = Field(default="127.0.0.1", description="Flower bind address")
    flower_port: int = Field(default=5555, ge=1, le=65535)
    flower_basic_auth: SecretStr | None = Field(
        default=None,
        description="user:password for Flower",
        validation_alias=AliasChoices("AGENTICORE_FLOWER_BASIC_AUTH", "FLOWER_BASIC_AUTH"),
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1", description="where a worker serves its Prometheus metrics"
    )
    worker_metrics_port: int = Field(
        default=9808, ge=0, le=65535, description="a worker's metrics port; 0 = a free one"
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text, or json: one JSON object per log line",
        validation_alias=AliasChoices("AGENTICORE_LOG_FORMAT", "LOG_FORMAT"),
    )
    api_url: str = "http://127.0.0.1:8200"
    public_url: str | None = Field(default=None, description="base URL used in links to jobs")
    worker_name: str | None = Field(default=None, description="defaults to POD_NAME or hostname")

    @field_validator("home", "repos_root", "worktree_root", "profiles_dir")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("redis_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("forges")
    @classmethod
    def _forge_prefixes_are_urls(cls, value: dict[str, ForgeSettings]) -> dict[str, ForgeSettings]:
        # entries match by parsed scheme, host, port and path: a key that does not parse
        # would silently match nothing
        for prefix in value:
            if parse_location(prefix, prefix=True) is None:
                raise ValueError(
                    f"FORGES key {prefix!r} is not a repo URL prefix: use https://host/owner/, "
                    "http://host:port/, ssh://git@host/owner/ or git@host:owner/"
                )
        return value

    def model_post_init(self, context: Any, /) -> None:
        """Tells the redaction layer every secret these settings hold, so that no log line,
        job record or transcript of this process shows one."""
        for secret in self._secret_values():
            register_secret(secret)

    def _secret_values(self) -> list[str]:
        secrets: list[SecretStr | None] = [self.github_token, self.gitlab_token]
        secrets += [forge.token for forge in self.forges.values()]
        values = [secret.get_secret_value() for secret in secrets if secret is not None]
        # "user:password": the password may show up on its own too
        flower: SecretStr | None = getattr(self, "flower_basic_auth", None)
        if flower is not None:
            values += [flower.get_secret_value(), flower.get_secret_value().partition(":")[2]]
        if self.redis_url:
            password = urlsplit(self.redis_url).password
            values += [password] if password else []
        return values

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, YamlFileSource(settings_cls), file_secret_settings

    @property
    def repos_dir(self) -> Path:
        return self.repos_root or self.home / "repos"

    @property
    def worktrees_dir(self) -> Path:
        return self.worktree_root or self.home / "worktrees"

    @property
    def user_profiles_dir(self) -> Path:
        return self.profiles_dir or self.home / "profiles"

    @property
    def agent_homes_dir(self) -> Path:
        """Per-job homes the agent owns: its config dir, MCP config, git objects, tmp."""
        return self.home / "agents"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def locks_dir(self) -> Path:
        return self.home / "locks"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    def worker_node_name(self) -> str:
        """The Celery node name this host's worker runs under."""
        return f"agenticore@{self.worker_identity()}"

    def worker_pidfile(self) -> Path:
        return self.run_dir / f"{self.worker_identity()}.pid"

    @property
    def celery_dir(self) -> Path:
        return self.home / "celery"

    @property
    def embedded(self) -> bool:
        return self.redis_url is None

    @property
    def longest_run_seconds(self) -> float:
        """Upper bound of one attempt: what broker visibility timeouts must exceed."""
        return self.job_timeout_seconds + self.kill_grace_seconds + self.clone_timeout_seconds

    def to_env(self) -> dict[str, str]:
        """``AGENTICORE_*`` variables that give a child process exactly these settings."""
        env = {}
        for name, value in self.model_dump(mode="json", exclude_none=True).items():
            env[f"{ENV_PREFIX}{name.upper()}"] = (
                value if isinstance(value, str) else json.dumps(value)
            )
        # secrets dump as "**********"; a child process needs the real values
        for name in ("github_token", "gitlab_token", "flower_basic_auth"):
            secret: SecretStr | None = getattr(self, name)
            if secret is not None:
                env[f"{ENV_PREFIX}{name.upper()}"] = secret.get_secret_value()
        if self.forges:
            forges = {
                prefix: forge.model_dump(mode="json", exclude_none=True)
                | ({"token": forge.token.get_secret_value()} if forge.token else {})
                for prefix, forge in self.forges.items()
            }
            env[f"{ENV_PREFIX}FORGES"] = json.dumps(forges)
        return env

    def worker_identity(self) -> str:
        return self.worker_name or os.environ.get("POD_NAME") or socket.gethostname()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings so the next ``get_settings()`` re-reads env and file."""
    get_settings.cache_clear()
