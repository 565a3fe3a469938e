"""Which forge a repo belongs to, how git gets its token, and how forges say "wait"."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from agenticore.config import Settings
from agenticore.errors import ForgeError
from agenticore.forges import git_auth_env, resolve_forge
from agenticore.providers.base import is_transient, retry_after


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


def test_given_a_token_when_git_env_is_built_then_it_is_a_header_scoped_to_the_origin(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(github_token="gh-secret")

    env = git_auth_env(settings, "https://github.com/acme/widgets.git")

    assert env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_KEY_0"] == "http.https://github.com/.extraHeader"
    scheme, _, value = env["GIT_CONFIG_VALUE_0"].removeprefix("Authorization: ").partition(" ")
    assert scheme == "Basic" and base64.b64decode(value) == b"x-access-token:gh-secret"
    assert git_auth_env(settings, "git@github.com:acme/widgets.git") == {}, "ssh uses keys"
    assert git_auth_env(settings, "https://git.example.org/a/b.git") == {}, "unknown host"
    assert git_auth_env(make_settings(), "https://github.com/acme/widgets.git") == {}


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
