"""One classic AGI call, once `nobat-agi` has answered: the same flows and store as FastAGI."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from db.engine import Database
from ivr.agi_channel import AgiChannel, stdio_streams
from ivr.agi_protocol import Command
from ivr.agi_session import AgiCallSession
from ivr.session import CallerHungUp
from nobat.config import load_config
from nobat.ivr_wiring import build_line
from nobat.logs import setup_logging


async def run_call(environment: bytes, answer: bytes, config_path: Path,
                   hung_up_already: Callable[[], bool] = lambda: False) -> int:
    """Run the flow for a call whose environment was read and answer written already; a
    SIGHUP (Asterisk's word that the caller hung up) ends it as a hang-up does."""
    channel = AgiChannel(*await stdio_streams())
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, channel.caller_hung_up)
    if hung_up_already():
        channel.caller_hung_up()
    channel.codec.receive_data(environment)
    env = await channel.environment()
    await channel.run(Command.parse(answer.decode().strip()), written=True)
    config = load_config(config_path)
    # stdout carries AGI commands: a log line there would be a 510 and shift every reply.
    setup_logging(config.server.log_level, config.server.log_format, stream=sys.stderr)
    database = Database.from_url(config.database.url, pool_size=2)
    line = None
    try:
        line = await build_line(config, database)
        await line.answer(AgiCallSession(channel, env, answered=True))
    except CallerHungUp:
        return 0
    finally:
        if line is not None:
            await line.call_log.close()
        await database.close()
        await channel.close()
    return 0
