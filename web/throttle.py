"""Wrong tokens slow their sender down: after a few, each one locks the client out for twice
as long as the last, up to a bound. A client is its address (an IPv6 client its /64, which
one machine can fill with addresses). Each instance counts its own clients, in memory."""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

FREE_TRIES = 3
"""Wrong tokens that cost nothing (typos); each one after them locks its sender out."""
FORGET_AFTER_S = 3600.0
"""A client whose last wrong token is this old starts afresh."""
MAX_CLIENTS = 10_000
"""Clients remembered at once; beyond it the one quiet longest is forgotten."""


def client_of(remote: str | None) -> str:
    """Who is counted for a request: its peer address, an IPv6 one by its /64."""
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or "unknown"
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@dataclass
class _Record:
    failures: int
    last: float
    locked_until: float


class LoginThrottle:
    """Counts wrong tokens per client and says how long each must wait."""

    def __init__(self, max_lock_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_lock_s, self.clock = max_lock_s, clock
        self._clients: dict[str, _Record] = {}

    def wait(self, client: str) -> int:
        """Whole seconds `client` must still wait before a token is looked at (0: none)."""
        record = self._clients.get(client)
        left = 0.0 if record is None else record.locked_until - self.clock()
        return math.ceil(left) if left > 0 else 0

    def failed(self, client: str) -> int:
        """A wrong token from `client`: past the free tries, each locks it out for 1 s,
        2 s, 4 s, ... up to the bound. Returns the wrong tokens counted so far."""
        now = self.clock()
        record = self._clients.pop(client, None)
        if record is None or now - record.last > FORGET_AFTER_S:
            record = _Record(0, now, now)
        record.failures += 1
        record.last = now
        if record.failures > FREE_TRIES:
            record.locked_until = now + min(2.0 ** (record.failures - FREE_TRIES - 1),
                                            self.max_lock_s)
        self._clients[client] = record  # last in the dict: the most recent
        while len(self._clients) > MAX_CLIENTS:
            del self._clients[next(iter(self._clients))]
        return record.failures

    def forgive(self, client: str) -> None:
        """Take back the last wrong token counted for `client`: it was a practice's right
        one, counted before the store said so. Any lock it set stays unless the client is
        back within its free tries, so a practice's token never buys another token guesses."""
        record = self._clients.get(client)
        if record is not None:
            record.failures -= 1
            if record.failures <= FREE_TRIES:
                record.locked_until = min(record.locked_until, self.clock())

    def __len__(self) -> int:
        """How many clients are remembered."""
        return len(self._clients)

    def succeeded(self, client: str) -> None:
        """The admin's token through the login form: `client`'s count starts again."""
        self._clients.pop(client, None)
