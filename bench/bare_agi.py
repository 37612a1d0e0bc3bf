"""The floors the IVR is measured against: AGI handlers that only send N commands.

    python -m bench.bare_agi fastagi N   listen on a free port (printed), N commands a call
    python -m bench.bare_agi classic N   one call on stdin/stdout, as AGI() runs a program
"""

from __future__ import annotations

import asyncio
import sys

from ivr.agi_channel import AgiChannel, stdio_streams
from ivr.agi_protocol import Command
from ivr.session import CallerHungUp


async def handle(channel: AgiChannel, commands: int) -> None:
    """Read the environment, answer, then send `commands` STREAM FILEs and read their
    replies: the least any IVR must do, since prompts reach no one before the answer."""
    await channel.environment()
    try:
        await channel.run(Command.of("ANSWER"))
        for _ in range(commands):
            await channel.run(Command.of("STREAM FILE", "/bench/prompt", "0123456789*#"))
    except CallerHungUp:
        pass
    await channel.close()


async def fastagi(commands: int) -> None:
    """A bare FastAGI server: no flows, no database."""
    server = await asyncio.start_server(
        lambda r, w: handle(AgiChannel(r, w), commands), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


async def classic(commands: int) -> None:
    """A bare classic AGI program: stdin and stdout."""
    await handle(AgiChannel(*await stdio_streams()), commands)


if __name__ == "__main__":
    kind, count = sys.argv[1], int(sys.argv[2])
    asyncio.run(fastagi(count) if kind == "fastagi" else classic(count))
