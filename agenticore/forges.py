"""Which forge hosts a repo, how to reach its API, and how git authenticates to it.

A repo URL is matched against ``FORGES`` by its parsed parts: the same scheme, host and port
(default ports filled in) and whole path segments, so ``https://github.com/acme`` covers
``https://github.com/acme/app.git`` but never ``https://github.com/acme-evil/app.git`` nor
``https://github.com.evil.example/acme/app.git``. The entry with the most path segments wins.
An ssh or scp-like repo URL (``git@host:owner/app.git``) matches ssh entries
(``ssh://git@host/owner/``, ``git@host:owner/``) and, after those, http(s) entries of the same
host: it is the same forge, reached by another transport. Without an entry the host decides:
``github.com`` is GitHub and ``gitlab.com`` GitLab. The token comes from the matching entry,
else from ``GITHUB_TOKEN`` / ``GITLAB_TOKEN``.

Git gets the token only through the environment of the one command that needs it
(``GIT_CONFIG_COUNT`` / ``http.<url>.extraHeader``), so it never lands in ``.git/config``,
argv (visible in ``ps``), the job record or a log line. The header is scoped to the repo's own
URL, which git matches by whole path segments too.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from pydantic import SecretStr

from agenticore.config import ForgeSettings, Settings
from agenticore.errors import ForgeError
from agenticore.redaction import redact_url
from agenticore.urls import SCP_LIKE, Location, parse_location

__all__ = ["SCP_LIKE", "Forge", "forge_entry", "git_auth_env", "resolve_forge"]

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
    target = parse_location(repo_url)
    entry = forge_entry(settings, repo_url)
    provider = entry.provider if entry else _KNOWN_HOSTS.get(target.host if target else "")
    if provider is None:
        raise ForgeError(
            f"no forge is configured for {redact_url(repo_url)}; add its URL prefix to "
            "AGENTICORE_FORGES",
            repo=redact_url(repo_url),
        )
    path = "/".join(target.segments) if target else ""
    project = (entry.project if entry else None) or path.removesuffix(".git")
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
    """Environment that makes git send the repo's token with its requests to this one repo
    over HTTP(S), and nowhere else. Empty without a token or a forge.

    The header is scoped to the repo URL itself (scheme, host, port and path, ending in
    ``/``): git applies ``http.<url>.*`` to URLs under it by whole path segments, so the
    token reaches neither another host, nor another port, nor another repo on the same host.
    """
    target = parse_location(repo_url)
    if target is None or target.scheme not in ("http", "https"):
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
        "GIT_CONFIG_KEY_0": f"http.{target.url()}.extraHeader",
        "GIT_CONFIG_VALUE_0": header,
    }


def forge_entry(settings: Settings, repo_url: str) -> ForgeSettings | None:
    """The ``FORGES`` entry that covers ``repo_url``, the most specific one; None if none."""
    target = parse_location(repo_url)
    if target is None:
        return None
    ranked = [
        (rank, prefix)
        for prefix in settings.forges
        if (rank := _match_rank(parse_location(prefix, prefix=True), target)) is not None
    ]
    return settings.forges[max(ranked)[1]] if ranked else None


def _match_rank(entry: Location | None, target: Location) -> tuple[int, int] | None:
    """How specifically ``entry`` covers ``target`` (more path segments first, then the same
    transport before another one); None when it does not cover it at all."""
    if entry is None:
        return None
    if entry.contains(target):
        return len(entry.segments), 1
    # an ssh repo on a host configured by its https URL: same host and path, port aside
    # (ssh's port says nothing about the web server's); never the other way round, so an
    # https URL is only ever covered by an entry for that very scheme, host and port
    same_forge = Location(target.scheme, entry.host, target.port, entry.segments)
    if target.scheme == "ssh" and entry.scheme in ("http", "https") and same_forge.contains(target):
        return len(entry.segments), 0
    return None
