"""Keep credentials out of records, messages and logs."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["has_credentials", "redact_text", "redact_url"]

_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def has_credentials(url: str) -> bool:
    """True for ``https://user:secret@host`` or ``https://token@host`` (ssh users are fine)."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return parts.username is not None or parts.password is not None
    return parts.password is not None


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def redact_text(text: str) -> str:
    """Masks userinfo in every URL inside free text (git's stderr, for instance)."""
    return _URL_USERINFO.sub(r"\g<scheme>***@", text)
