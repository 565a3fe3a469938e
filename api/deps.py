"""Request dependencies, built once per app in the lifespan, and who the caller is.

Every route but the probes and the docs names the role it needs (``ViewerKey``,
``OperatorKey``, ``AdminKey``): the key is checked (401) and its role (403) before the route
looks anything up, so a refused caller learns nothing about what exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agenticore.addresses import is_loopback
from agenticore.apikeys import ApiKey, KeyStore, Role
from agenticore.config import Settings
from agenticore.jobs import JobStore
from agenticore.models import Job
from api.dispatch import Dispatcher

__all__ = [
    "LOCAL_ADMIN",
    "AdminKey",
    "AppState",
    "CurrentKey",
    "DispatcherDep",
    "KeysDep",
    "OperatorKey",
    "SettingsDep",
    "StoreDep",
    "ViewerKey",
    "may_act_on",
    "require",
]


@dataclass
class AppState:
    settings: Settings
    store: JobStore
    dispatcher: Dispatcher
    keys: KeyStore


# the caller when AUTH_DISABLED is on (only ever over loopback)
LOCAL_ADMIN = ApiKey(
    id="local", name="auth disabled", role=Role.ADMIN, created=datetime(1970, 1, 1, tzinfo=UTC)
)

_bearer = HTTPBearer(auto_error=False, description="an API key (agenticore keys create)")


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.agenticore
    return state


def get_settings_dep(request: Request) -> Settings:
    return _state(request).settings


def get_store(request: Request) -> JobStore:
    return _state(request).store


def get_dispatcher(request: Request) -> Dispatcher:
    return _state(request).dispatcher


def get_keys(request: Request) -> KeyStore:
    return _state(request).keys


def current_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The verified key of the request (a plain def: FastAPI runs it in a thread, so the
    argon2 hash of a key not yet cached does not block the event loop)."""
    state = _state(request)
    if state.settings.auth_disabled:
        if not _arrived_over_loopback(request):
            raise _unauthorized("auth is disabled on this API, so it only answers on loopback")
        return LOCAL_ADMIN
    if credentials is None:
        raise _unauthorized("an API key is required: send Authorization: Bearer <key>")
    key = state.keys.verify(credentials.credentials)
    if key is None:
        raise _unauthorized("the API key is unknown or revoked")
    return key


CurrentKey = Annotated[ApiKey, Depends(current_key)]


def require(role: Role) -> Callable[[ApiKey], ApiKey]:
    """A dependency that lets through keys with ``role`` or a higher one, else 403."""

    def check(key: CurrentKey) -> ApiKey:
        if not key.role.allows(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs the {role.value} role; key {key.id} ({key.name}) is {key.role.value}",
            )
        return key

    return check


def may_act_on(key: ApiKey, job: Job) -> bool:
    """Admins act on any job; others on the jobs their own key submitted."""
    if key.role is Role.ADMIN:
        return True
    return job.submitted_by is not None and job.submitted_by.id == key.id


def _arrived_over_loopback(request: Request) -> bool:
    # the local address the request came in on: a server bound to 0.0.0.0 sees 127.0.0.1
    # for local callers and its outside address for everybody else
    server = request.scope.get("server")
    if not server or not isinstance(server[0], str) or server[0].startswith("/"):
        return True  # a unix socket: local by construction
    return is_loopback(server[0])


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[JobStore, Depends(get_store)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
KeysDep = Annotated[KeyStore, Depends(get_keys)]
ViewerKey = Annotated[ApiKey, Depends(require(Role.VIEWER))]
OperatorKey = Annotated[ApiKey, Depends(require(Role.OPERATOR))]
AdminKey = Annotated[ApiKey, Depends(require(Role.ADMIN))]
