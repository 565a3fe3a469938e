"""API keys, with or without Redis: created, verified, listed, revoked; only argon2id
hashes kept, in files that outlive a Redis that comes back empty."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Callable

import pytest
import redis

from agenticore.apikeys import ApiKeyNotFound, KeyStore, Role, exposure_error
from agenticore.config import Settings
from agenticore.errors import InvalidRequest


def stored_records(settings: Settings) -> list[dict[str, str]]:
    """What the store holds for every key, read around the library."""
    return [json.loads(p.read_text()) for p in (settings.home / "keys").glob("*.json")]


def test_given_redis_restarted_empty_then_keys_still_verify(settings: Settings) -> None:
    store = KeyStore(settings)
    record, key = store.create("ci bot", Role.OPERATOR)
    if settings.redis_url is not None:
        client = redis.Redis.from_url(settings.redis_url)
        for name in client.scan_iter(f"{settings.redis_key_prefix}:*"):
            client.delete(name)

    assert KeyStore(settings).verify(key) == record


def test_given_a_new_key_then_it_verifies_as_its_record_and_the_store_holds_only_a_hash(
    settings: Settings,
) -> None:
    store = KeyStore(settings)

    record, key = store.create("ci bot", Role.OPERATOR)

    assert key.startswith(f"agk_{record.id}_") and len(record.id) == 12
    assert store.verify(key) == record
    assert (record.name, record.role, record.revoked) == ("ci bot", Role.OPERATOR, None)
    [stored] = stored_records(settings)
    assert stored["hash"].startswith("$argon2id$")
    assert key not in json.dumps(stored) and key.split("_", 2)[2] not in json.dumps(stored)


def test_given_a_wrong_malformed_or_unknown_key_then_verify_says_none(settings: Settings) -> None:
    store = KeyStore(settings)
    record, key = store.create("a", Role.VIEWER)

    wrong_secret = f"agk_{record.id}_{'x' * 43}"
    unknown_id = f"agk_000000000000_{key.split('_', 2)[2]}"

    assert store.verify(wrong_secret) is None
    assert store.verify(unknown_id) is None
    assert store.verify("") is None and store.verify("Bearer nonsense") is None


def test_given_keys_then_list_shows_records_without_secrets_oldest_first(
    settings: Settings,
) -> None:
    store = KeyStore(settings)
    first, first_key = store.create("first", Role.ADMIN)
    second, second_key = store.create("second", Role.VIEWER)

    listed = store.list()

    assert [r.id for r in listed] == [first.id, second.id]
    shown = json.dumps([r.public() for r in listed])
    assert first_key not in shown and second_key not in shown and "argon2" not in shown


def test_given_a_revoked_key_then_it_no_longer_verifies_and_stays_listed(
    settings: Settings,
) -> None:
    store = KeyStore(settings)
    record, key = store.create("leaver", Role.OPERATOR)
    assert store.verify(key) is not None  # now cached

    revoked = store.revoke(record.id)

    assert revoked.revoked is not None
    assert store.verify(key) is None
    assert [r.revoked is not None for r in store.list()] == [True]


def test_given_another_process_revokes_then_a_cached_key_lapses_within_the_cache_time(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    settings = make_settings("redis", api_key_cache_seconds=0.5)
    api_side, cli_side = KeyStore(settings), KeyStore(settings)
    record, key = api_side.create("cached", Role.VIEWER)
    assert api_side.verify(key) is not None

    cli_side.revoke(record.id)
    still_trusted = api_side.verify(key)  # within the cache time: the cache answers
    time.sleep(0.6)

    assert still_trusted == record
    assert api_side.verify(key) is None


def test_given_no_cache_time_then_every_verify_reads_the_store(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings("embedded", api_key_cache_seconds=0)
    api_side = KeyStore(settings)
    record, key = api_side.create("uncached", Role.VIEWER)
    assert api_side.verify(key) is not None

    KeyStore(settings).revoke(record.id)

    assert api_side.verify(key) is None


def test_given_the_embedded_store_then_key_files_are_private(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings("embedded")
    record, _ = KeyStore(settings).create("private", Role.ADMIN)

    folder = settings.home / "keys"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / f"{record.id}.json").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("name", "role", "message"),
    [
        ("ok", "root", "unknown role 'root'"),
        ("   ", "viewer", "must not be empty"),
        ("bad\x1bname", "viewer", "control characters"),
        ("x" * 101, "viewer", "at most 100"),
    ],
)
def test_given_bad_input_then_create_refuses_with_a_reason(
    make_settings: Callable[..., Settings], name: str, role: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        KeyStore(make_settings("embedded")).create(name, role)


def test_given_an_unknown_id_then_revoke_says_so(settings: Settings) -> None:
    with pytest.raises(ApiKeyNotFound, match="no API key with id"):
        KeyStore(settings).revoke("0123456789ab")
    with pytest.raises(ApiKeyNotFound):
        KeyStore(settings).revoke("../../etc")


def test_given_roles_then_each_allows_itself_and_those_below() -> None:
    assert Role.ADMIN.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.OPERATOR) and not Role.OPERATOR.allows(Role.ADMIN)


@pytest.mark.parametrize(
    ("host", "refused"),
    [("127.0.0.1", False), ("::1", False), ("localhost", False), ("0.0.0.0", True),
     ("10.1.2.3", True), ("api.example.com", True)],
)  # fmt: skip
def test_given_auth_disabled_then_only_loopback_hosts_are_allowed(host: str, refused: bool) -> None:
    assert (exposure_error(Settings(auth_disabled=True), host) is not None) is refused
    assert exposure_error(Settings(auth_disabled=False), host) is None


def test_given_wrong_secrets_for_a_known_id_then_new_guesses_are_not_hashed_for_a_minute(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(api_key_cache_seconds=0)
    store = KeyStore(settings)
    record, key = store.create("target", Role.VIEWER)
    _, unseen = store.create("unseen", Role.VIEWER)
    assert store.verify(key) == record  # the owner used it here before
    unseen_id = unseen.split("_")[1]

    wrong = [store.verify(f"agk_{i}_{'x' * 43}") for i in (record.id, unseen_id) for _ in range(10)]

    assert wrong == [None] * 20
    assert store.verify(key) == record, "a secret verified here before still passes"
    assert store.verify(unseen) is None, "a new secret for a held id is not hashed"
    assert KeyStore(settings).verify(unseen) is not None, "the hold is this store's alone"
    store.revoke(record.id)
    assert store.verify(key) is None, "a known secret is still checked against revocation"
