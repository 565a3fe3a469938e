"""API keys: who may call the REST API, and in which role.

A key reads ``agk_<id>_<secret>``. The 12 hex chars of ``id`` name the record and are not
secret; the store keeps only an argon2id hash of the whole key, so a leaked store (Redis
dump, backup of ``HOME/keys``) yields no usable key. Verifying costs one argon2 hash
(tens of ms by design), so a verified key is remembered in memory, by its SHA-256, for at
most ``API_KEY_CACHE_SECONDS`` (60 s): a revocation reaches every API process within that.

Keys live in ``HOME/keys/<id>.json`` (0600, folder 0700), with the job records, so they
survive a Redis that comes back empty; several nodes share them as they share ``HOME/jobs``.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from agenticore.addresses import is_loopback
from agenticore.config import Settings
from agenticore.errors import AgenticoreError, InvalidRequest
from agenticore.files import atomic_write
from agenticore.models import Submitter, utcnow

__all__ = ["ApiKey", "ApiKeyNotFound", "KeyStore", "Role", "exposure_error"]

KEY_PREFIX = "agk_"
_KEY_SHAPE = re.compile(r"^agk_([0-9a-f]{12})_([A-Za-z0-9_-]{16,128})$")
_ID_SHAPE = re.compile(r"^[0-9a-f]{12}$")
_NAME_MAX = 100
# verified keys remembered at once; past this, expired entries are dropped first
_CACHE_MAX = 1024
_FAILURES_MAX = 10  # wrong secrets per key id per minute before the id stops being hashed
_HASHING = threading.BoundedSemaphore(2)  # argon2 verifications at once, per process


class Role(str, Enum):
    """Each role may do everything the ones before it may."""

    VIEWER = "viewer"  # reads jobs, profiles, status, dead letters
    OPERATOR = "operator"  # submits jobs; cancels and retries its own
    ADMIN = "admin"  # anyone's jobs, dead letters, keys

    def allows(self, needed: Role) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(needed)


class ApiKeyNotFound(AgenticoreError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with id {key_id!r}")
        self.key_id = key_id


@dataclass(frozen=True)
class ApiKey:
    """A key's record, without its secret."""

    id: str
    name: str
    role: Role
    created: datetime
    revoked: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None

    @property
    def submitter(self) -> Submitter:
        return Submitter(id=self.id, name=self.name)

    def public(self) -> dict[str, Any]:
        """JSON-ready fields; there is no secret in a record to leave out."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role.value,
            "created": self.created.isoformat(),
            "revoked": self.revoked.isoformat() if self.revoked else None,
        }


class KeyStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.home / "keys"
        self.cache_seconds = settings.api_key_cache_seconds
        self._hasher = PasswordHasher()  # argon2id, the library's recommended parameters
        self._cache: dict[str, tuple[float, ApiKey]] = {}
        self._failures: dict[str, list[float]] = {}
        self._known: dict[str, str] = {}  # SHA-256 of keys verified here -> their id
        self._cache_lock = threading.Lock()

    # -- management --------------------------------------------------------------------

    def create(self, name: str, role: Role | str) -> tuple[ApiKey, str]:
        """A new key and its secret form; the secret is shown this once and never stored."""
        name, role = _valid_name(name), _valid_role(role)
        key_id = self._free_id()
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(id=key_id, name=name, role=role, created=utcnow())
        self._save(record, self._hasher.hash(key))
        return record, key

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""
        loaded = [self._load(key_id) for key_id in self._all_ids()]
        records = [entry[0] for entry in loaded if entry is not None]
        return sorted(records, key=lambda r: (r.created, r.id))

    def get(self, key_id: str) -> ApiKey:
        loaded = self._load(key_id) if _ID_SHAPE.match(key_id) else None
        if loaded is None:
            raise ApiKeyNotFound(key_id)
        return loaded[0]

    def revoke(self, key_id: str) -> ApiKey:
        """Marks the key revoked (kept, so listings show it); revoking twice is harmless."""
        record = self.get(key_id)
        if record.revoked is None:
            path = self._path(key_id)
            data = json.loads(path.read_text()) | {"revoked": utcnow().isoformat()}
            self._write_file(path, data)
        with self._cache_lock:
            self._cache = {d: hit for d, hit in self._cache.items() if hit[1].id != key_id}
        return self.get(key_id)

    # -- authentication ----------------------------------------------------------------

    def verify(self, key: str) -> ApiKey | None:
        """The active key ``key`` stands for, or None (malformed, unknown, wrong, revoked)."""
        digest = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()
        now = time.monotonic()
        with self._cache_lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        match = _KEY_SHAPE.match(key)
        loaded = self._load(match.group(1)) if match else None
        if loaded is None:
            return None
        record, stored_hash = loaded
        if not record.active:
            return None
        if self._known.get(digest) == record.id:
            # this very secret verified here before: re-checked against revocation above,
            # not hashed again, whatever strangers try against the same id meanwhile
            self._remember(digest, now + self.cache_seconds, record)
            return record
        if self._failing(record.id, now):
            return None
        try:
            # argon2 compares the digests in constant time; each hash takes 64 MiB and tens
            # of ms of a core, so only a few run at once whoever asks
            with _HASHING:
                self._hasher.verify(stored_hash, key)
        except (VerificationError, InvalidHashError):
            self._failed(record.id, now)
            return None
        with self._cache_lock:
            if len(self._known) >= _CACHE_MAX:
                self._known.clear()
            self._known[digest] = record.id
        self._remember(digest, now + self.cache_seconds, record)
        return record

    def _failing(self, key_id: str, now: float) -> bool:
        """Past ``_FAILURES_MAX`` wrong secrets for one id within a minute, new secrets for
        that id are refused without hashing: ids are not secret, and guessing would cost us a
        hash each. Secrets this process verified before still pass (``_known``)."""
        with self._cache_lock:
            recent = [t for t in self._failures.get(key_id, []) if t > now - 60]
            self._failures[key_id] = recent
        return len(recent) >= _FAILURES_MAX

    def _failed(self, key_id: str, now: float) -> None:
        with self._cache_lock:
            self._failures.setdefault(key_id, []).append(now)

    # -- storage -----------------------------------------------------------------------

    def _remember(self, digest: str, until: float, record: ApiKey) -> None:
        if self.cache_seconds <= 0:
            return
        with self._cache_lock:
            if len(self._cache) >= _CACHE_MAX:
                now = time.monotonic()
                self._cache = {d: hit for d, hit in self._cache.items() if hit[0] > now}
                if len(self._cache) >= _CACHE_MAX:
                    self._cache.clear()
            self._cache[digest] = (until, record)

    def _free_id(self) -> str:
        while True:  # 48 random bits: a collision is rare, but must not overwrite a key
            key_id = secrets.token_hex(6)
            if self._load(key_id) is None:
                return key_id

    def _save(self, record: ApiKey, stored_hash: str) -> None:
        self._write_file(self._path(record.id), record.public() | {"hash": stored_hash})

    def _load(self, key_id: str) -> tuple[ApiKey, str] | None:
        try:
            data: dict[str, Any] = json.loads(self._path(key_id).read_text())
        except FileNotFoundError:
            return None
        record = ApiKey(
            id=data["id"],
            name=data["name"],
            role=Role(data["role"]),
            created=datetime.fromisoformat(data["created"]),
            revoked=datetime.fromisoformat(data["revoked"]) if data.get("revoked") else None,
        )
        return record, str(data["hash"])

    def _all_ids(self) -> builtins.list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if _ID_SHAPE.match(p.stem))

    def _path(self, key_id: str) -> Path:
        return self.dir / f"{key_id}.json"

    def _write_file(self, path: Path, data: dict[str, Any]) -> None:
        # the folder first, so the key files are never readable by others even for a moment
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        atomic_write(path, json.dumps(data, indent=2))  # mkstemp: the file is 0600
        path.chmod(0o600)


def exposure_error(settings: Settings, host: str) -> str | None:
    """Why an API bound to ``host`` must not start with these settings, or None."""
    if settings.auth_disabled and not is_loopback(host):
        return (
            f"AUTH_DISABLED is on, so the API would let anyone who reaches {host} run agents; "
            "bind it to 127.0.0.1 (AGENTICORE_HOST) or turn AUTH_DISABLED off and use API keys"
        )
    return None


def _valid_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidRequest("a key name must not be empty")
    if len(name) > _NAME_MAX:
        raise InvalidRequest(f"a key name has at most {_NAME_MAX} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidRequest("a key name must not hold control characters")
    return name


def _valid_role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        names = ", ".join(r.value for r in Role)
        raise InvalidRequest(f"unknown role {role!r}; one of: {names}") from None
