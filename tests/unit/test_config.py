"""Settings precedence: environment > YAML file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from agenticore.config import Settings, get_settings, reset_settings


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AGENTICORE_CONFIG", "AGENTICORE_PORT", "AGENTICORE_HOME", "AGENTICORE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    reset_settings()


def test_given_nothing_set_then_defaults_apply() -> None:
    settings = get_settings()

    assert settings.port == 8200
    assert settings.redis_url is None and settings.embedded
    assert settings.job_ttl_seconds == 86400
    assert settings.home == Path("~/.agenticore").expanduser()
    assert settings.repos_dir == settings.home / "repos"
    assert settings.claude_bin == "claude"


def test_given_a_yaml_file_and_env_then_env_wins_over_file_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "agenticore.yml"
    config.write_text("PORT: 9100\nmax_parallel_jobs: 7\nAGENTICORE_CLAUDE_BIN: /opt/claude\n")
    monkeypatch.setenv("AGENTICORE_CONFIG", str(config))
    monkeypatch.setenv("AGENTICORE_PORT", "9200")

    settings = get_settings()

    assert settings.port == 9200, "env beats the file"
    assert settings.max_parallel_jobs == 7, "the file beats the default"
    assert settings.claude_bin == "/opt/claude", "prefixed keys work in the file too"


def test_given_cached_settings_when_reset_then_changes_are_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = get_settings()
    monkeypatch.setenv("AGENTICORE_PORT", "9300")

    assert get_settings() is first
    reset_settings()
    assert get_settings().port == 9300


def test_given_an_empty_redis_url_then_the_embedded_default_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTICORE_REDIS_URL", "")

    assert get_settings().embedded


def test_given_settings_when_passed_through_the_environment_then_they_come_back_equal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Settings(
        home=tmp_path, allow_local_repos=True, profile_max_jobs={"review": 2}, max_cost_usd=1.5
    )

    for name, value in original.to_env().items():
        monkeypatch.setenv(name, value)

    assert Settings() == original
