"""Repo URLs taken apart for matching: scheme, host, port and path segments.

Matching by parsed parts, never by string prefix, is what keeps a token configured for
``https://git.acme.corp`` away from ``https://git.acme.corp.evil.example``, and one for
``https://github.com/acme`` away from ``https://github.com/acme-evil``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["DEFAULT_PORTS", "SCP_LIKE", "Location", "parse_location"]

# git's scp-like syntax, user@host:path (no scheme, so no "://" can match)
SCP_LIKE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*@(?P<host>[A-Za-z0-9.-]+):(?!-)(?P<path>\S+)$")
# a FORGES key may also be written scp-like without its path: git@host: (all repos there)
_SCP_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*@(?P<host>[A-Za-z0-9.-]+):(?P<path>\S*)$")
DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22}


@dataclass(frozen=True)
class Location:
    """Where a URL points, normalized: lower-case scheme and host, explicit port."""

    scheme: str  # "https" | "http" | "ssh" (scp-like URLs are ssh)
    host: str
    port: int
    segments: tuple[str, ...]  # the path split on "/": no empty, "." or ".." segments

    def contains(self, other: Location) -> bool:
        """Whether ``other`` lies at or under this location: same scheme, host and port,
        and this path's segments are the first segments of ``other``'s path."""
        mine, theirs = _decoded(self.segments), _decoded(other.segments)
        return (self.scheme, self.host, self.port) == (other.scheme, other.host, other.port) and (
            theirs[: len(mine)] == mine
        )

    def url(self) -> str:
        """``scheme://host[:port]/seg/.../`` (the default port left out, a trailing slash)."""
        port = "" if DEFAULT_PORTS.get(self.scheme) == self.port else f":{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        path = "".join(f"{segment}/" for segment in self.segments)
        return f"{self.scheme}://{host}{port}/{path}"


def parse_location(url: str, *, prefix: bool = False) -> Location | None:
    """The location of an http(s)/ssh URL or an scp-like one; None for anything else
    (local paths, ``file://``, unknown schemes, no host, a bad port).

    ``prefix`` accepts a bare ``git@host:`` (a FORGES key naming every repo on a host).
    """
    scp = (_SCP_PREFIX if prefix else SCP_LIKE).match(url)
    if scp and "://" not in url:
        return Location("ssh", scp["host"].lower(), DEFAULT_PORTS["ssh"], _segments(scp["path"]))
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:  # a port that is not a number, or out of range
        return None
    return Location(scheme, parts.hostname.lower(), port, _segments(parts.path))


def _segments(path: str) -> tuple[str, ...]:
    """Path segments with dot segments resolved, as git resolves them before it connects
    (``/acme/../evil`` is ``/evil``, and must not pass for a path under ``/acme``)."""
    segments: list[str] = []
    for segment in path.split("/"):
        dots = unquote(segment)
        if dots == "..":
            if segments:
                segments.pop()
        elif segment and dots != ".":
            segments.append(segment)
    return tuple(segments)


def _decoded(segments: tuple[str, ...]) -> tuple[str, ...]:
    # %-escapes compare decoded: git sends /ac%6De as /acme
    return tuple(unquote(segment) for segment in segments)
