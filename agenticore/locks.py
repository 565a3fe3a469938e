"""Named exclusive locks: a redis-py ``Lock`` when Redis is configured, ``flock`` otherwise.

The Redis lock has a timeout so a crashed holder cannot block others forever; ``flock`` is
released by the kernel when its holder dies. If Redis cannot be reached the lock degrades
to ``flock``: still exclusive on this host, and a job can record its outcome in the file
store instead of losing it.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import redis
from redis.lock import Lock

from agenticore.config import Settings
from agenticore.connections import redis_client
from agenticore.errors import LockTimeout
from agenticore.files import private_dir
from agenticore.interrupts import sigterm_deferred
from agenticore.keys import KeySchema

__all__ = ["Held", "exclusive"]

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.05


class Held:
    """A held lock; ``extend`` gives a Redis lock ``hold`` seconds more from now."""

    def __init__(self, lock: redis.lock.Lock | None = None) -> None:
        self._lock = lock
        self.lost = threading.Event()  # set once an extension found the lock gone

    def extend(self) -> bool:
        """False if the lock was lost (it timed out and another took it)."""
        if self._lock is None:
            return True  # flock: held until released, whatever the time
        try:
            self._lock.reacquire()
        except (redis.exceptions.LockError, redis.RedisError):
            self.lost.set()
            return False
        return True

    @contextmanager
    def extended(self, every: float) -> Iterator[Held]:
        """Extends the lock on a background thread every ``every`` seconds until the block
        ends: work of unknown length keeps it."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                if not self.extend():
                    return

        thread = threading.Thread(target=beat, name="lock-extender", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=every)


@contextmanager
def exclusive(settings: Settings, name: str, *, hold: float, wait: float) -> Iterator[Held]:
    """Hold lock ``name`` for at most ``hold`` seconds (Redis), waiting up to ``wait``."""
    client = redis_client(settings)
    if client is None:
        with _file_lock(settings, name, wait):
            yield Held()
        return
    lock = client.lock(
        KeySchema(settings.redis_key_prefix).lock(name),
        timeout=hold,
        thread_local=False,  # its extender thread renews it (Held.extended)
    )
    with ExitStack() as held:
        try:
            _acquire(lock, held, name, wait)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("lock %s: Redis unreachable (%s); using a host-local lock", name, exc)
            held.enter_context(_file_lock(settings, name, wait))
            yield Held()
            return
        yield Held(lock)


def _acquire(lock: Lock, held: ExitStack, name: str, wait: float) -> None:
    """Takes ``lock`` within ``wait`` seconds and puts its release on ``held``."""
    deadline = time.monotonic() + wait
    while True:
        # taken and sure to be given back, or not taken: a SIGTERM (``Terminated``) never
        # falls in between
        with sigterm_deferred():
            if lock.acquire(blocking=False):
                held.callback(_release, lock)
                return
        if time.monotonic() >= deadline:
            raise LockTimeout(name, wait)
        time.sleep(_POLL_SECONDS)


def _release(lock: Lock) -> None:
    with sigterm_deferred():
        try:
            if lock.owned():
                lock.release()
        except redis.RedisError as exc:
            # raising would fail the work done under the lock; its timeout frees it anyway
            log.warning("lock %s: release failed (%s); it frees itself in time", lock.name, exc)


@contextmanager
def _file_lock(settings: Settings, name: str, wait: float) -> Iterator[None]:
    private_dir(settings.locks_dir, home=settings.home)
    path = settings.locks_dir / f"{name.replace('/', '_').replace(':', '_')}.lock"
    deadline = time.monotonic() + wait
    with open(path, "a+b") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(name, wait) from None
                time.sleep(_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
