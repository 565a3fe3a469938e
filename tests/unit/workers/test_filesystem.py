"""The embedded broker never hands a consumer half a message."""

from __future__ import annotations

import threading
from pathlib import Path

from kombu import Connection

from workers.filesystem import Transport

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
