"""Who may use the FastAGI port: allowed peers that pass the dialplan's shared secret.

Anything that reaches the port could otherwise play Asterisk with any caller id: hear a
patient's bookings, book, cancel. So a peer must be on the allow-list, and every request
must carry the secret from the dialplan's `NOBAT_FASTAGI_SECRET` as the AGI argument
`key=...`, compared in constant time before nobat sends a single command.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ivr.agi_protocol import AgiEnvironment

log = logging.getLogger(__name__)
SECRET_ARGUMENT = "key"
"""AGI(agi://host/ivr,...,key=${NOBAT_FASTAGI_SECRET}): the argument that carries it."""
LOOPBACK = ("127.0.0.0/8", "::1/128")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refusal(enum.Enum):
    """Why a connection got no service; each is counted for /metrics and the page."""

    PEER = "peer not allowed"
    SECRET = "no or wrong secret"
    NO_SECRET_SET = "fastagi.secret is not set"
    FULL = "connections at the cap"
    EVICTED = "dropped for a newer connection while still silent"
    BROKEN = "broken or slow environment"
    SCRIPT = "unknown AGI script"


def networks(allowed: Iterable[str]) -> tuple[Network, ...]:
    """Parse addresses and networks ("127.0.0.1", "10.0.0.0/24"); a bad one raises ValueError."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in allowed)


def peer_allowed(address: str | None, allowed: tuple[Network, ...]) -> bool:
    """Whether a peer address is inside one of the allowed networks."""
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in allowed)


def given_secret(env: AgiEnvironment) -> str:
    """The secret an AGI request carries in its `key=` argument, or ""."""
    for arg in env.args:
        name, sep, value = arg.partition("=")
        if sep and name.strip() == SECRET_ARGUMENT:
            return value.strip()
    return ""


def secret_matches(env: AgiEnvironment, secret: str) -> bool:
    """Constant-time check of the request's secret; with no secret set nothing matches."""
    given = given_secret(env)
    return bool(secret) and hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                                secret.encode())


@dataclass
class RefusalLog:
    """Counts refusals and logs the first of each kind, then at most one line a minute,
    so a flood of forged requests cannot flood the log too."""

    interval: float = 60.0
    clock: Callable[[], float] = time.monotonic
    counts: dict[Refusal, int] = field(default_factory=lambda: dict.fromkeys(Refusal, 0))
    _last: dict[Refusal, float] = field(default_factory=dict)
    _unlogged: dict[Refusal, int] = field(default_factory=dict)

    def note(self, reason: Refusal, peer: str, detail: str = "") -> None:
        """Count one refusal; log it unless this kind was logged within the interval."""
        self.counts[reason] += 1
        now = self.clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
            return
        self._last[reason] = now
        more = self._unlogged.pop(reason, 0)
        since = f" ({more} more like it since the last such line)" if more else ""
        log.warning("FastAGI: refused %s: %s%s%s", peer, reason.value,
                    f": {detail}" if detail else "", since)
