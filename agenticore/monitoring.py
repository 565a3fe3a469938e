"""Flower, Celery's monitor, started so that it is not an open door.

Flower can shut workers down, revoke tasks and read task arguments, so it binds to
loopback unless basic auth is configured (``FLOWER_BASIC_AUTH``, ``user:password``). The
credentials go to Flower through its environment, never its argv (``ps`` shows argv).
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from agenticore.addresses import is_loopback
from agenticore.config import Settings
from agenticore.errors import InvalidRequest
from agenticore.files import atomic_write

__all__ = ["ensure_flower_auth", "flower_auth_file", "flower_command"]

# Flower's own options, read from its environment; ours override what the caller had
_FLOWER_ENV = ("FLOWER_BASIC_AUTH", "FLOWER_UNAUTHENTICATED_API", "FLOWER_ADDRESS", "FLOWER_PORT")


def flower_auth_file(settings: Settings) -> Path:
    return settings.home / "flower.auth"


def flower_credentials(settings: Settings) -> str | None:
    """``FLOWER_BASIC_AUTH``, else what ``agenticore up`` generated, else None."""
    if settings.flower_basic_auth is not None:
        return settings.flower_basic_auth.get_secret_value().strip() or None
    try:
        return flower_auth_file(settings).read_text().strip() or None
    except FileNotFoundError:
        return None


def ensure_flower_auth(settings: Settings) -> Path | None:
    """Makes sure Flower gets basic auth: generates ``admin:<random>`` into
    ``HOME/flower.auth`` (0600) once, unless ``FLOWER_BASIC_AUTH`` is set. Returns the file
    holding the credentials, or None when they come from the config."""
    if settings.flower_basic_auth is not None:
        return None
    path = flower_auth_file(settings)
    if not path.exists():
        atomic_write(path, f"admin:{secrets.token_urlsafe(24)}\n")  # mkstemp: 0600
    path.chmod(0o600)
    return path


def flower_command(
    settings: Settings, address: str | None = None, port: int | None = None
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that start Flower; InvalidRequest if it would be open."""
    address = address or settings.flower_host
    port = port or settings.flower_port
    credentials = flower_credentials(settings)
    if credentials is None and not is_loopback(address):
        raise InvalidRequest(
            f"Flower on {address} would let anyone who reaches it stop workers and read tasks; "
            "set FLOWER_BASIC_AUTH=user:password or bind it to 127.0.0.1"
        )
    if credentials is not None:
        _check_credentials(credentials)
    argv = [
        sys.executable, "-m", "celery", "-A", "workers.app", "flower",
        f"--address={address}", f"--port={port}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in _FLOWER_ENV}
    if credentials is not None:
        env["FLOWER_BASIC_AUTH"] = credentials
    return argv, env


def _check_credentials(credentials: str) -> None:
    # Flower splits the option on commas (several users) and each entry on the first ":"
    for entry in credentials.split(","):
        user, sep, password = entry.partition(":")
        if not (sep and user.strip() and password):
            raise InvalidRequest(
                "FLOWER_BASIC_AUTH must read user:password (several: u1:p1,u2:p2); "
                "passwords cannot hold commas"
            )
