"""Keep credentials out of records, messages, transcripts and logs.

One layer, one compiled pattern, masks with ``***``:

- the exact values of every configured secret (``register_secret``; ``Settings`` registers
  its tokens and passwords when it is built), longest first;
- known token shapes: GitHub (``ghp_``, ``gho_``, ``ghu_``, ``ghs_``, ``ghr_``,
  ``github_pat_``), GitLab (``glpat-``), Anthropic (``sk-ant-``), Slack (``xoxb-``, ``xoxp-``
  …), AWS access key ids (``AKIA…``, ``ASIA…``) and our own API keys (``agk_…``);
- the value of ``Authorization:`` / ``Proxy-Authorization:`` / ``PRIVATE-TOKEN:`` headers and
  of ``Basic …`` / ``Bearer …`` credentials;
- the userinfo of URLs (``https://***@host``; an ssh user name without a password stays).
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "has_credentials",
    "redact_text",
    "redact_url",
    "register_secret",
]

MASK = "***"
# shorter values would mask ordinary words wherever they occur
MIN_SECRET_LENGTH = 6

# no letter or digit right before a token, header or URL: "xghp_..." is not a GitHub token,
# "id=ghp_..." is
_START = r"(?<![A-Za-z0-9])"
_TOKEN_SHAPES = [
    r"gh[pousr]_[A-Za-z0-9]{16,}",
    r"github_pat_[A-Za-z0-9_]{20,}",
    r"glpat-[A-Za-z0-9_-]{16,}",
    r"sk-ant-[A-Za-z0-9_-]{16,}",
    r"xox[abeoprs]-[A-Za-z0-9-]{10,}",
    r"(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])",
    r"agk_[0-9a-f]{12}_[A-Za-z0-9_-]+",
]
# credential characters: base64, base64url, JWT dots, a GitHub token's underscores
_CRED = r"[A-Za-z0-9+/=._~-]"
# after Basic/Bearer: 8+ credential characters with a digit or a capital past the first
# one, so "basic setup" or "Bearer tokens expire" stay as they are
_SCHEME_VALUE = rf"(?={_CRED}{{8}})(?={_CRED}+?[0-9A-Z]){_CRED}+"
_STRUCTURAL = [
    # a header: its value, whatever the scheme (GitHub's "token x" and "Digest ..." too)
    r"(?P<header>(?i:\b(?:proxy-)?authorization|\bprivate-token)\s*[:=]\s*)"
    r"(?:(?i:basic|bearer|token|digest|negotiate)\s+)?[^\s'\"]+",
    rf"(?P<scheme>\b(?i:basic|bearer)\s+){_SCHEME_VALUE}",
    r"(?P<url>(?P<url_scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://)(?P<userinfo>[^/@\s]+)@",
]

_lock = threading.Lock()
_secrets: set[str] = set()


def _compile(secrets: set[str]) -> re.Pattern[str]:
    literals = [re.escape(value) for value in sorted(secrets, key=len, reverse=True)]
    # every shape starts a word: one look-behind rejects the middle of words at once, which
    # is most positions of a transcript line (several times faster than per alternative)
    shapes = _START + "(?:" + "|".join(_TOKEN_SHAPES + _STRUCTURAL) + ")"
    return re.compile("|".join([*literals, shapes]))


_pattern = _compile(_secrets)


def register_secret(value: str | None) -> None:
    """Masks ``value`` wherever ``redact_text`` finds it from now on, in this process.

    Values shorter than ``MIN_SECRET_LENGTH`` are ignored: masking them would garble text.
    """
    global _pattern
    if value is None or len(value) < MIN_SECRET_LENGTH or value in _secrets:
        return
    with _lock:
        if value not in _secrets:
            _secrets.add(value)
            _pattern = _compile(_secrets)


def _replace(match: re.Match[str]) -> str:
    if match["url"]:
        userinfo = match["userinfo"]
        if match["url_scheme"].lower() not in ("http", "https") and ":" not in userinfo:
            # ssh://git@host: a user name, no secret (unless it is a known one)
            return f"{match['url']}{redact_text(userinfo)}@"
        return f"{match['url']}{MASK}@"
    return f"{match['header'] or match['scheme'] or ''}{MASK}"


def redact_text(text: str) -> str:
    """``text`` with every secret this layer knows masked (see the module docstring)."""
    return _pattern.sub(_replace, text)


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
