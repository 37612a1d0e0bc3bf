"""The FastAGI listener: one bad client never hurts another, and every call ends cleanly."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from clinic.phones import mask
from ivr.agi_channel import AgiChannel
from ivr.agi_protocol import AgiProtocolError, AgiServerConnection, Command
from ivr.agi_session import AgiCallSession
from ivr.session import CallerHungUp

log = logging.getLogger(__name__)
Handler = Callable[[AgiCallSession], Awaitable[object]]


@dataclass
class LiveCall:
    """A call in progress, for the status page."""

    id: int
    peer: str
    script: str
    caller: str
    started: float
    step: str = "starting"


@dataclass(frozen=True)
class Limits:
    """What a single client may cost before it is dropped."""

    max_calls: int = 500
    environment_seconds: float = 5.0
    reply_seconds: float = 900.0
    environment_bytes: int = 64 * 1024
    environment_variables: int = 256


class FastAgiServer:
    """Routes each AGI URL path (agi://host/ivr -> "ivr") to a handler, one task per call."""

    def __init__(self, routes: Mapping[str, Handler], limits: Limits | None = None) -> None:
        self.routes = dict(routes)
        self.limits = limits or Limits()
        self.calls: dict[int, LiveCall] = {}
        self.rejected = 0
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_turnaround: list[Callable[[float], None]] = []
        """Told nobat's seconds from each AGI reply to its next command (the metrics)."""

    def _turnaround(self, seconds: float) -> None:
        for listener in self.on_turnaround:
            listener(seconds)

    @property
    def listening(self) -> bool:
        """Whether Asterisk can reach the IVR now (the status page's health)."""
        return self._server is not None and self._server.is_serving()

    async def start(self, host: str, port: int) -> int:
        """Listen and return the port (useful when asked for port 0)."""
        self._server = await asyncio.start_server(self._accept, host, port,
                                                  limit=self.limits.environment_bytes)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and end the calls in progress."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        codec = AgiServerConnection(self.limits.environment_bytes,
                                    self.limits.environment_variables)
        channel = AgiChannel(reader, writer, reply_timeout=self.limits.reply_seconds,
                             codec=codec, on_turnaround=self._turnaround)
        if len(self.calls) >= self.limits.max_calls:
            self.rejected += 1
            log.warning("FastAGI: %d calls in progress; refusing %s", len(self.calls), peer)
            await channel.close()
            return
        try:
            async with asyncio.timeout(self.limits.environment_seconds):
                env = await channel.environment()
        except (AgiProtocolError, TimeoutError, CallerHungUp) as exc:
            self.rejected += 1
            log.warning("FastAGI: dropped client %s: %s", peer, _why(exc))
            await channel.close()
            return
        handler = self.routes.get(env.script)
        if handler is None:
            log.error("FastAGI: no flow for AGI script %r (from %s); hanging up; known: %s",
                      env.script, peer, ", ".join(sorted(self.routes)))
            await _quietly(channel.run(Command.of("HANGUP")))
            await channel.close()
            return
        call = LiveCall(next(self._ids), peer, env.script, mask(env.callerid or ""),
                        time.monotonic())
        self.calls[call.id] = call
        try:
            await handler(AgiCallSession(channel, env))
        except CallerHungUp:
            log.info("call %d: caller hung up", call.id)
        except (AgiProtocolError, TimeoutError) as exc:
            log.warning("call %d: AGI broke off: %s", call.id, _why(exc))
        except Exception:
            log.exception("call %d: flow failed", call.id)
        finally:
            del self.calls[call.id]
            await channel.close()


async def _quietly(work: Awaitable[object]) -> None:
    try:
        await work
    except (CallerHungUp, AgiProtocolError, TimeoutError, ConnectionError):
        log.debug("peer gone while hanging up")


def _peer(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    return f"{address[0]}:{address[1]}" if address else "unknown peer"


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
