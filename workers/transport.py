"""The Redis transport, surviving a lost connection.

When Redis goes away, the worker closes the connection (its ``client`` is gone) and
consumes again on a new one. kombu then still works on the old channel: closing it
restores the messages it held, and with ``task_acks_late`` a task that ends acknowledges on
the channel it arrived on. Both fail with an ``AttributeError`` that ends the whole worker,
with the jobs it was running. Both are moot by then: the held messages stay in ``unacked``
(restored after ``visibility_timeout``, their jobs finished or re-queued by the reconciler)
or are gone with an empty Redis. So on a closed channel they are skipped.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis

__all__ = ["Transport"]

log = logging.getLogger(__name__)


class _QoS(redis.QoS):
    def ack(self, delivery_tag: Any) -> None:
        if not self._closed(delivery_tag):
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if not self._closed(delivery_tag):
            super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]

    def restore_unacked(self, client: Any = None) -> None:
        if not self._closed("held by this worker"):
            super().restore_unacked(client)  # type: ignore[no-untyped-call]

    def _closed(self, what: Any) -> bool:
        connection = getattr(self.channel, "connection", None)
        if connection is not None and connection.client is not None:
            return False
        log.warning("message %s left as it is: its broker connection closed", what)
        return True


class _Channel(redis.Channel):
    QoS = _QoS


class Transport(redis.Transport):
    Channel = _Channel
