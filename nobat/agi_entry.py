"""`nobat-agi`: classic AGI (one process per call) for setups that run AGI(nobat-agi).

Asterisk starts this process for each call with the agi_* environment on stdin. It reads the
environment and answers with nothing but `os` imported, so the caller hears the line open
within a few tens of milliseconds; only then does it import asyncio and nobat and run the same
flows as the FastAGI server against the same store. The dialplan uses it when the nobat
server is unreachable. The configuration comes from $NOBAT_CONFIG; AGI() arguments
(lang=en) reach the flow as agi_arg_N.
"""

from __future__ import annotations

import os
import signal
import sys

DEFAULT_CONFIG = "/etc/nobat/config.toml"
ANSWER = b"ANSWER\n"
ENVIRONMENT_LIMIT = 64 * 1024
_hangups: list[int] = []
"""SIGHUPs that came before the call's event loop took the signal over."""


def read_environment(fd: int = 0) -> bytes:
    """Read up to the blank line that ends the environment, straight from the descriptor."""
    data = b""
    while not (data.endswith(b"\n\n") or data == b"\n") and len(data) < ENVIRONMENT_LIMIT:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


def main() -> int:
    """Entry point of `nobat-agi`."""
    # Asterisk tells a classic AGI process of a hang-up by SIGHUP, whose default kills it:
    # the flow must see the hang-up instead, and finish what it was doing.
    signal.signal(signal.SIGHUP, lambda signum, _frame: _hangups.append(signum))
    environment = read_environment()
    os.write(sys.stdout.fileno(), ANSWER)
    import asyncio
    from pathlib import Path

    from nobat.agi_call import run_call

    config = Path(os.environ.get("NOBAT_CONFIG", DEFAULT_CONFIG))
    return asyncio.run(run_call(environment, ANSWER, config, lambda: bool(_hangups)))
