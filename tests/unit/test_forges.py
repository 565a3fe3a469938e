"""Which forge a repo belongs to, how git gets its token, and how forges say "wait"."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from agenticore.config import Settings
from agenticore.errors import ForgeError
from agenticore.forges import git_auth_env, resolve_forge
from agenticore.providers.base import is_transient, retry_after
from tests.conftest import forge_settings
from tests.fake_forge import FakeForge
from tests.helpers import git


def test_given_known_hosts_when_resolved_then_provider_project_and_default_token_follow(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(github_token="gh-secret", gitlab_token="gl-secret")

    github = resolve_forge(settings, "https://github.com/acme/widgets.git")
    scp = resolve_forge(settings, "git@github.com:acme/widgets.git")
    gitlab = resolve_forge(settings, "https://gitlab.com/group/sub/proj.git")

    assert (github.provider, github.project, github.api_url) == (
        "github", "acme/widgets", "https://api.github.com")  # fmt: skip
    assert scp.project == "acme/widgets" and scp.provider == "github"
    assert (gitlab.provider, gitlab.project) == ("gitlab", "group/sub/proj")
    assert github.token is not None and github.token.get_secret_value() == "gh-secret"
    assert gitlab.token is not None and gitlab.token.get_secret_value() == "gl-secret"
    assert "gh-secret" not in repr(github)


def test_given_forge_entries_when_resolved_then_the_longest_prefix_wins(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        github_token="fleet-wide",
        forges={
            "https://ghe.example.com/": {"provider": "github",
                                         "api_url": "https://ghe.example.com/api/v3/"},
            "https://ghe.example.com/secret-org/": {"provider": "github", "token": "org-token"},
        },
    )  # fmt: skip

    plain = resolve_forge(settings, "https://ghe.example.com/acme/app.git")
    org = resolve_forge(settings, "https://ghe.example.com/secret-org/app.git")

    assert plain.api_url == "https://ghe.example.com/api/v3"
    assert plain.token is not None and plain.token.get_secret_value() == "fleet-wide"
    assert org.token is not None and org.token.get_secret_value() == "org-token"


def test_given_an_unknown_host_when_resolved_then_the_error_says_what_to_configure(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ForgeError, match="AGENTICORE_FORGES"):
        resolve_forge(make_settings(), "https://git.example.org/acme/app.git")


def test_given_a_token_when_git_env_is_built_then_it_is_a_header_scoped_to_the_repo(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(github_token="gh-secret")

    env = git_auth_env(settings, "https://github.com/acme/widgets.git")

    assert env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_KEY_0"] == "http.https://github.com/acme/widgets.git/.extraHeader"
    scheme, _, value = env["GIT_CONFIG_VALUE_0"].removeprefix("Authorization: ").partition(" ")
    assert scheme == "Basic" and base64.b64decode(value) == b"x-access-token:gh-secret"
    assert git_auth_env(settings, "git@github.com:acme/widgets.git") == {}, "ssh uses keys"
    assert git_auth_env(settings, "https://git.example.org/a/b.git") == {}, "unknown host"
    assert git_auth_env(make_settings(), "https://github.com/acme/widgets.git") == {}


def token_for(settings: Settings, repo_url: str) -> str | None:
    """The token a repo would be given, or None (no forge, or a forge without a token)."""
    try:
        token = resolve_forge(settings, repo_url).token
    except ForgeError:
        return None
    return token.get_secret_value() if token else None


def test_given_a_host_entry_when_a_look_alike_host_asks_then_it_gets_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        forges={"https://git.acme.corp": {"provider": "gitlab", "token": "corp-token"}}
    )

    assert token_for(settings, "https://git.acme.corp/x/y.git") == "corp-token"
    assert token_for(settings, "https://git.acme.corp.evil.example/x/y.git") is None
    assert token_for(settings, "https://evil.example/git.acme.corp/x/y.git") is None
    assert git_auth_env(settings, "https://git.acme.corp.evil.example/x/y.git") == {}


def test_given_an_org_entry_when_a_look_alike_org_asks_then_it_gets_the_fleet_token(
    make_settings: Callable[..., Settings],
) -> None:
    for prefix in ("https://github.com/acme", "https://github.com/acme/"):
        settings = make_settings(
            github_token="fleet-wide",
            forges={prefix: {"provider": "github", "token": "acme-token"}},
        )

        assert token_for(settings, "https://github.com/acme/x.git") == "acme-token"
        assert token_for(settings, "https://github.com//acme/x.git") == "acme-token"
        assert token_for(settings, "https://github.com/acme-evil/x.git") == "fleet-wide"
        assert token_for(settings, "https://github.com/acme/../evil/x.git") == "fleet-wide"
        assert token_for(settings, "https://github.com/evil/acme/x.git") == "fleet-wide"


def test_given_entries_with_ports_then_default_ports_are_the_same_and_others_are_not(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        forges={
            "https://git.acme.corp": {"provider": "gitlab", "token": "on-443"},
            "http://git.acme.corp:8080/": {"provider": "gitlab", "token": "on-8080"},
            "https://other.corp:443/": {"provider": "gitlab", "token": "explicit-443"},
        }
    )

    assert token_for(settings, "https://git.acme.corp:443/x/y.git") == "on-443"
    assert token_for(settings, "https://git.acme.corp:8443/x/y.git") is None
    assert token_for(settings, "http://git.acme.corp:8080/x/y.git") == "on-8080"
    assert token_for(settings, "http://git.acme.corp/x/y.git") is None, "http is not https"
    assert token_for(settings, "https://git.acme.corp:8080/x/y.git") is None, "nor the reverse"
    assert token_for(settings, "https://other.corp/x/y.git") == "explicit-443"


def test_given_any_case_of_host_or_scheme_then_the_entry_still_matches(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        forges={"https://Git.Acme.Corp/Team/": {"provider": "gitlab", "token": "team-token"}}
    )

    assert token_for(settings, "HTTPS://GIT.acme.corp/Team/app.git") == "team-token"
    assert token_for(settings, "https://git.acme.corp/team/app.git") is None, "paths keep case"


def test_given_scp_like_urls_then_ssh_entries_come_first_and_host_entries_serve_the_rest(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        forges={
            "https://ghe.example.com/": {"provider": "github", "token": "web-token"},
            "git@ghe.example.com:secret-org/": {"provider": "github", "token": "scp-token"},
            "ssh://git@ghe.example.com/ssh-org": {"provider": "github", "token": "ssh-token"},
        }
    )

    assert token_for(settings, "git@ghe.example.com:secret-org/app.git") == "scp-token"
    assert token_for(settings, "ssh://git@ghe.example.com/secret-org/app.git") == "scp-token"
    assert token_for(settings, "git@ghe.example.com:ssh-org/app.git") == "ssh-token"
    assert token_for(settings, "ssh://git@ghe.example.com:2222/ssh-org/app.git") == "web-token"
    assert token_for(settings, "git@ghe.example.com:other/app.git") == "web-token"
    assert token_for(settings, "git@ghe.example.com.evil.example:secret-org/app.git") is None
    assert token_for(settings, "git@ghe.example.com:secret-org-evil/app.git") == "web-token"
    assert token_for(settings, "https://ghe.example.com/secret-org/app.git") == "web-token", (
        "an ssh entry never covers https"
    )


def test_given_nested_entries_then_the_one_with_most_segments_wins(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        forges={
            "https://gl.corp/": {"provider": "gitlab", "token": "host-token"},
            "https://gl.corp/group": {"provider": "gitlab", "token": "group-token"},
            "https://gl.corp/group/sub/": {"provider": "gitlab", "token": "sub-token"},
        }
    )

    assert token_for(settings, "https://gl.corp/group/sub/proj.git") == "sub-token"
    assert token_for(settings, "https://gl.corp/group/subway/proj.git") == "group-token"
    assert token_for(settings, "https://gl.corp/groupie/proj.git") == "host-token"


def test_given_a_forge_key_that_is_no_url_prefix_then_settings_say_so(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ValidationError, match="not a repo URL prefix"):
        make_settings(forges={"git.acme.corp/team": {"provider": "gitlab"}})


def git_header_for(env: dict[str, str], url: str, home: Path) -> str | None:
    """What git itself would send to ``url`` as ``http.extraHeader`` under ``env``."""
    isolated = {"PATH": os.environ["PATH"], "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"}
    found = subprocess.run(
        ["git", "config", "--get-urlmatch", "http.extraHeader", url],
        env=isolated | env, cwd=home, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return found.stdout.strip() or None


def test_given_the_git_env_then_git_sends_the_header_to_the_repo_and_no_look_alike(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        forges={"https://git.acme.corp/acme": {"provider": "gitlab", "token": "corp-token"}}
    )
    env = git_auth_env(settings, "https://git.acme.corp/acme/app.git")

    for url in (
        "https://git.acme.corp/acme/app.git",
        "https://git.acme.corp/acme/app.git/info/refs?service=git-receive-pack",
        "https://GIT.ACME.CORP:443/acme/app.git/git-receive-pack",
    ):
        assert git_header_for(env, url, tmp_path) == env["GIT_CONFIG_VALUE_0"], url
    for url in (
        "https://git.acme.corp.evil.example/acme/app.git",
        "https://git.acme.corp/acme-evil/app.git",
        "https://git.acme.corp/acme/app.git-evil/info/refs",
        "https://git.acme.corp/acme/other.git",
        "https://git.acme.corp:8443/acme/app.git",
        "http://git.acme.corp/acme/app.git",
    ):
        assert git_header_for(env, url, tmp_path) is None, url


def test_given_the_git_env_when_git_pushes_then_the_repo_accepts_and_a_sibling_is_refused(
    make_settings: Callable[..., Settings], forge: FakeForge, tmp_path: Path
) -> None:
    settings = make_settings(**forge_settings(forge))
    repo = f"{forge.url}/acme/widgets.git"
    env = os.environ | {"GIT_TERMINAL_PROMPT": "0"} | git_auth_env(settings, repo)
    work = tmp_path / "work"

    subprocess.run(["git", "clone", "-q", repo, str(work)], env=env, check=True)
    git(work, "commit", "-q", "--allow-empty", "-m", "pushed with a scoped header")
    subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=work, env=env, check=True)
    sibling = subprocess.run(
        ["git", "ls-remote", f"{forge.url}/gl/group/proj.git"],
        env=env, capture_output=True, check=False,
    )  # fmt: skip

    assert git(work, "rev-parse", "HEAD") == git(forge.git_root / "acme/widgets.git",
                                                 "rev-parse", "main")  # fmt: skip
    assert sibling.returncode != 0, "the header is not sent to another repo on the host"
    assert ("/gl/group/proj.git/info/refs", False) in forge.git_requests


def test_given_settings_with_secrets_when_handed_to_a_child_then_they_survive(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(
        github_token="gh-secret", forges={"https://x/": {"provider": "gitlab", "token": "t"}}
    )

    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)

    child = Settings()
    assert child.github_token is not None and child.github_token.get_secret_value() == "gh-secret"
    token = child.forges["https://x/"].token
    assert token is not None and token.get_secret_value() == "t"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "30"}, 30.0),
        ({"Retry-After": "Thu, 01 Jan 2026 00:01:00 GMT"}, 60.0),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1767225690"}, 90.0),
        ({"RateLimit-Remaining": "0", "RateLimit-Reset": "1767225605"}, 5.0),
        ({"x-ratelimit-remaining": "12", "x-ratelimit-reset": "1767225690"}, None),
        ({}, None),
    ],
)
def test_retry_after_reads_what_forges_send(
    headers: dict[str, str], expected: float | None
) -> None:
    now = 1767225600.0  # 2026-01-01T00:00:00Z
    assert retry_after(headers, now=now) == expected


def test_which_failures_are_worth_another_try() -> None:
    assert all(is_transient(s) for s in (None, 401, 403, 409, 429, 500, 502, 503))
    assert not any(is_transient(s) for s in (400, 404, 422))
