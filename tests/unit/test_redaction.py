"""Credentials never reach messages, records, transcripts or logs."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from agenticore.config import Settings
from agenticore.redaction import has_credentials, redact_text, redact_url, register_secret

# shaped like the real thing, made up for these tests
TOKENS = [
    "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "gho_" + "16C7e42F292c6912E7710c838347Ae178B4a",
    "ghu_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "ghs_" + "zYxWvUtSrQpOnMlKjIhGfEdCbA9876543210",
    "ghr_" + "1B4a2e77838347a7E420ce178F2E7c6912E1",
    "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP",
    "glpat-" + "xYz12_AbC-34dEf56gHi",
    "sk-ant-" + "api03-Abc123_def456-GHI789jkl012MNO345pqr",
    "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "xoxp-" + "123456789012-123456789012-123456789012-abcdef0123456789abcdef0123456789",
    "AKIA" + "IOSFODNN7EXAMPLE",
    "ASIA" + "Y34FZKBOKMUTVV7A",
    "agk_" + "0123456789ab_" + "q1w2e3r4t5y6u7i8o9p0-_ZX",
]


@pytest.mark.parametrize("token", TOKENS)
def test_given_a_known_token_shape_anywhere_in_text_then_it_is_masked(token: str) -> None:
    for text in (token, f"token={token}", f'{{"key": "{token}"}}', f"export X={token}\n"):
        redacted = redact_text(text)

        assert token not in redacted and "***" in redacted, text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Basic eHgtYWNjZXNzOmdoLXNlY3JldA==", "Authorization: ***"),
        ("authorization=Bearer abc.def.ghi", "authorization=***"),
        ("Authorization: token 0123456789abcdef", "Authorization: ***"),
        ("Proxy-Authorization: Basic dXNlcjpwYXNz", "Proxy-Authorization: ***"),
        ("PRIVATE-TOKEN: abcdefghij0123456789", "PRIVATE-TOKEN: ***"),
        (
            "curl -H 'Authorization: Bearer s3cr3t' https://x",
            "curl -H 'Authorization: ***' https://x",
        ),
        ("sent Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig to it", "sent Bearer *** to it"),
        ("basic auth Basic dXNlcjpwYXNzd29yZA== failed", "basic auth Basic *** failed"),
    ],
)
def test_given_credentials_in_headers_or_auth_schemes_then_their_values_are_masked(
    text: str, expected: str
) -> None:
    assert redact_text(text) == expected


def test_given_urls_with_userinfo_then_they_are_detected_and_masked() -> None:
    assert has_credentials("https://x-access-token:ghp_abc@github.com/a/b.git")
    assert has_credentials("https://ghp_abc@github.com/a/b.git")
    assert not has_credentials("ssh://git@github.com/a/b.git")
    assert not has_credentials("https://github.com/a/b.git")
    assert redact_url("https://u:ghp_abc@github.com/a/b") == "https://***@github.com/a/b"
    assert redact_url("https://github.com/a/b") == "https://github.com/a/b"


def test_given_git_stderr_with_a_token_then_it_is_masked() -> None:
    text = "fatal: unable to access 'https://u:ghp_abc@github.com/a/b/': 403"

    assert "ghp_abc" not in redact_text(text)
    assert "https://***@github.com/a/b/" in redact_text(text)


def test_given_settings_with_secrets_then_their_exact_values_are_masked_everywhere(
    make_settings: Callable[..., Settings],
) -> None:
    marker = uuid.uuid4().hex[:8]
    secrets = {
        "github": f"plain-gh-{marker}",
        "gitlab": f"plain-gl-{marker}",
        "forge": f"forge-{marker}",
        "redis": f"redispw{marker}",
    }
    make_settings(
        github_token=secrets["github"],
        gitlab_token=secrets["gitlab"],
        forges={"https://git.corp/": {"provider": "gitlab", "token": secrets["forge"]}},
        redis_url=f"redis://:{secrets['redis']}@127.0.0.1:1/0",
    )

    text = " | ".join(f"{name} said {value}." for name, value in secrets.items())
    redacted = redact_text(text)

    assert not [value for value in secrets.values() if value in redacted]
    assert redacted == " | ".join(f"{name} said ***." for name in secrets)


def test_given_overlapping_secrets_then_the_longest_is_masked_whole() -> None:
    short = f"abcdef{uuid.uuid4().hex[:6]}"
    register_secret(short)
    register_secret(short + "-and-more")

    assert redact_text(f"x {short}-and-more y") == "x *** y"


def test_given_a_short_or_empty_secret_then_it_is_not_registered() -> None:
    register_secret("abc")
    register_secret("")
    register_secret(None)

    assert redact_text("abc abcabc") == "abc abcabc"


@pytest.mark.parametrize(
    "text",
    [
        "The agent added a basic setup and Bearer tokens expire hourly.",
        "Authorization flows are described in docs/auth.md",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b on main",
        "job 550e8400-e29b-41d4-a716-446655440000 succeeded",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "ssh://git@github.com is fine, but git@github.com:acme/app.git too",
        "ghp_short and AKIA-ish words, gh_pages, task_agk and sk-ant",
        "path /home/user/.agenticore/jobs/20260101T000000-abc/transcript.jsonl",
    ],
)
def test_given_ordinary_text_then_nothing_is_masked(text: str) -> None:
    assert redact_text(text) == text
