"""Request body limit: 413 before anything parses a body larger than ``MAX_BODY_BYTES``.

A pure ASGI middleware, so it sees the body as it arrives and nothing upstream has read it
yet. A declared ``Content-Length`` over the limit is refused at once, without reading a
byte. A body of unknown length (chunked) is read as it streams, at most the limit is held,
and the answer is 413 as soon as one byte too many arrives; a body within the limit is
handed on to the app unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit"]


class BodyLimit:
    """``limit`` is called per request, so the app can resolve its settings lazily."""

    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        declared = _content_length(scope)
        if declared is not None:
            if declared > limit:
                await _too_large(send, limit)
                return
            # the server holds the client to the length it declared: nothing more can arrive
            await self.app(scope, receive, send)
            return
        messages = await _read_within(receive, limit)
        if messages is None:
            await _too_large(send, limit)
            return
        await self.app(scope, _replay(messages, receive), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before we see it
    return None


async def _read_within(receive: Receive, limit: int) -> list[Message] | None:
    """The body's messages, or None once they add up to more than ``limit`` bytes."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages  # a disconnect: the app sees it as it would have
        size += len(message.get("body", b""))
        if size > limit:
            return None
        if not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """Hands the app the messages already read, then the live channel (disconnects)."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"request body is larger than {limit} bytes"}).encode()
    # the rest of the body is never read, so the connection cannot serve another request
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
