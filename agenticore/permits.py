"""Permits: nothing runs without one.

A job runs only while it holds a permit in every scope that limits it: its worker node
(``node:<worker>``, ``MAX_PARALLEL_JOBS``), the fleet (``fleet``), its profile
(``profile:<name>``), its repo (``repo:<key>``). Each scope is a counting semaphore.

Why it is built this way:

* Leases, not counters. A holder is a member of the scope with an expiry time and renews it
  while it runs. A holder that is SIGKILLed (OOM killer, lost node) never releases, so its
  permit comes back by itself within ``lease_seconds``; a counter would leak the slot.
* All or nothing. One call takes the permit in every requested scope or in none, atomically,
  so a job never sits on a fleet slot while it waits for a profile slot; such jobs would
  starve the fleet without running.
* The server's clock. With Redis, expiries come from ``TIME`` inside the script, so hosts
  whose clocks disagree still agree on which leases have run out.
* Deferred, never dropped. ``NoPermit`` is not a failure of the job: it carries
  ``retry_after`` and the caller retries the job later (Celery retry with countdown).

With Redis a scope is the sorted set ``<prefix>:permits:<scope>`` (member = holder, score =
lease expiry in unix seconds); acquire and renew are Lua scripts, so each is atomic across
all scopes. Without Redis (embedded, one host) the same rules apply to
``<home>/permits.json`` under a file lock, with this host's clock.

A lease that has run out is lost, whether or not anyone has removed it yet: ``renew()``
then answers False and the holder may ``try_acquire`` again with the same holder id.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import redis
from redis.commands.core import Script

from agenticore.config import Settings
from agenticore.connections import redis_client
from agenticore.errors import LockTimeout, NoPermit, StoreUnavailable
from agenticore.files import atomic_write
from agenticore.interrupts import sigterm_deferred
from agenticore.keys import KeySchema
from agenticore.locks import exclusive

__all__ = ["Limit", "Permit", "PermitGate", "job_gate", "job_lease", "job_scope", "kept_alive"]

log = logging.getLogger(__name__)

# the file lock is held for one read-modify-write of a small JSON file
_FILE_LOCK_HOLD_SECONDS = 30.0
_FILE_LOCK_WAIT_SECONDS = 10.0

# errors that mean "the permit store did not answer now", as opposed to a bug
_UNAVAILABLE = (redis.RedisError, LockTimeout)
_UNLIMITED = 2**31
# leases without an answer from the permit store after which a holder gives its job up
_CUT_OFF_LEASES = 1.5


@dataclass(frozen=True)
class Limit:
    """At most ``limit`` holders in ``scope`` at once; ``None`` or ``<= 0`` means unlimited."""

    scope: str
    limit: int | None


class Permit:
    """A held permit. Release it, or take it with ``PermitGate.acquire`` which always does."""

    def __init__(
        self, backend: _Backend, holder: str, limits: list[tuple[str, int]], lease_seconds: float
    ) -> None:
        self.holder = holder
        self.scopes = tuple(scope for scope, _ in limits)
        self.lost = threading.Event()  # set once the lease is gone and was not taken back
        self.answered = time.monotonic()  # when the permit store last answered it
        self._limits = limits
        self._backend = backend
        self.lease_seconds = lease_seconds
        self._released = False

    def renew(self) -> bool:
        """Extends the lease in every scope; False if it had run out in any (or no answer)."""
        if self._released:
            return False
        if not self.scopes:
            return True
        try:
            renewed = self._backend.renew(self.holder, self.scopes, self.lease_seconds)
        except _UNAVAILABLE as exc:
            log.warning("permit %s: renew failed (%s)", self.holder, exc)
            return False
        self.answered = time.monotonic()
        return renewed

    def reacquire(self) -> bool | None:
        """Takes a lapsed lease back: the first scope (a job's own lease) only if nobody took
        it meanwhile, the others whatever their limits (a run that started keeps its slot,
        even when waiting jobs took the freed ones). False if the first scope is taken, None
        if the store does not answer."""
        if self._released:
            return False
        first, *others = self._limits
        limits = [first, *((scope, _UNLIMITED) for scope, _ in others)]
        try:
            taken = self._backend.acquire(self.holder, limits, self.lease_seconds) is None
            self.answered = time.monotonic()
            return taken
        except _UNAVAILABLE as exc:
            log.warning("permit %s: taking the lease back failed (%s)", self.holder, exc)
            return None

    def release(self) -> None:
        """Gives the permit back; idempotent, and never raises for an unreachable store."""
        if self._released:
            return
        self._released = True
        if not self.scopes:
            return
        try:
            self._backend.release(self.holder, self.scopes)
        except (*_UNAVAILABLE, OSError) as exc:
            # raising here would mask the exception that ended the job; the lease frees it
            log.warning(
                "permit %s: release failed (%s); it frees itself within %.0fs",
                self.holder, exc, self.lease_seconds,
            )  # fmt: skip

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"Permit(holder={self.holder!r}, scopes={self.scopes!r}, {state})"


class PermitGate:
    """Grants permits under a set of limits, in Redis or, without it, in a host-local file."""

    def __init__(
        self, settings: Settings, *, lease_seconds: float = 60.0, retry_after: float = 5.0
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0, not {lease_seconds}")
        if retry_after < 0:
            raise ValueError(f"retry_after must be >= 0, not {retry_after}")
        self.lease_seconds = lease_seconds
        self.retry_after = retry_after
        client = redis_client(settings)
        self._backend: _Backend = (
            _FileBackend(settings)
            if client is None
            else _RedisBackend(client, KeySchema(settings.redis_key_prefix))
        )

    def try_acquire(self, holder: str, limits: Sequence[Limit]) -> Permit:
        """The permit in every limited scope, or NoPermit naming the first full one.

        A holder that already holds the permit in a scope keeps its slot there and gets its
        lease renewed, so acquiring twice with the same holder id never counts twice.
        ``NoPermit.retry_after`` is ``retry_after``, or less if the earliest lease in the
        full scope ends sooner; the caller adds jitter.
        """
        if not holder:
            raise ValueError("holder must not be empty")
        wanted = _limited(limits)
        try:
            refusal = self._backend.acquire(holder, wanted, self.lease_seconds)
        except _UNAVAILABLE as exc:
            raise NoPermit(f"permit store unavailable: {exc}", self.retry_after) from exc
        if refusal is not None:
            reason = f"{refusal.scope} full ({refusal.used}/{refusal.limit})"
            raise NoPermit(reason, max(0.0, min(self.retry_after, refusal.frees_in)))
        return Permit(self._backend, holder, wanted, self.lease_seconds)

    @contextmanager
    def acquire(self, holder: str, limits: Sequence[Limit]) -> Iterator[Permit]:
        """``try_acquire``, released when the block ends however it ends (a SIGTERM, as
        ``Terminated``, waits until the permit is taken and sure to be given back, and
        until it is given back)."""
        with ExitStack() as held:
            with sigterm_deferred():
                permit = self.try_acquire(holder, limits)
                held.callback(_release, permit)
            yield permit

    def in_use(self, scope: str) -> int:
        """How many holders have a live lease in ``scope``."""
        return len(self.holders(scope))

    def holders(self, scope: str) -> list[str]:
        """Holders with a live lease in ``scope``, the one whose lease ends first first."""
        try:
            return self._backend.holders(scope)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"permit store unavailable: {exc}") from exc


def _release(permit: Permit) -> None:
    with sigterm_deferred():
        permit.release()


def job_scope(job_id: str) -> str:
    """The permit scope (limit 1) that doubles as a job's heartbeat lease: while one delivery
    holds it, a duplicate is deferred, and when the holder dies the lease lapses."""
    return f"job:{job_id}"


def job_gate(settings: Settings) -> PermitGate:
    """The gate runs and PR steps take their job lease (and other permits) from."""
    return PermitGate(
        settings, lease_seconds=settings.lease_seconds, retry_after=settings.retry_backoff_seconds
    )


@contextmanager
def job_lease(
    gate: PermitGate,
    job_id: str,
    limits: Sequence[Limit] = (),
    *,
    take_back: Callable[[Permit], bool | None] | None = None,
) -> Iterator[Permit]:
    """The job's lease plus ``limits``, renewed every third of a lease until the block ends;
    raises ``NoPermit`` if any is taken. A lease that lapsed (the store paused or failed
    over) is taken back by ``take_back`` (default: ``Permit.reacquire``); if that is refused,
    ``permit.lost`` is set and the holder must stop."""
    holder = f"{job_id}/{uuid.uuid4().hex[:8]}"
    every = gate.lease_seconds / 3
    with (
        gate.acquire(holder, [Limit(job_scope(job_id), 1), *limits]) as permit,
        kept_alive(permit, every, take_back or Permit.reacquire),
    ):
        yield permit


@contextmanager
def kept_alive(
    permit: Permit, every: float, take_back: Callable[[Permit], bool | None] | None = None
) -> Iterator[Permit]:
    """Renews ``permit`` on a background thread until the block ends.

    A thread, not the job's own loop: cloning a large repo or any other slow step must not
    let the lease lapse, or the job would look abandoned while it runs. A renewal that
    fails is followed by ``take_back``: True, taken back; None, no answer; False, refused:
    ``permit.lost`` is set. Without an answer the holder keeps trying, for a while: a
    paused or restarting store holds everyone up alike, but a node cut off from it cannot
    tell whether the others still reach it. After ``_CUT_OFF_LEASES`` leases without one,
    ``permit.lost`` is set too, before the reconciler (which waits a lease after the lease
    ran out) may hand the job on.
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            if permit.renew():
                continue
            try:
                taken = None if take_back is None else take_back(permit)
            except Exception:  # a Redis that answers oddly (a read-only replica): no answer
                log.exception("permit of %s: taking the lease back failed", permit.holder)
                taken = None
            silent = time.monotonic() - permit.answered
            if taken is None and silent > _CUT_OFF_LEASES * permit.lease_seconds:
                log.error(
                    "permit of %s: no answer from the permit store for %.0fs; the job may "
                    "be handed on elsewhere, so it stops", permit.holder, silent,
                )  # fmt: skip
                permit.lost.set()
                return
            if taken is None:
                log.warning("permit of %s lapsed; it keeps running", permit.holder)
            elif taken:
                log.warning("permit of %s lapsed and was taken back", permit.holder)
            else:
                log.error("permit of %s lapsed and another holder has the job", permit.holder)
                permit.lost.set()
                return

    thread = threading.Thread(target=beat, name=f"lease-{permit.holder}", daemon=True)
    thread.start()
    try:
        yield permit
    finally:
        stop.set()
        thread.join(timeout=every)


def _limited(limits: Sequence[Limit]) -> list[tuple[str, int]]:
    """The scopes that do limit, each once with its strictest limit, in the order given."""
    strictest: dict[str, int] = {}
    for item in limits:
        if not item.scope:
            raise ValueError("a permit scope must not be empty")
        if item.limit is None or item.limit <= 0:
            continue
        strictest[item.scope] = min(item.limit, strictest.get(item.scope, item.limit))
    return list(strictest.items())


@dataclass(frozen=True)
class _Refusal:
    scope: str
    used: int
    limit: int
    frees_in: float  # seconds until the earliest live lease in the scope runs out


class _Backend(Protocol):
    def acquire(
        self, holder: str, limits: Sequence[tuple[str, int]], lease: float
    ) -> _Refusal | None: ...

    def renew(self, holder: str, scopes: Sequence[str], lease: float) -> bool: ...

    def release(self, holder: str, scopes: Sequence[str]) -> None: ...

    def holders(self, scope: str) -> list[str]: ...


# -- Redis -------------------------------------------------------------------------------

# Both scripts first drop run-out leases, so "expired" means the same whatever has run
# before. Every key's TTL follows its latest lease, so a scope nobody uses again (a repo
# seen once) does not stay behind. TIME before writes needs Redis >= 5 (effects replication).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for _, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
end
local function extend(key, expiry)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', key, math.ceil(math.max(expiry, tonumber(last[2])) * 1000))
end
"""

# KEYS: one sorted set per scope. ARGV: holder, lease seconds, then one limit per key.
# Returns {1} if granted, else {0, index of the full key, holders in it, seconds until
# its earliest lease runs out}.
_ACQUIRE = (
    _NOW
    + """
local holder = ARGV[1]
for i, key in ipairs(KEYS) do
  if not redis.call('ZSCORE', key, holder) then
    local used = redis.call('ZCARD', key)
    if used >= tonumber(ARGV[i + 2]) then
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      return {0, i, used, tostring(tonumber(first[2]) - now)}
    end
  end
end
local expiry = now + tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, expiry, holder)
  extend(key, expiry)
