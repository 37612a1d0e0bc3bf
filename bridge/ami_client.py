"""nobat's AMI connection: login, keep it up, match answers to actions, fan events out.

Built on our sans-I/O codec (`bridge.ami_protocol`) rather than panoramisk's Manager, whose
defects would break exactly-once dialling and Persian text: it re-sends unanswered actions
after a reconnect (an Originate can ring twice) and decodes each TCP chunk on its own.
Here an action that is in flight when the link drops fails with `AmiDisconnected` and is
never re-sent: only the caller knows whether it is safe to try again.

    client = AmiClient("127.0.0.1", 5038, "nobat", secret, on_event=dialer.on_event)
    await client.start()
    response = await client.send(Action("Originate", Fields.of(..., Async="true")))
    response, channels = await client.send_list(Action("CoreShowChannels"))
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from bridge.ami_protocol import (
    AUTH_FAILED,
    NEED_DATA,
    SHUTTING_DOWN,
    Action,
    AmiClientConnection,
    AmiProtocolError,
    ConnectionClosed,
    Event,
    Fields,
    Response,
)
from protocol import streams

log = logging.getLogger(__name__)

EventCallback = Callable[[Event], object]
_READ_SIZE = 65536
UPTIME_SLACK_S = 1.5
"""FullyBooted's Uptime is whole seconds: two logins to one Asterisk may place its start
up to a second apart, plus the time the events took."""
_LOGOFF_TIMEOUT = 1.0
BOOT_WAIT_S = 30.0
"""How long a login waits for FullyBooted: Asterisk accepts logins while its modules still
load (capture c5b), and a session that lacks the `system` read class never gets it."""


class AmiError(Exception):
    """Base of the errors `AmiClient` raises, so callers can catch them together."""


class AmiDisconnected(AmiError):
    """The link is down, or went down before the answer came: the action may or may not
    have reached Asterisk, so nothing is re-sent automatically."""


class AmiTimeout(AmiError):
    """No answer in time; the action may still take effect in Asterisk."""


class AmiAuthFailed(AmiError):
    """Asterisk refused the credentials; retrying would only hammer it with bad logins."""


class LinkState(enum.Enum):
    """What the status page shows about the AMI link."""

    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    AUTH_FAILED = "auth_failed"


@dataclass(frozen=True, slots=True)
class AmiStatus:
    """A snapshot of the link for the status page: never holds the secret."""

    state: LinkState
    last_error: str | None
    connected_since: datetime | None


class _LinkLost(Exception):
    """One connection ended; the reason goes to status and logs."""


class _Refused(Exception):
    """Asterisk said "Authentication failed"."""


@dataclass(eq=False)
class _Pending:
    """An action awaiting its answer; a list action also gathers its item events."""

    future: asyncio.Future[tuple[Response, list[Event]]]
    listing: bool
    response: Response | None = None
    items: list[Event] = field(default_factory=list)


class AmiClient:
    """One AMI login kept alive in the background, with per-action futures keyed by ActionID."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        action_timeout: float = 10.0,
        backoff: tuple[float, float] = (0.5, 30.0),
        ping_interval: float | None = 20.0,
        boot_wait: float = BOOT_WAIT_S,
        on_event: EventCallback | None = None,
    ) -> None:
        self.host, self.port, self.username = host, port, username
        self._secret = secret
        self.action_timeout = action_timeout
        self.backoff = backoff
        self.ping_interval = ping_interval
        self.boot_wait = boot_wait
        self.ready = asyncio.Event()
        self._fully_booted = asyncio.Event()
        self._subscribers: list[EventCallback] = [on_event] if on_event else []
        self._state = LinkState.STOPPED
        self._last_error: str | None = None
        self._connected_since: datetime | None = None
        self._changed = asyncio.Event()
        self._attempted = asyncio.Event()
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._conn: AmiClientConnection | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._lost: float | None = None
        """When (monotonic) the last link that was up went down."""
        self._started: float | None = None
        """When (monotonic) Asterisk started, by the Uptime its last FullyBooted gave."""
        self.boots = 0
        """Restarts of Asterisk this client has seen: any call it had is gone."""

    def __repr__(self) -> str:
        return (f"AmiClient({self.host}:{self.port} as {self.username!r}, "
                f"{self._state.value})")

    # -- public API ----------------------------------------------------------------------

    @property
    def status(self) -> AmiStatus:
        """The link's state, last error and connection time, for the status page."""
        return AmiStatus(self._state, self._last_error, self._connected_since)

    async def start(self) -> None:
        """Start keeping the link up; returns once the first attempt succeeded or failed, so
        nobat boots even while Asterisk is down (use `wait_ready` to insist)."""
        if self._task is not None and not self._task.done():
            return
        self._closing = False
        self._attempted.clear()
        self._task = asyncio.create_task(self._run(), name=f"ami {self.host}:{self.port}")
        attempted = asyncio.ensure_future(self._attempted.wait())
        await asyncio.wait({attempted, self._task}, return_when=asyncio.FIRST_COMPLETED)
        attempted.cancel()

    async def keep(self) -> None:
        """Keep the link up until cancelled, for a supervisor: a link keeper that failed raises
        (the supervisor starts it again); a refused login stays refused, shown as the link's
        state, until nobat is restarted with the right secret."""
        await self.start()
        task = self._task
        assert task is not None
        await asyncio.wait({task})  # unlike awaiting it, a cancel of keep() leaves it running
        if self._state is LinkState.AUTH_FAILED:
            await asyncio.Event().wait()
        why = ("was cancelled" if task.cancelled()
               else f"failed: {task.exception()!r}" if task.exception() else "stopped")
        self._set_state(LinkState.CONNECTING, f"the AMI link keeper {why}")
        raise AmiDisconnected(f"the AMI link keeper {why}") from (
            None if task.cancelled() else task.exception())

    async def wait_ready(self, seconds: float) -> None:
        """Wait until logged in; raise AmiAuthFailed or AmiTimeout instead of hanging forever."""
        try:
            async with asyncio.timeout(seconds):
                while self._state is not LinkState.CONNECTED:
                    if self._state is LinkState.AUTH_FAILED:
                        raise AmiAuthFailed(self._last_error or AUTH_FAILED)
                    if self._state is LinkState.STOPPED:
                        raise AmiDisconnected("the AMI client is not started")
                    await self._changed.wait()
        except TimeoutError:
            raise AmiTimeout(f"AMI not ready after {seconds} s: {self._last_error}") from None

    async def send(self, action: Action, *, seconds: float | None = None) -> Response:
        """Send one action and return its answer; fails fast instead of queueing or re-sending.

        The action's own action_id is kept (the dialer matches OriginateResponse by it);
        without one the client assigns "nobat-<n>".
        """
        if self._state is not LinkState.CONNECTED:
            raise AmiDisconnected(f"AMI is {self._state.value}: {self._last_error}")
        response, _ = await self._request(action, listing=False, seconds=seconds)
        return response

    async def send_list(
        self, action: Action, *, seconds: float | None = None
    ) -> tuple[Response, list[Event]]:
        """Send a list action (CoreShowChannels, BridgeList, Status) and gather its items up
        to the ...Complete event, so a redial decision sees every live channel."""
        if self._state is not LinkState.CONNECTED:
            raise AmiDisconnected(f"AMI is {self._state.value}: {self._last_error}")
        return await self._request(action, listing=True, seconds=seconds)

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call `callback` with every event that is not a list item; returns an unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    async def close(self) -> None:
        """Log off politely, stop reconnecting and fail whatever is still in flight."""
        self._closing = True
        if self._state is LinkState.CONNECTED:
            with contextlib.suppress(AmiError):
                await self.send(Action("Logoff"), seconds=min(self.action_timeout, _LOGOFF_TIMEOUT))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._fail_pending("the AMI client was closed")
        if self._state is not LinkState.STOPPED:
            log.info("AMI client for %s:%d stopped", self.host, self.port)
        self._set_state(LinkState.STOPPED)

    # -- actions -------------------------------------------------------------------------

    async def _request(
        self, action: Action, *, listing: bool, seconds: float | None
    ) -> tuple[Response, list[Event]]:
        """Write the action under an ActionID and wait for its answer with a deadline."""
        writer, conn = self._writer, self._conn
        if writer is None or conn is None or writer.is_closing():
            raise AmiDisconnected(f"AMI link is down: {self._last_error}")
        action_id = action.action_id or f"nobat-{next(self._ids)}"
        if action_id in self._pending:
            raise ValueError(f"ActionID {action_id!r} is already in flight")
        pending = _Pending(asyncio.get_running_loop().create_future(), listing)
        self._pending[action_id] = pending
        limit = self.action_timeout if seconds is None else seconds
        try:
            writer.write(conn.send(replace(action, action_id=action_id)))
            async with asyncio.timeout(limit):
                return await pending.future
        except TimeoutError:
            raise AmiTimeout(f"no answer to {action.name} ({action_id}) in {limit} s") from None
        finally:
            self._pending.pop(action_id, None)

    def _fail_pending(self, reason: str) -> None:
        """Fail every action in flight: none is re-sent, since an Originate may have gone out."""
        pending, self._pending = self._pending, {}
        for item in pending.values():
            if not item.future.done():
                item.future.set_exception(AmiDisconnected(reason))

    def _on_response(self, response: Response) -> None:
        """Settle the action this response answers; a list action now waits for its items."""
        if response.message == SHUTTING_DOWN:
            raise _LinkLost(SHUTTING_DOWN)  # fails this action too: Asterisk is going away
        pending = self._pending.get(response.action_id or "")
        if pending is None or pending.future.done():
            log.debug("AMI response for no waiting action: %s", response.action_id)
        elif pending.listing and (response.fields.get("EventList") or "").lower() == "start":
            pending.response = response
        else:
            pending.future.set_result((response, []))

    def _on_event(self, evt: Event) -> None:
        """Route list items to their action and everything else to the subscribers."""
        pending = self._pending.get(evt.action_id or "")
        if pending is not None and pending.response is not None and not pending.future.done():
            if (evt.fields.get("EventList") or "").lower() == "complete":
                pending.future.set_result((pending.response, pending.items))
            else:
                pending.items.append(evt)
            return
        if evt.name == "FullyBooted":
            self._booted(evt.fields.get("Uptime") or "")
            self._fully_booted.set()
        for callback in list(self._subscribers):
            try:
                callback(evt)
            except Exception:
                log.exception("AMI event subscriber failed on %s", evt.name)
        if evt.name == "Shutdown":
            restart = "restarting" if evt.fields.get("Restart") == "True" else "stopping"
            raise _LinkLost(f"Asterisk is {restart}")

    # -- the connection ------------------------------------------------------------------

    async def _run(self) -> None:
        """Connect, log in, serve, and on loss back off with jitter; stop on bad credentials."""
        low, high = self.backoff
        delay = low
        failures = 0
        while True:
            self._set_state(LinkState.CONNECTING)
            began = time.monotonic()
            was_up = False
            try:
                await self._session()
            except _Refused as refused:
                self._set_state(LinkState.AUTH_FAILED, str(refused))
                log.error("AMI login to %s:%d as %r refused (%s); not retrying until restarted",
                          self.host, self.port, self.username, refused)
                self._attempted.set()
                return
            except _LinkLost as lost:
                reason = str(lost)
                was_up = self._connected_since is not None
            if self._closing:
                return
            if was_up:
                self._lost = time.monotonic()
                log.warning("AMI link to %s:%d lost (%s); reconnecting",
                            self.host, self.port, reason)
                failures = 0
                if time.monotonic() - began >= high:
                    delay = low
            elif failures == 0:
                log.warning("AMI at %s:%d unavailable (%s); retrying with backoff",
                            self.host, self.port, reason)
            else:
                log.debug("AMI at %s:%d still unavailable (%s)", self.host, self.port, reason)
            failures += not was_up
            self._set_state(LinkState.CONNECTING, reason)
            self._attempted.set()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, high)

    async def _session(self) -> None:
        """One connection from connect to loss; always ends by raising why it ended."""
        try:
            async with asyncio.timeout(self.action_timeout):
                reader, writer = await streams.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as error:
            raise _LinkLost(_describe(error)) from None
        self._conn, self._writer = AmiClientConnection(), writer
        self._fully_booted.clear()
        reading = asyncio.create_task(self._read(reader, writer, self._conn))
        try:
            await self._login()
            await self._until_booted(reading)
            self._set_state(LinkState.CONNECTED)
            log.info("AMI connected to %s:%d as %r", self.host, self.port, self.username)
            self._attempted.set()
            raise _LinkLost(await self._keep_alive(reading))
        finally:
            writer.close()
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            self._conn = self._writer = None
            self._fail_pending(self._last_error or "AMI connection closed")

    async def _login(self) -> None:
        """Log in; a refusal is final, anything else is an ordinary connection loss."""
        try:
            response, _ = await self._request(
                Action("Login", Fields.of(Username=self.username, Secret=self._secret)),
                listing=False, seconds=None,
            )
        except AmiError as error:
            raise _LinkLost(str(error)) from None
        if response.status.lower() == "success":
            return
        if response.message == AUTH_FAILED:
            raise _Refused(response.message)
        raise _LinkLost(response.message or f"login answered {response.status}")

    async def _until_booted(self, reading: asyncio.Task[str]) -> None:
        """Wait for FullyBooted, so nothing is sent to an Asterisk still loading its modules
        and a restart is known (`boots`) before anyone asks what survived it."""
        booted = asyncio.ensure_future(self._fully_booted.wait())
        try:
            done, _ = await asyncio.wait({reading, booted}, timeout=self.boot_wait,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            booted.cancel()
        if reading in done:
            raise _LinkLost(reading.result())
        if not done:
            log.warning("AMI at %s:%d sent no FullyBooted in %.0f s after login; going on "
                        "(does manager.conf give %r read=system?)", self.host, self.port,
                        self.boot_wait, self.username)

    async def _keep_alive(self, reading: asyncio.Task[str]) -> str:
        """Ping when idle so a half-dead socket (seen after a restart) is noticed; returns
        the reason the link ended."""
        while True:
            done, _ = await asyncio.wait({reading}, timeout=self.ping_interval)
            if done:
                return reading.result()
            try:
                await self._request(Action("Ping"), listing=False, seconds=None)
            except AmiTimeout:
                return "no answer to a keepalive Ping"
            except AmiDisconnected:
                return await reading

    async def _read(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        conn: AmiClientConnection,
    ) -> str:
        """Frame bytes into messages and dispatch them until the link ends; returns why."""
        try:
            while True:
                conn.receive_data(await reader.read(_READ_SIZE))
                while (message := conn.next_event()) is not NEED_DATA:
                    if isinstance(message, ConnectionClosed):
                        raise _LinkLost("connection closed by Asterisk")
                    if isinstance(message, Response):
                        self._on_response(message)
                    elif isinstance(message, Event):
                        self._on_event(message)
        except _LinkLost as lost:
            reason = str(lost)
        except (OSError, AmiProtocolError) as error:
            reason = _describe(error)
        # Close first, so no action can be written after its waiters were failed.
        writer.close()
        self._last_error = reason
        self._fail_pending(reason)
        return reason

    def _booted(self, uptime: str) -> None:
        """FullyBooted at a login says how long Asterisk has run, so when it started: later
        than the start the last login saw, after the link went down, means it crashed or
        was restarted, and took every call with it."""
        lost, self._lost = self._lost, None
        if not uptime.isdigit():
            return
        started, self._started = self._started, time.monotonic() - int(uptime)
        if lost is not None and started is not None and self._started > started + UPTIME_SLACK_S:
            self.boots += 1
            log.warning("Asterisk at %s:%d started %s s ago, after the AMI link went down: "
                        "calls it had are gone", self.host, self.port, uptime)

    def _set_state(self, state: LinkState, error: str | None = None) -> None:
        """Change state, wake `wait_ready` callers and keep `ready` in step."""
        if error is not None:
            self._last_error = error
        if state is LinkState.CONNECTED:
            self._connected_since = datetime.now(UTC)
            self.ready.set()
        else:
            self._connected_since = None
            self.ready.clear()
        self._state = state
        self._changed.set()
        self._changed = asyncio.Event()


def _describe(error: BaseException) -> str:
    """A short reason for logs and the status page: errno text or the exception's name."""
    if isinstance(error, TimeoutError):
        return "connection timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
