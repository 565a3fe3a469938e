"""Credentials never reach messages or records."""

from __future__ import annotations

from agenticore.redaction import has_credentials, redact_text, redact_url


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
