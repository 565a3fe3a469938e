"""Which forge hosts a repo, how to reach its API, and how git authenticates to it.

A repo URL is matched against ``FORGES`` (longest URL prefix wins), then by host:
``github.com`` is GitHub and ``gitlab.com`` GitLab. The token comes from the matching entry,
else from ``GITHUB_TOKEN`` / ``GITLAB_TOKEN``.

Git gets the token only through the environment of the one command that needs it
(``GIT_CONFIG_COUNT`` / ``http.<url>.extraHeader``), so it never lands in ``.git/config``,
argv (visible in ``ps``), the job record or a log line.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import SecretStr

from agenticore.config import ForgeSettings, Settings
from agenticore.errors import ForgeError
from agenticore.redaction import redact_url

__all__ = ["SCP_LIKE", "Forge", "git_auth_env", "resolve_forge"]

# git's scp-like syntax, user@host:path (no scheme, so no "://" can match)
SCP_LIKE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*@(?P<host>[A-Za-z0-9.-]+):(?!-)(?P<path>\S+)$")
_KNOWN_HOSTS = {"github.com": "github", "gitlab.com": "gitlab"}
# the user name each forge expects beside a token in HTTP basic auth
_BASIC_USER = {"github": "x-access-token", "gitlab": "oauth2"}


@dataclass(frozen=True)
class Forge:
    provider: str  # "github" | "gitlab"
    api_url: str
    project: str  # "owner/name", or GitLab's "group/subgroup/name"
    token: SecretStr | None
    repo_url: str

    def __repr__(self) -> str:  # never show the token, even in a debugger or traceback
        return f"Forge({self.provider!r}, {self.api_url!r}, {self.project!r})"


def resolve_forge(settings: Settings, repo_url: str) -> Forge:
    """The forge for ``repo_url``; raises ``ForgeError`` if none is known or configured."""
    entry = _configured(settings, repo_url)
    host, path = _host_and_path(repo_url)
    provider = entry.provider if entry else _KNOWN_HOSTS.get(host or "")
    if provider is None:
        raise ForgeError(
            f"no forge is configured for {redact_url(repo_url)}; add its URL prefix to "
            "AGENTICORE_FORGES",
            repo=redact_url(repo_url),
        )
    project = (entry.project if entry else None) or path.removesuffix(".git").strip("/")
    if not project or "/" not in project:
        raise ForgeError(
            f"cannot tell the project of {redact_url(repo_url)}; set 'project' in its "
            "AGENTICORE_FORGES entry",
            repo=redact_url(repo_url),
        )
    default_api, default_token = (
        (settings.github_api_url, settings.github_token)
        if provider == "github"
        else (settings.gitlab_api_url, settings.gitlab_token)
    )
    return Forge(
        provider=provider,
        api_url=((entry.api_url if entry else None) or default_api).rstrip("/"),
        project=project,
        token=(entry.token if entry else None) or default_token,
        repo_url=repo_url,
    )


def git_auth_env(settings: Settings, repo_url: str) -> dict[str, str]:
    """Environment that makes git send the repo's token to its host over HTTP(S), and nowhere
    else (the header is scoped to the repo URL's origin). Empty without a token or a forge."""
    parts = urlsplit(repo_url)
    if parts.scheme not in ("http", "https"):
        return {}
    try:
        forge = resolve_forge(settings, repo_url)
    except ForgeError:
        return {}  # a plain git host: public, or authenticated some other way
    if forge.token is None:
        return {}
    secret = f"{_BASIC_USER[forge.provider]}:{forge.token.get_secret_value()}"
    header = f"Authorization: Basic {base64.b64encode(secret.encode()).decode()}"
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"http.{parts.scheme}://{parts.netloc}/.extraHeader",
        "GIT_CONFIG_VALUE_0": header,
    }


def _configured(settings: Settings, repo_url: str) -> ForgeSettings | None:
    matches = [prefix for prefix in settings.forges if repo_url.startswith(prefix)]
    return settings.forges[max(matches, key=len)] if matches else None


def _host_and_path(repo_url: str) -> tuple[str | None, str]:
    scp = SCP_LIKE.match(repo_url)
    if scp:
        return scp["host"], scp["path"]
    parts = urlsplit(repo_url)
    return parts.hostname, parts.path
