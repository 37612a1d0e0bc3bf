"""What the composition root tells the page about itself: its token, the names it answers
to, where browsers reach it, and how long its sessions and login locks last."""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
"""The names a page on loopback is reached by; any other Host is refused (DNS rebinding)."""
COOKIE = "nobat_session"
SECURE_COOKIE = "__Host-nobat_session"
"""Behind TLS: the browser keeps it only if it came Secure, with Path=/ and no Domain."""


def split_host(value: str) -> tuple[str, str | None] | None:
    """A Host header (or an allowed name) as (name, port or None); None if malformed."""
    text = value.strip().lower()
    if text.startswith("["):
        name, bracket, rest = text.partition("]")
        if not bracket:
            return None
        name += "]"
    else:
        name, colon, port = text.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and rest[1:].isascii()):
        return None
    return (name, rest[1:] or None) if name else None


class OneTimeLogin:
    """A code that opens one session, once, within `valid` of nobat starting: the link a
    first run logs, so a newcomer need not copy the token out of its file."""

    def __init__(self, valid: dt.timedelta = dt.timedelta(minutes=15)) -> None:
        self.code = secrets.token_urlsafe(24)
        self._until = time.monotonic() + valid.total_seconds()
        self.used = False

    def take(self, given: str) -> bool:
        """Whether `given` is the code, still unused and in time; it is spent if so."""
        right = hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                    self.code.encode())
        if not right or self.used or time.monotonic() > self._until:
            return False
        self.used = True
        return True


@dataclass(frozen=True)
class PageSettings:
    """The page's own settings (web.* in config.toml), with the shipped defaults."""

    token: str = ""
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES
    public_url: str = ""
    """Where browsers reach the page, as scheme://host[:port]; "" = as the request says."""
    session_idle: dt.timedelta = dt.timedelta(minutes=30)
    session_max: dt.timedelta = dt.timedelta(hours=12)
    login_lock_max: dt.timedelta = dt.timedelta(minutes=5)
    token_made: bool = False
    """The token is the one a first run made and keeps in web-token (the login page says)."""
    once: OneTimeLogin | None = None

    @property
    def secure(self) -> bool:
        """Served behind TLS: the cookie is Secure and __Host- prefixed."""
        return self.public_url.startswith("https://")

    @property
    def cookie(self) -> str:
        """The session cookie's name."""
        return SECURE_COOKIE if self.secure else COOKIE

    def allows_host(self, host: str | None) -> bool:
        """Whether a request's Host is one of the page's names (an allowed name without a
        port matches any port; the public URL's name is always allowed)."""
        asked = split_host(host or "")
        if asked is None:
            return False
        names = (*self.allowed_hosts, urlsplit(self.public_url).netloc)
        for allowed in filter(None, map(split_host, filter(None, names))):
            if allowed[0] == asked[0] and allowed[1] in (None, asked[1]):
                return True
        return False


SETTINGS = web.AppKey("settings", PageSettings)
