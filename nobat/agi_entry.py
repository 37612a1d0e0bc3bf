"""`nobat-agi`: classic AGI (one process per call) for setups that run AGI(nobat-agi).

Asterisk starts this process for each call with the agi_* environment on stdin. It answers
before anything heavy is imported, so the caller is never left waiting on Python's start-up,
then runs the same flows as the FastAGI server against the same store. The dialplan uses it
when the nobat server is unreachable.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from ivr.agi_channel import AgiChannel
from ivr.agi_protocol import Command

DEFAULT_CONFIG = "/etc/nobat/config.toml"


async def _stdio() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                        sys.stdout)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def run_call(config_path: Path) -> int:
    """Answer, then load nobat and run the call; the exit code tells Asterisk nothing useful."""
    channel = AgiChannel(*await _stdio())
    env = await channel.environment()
    await channel.run(Command.of("ANSWER"))
    from db.engine import Database
    from ivr.agi_session import AgiCallSession
    from ivr.session import CallerHungUp
    from nobat.config import load_config
    from nobat.ivr_wiring import build_line
    from nobat.logs import setup_logging

    config = load_config(config_path)
    setup_logging(config.server.log_level, config.server.log_format)
    database = Database.from_url(config.database.url, pool_size=1)
    try:
        line = await build_line(config, database)
        await line.answer(AgiCallSession(channel, env))
    except CallerHungUp:
        return 0
    finally:
        await database.close()
        await channel.close()
    return 0


def main() -> int:
    """Entry point of `nobat-agi`; AGI() arguments (lang=en) arrive as agi_arg_N, not here."""
    return asyncio.run(run_call(Path(os.environ.get("NOBAT_CONFIG", DEFAULT_CONFIG))))