end
return {1}
"""
)

# KEYS: the scopes held. ARGV: holder, lease seconds. Returns how many still held it.
_RENEW = (
    _NOW
    + """
local expiry = now + tonumber(ARGV[2])
local held = 0
for _, key in ipairs(KEYS) do
  if redis.call('ZSCORE', key, ARGV[1]) then
    redis.call('ZADD', key, 'XX', expiry, ARGV[1])
    held = held + 1
    extend(key, expiry)
  end
end
return held
"""
)


class _Scripts(NamedTuple):
    acquire: Script
    renew: Script


@lru_cache(maxsize=8)
def _scripts(client: redis.Redis) -> _Scripts:
    # once per client (clients are per URL and process); the first call loads each script
    return _Scripts(client.register_script(_ACQUIRE), client.register_script(_RENEW))


class _RedisBackend:
    def __init__(self, client: redis.Redis, keys: KeySchema) -> None:
        self.client = client
        self.keys = keys
        self.scripts = _scripts(client)

    def acquire(
        self, holder: str, limits: Sequence[tuple[str, int]], lease: float
    ) -> _Refusal | None:
        if not limits:
            return None
        reply: list[Any] = self.scripts.acquire(
            keys=[self.keys.permits(scope) for scope, _ in limits],
            args=[holder, lease, *(limit for _, limit in limits)],
        )
        if reply[0] == 1:
            return None
        scope, limit = limits[int(reply[1]) - 1]
        return _Refusal(scope, int(reply[2]), limit, float(reply[3]))

    def renew(self, holder: str, scopes: Sequence[str], lease: float) -> bool:
        keys = [self.keys.permits(scope) for scope in scopes]
        held = self.scripts.renew(keys=keys, args=[holder, lease])
        return int(held) == len(keys)

    def release(self, holder: str, scopes: Sequence[str]) -> None:
        pipe = self.client.pipeline(transaction=True)
        for scope in scopes:
            pipe.zrem(self.keys.permits(scope), holder)
        pipe.execute()

    def holders(self, scope: str) -> list[str]:
        seconds, micros = self.client.time()  # the clock the scripts use
        now = seconds + micros / 1_000_000
        live: list[str] = self.client.zrangebyscore(self.keys.permits(scope), f"({now!r}", "+inf")  # type: ignore[assignment]
        return live


# -- file (embedded, one host) -----------------------------------------------------------

_Leases = dict[str, dict[str, float]]  # scope -> holder -> lease expiry (unix seconds)


class _FileBackend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = settings.home / "permits.json"

    def acquire(
        self, holder: str, limits: Sequence[tuple[str, int]], lease: float
    ) -> _Refusal | None:
        if not limits:
            return None
        with self._leases() as (leases, now):
            for scope, limit in limits:
                members = leases.get(scope, {})
                if holder not in members and len(members) >= limit:
                    return _Refusal(scope, len(members), limit, min(members.values()) - now)
            for scope, _ in limits:
                leases.setdefault(scope, {})[holder] = now + lease
        return None

    def renew(self, holder: str, scopes: Sequence[str], lease: float) -> bool:
        with self._leases() as (leases, now):
            held = [leases[s] for s in scopes if holder in leases.get(s, {})]
            for members in held:
                members[holder] = now + lease
        return len(held) == len(scopes)

    def release(self, holder: str, scopes: Sequence[str]) -> None:
        with self._leases() as (leases, _):
            for scope in scopes:
                leases.get(scope, {}).pop(holder, None)

    def holders(self, scope: str) -> list[str]:
        # no lock: the file is only ever replaced whole, so any read sees one state
        members = _read(self.path, time.time()).get(scope, {})
        return sorted(members, key=lambda holder: (members[holder], holder))

    @contextmanager
    def _leases(self) -> Iterator[tuple[_Leases, float]]:
        """The live leases and the time they were judged by; written back on a clean exit."""
        with exclusive(
            self.settings, "permits", hold=_FILE_LOCK_HOLD_SECONDS, wait=_FILE_LOCK_WAIT_SECONDS
        ):
            now = time.time()
            leases = _read(self.path, now)
            yield leases, now
            _write(self.path, leases)


def _read(path: Path, now: float) -> _Leases:
    try:
        raw = json.loads(path.read_text())
        scopes = raw["scopes"]
        leases = {
            str(scope): {str(h): float(e) for h, e in members.items() if float(e) > now}
            for scope, members in scopes.items()
        }
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # only a hand edit gets here (writes are atomic); a stuck gate would stop everything
        log.warning("%s is unreadable (%s); treating every permit as free", path, exc)
        return {}
    return {scope: members for scope, members in leases.items() if members}


def _write(path: Path, leases: _Leases) -> None:
    body = json.dumps({"scopes": {s: m for s, m in leases.items() if m}}, indent=1)
    # not durable: leases only matter while their holders live, and a host crash ends them
    atomic_write(path, body, durable=False)
