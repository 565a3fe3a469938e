"""How Flower is started: credentials from the config or the generated file, through its
environment only, and never open on a public address."""

from __future__ import annotations

from pathlib import Path

import pytest

from agenticore.config import Settings
from agenticore.errors import InvalidRequest
from agenticore.monitoring import ensure_flower_auth, flower_command


@pytest.fixture(autouse=True)
def no_flower_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLOWER_BASIC_AUTH", "AGENTICORE_FLOWER_BASIC_AUTH"):
        monkeypatch.delenv(name, raising=False)


def test_given_no_configured_credentials_when_up_generates_them_then_flower_gets_them(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path / "home")

    auth = ensure_flower_auth(settings)
    argv, env = flower_command(settings)

    assert auth is not None and auth.stat().st_mode & 0o777 == 0o600
    user, _, password = auth.read_text().strip().partition(":")
    assert user == "admin" and len(password) >= 24
    assert env["FLOWER_BASIC_AUTH"] == f"admin:{password}"
    assert not any(password in arg for arg in argv), "ps would show it"
    assert ensure_flower_auth(settings) == auth and auth.read_text().strip() == f"admin:{password}"


def test_given_flower_basic_auth_when_flower_starts_then_it_wins_and_nothing_is_generated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:from-the-env")
    settings = Settings(home=tmp_path / "home")

    assert ensure_flower_auth(settings) is None
    _, env = flower_command(settings, address="0.0.0.0")

    assert env["FLOWER_BASIC_AUTH"] == "ops:from-the-env"
    assert not (tmp_path / "home" / "flower.auth").exists()


def test_given_no_credentials_when_flower_would_bind_publicly_then_it_is_refused(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path / "home")

    with pytest.raises(InvalidRequest, match="FLOWER_BASIC_AUTH"):
        flower_command(settings, address="0.0.0.0")
    argv, env = flower_command(settings)  # loopback: allowed, unauthenticated

    assert "--address=127.0.0.1" in argv and "FLOWER_BASIC_AUTH" not in env
