"""A real API process (uvicorn, no worker: queued jobs just wait) with auth on and an admin
key, for tests that talk HTTP to it."""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from agenticore.apikeys import KeyStore, Role
from agenticore.config import Settings
from tests.conftest import settings_env, start_api
from tests.helpers import free_port, wait_for


@dataclass
class SecuredApi:
    settings: Settings
    url: str
    key: str
    http: httpx.Client  # sends the admin key

    def footprint(self) -> set[str]:
        """Every file under HOME (but the logs) and every Redis key of this API: what a
        refused request must leave unchanged."""
        home = self.settings.home
        files = {
            str(path.relative_to(home))
            for path in home.rglob("*")
            if path.is_file() and "logs" not in path.relative_to(home).parts
        }
        if self.settings.redis_url is not None:
            client = redis.Redis.from_url(self.settings.redis_url, decode_responses=True)
            files |= {f"redis:{k}" for k in client.scan_iter(f"{self.settings.redis_key_prefix}*")}
            client.close()
        return files


@contextmanager
def secured_api(home: Path, redis_url: str | None = None, **overrides: Any) -> Iterator[SecuredApi]:
    port = free_port()
    values: dict[str, Any] = {
        "home": home,
        "redis_url": redis_url,
        "redis_key_prefix": f"agtest-{uuid.uuid4().hex[:10]}",
        "port": port,
        "api_url": f"http://127.0.0.1:{port}",
    }
    settings = Settings(**(values | overrides))
    _, key = KeyStore(settings).create("tests", Role.ADMIN)
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    api = start_api(settings_env(settings), port, logs / "api.log")
    http = httpx.Client(
        base_url=settings.api_url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    )
    try:
        wait_for(lambda: _healthy(http), timeout=30, what="the API")
        yield SecuredApi(settings, settings.api_url, key, http)
    finally:
        http.close()
        api.send_signal(signal.SIGTERM)
        try:
            api.wait(timeout=20)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait()


def _healthy(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False
