"""Who is calling. Every request but the probes and the docs shows its key here, before
anything reads its body: a caller without a key gets 401, never a parsing error or a 413
that tells it the route exists and what it expects.

The verified key is left in the request's state for the role checks in ``api.deps``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from agenticore.addresses import is_loopback
from agenticore.apikeys import ApiKey, KeyStore, Role
from agenticore.config import Settings

__all__ = ["LOCAL_ADMIN", "OPEN_PATHS", "Authenticate", "authenticate"]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json"})

# the caller when AUTH_DISABLED is on (only ever over loopback)
LOCAL_ADMIN = ApiKey(
    id="local", name="auth disabled", role=Role.ADMIN, created=datetime(1970, 1, 1, tzinfo=UTC)
)


class Authenticate:
    """Pure ASGI middleware: 401 unless the request carries a valid key."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state.agenticore
        header = Headers(scope=scope).get("authorization")
        # a plain function in a thread: a key not cached yet costs an argon2 hash
        outcome = await anyio.to_thread.run_sync(
            authenticate, state.settings, state.keys, header, scope.get("server")
        )
        if isinstance(outcome, str):
            response = JSONResponse(
                {"detail": outcome}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = outcome
        await self.app(scope, receive, send)


def authenticate(
    settings: Settings,
    keys: KeyStore,
    authorization: str | None,
    server: tuple[str, int | None] | None,
) -> ApiKey | str:
    """The caller's verified key, or why there is none."""
    if settings.auth_disabled:
        if not _over_loopback(server):
            return "auth is disabled on this API, so it only answers on loopback"
        return LOCAL_ADMIN
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return "an API key is required: send Authorization: Bearer <key>"
    key = keys.verify(credentials.strip())
    return key if key is not None else "the API key is unknown or revoked"


def _over_loopback(server: tuple[str, int | None] | None) -> bool:
    # the local address the request came in on: a server bound to 0.0.0.0 sees 127.0.0.1
    # for local callers and its outside address for everybody else
    if not server or not isinstance(server[0], str) or server[0].startswith("/"):
        return True  # a unix socket: local by construction
    return is_loopback(server[0])
