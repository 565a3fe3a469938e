"""kombu's ``filesystem://`` transport with atomic message writes, and event queues that
expire.

The stock transport creates a message file and then writes into it; a consumer that
lists the folder in between moves and reads an empty file, fails to decode it and the
worker dies with the message gone. Writing to a hidden temp name and renaming it into
place means a consumer only ever sees whole messages.

A monitor (Flower) binds a queue of its own to Celery's event exchange. The stock transport
never expires it, so once the monitor is gone every event (a heartbeat every 2 s) would
be a file nobody reads, for good. A bound event queue whose oldest message waited longer
than Celery's ``event_queue_expires`` is unbound and emptied, as Redis and AMQP expire it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from contextlib import suppress
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

__all__ = ["EVENTS", "GONE_AFTER", "Channel", "Transport"]

log = logging.getLogger(__name__)

EVENTS = "celeryev"  # Celery's event exchange
GONE_AFTER = 60.0  # Celery's event_queue_expires default: its monitor is gone
_CHECK_EVERY = 10.0


class Channel(filesystem.Channel):
    _events_checked = 0.0

    def basic_publish(self, message: Any, exchange: Any, routing_key: Any, **kwargs: Any) -> Any:
        if exchange == EVENTS and monotonic() - self._events_checked > _CHECK_EVERY:
            self._events_checked = monotonic()
            self._unbind_gone_monitors()
        return super().basic_publish(message, exchange, routing_key, **kwargs)  # type: ignore[no-untyped-call]

    def _unbind_gone_monitors(self) -> None:
        table = self.get_table(EVENTS)  # type: ignore[no-untyped-call]
        if not table:
            return
        oldest = self._oldest_messages({binding.queue for binding in table})
        now = time.time()
        for binding in table:
            if now - oldest.get(binding.queue, now) > GONE_AFTER:
                log.warning("event queue %s unread for %.0fs: its monitor is gone; unbound",
                            binding.queue, now - oldest[binding.queue])  # fmt: skip
                self._delete(binding.queue, EVENTS, binding.routing_key, binding.pattern)  # type: ignore[no-untyped-call]

    def _oldest_messages(self, queues: set[str]) -> dict[str, float]:
        """The write time of the oldest waiting message of each of ``queues``."""
        oldest: dict[str, float] = {}
        folder = self.data_folder_in
        for name in os.listdir(folder):
            queue = name.partition(".")[2].removesuffix(".msg")  # "<stamp>_<id>.<queue>.msg"
            if queue not in queues:
                continue
            try:
                written = os.stat(os.path.join(folder, name)).st_mtime
            except FileNotFoundError:
                continue  # read meanwhile
            oldest[queue] = min(written, oldest.get(queue, written))
        return oldest

    # kombu's own filesystem Channel already narrows AbstractChannel._put this way
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        folder = self.data_folder_out
        # a leading dot keeps the partial file out of _get's "<stamp>_<id>.<queue>.msg" match
        fd, partial = tempfile.mkstemp(dir=folder, prefix=".", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))  # type: ignore[no-untyped-call]
            os.replace(partial, os.path.join(folder, name))
        except OSError as exc:
            with suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f"Cannot add file {name!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
