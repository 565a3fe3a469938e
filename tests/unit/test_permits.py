"""Permits on Redis and on the embedded file store, with real processes and real time."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Callable
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event, Lock
from pathlib import Path

import pytest

from agenticore.config import Settings
from agenticore.connections import redis_client
from agenticore.errors import NoPermit
from agenticore.keys import KeySchema
from agenticore.permits import Limit, PermitGate, job_lease, job_scope
from tests.helpers import PrivateRedis, wait_for

# fork: the children get the test's settings as they are, and start in milliseconds
mp = multiprocessing.get_context("fork")

NODE = "node:w1"


def node(limit: int | None) -> list[Limit]:
    return [Limit(NODE, limit)]


def test_given_a_limit_when_it_is_reached_then_no_permit_names_the_full_scope(
    settings: Settings,
) -> None:
    gate = PermitGate(settings, retry_after=7.0)
    gate.try_acquire("a", node(2))
    gate.try_acquire("b", node(2))

    with pytest.raises(NoPermit) as refused:
        gate.try_acquire("c", node(2))

    assert refused.value.reason == f"{NODE} full (2/2)"
    assert 0 < refused.value.retry_after <= 7.0
    assert gate.holders(NODE) == ["a", "b"] and gate.in_use(NODE) == 2


def test_given_a_full_profile_when_the_fleet_has_room_then_nothing_is_held_anywhere(
    settings: Settings,
) -> None:
    gate = PermitGate(settings)
    fleet, profile = Limit("fleet", 5), Limit("profile:p", 1)
    gate.try_acquire("a", [fleet, profile])

    with pytest.raises(NoPermit, match=r"profile:p full \(1/1\)"):
        gate.try_acquire("b", [fleet, profile])

    assert gate.holders("fleet") == ["a"], "b must not sit on a fleet slot it cannot use"
    assert gate.try_acquire("c", [fleet]).scopes == ("fleet",)


def test_given_a_held_permit_when_released_then_the_slot_is_free_and_release_is_idempotent(
    settings: Settings,
) -> None:
    gate = PermitGate(settings)
    permit = gate.try_acquire("a", [Limit("fleet", 1), *node(1)])

    permit.release()
    permit.release()

    assert gate.in_use("fleet") == gate.in_use(NODE) == 0
    assert gate.try_acquire("b", [Limit("fleet", 1), *node(1)]).holder == "b"
    assert not permit.renew(), "a released permit cannot be renewed back to life"
    assert gate.holders("fleet") == ["b"]


class Interrupted(BaseException):
    pass


@pytest.mark.parametrize("error", [RuntimeError("job failed"), Interrupted()])
def test_given_acquire_as_a_block_when_the_block_raises_then_the_permit_is_released(
    settings: Settings, error: BaseException
) -> None:
    gate = PermitGate(settings)

    with pytest.raises(type(error)), gate.acquire("a", node(1)) as permit:
        assert gate.holders(NODE) == [permit.holder] == ["a"]
        raise error

    assert gate.in_use(NODE) == 0


def test_given_a_holder_when_it_acquires_again_then_it_is_renewed_not_counted_twice(
    settings: Settings,
) -> None:
    gate = PermitGate(settings)
    gate.try_acquire("a", node(2))

    again = gate.try_acquire("a", node(2))

    assert again.holder == "a" and gate.in_use(NODE) == 1
    gate.try_acquire("b", node(2))
    with pytest.raises(NoPermit):
        gate.try_acquire("c", node(2))


def test_given_a_holder_at_a_full_limit_when_it_acquires_again_then_it_keeps_its_slot(
    settings: Settings,
) -> None:
    gate = PermitGate(settings)
    gate.try_acquire("a", node(1))

    assert gate.try_acquire("a", [*node(1), Limit("fleet", 3)]).scopes == (NODE, "fleet")
    assert gate.holders(NODE) == gate.holders("fleet") == ["a"]


def test_given_unlimited_scopes_then_they_are_ignored(settings: Settings) -> None:
    gate = PermitGate(settings)
    limits = [Limit("fleet", None), Limit("repo:r", 0), Limit("profile:p", -1), *node(3)]

    permits = [gate.try_acquire(f"job{n}", limits[:3]) for n in range(10)]
    held = gate.try_acquire("limited", limits)

    assert all(p.scopes == () for p in permits) and held.scopes == (NODE,)
    assert gate.in_use("fleet") == gate.in_use("repo:r") == 0 and gate.in_use(NODE) == 1
    for permit in permits:
        assert permit.renew()
        permit.release()


def test_given_the_same_scope_twice_then_the_strictest_limit_applies_once(
    settings: Settings,
) -> None:
    gate = PermitGate(settings)

    permit = gate.try_acquire("a", [Limit("fleet", 5), Limit("fleet", 1), Limit("fleet", 3)])

    assert permit.scopes == ("fleet",) and gate.in_use("fleet") == 1
    with pytest.raises(NoPermit, match=r"fleet full \(1/1\)"):
        gate.try_acquire("b", [Limit("fleet", 5), Limit("fleet", 1)])


def test_given_renewals_then_the_permit_outlives_its_first_lease(settings: Settings) -> None:
    gate = PermitGate(settings, lease_seconds=0.5)
    permit = gate.try_acquire("a", node(1))
    end = time.monotonic() + 1.2

    while time.monotonic() < end:
        time.sleep(0.15)
        assert permit.renew()

    assert gate.holders(NODE) == ["a"]
    with pytest.raises(NoPermit):
        gate.try_acquire("b", node(1))


def test_given_a_lease_that_ran_out_then_it_is_lost_and_renew_says_so(
    settings: Settings,
) -> None:
    gate = PermitGate(settings, lease_seconds=0.3)
    permit = gate.try_acquire("a", node(1))

    time.sleep(0.4)

    assert gate.in_use(NODE) == 0, "a run-out lease does not count, even before cleanup"
    assert not permit.renew()
    assert gate.try_acquire("b", node(1)).holder == "b"
    assert gate.holders(NODE) == ["b"]


def test_given_a_full_scope_then_retry_after_is_at_most_the_time_to_the_earliest_lease_end(
    settings: Settings,
) -> None:
    gate = PermitGate(settings, lease_seconds=1.0, retry_after=30.0)
    gate.try_acquire("a", node(1))

    with pytest.raises(NoPermit) as refused:
        gate.try_acquire("b", node(1))

    assert 0 < refused.value.retry_after <= 1.0


def _hold_until_killed(settings: Settings, acquired: Event) -> None:
    PermitGate(settings, lease_seconds=0.5).try_acquire("doomed", [Limit("fleet", 1)])
    acquired.set()
    time.sleep(60)


def test_given_a_holder_killed_with_sigkill_then_its_permit_is_back_within_the_lease(
    settings: Settings,
) -> None:
    gate = PermitGate(settings, lease_seconds=0.5)
    acquired = mp.Event()
    child = mp.Process(target=_hold_until_killed, args=(settings, acquired))
    child.start()
    try:
        assert acquired.wait(timeout=10), "the child did not get its permit"
        held_since = time.monotonic()
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(timeout=10)
        assert gate.holders("fleet") == ["doomed"], "a dead holder keeps it until the lease ends"

        wait_for(
            lambda: _granted(gate, "survivor", [Limit("fleet", 1)]),
            timeout=2,
            interval=0.02,
            what="the dead holder's permit",
        )

        assert time.monotonic() - held_since < 0.5 + 0.25
        assert gate.holders("fleet") == ["survivor"]
    finally:
        if child.is_alive():
            child.kill()
            child.join()


def _granted(gate: PermitGate, holder: str, limits: list[Limit]) -> bool:
    try:
        gate.try_acquire(holder, limits)
    except NoPermit:
        return False
    return True


def _hammer(
    settings: Settings,
    seconds: float,
    running: Synchronized[int],
    peak: Synchronized[int],
    grants: Synchronized[int],
    guard: Lock,
) -> None:
    gate = PermitGate(settings, lease_seconds=5.0, retry_after=0.01)
    holder = f"job-{os.getpid()}"
    limits = [Limit("fleet", 3), Limit(f"node:{os.getpid()}", 1)]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            permit = gate.try_acquire(holder, limits)
        except NoPermit as refused:
            time.sleep(refused.retry_after)
            continue
        # counted only while the permit is surely held: after the grant, before the release
        with guard:
            running.value += 1
            peak.value = max(peak.value, running.value)
            grants.value += 1
        time.sleep(0.05)  # long enough that holders overlap even under the file lock
        with guard:
            running.value -= 1
        permit.release()


def test_given_eight_processes_hammering_a_limit_of_three_then_it_is_never_exceeded(
    settings: Settings,
) -> None:
    guard = mp.Lock()
    running, peak, grants = (mp.Value("i", 0, lock=False) for _ in range(3))
    workers = [
        mp.Process(target=_hammer, args=(settings, 1.0, running, peak, grants, guard))
        for _ in range(8)
    ]

    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=20)

    assert [w.exitcode for w in workers] == [0] * 8
    assert peak.value == 3, "never more than the limit, and the limit is reached"
    assert grants.value >= 10
    assert running.value == 0 and PermitGate(settings).in_use("fleet") == 0


def test_given_redis_then_a_scope_is_a_sorted_set_of_leases_on_the_server_clock(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings("redis")
    client = redis_client(settings)
    assert client is not None
    key = KeySchema(settings.redis_key_prefix).permits("fleet")

    PermitGate(settings, lease_seconds=30).try_acquire("a", [Limit("fleet", 2)])

    seconds, micros = client.time()
    expiry = client.zscore(key, "a")
    assert expiry is not None and 29 < expiry - (seconds + micros / 1e6) <= 30
    assert 0 < client.pttl(key) <= 31_000, "an unused scope does not stay behind"


def test_given_redis_down_then_no_permit_defers_the_job_and_release_does_not_raise(
    make_settings: Callable[..., Settings],
) -> None:
    working = make_settings("redis")
    permit = PermitGate(working).try_acquire("a", node(1))
    broken = working.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})

    with pytest.raises(NoPermit, match="permit store unavailable") as refused:
        PermitGate(broken, retry_after=3.0).try_acquire("b", node(1))

    assert refused.value.retry_after == 3.0
    with PermitGate(broken).acquire("c", []) as unlimited:  # nothing limited: no store call
        assert unlimited.scopes == ()
    PermitGate(broken).try_acquire("a", []).release()
    permit.release()


def test_given_the_embedded_store_then_leases_live_in_one_json_file(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings("embedded")
    gate = PermitGate(settings)

    gate.try_acquire("a", [Limit("fleet", 2)]).release()
    gate.try_acquire("b", [Limit("fleet", 2)])

    assert (settings.home / "permits.json").is_file()
    assert [p.name for p in settings.home.glob(".permits.*")] == [], "no temp files left"
    assert gate.holders("fleet") == ["b"]


def test_given_no_permit_then_it_survives_pickling() -> None:
    error = NoPermit("fleet full (3/3)", 2.5)

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.reason, copy.retry_after, str(copy)) == (
        "fleet full (3/3)", 2.5, "no permit: fleet full (3/3); retry in 2.5s",
    )  # fmt: skip


def test_given_bad_arguments_then_value_error(settings: Settings) -> None:
    with pytest.raises(ValueError):
        PermitGate(settings, lease_seconds=0)
    with pytest.raises(ValueError):
        PermitGate(settings, retry_after=-1)
    with pytest.raises(ValueError):
        PermitGate(settings).try_acquire("", node(1))
    with pytest.raises(ValueError):
        PermitGate(settings).try_acquire("a", [Limit("", 1)])


def own_redis(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> tuple[PrivateRedis, Settings]:
    server = PrivateRedis(tmp_path / "redis", aof=False)
    server.start()
    return server, make_settings("redis", redis_url=server.url)


def test_given_a_holder_cut_off_from_the_store_then_it_gives_its_job_up_within_the_lease(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """A node that lost Redis cannot tell whether others still reach it: its job is given
    up before the reconciler elsewhere (a lease after the lease ran out) may hand it on."""
    server, settings = own_redis(tmp_path, make_settings)
    gate = PermitGate(settings, lease_seconds=0.6)
    with job_lease(gate, "job-1") as permit:
        server.kill()
        started = time.monotonic()

        wait_for(permit.lost.is_set, timeout=5, what="the holder to give the job up")

        assert time.monotonic() - started < 2 * 0.6 + 0.3


def test_given_the_store_paused_past_the_lease_then_the_holder_takes_its_lease_back(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    server, settings = own_redis(tmp_path, make_settings)
    gate = PermitGate(settings, lease_seconds=0.6)
    try:
        with job_lease(gate, "job-1") as permit:
            server.pause(2.0)  # everyone waits alike; the lease runs out meanwhile
            time.sleep(2.5)

            assert not permit.lost.is_set()
            assert gate.holders(job_scope("job-1")) == [permit.holder]
    finally:
        server.kill()
