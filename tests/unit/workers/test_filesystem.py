"""The embedded broker never hands a consumer half a message, and drops the event queue
of a monitor that is gone."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from kombu import Connection, Exchange, Queue

from workers.filesystem import EVENTS, GONE_AFTER, Transport

N = 400


def connection(folder: Path) -> Connection:
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "processed_folder": str(folder),
        "control_folder": str(folder / "control"),
        "polling_interval": 0.001,
    }
    return Connection("filesystem://", transport=Transport, transport_options=options)


def test_given_a_producer_and_a_busy_consumer_then_every_message_arrives_whole(
    tmp_path: Path,
) -> None:
    (tmp_path / "control").mkdir()
    payload = "x" * 200_000  # large enough that a write takes a while
    received: list[str] = []
    with connection(tmp_path) as conn, conn.SimpleQueue("q"):
        pass  # bind the queue first: a publish to an unbound exchange is dropped

    def produce() -> None:
        with connection(tmp_path) as conn, conn.SimpleQueue("q") as queue:
            for n in range(N):
                queue.put({"n": n, "payload": payload})

    def consume() -> None:
        with connection(tmp_path) as conn, conn.SimpleQueue("q") as queue:
            while len(received) < N:
                message = queue.get(timeout=30)
                received.append(message.payload["payload"])
                message.ack()

    threads = [threading.Thread(target=consume), threading.Thread(target=produce)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(received) == N
    assert all(text == payload for text in received)
    assert not list(tmp_path.glob(".*.partial")), "no partial file is left behind"


def test_given_an_event_queue_nobody_reads_when_events_are_sent_then_it_is_unbound_and_emptied(
    tmp_path: Path,
) -> None:
    """A monitor killed (Flower) leaves its event queue bound; a live one reads its own."""
    (tmp_path / "control").mkdir()
    events = Exchange(EVENTS, type="topic")
    with connection(tmp_path) as conn:
        for name in ("celeryev.gone", "celeryev.alive"):
            Queue(name, events, routing_key="#")(conn.default_channel).declare()
        conn.Producer().publish({"type": "worker-heartbeat"}, exchange=events,
                                routing_key="worker.heartbeat")  # fmt: skip
    long_ago = time.time() - GONE_AFTER - 5
    for message in tmp_path.glob("*.celeryev.gone.msg"):
        os.utime(message, (long_ago, long_ago))

    with connection(tmp_path) as conn:  # a new channel checks at its first event
        conn.Producer().publish({"type": "worker-heartbeat"}, exchange=events,
                                routing_key="worker.heartbeat")  # fmt: skip
        table = conn.default_channel.get_table(EVENTS)

    assert [binding.queue for binding in table] == ["celeryev.alive"]
    assert not list(tmp_path.glob("*.celeryev.gone.msg"))
    assert len(list(tmp_path.glob("*.celeryev.alive.msg"))) == 2
