"""Request dependencies, built once per app in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from agenticore.config import Settings
from agenticore.jobs import JobStore
from api.dispatch import Dispatcher

__all__ = ["AppState", "DispatcherDep", "SettingsDep", "StoreDep"]


@dataclass
class AppState:
    settings: Settings
    store: JobStore
    dispatcher: Dispatcher


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.agenticore
    return state


def get_settings_dep(request: Request) -> Settings:
    return _state(request).settings


def get_store(request: Request) -> JobStore:
    return _state(request).store


def get_dispatcher(request: Request) -> Dispatcher:
    return _state(request).dispatcher


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[JobStore, Depends(get_store)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
