"""Request dependencies, built once per app in the lifespan, and who the caller is.

Every route but the probes and the docs names the role it needs (``ViewerKey``,
``OperatorKey``, ``AdminKey``). ``api.auth`` has checked the key (401) before the request
got here; its role is checked (403) before the route looks anything up, so a refused caller
learns nothing about what exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agenticore.apikeys import ApiKey, KeyStore, Role
from agenticore.config import Settings
from agenticore.jobs import JobStore
from agenticore.models import Job
from api.dispatch import Dispatcher

__all__ = [
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
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],  # for the docs
) -> ApiKey:
    """The key ``api.auth.Authenticate`` verified for this request."""
    key: ApiKey | None = getattr(request.state, "api_key", None)
    if key is None:  # an app assembled without the middleware: refuse, never assume
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "no verified API key", {"WWW-Authenticate": "Bearer"}
        )
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


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[JobStore, Depends(get_store)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
KeysDep = Annotated[KeyStore, Depends(get_keys)]
ViewerKey = Annotated[ApiKey, Depends(require(Role.VIEWER))]
OperatorKey = Annotated[ApiKey, Depends(require(Role.OPERATOR))]
AdminKey = Annotated[ApiKey, Depends(require(Role.ADMIN))]
