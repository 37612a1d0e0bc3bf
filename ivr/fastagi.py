"""The FastAGI listener: only Asterisk gets in, one bad client never hurts another, and every
call ends cleanly."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from ivr.agi_channel import AgiChannel
from ivr.agi_protocol import AgiProtocolError, AgiServerConnection, Command
from ivr.agi_session import AgiCallSession
from ivr.fastagi_gate import (
    LOOPBACK,
    Network,
    Refusal,
    RefusalLog,
    networks,
    peer_allowed,
    secret_matches,
)
from ivr.session import CallerHungUp
from protocol import streams
from protocol.listening import Listener

log = logging.getLogger(__name__)
Handler = Callable[[AgiCallSession], Awaitable[object]]


@dataclass(frozen=True)
class Limits:
    """What a single client may cost before it is dropped.

    `max_connections` counts every open connection, calls and anything else alike; when it
    is reached, the oldest connection that has not yet proved itself makes room (a real
    Asterisk sends its environment at once, so only a silent or slow client is dropped).
    Asterisk answers each command within the prompt or wait it asked for: a reply slower
    than `reply_seconds` means a dead peer.
    """

    max_connections: int = 200
    environment_seconds: float = 2.0
    reply_seconds: float = 120.0
    environment_bytes: int = 64 * 1024
    environment_variables: int = 256


@dataclass(frozen=True)
class Access:
    """The shared secret every request must carry, and the peers that may connect."""

    secret: str
    allowed: tuple[Network, ...] = networks(LOOPBACK)


@dataclass(eq=False)
class _Connection:
    """One open socket, until it proves itself with the secret."""

    writer: asyncio.StreamWriter
    proved: bool = False
    evicted: bool = False


class FastAgiServer:
    """Routes each AGI URL path (agi://host/ivr -> "ivr") to a handler, one task per call."""

    def __init__(self, routes: Mapping[str, Handler], access: Access,
                 limits: Limits | None = None) -> None:
        self.routes = dict(routes)
        self.access = access
        self.limits = limits or Limits()
        self.calls: set[int] = set()
        """The calls in progress, by the number their log lines carry."""
        self.refusals = RefusalLog()
        self._ids = itertools.count(1)
        self.listener: Listener | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._open: list[_Connection] = []
        """Open connections, oldest first."""
        self.on_turnaround: list[Callable[[float], None]] = []
        """Told nobat's seconds from each AGI reply to its next command (the metrics)."""

    @property
    def rejected(self) -> int:
        """Connections that got no service, whatever the reason."""
        return sum(self.refusals.counts.values())

    def _turnaround(self, seconds: float) -> None:
        for listener in self.on_turnaround:
            listener(seconds)

    @property
    def listening(self) -> bool:
        """Whether Asterisk can reach the IVR now (the status page's health)."""
        return self.listener is not None and self.listener.listening

    async def start(self, host: str, port: int) -> int:
        """Listen and return the port (useful when asked for port 0)."""

        async def opener(host: str, port: int) -> asyncio.Server:
            return await streams.start_server(self._accept, host, port,
                                              limit=self.limits.environment_bytes)

        self.listener = Listener("the FastAGI listener", opener, host, port)
        [(_, bound), *_] = await self.listener.open()
        return bound

    async def serve(self) -> None:
        """Accept calls until cancelled, for the supervisor (Listener.serve)."""
        if self.listener is None:
            raise RuntimeError("FastAgiServer.serve() before start()")
        await self.listener.serve()

    async def close(self) -> None:
        """Stop listening and end the calls in progress."""
        if self.listener is not None:
            self.listener.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address, peer = _peer(writer)
        if not peer_allowed(address, self.access.allowed):
            self.refusals.note(Refusal.PEER, peer, "not in fastagi.allow")
            writer.transport.abort()
            return
        if len(self._open) >= self.limits.max_connections and not self._evict_silent():
            self.refusals.note(Refusal.FULL, peer, f"{len(self._open)} open")
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        connection = _Connection(writer)
        self._tasks.add(task)
        self._open.append(connection)
        try:
            await self._serve(reader, connection, peer)
        finally:
            self._open.remove(connection)
            self._tasks.discard(task)

    def _evict_silent(self) -> bool:
        """Drop the oldest connection that has not proved itself; False if there is none."""
        for connection in self._open:
            if not connection.proved and not connection.evicted:
                connection.evicted = True
                connection.writer.transport.abort()
                return True
        return False

    async def _serve(self, reader: asyncio.StreamReader, connection: _Connection,
                     peer: str) -> None:
        codec = AgiServerConnection(self.limits.environment_bytes,
                                    self.limits.environment_variables)
        channel = AgiChannel(reader, connection.writer, reply_timeout=self.limits.reply_seconds,
                             codec=codec, on_turnaround=self._turnaround)
        try:
            async with asyncio.timeout(self.limits.environment_seconds):
                env = await channel.environment()
        except (AgiProtocolError, TimeoutError, CallerHungUp) as exc:
            reason = Refusal.EVICTED if connection.evicted else Refusal.BROKEN
            self.refusals.note(reason, peer, _why(exc))
            await channel.close()
            return
        if not self.access.secret or not secret_matches(env, self.access.secret):
            reason = Refusal.SECRET if self.access.secret else Refusal.NO_SECRET_SET
            self.refusals.note(reason, peer, f"AGI script {env.script!r}")
            await channel.close()
            return
        connection.proved = True
        handler = self.routes.get(env.script)
        if handler is None:
            self.refusals.note(Refusal.SCRIPT, peer, f"{env.script!r}; known: "
                               + ", ".join(sorted(self.routes)))
            await _quietly(channel.run(Command.of("HANGUP")), self.limits.environment_seconds)
            await channel.close()
            return
        call = next(self._ids)
        self.calls.add(call)
        try:
            await handler(AgiCallSession(channel, env))
        except CallerHungUp:
            log.info("call %d: caller hung up", call)
        except (AgiProtocolError, TimeoutError) as exc:
            log.warning("call %d: AGI broke off: %s", call, _why(exc))
        except Exception:
            log.exception("call %d: flow failed", call)
        finally:
            self.calls.discard(call)
            await channel.close()


async def _quietly(work: Awaitable[object], seconds: float) -> None:
    """Wait briefly for a parting command's reply; a peer that is gone or silent is fine."""
    try:
        async with asyncio.timeout(seconds):
            await work
    except (CallerHungUp, AgiProtocolError, TimeoutError, ConnectionError):
        log.debug("peer gone while hanging up")


def _peer(writer: asyncio.StreamWriter) -> tuple[str | None, str]:
    """The peer's address, and how logs name it."""
    address = writer.get_extra_info("peername")
    if not address:
        return None, "unknown peer"
    return address[0], f"{address[0]}:{address[1]}"


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
