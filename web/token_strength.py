"""The rule a status page token must pass before `nobat serve` will start with it.

Guessing is slowed down per client (web/throttle.py), but a short or patterned token is
found in few guesses anyway, so the rule refuses what a person types rather than generates:

- at least 16 characters, each printable ASCII other than a space (it travels in an
  `Authorization` header and in a form);
- at least 8 different characters (refuses `aaaaaaaaaaaaaaaa`, `abababab…`, `passwordpassword`);
- fewer than half of its neighbouring pairs repeat a character or step along the alphabet,
  the digits or a keyboard row (refuses `abcdefghijklmnop`, `0123456789abcdef`,
  `qwertyuiopasdfgh`, `aabbccddeeffgghh`).

`openssl rand -hex 16` or `python3 -c "import secrets; print(secrets.token_urlsafe(24))"`
make tokens that pass (a 32-character hex token fails about once in 20,000 draws: draw
again).
"""

from __future__ import annotations

import itertools
import secrets

MIN_LENGTH = 16
MIN_DIFFERENT = 8
KEYBOARD_ROWS = ("`1234567890-=", "qwertyuiop[]\\", "asdfghjkl;'", "zxcvbnm,./")
_NEIGHBOURS = frozenset(
    pair for row in KEYBOARD_ROWS for a, b in itertools.pairwise(row)
    for pair in ((a, b), (b, a)))


def _step(a: str, b: str) -> bool:
    """Whether two neighbouring characters look typed rather than drawn at random."""
    a, b = a.lower(), b.lower()
    return abs(ord(a) - ord(b)) <= 1 or (a, b) in _NEIGHBOURS


def weakness(token: str) -> str | None:
    """Why `token` is too weak to guard the page, or None if it passes (the token itself
    never appears in the reason: it is a secret)."""
    if len(token) < MIN_LENGTH:
        return f"it has {len(token)} characters"
    if not all(33 <= ord(c) <= 126 for c in token):
        return "only printable ASCII characters other than a space may appear in it"
    different = len(set(token))
    if different < MIN_DIFFERENT:
        return f"it has only {different} different characters"
    steps = sum(_step(a, b) for a, b in itertools.pairwise(token))
    if 2 * steps >= len(token) - 1:
        return ("it mostly repeats characters or runs along the alphabet or the keyboard "
                "(aaaa, abcd, 4321, qwer)")
    return None


def requirement(reason: str) -> str:
    """The one-line explanation config errors carry after `web.token:`."""
    return (f"expected at least {MIN_LENGTH} random-looking characters, e.g. from "
            f"`openssl rand -hex 16`, but {reason}")


def random_token() -> str:
    """A token nobat makes (256 random bits), drawn again in the rare case it looks typed,
    so every token nobat hands out passes the rule its admin's must."""
    token = secrets.token_urlsafe(32)
    while weakness(token) is not None:
        token = secrets.token_urlsafe(32)
    return token
