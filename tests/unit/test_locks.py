"""Named locks: what happens when Redis goes away while one is held."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agenticore.config import Settings
from agenticore.locks import exclusive
from tests.helpers import PrivateRedis


def test_given_redis_gone_while_a_lock_is_held_then_the_work_done_under_it_stands(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    server = PrivateRedis(tmp_path / "redis", aof=False)
    server.start()
    settings = make_settings("redis", redis_url=server.url)
    done = []

    with exclusive(settings, "job:x", hold=5, wait=1):
        server.kill()  # the release that follows cannot reach Redis; the lock's TTL frees it
        done.append("recorded")

    assert done == ["recorded"]
