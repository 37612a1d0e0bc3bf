"""A fake Asterisk 22 speaking AMI on loopback, so nobat's dialer is tested against real bytes.

    async with FakeAsterisk(phones=[Phone("doctor", "15559990001")], speed=0.01) as pbx:
        ...connect to 127.0.0.1:pbx.port, Login, Originate Local/doctor@fake-phones...
        assert pbx.leaks() == [] and pbx.unimplemented == []

Framing comes from bridge.ami_protocol; calls, bridges and event shapes from channels.py.
Phones are scripted with tests/fakepbx/script.py; every delay is multiplied by `speed`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import ClassVar

from bridge.ami_protocol import (
    AUTH_ACCEPTED,
    AUTH_FAILED,
    BRIDGES_FOLLOW,
    CHANNEL_HUNGUP,
    CHANNEL_NOT_SPECIFIED,
    CHANNELS_BRIDGED,
    CHANNELS_FOLLOW,
    GOODBYE,
    NEED_DATA,
    NO_SUCH_CHANNEL,
    ORIGINATE_FAILED,
    ORIGINATE_QUEUED,
    PERMISSION_DENIED,
    SHUTTING_DOWN,
    Action,
    AmiProtocolError,
    AmiServerConnection,
    Banner,
    ConnectionClosed,
    Event,
    Response,
    unknown_action_message,
)
from tests.fakepbx.channels import REASON_ANSWERED, Switch, event, event_class
from tests.fakepbx.script import Phone

ALL_CLASSES = frozenset(
    "system call log verbose command agent user config dtmf reporting cdr dialplan "
    "originate agi cc aoc test security message".split()
)
DEFAULT_USERS = {"ctrl": ("ctrlsecret", "all", "all")}
"""name -> (secret, read classes, write classes), as in manager.conf."""


def nobat_user(secret: str) -> dict[str, tuple[str, str, str]]:
    """nobat's AMI user with the read and write classes asterisk/manager.conf gives it."""
    return {"nobat": (secret, "call,system,user", "call,originate,reporting")}

UP_BEFORE = 3600.0
"""Seconds Asterisk has run when a test starts the fake: FullyBooted's Uptime counts from
there, and from 0 after a restart."""
AUTH_DELAY = 1.0  # c1/c2: "Authentication failed" comes about 1.0 s after Login
SHUTDOWN_CLOSE_DELAY = 0.01  # c5: the socket closes about 10 ms after Event: Shutdown
RESTART_DOWN = 0.27  # c5/c6: ECONNREFUSED until the banner is back, 0.27 s after the trigger
STATUS_FOLLOWS = "Channel status will follow"  # not captured: Asterisk 22's manager.c text
_TRUE = frozenset({"true", "yes", "1", "on", "y", "t"})

# Write classes that let a login use an action (any one suffices), as Asterisk 22 registers
# them (main/manager.c, main/features.c; BridgeList and Ping need none).
_WRITE_CLASS = {
    "originate": frozenset({"originate"}),
    "bridge": frozenset({"call"}),
    "hangup": frozenset({"call", "system"}),
    "redirect": frozenset({"call"}),
    "setvar": frozenset({"call"}),
    "getvar": frozenset({"call", "reporting"}),
    "status": frozenset({"call", "system", "reporting"}),
    "coreshowchannels": frozenset({"system", "reporting"}),
}


def parse_classes(text: str | None) -> frozenset[str]:
    """Read "all", "on", "off", "" or "call,user" as a set of AMI event classes."""
    words = {word.strip().lower() for word in (text or "").split(",") if word.strip()}
    if words & {"all", "on", "yes", "true"}:
        return ALL_CLASSES
    return frozenset(words & ALL_CLASSES)


def _now_tv() -> str:
    """Asterisk's EventTV format, e.g. 2026-11-25T23:19:14.298+0000."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000"


@dataclass(eq=False)
class Session:
    """One AMI connection: what it received and sent, for tests to inspect afterwards."""

    number: int
    writer: asyncio.StreamWriter
    conn: AmiServerConnection = field(default_factory=AmiServerConnection)
    username: str | None = None
    readable: frozenset[str] = frozenset()
    writable: frozenset[str] = frozenset()
    mask: frozenset[str] = ALL_CLASSES
    actions: list[Action] = field(default_factory=list)
    sent: list[Response | Event] = field(default_factory=list)

    def send(self, message: Banner | Response | Event) -> None:
        """Write one message now, unless the socket is already going away."""
        if self.writer.is_closing():
            return
        self.writer.write(self.conn.send(message))
        if not isinstance(message, Banner):
            self.sent.append(message)

    def deliver(self, evt: Event) -> None:
        """Send an unsolicited event if this login reads its class and has not masked it."""
        cls = event_class(evt)
        if self.username is not None and cls in self.readable and cls in self.mask:
            self.send(evt)

    def address(self, which: str) -> str:
        """Asterisk's "IPV4/TCP/127.0.0.1/5038" notation for the local or remote end."""
        host, port = self.writer.get_extra_info("sockname" if which == "local" else "peername")
        return f"IPV4/TCP/{host}/{port}"


class FakeAsterisk(Switch):
    """An AMI server on 127.0.0.1 that answers as Asterisk 22 did in the captures."""

    def __init__(
        self,
        users: Mapping[str, tuple[str, str, str]] = DEFAULT_USERS,
        phones: Iterable[Phone] = (),
        speed: float = 1.0,
        globals_: Mapping[str, str] | None = None,
        hold_seconds: float = 40.0,
        trust_id_inbound: bool = True,
        fastagi: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(phones, speed, hold_seconds, trust_id_inbound, fastagi)
        self.users = dict(users)
        self.globals = dict(globals_ or {})
        self.shutting_down = False
        self.port = 0
        self.sessions: list[Session] = []
        self.unimplemented: list[Action] = []
        self._server: asyncio.Server | None = None
        self._live: dict[Session, asyncio.Task[None]] = {}
        self._session_counter = itertools.count(1)
        self._booted = 0.0
        self._booting: asyncio.Task[None] | None = None
        """Loading modules after a restart: logins are taken, FullyBooted waits for it."""

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> FakeAsterisk:
        await self._listen()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop_listening()
        await self.stop()

    async def _listen(self, boot_seconds: float = 0.0) -> None:
        """Take connections; the first start finds Asterisk long up (UP_BEFORE), as nobat
        usually does, a restart with an uptime from zero."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._booted = time.monotonic() - (UP_BEFORE if self._booted == 0.0 else 0.0)
        if boot_seconds > 0:
            self._booting = asyncio.create_task(self._boot(boot_seconds))

    async def _boot(self, seconds: float) -> None:
        """Finish loading modules: every session logged in meanwhile gets FullyBooted now,
        its fields in the order c5b recorded for a live one."""
        await self.sleep(seconds)
        self._booting = None
        uptime = str(int(time.monotonic() - self._booted))
        self._publish(event("FullyBooted", extra={"Status": "Fully Booted", "Uptime": uptime,
                                                  "LastReload": uptime}))

    async def _stop_listening(self) -> None:
        """Stop accepting (connects now get ECONNREFUSED) and close every connection."""
        if self._booting is not None:
            self._booting.cancel()
            self._booting = None
        if self._server is not None:
            self._server.close()
        await self._close_all()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def drop(self) -> None:
        """Close every AMI connection with a plain EOF, as a network cut or SIGKILL shows it."""
        await self._close_all()

    async def cut(self, seconds: float) -> None:
        """The network between nobat and AMI fails for `seconds` (scripted): connections end,
        new ones are refused; calls go on and their events are lost to nobat."""
        await self._stop_listening()
        await self.sleep(seconds)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def restart(self, clean: bool = True, boot_seconds: float = 0.0) -> None:
        """Restart as "core restart now" (clean) or SIGKILL plus a start: refuse, then listen,
        taking logins `boot_seconds` (scripted) before FullyBooted."""
        if clean:
            self.shut_down()
            self.emit(event("Shutdown", extra={"Shutdown": "Cleanly", "Restart": "True"}))
            await self.sleep(SHUTDOWN_CLOSE_DELAY)
        await self._stop_listening()
        self.vanish()
        await self.sleep(RESTART_DOWN)
        await self._listen(boot_seconds)

    async def _close_all(self) -> None:
        tasks = list(self._live.values())
        for session in list(self._live):
            session.writer.close()  # the session's read then ends with EOF
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- observability -----------------------------------------------------------------

    def assert_all_implemented(self) -> None:
        """Fail the test if nobat sent an action this fake (and so the test) does not cover."""
        names = [action.name for action in self.unimplemented]
        assert not names, f"the fake PBX does not implement {names}"

    # -- events ------------------------------------------------------------------------

    def _publish(self, evt: Event) -> None:
        """Send an event to every logged-in session whose read classes and mask allow it."""
        for session in list(self._live):
            session.deliver(evt)

    # -- connections -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(next(self._session_counter), writer)
        self.sessions.append(session)
        current = asyncio.current_task()
        assert current is not None
        self._live[session] = current
        session.send(Banner())
        try:
            while await self._pump(session, await reader.read(65536)):
                pass
        except (ConnectionError, AmiProtocolError):
            pass
        finally:
            self._live.pop(session, None)
            writer.close()

    async def _pump(self, session: Session, data: bytes) -> bool:
        """Feed one read to the codec and handle each whole action; False ends the session."""
        session.conn.receive_data(data)
        while (action := session.conn.next_event()) is not NEED_DATA:
            if isinstance(action, ConnectionClosed) or not isinstance(action, Action):
                return False
            session.actions.append(action)
            if not await self._handle(session, action):
                await session.writer.drain()
                return False
        return bool(data)

    async def _handle(self, session: Session, action: Action) -> bool:
        """Answer one action; False means Asterisk closes the connection after it."""
        name = action.name.lower()
        if self.shutting_down:
            session.send(Response.answer(action, "Error", ("Message", SHUTTING_DOWN)))
            return True
        if name == "login":
            return await self._login(session, action)
        if session.username is None or not self._may(session, name):
            session.send(Response.answer(action, "Error", ("Message", PERMISSION_DENIED)))
            return True
        handler = self._handlers.get(name)
        if handler is None:
            self._unknown(session, action)
            return True
        return await handler(self, session, action) is not False

    def _may(self, session: Session, name: str) -> bool:
        needed = _WRITE_CLASS.get(name)
        return needed is None or bool(needed & session.writable)

    def _unknown(self, session: Session, action: Action) -> None:
        self.unimplemented.append(action)
        session.send(
            Response.answer(action, "Error", ("Message", unknown_action_message(action.name)))
        )
        self.emit(
            event("RequestBadFormat", extra=self._security(session, "Error")
                  | {"RequestType": f"Action: {action.name}", "AccountID": session.username or ""})
        )

    def _security(self, session: Session, severity: str) -> dict[str, str]:
        tv = _now_tv()
        return {
            "EventTV": tv,
            "Severity": severity,
            "Service": "AMI",
            "EventVersion": "1",
            "SessionID": f"0x{0x7F0000000EE0 + session.number * 0x1000:x}",
            "LocalAddress": session.address("local"),
            "RemoteAddress": session.address("remote"),
            "SessionTV": tv,
        }

    async def _login(self, session: Session, action: Action) -> bool:
        user = self.users.get(action.fields.get("Username") or "")
        if user is None or user[0] != action.fields.get("Secret"):
            await self.sleep(AUTH_DELAY)
            session.send(Response.answer(action, "Error", ("Message", AUTH_FAILED)))
            return False
        _, read, write = user
        session.username = action.fields["Username"]
        session.readable, session.writable = parse_classes(read), parse_classes(write)
        if "Events" in action.fields:
            session.mask = parse_classes(action.fields["Events"])
        session.send(Response.answer(action, "Success", ("Message", AUTH_ACCEPTED)))
        uptime = str(int(time.monotonic() - self._booted))
        if self._booting is None:
            session.deliver(
                event("FullyBooted", extra={"Uptime": uptime, "LastReload": uptime,
                                            "Status": "Fully Booted"})
            )
        security = self._security(session, "Informational")
        session.deliver(
            event("SuccessfulAuth", extra={**security, "AccountID": session.username,
                                           "UsingPassword": "0"})
        )
        return True

    # -- simple actions ----------------------------------------------------------------

    async def _logoff(self, session: Session, action: Action) -> bool:
        session.send(Response.answer(action, "Goodbye", ("Message", GOODBYE)))
        return False

    async def _ping(self, session: Session, action: Action) -> None:
        stamp = f"{time.time():.6f}"
        session.send(Response.answer(action, "Success", ("Ping", "Pong"), ("Timestamp", stamp)))

    async def _events(self, session: Session, action: Action) -> None:
        session.mask = parse_classes(action.fields.get("EventMask"))
        state = "On" if session.mask else "Off"
        session.send(Response.answer(action, "Success", ("Events", state)))

    async def _getvar(self, session: Session, action: Action) -> None:
        variable = action.fields.get("Variable") or ""
        scope = self._scope(session, action)
        if scope is not None:
            value = scope.get(variable, "")
            session.send(
                Response.answer(action, "Success", ("Variable", variable), ("Value", value))
            )

    async def _setvar(self, session: Session, action: Action) -> None:
        scope = self._scope(session, action)
        if scope is not None:
            scope[action.fields.get("Variable") or ""] = action.fields.get("Value") or ""
            session.send(Response.answer(action, "Success", ("Message", "Variable Set")))

    def _scope(self, session: Session, action: Action) -> dict[str, str] | None:
        """A channel's variables, the globals when no Channel is named, or None after an error."""
        name = action.fields.get("Channel")
        if name is None:
            return self.globals
        channel = self.channels.get(name)
        if channel is None:
            session.send(Response.answer(action, "Error", ("Message", NO_SUCH_CHANNEL)))
            return None
        return channel.variables

    async def _core_show_channels(self, session: Session, action: Action) -> None:
        self._list(session, action, CHANNELS_FOLLOW, "CoreShowChannelsComplete", [
            event("CoreShowChannel", channel, extra={
                "ActionID": action.action_id or "",
                "Application": channel.application,
                "ApplicationData": channel.app_data,
                "Duration": self.duration(channel),
                "BridgeId": channel.bridge.uniqueid if channel.bridge else "",
            })
            for channel in self.channels.values()
        ])

    async def _status(self, session: Session, action: Action) -> None:
        self._list(session, action, STATUS_FOLLOWS, "StatusComplete", [
            event("Status", channel, extra={
                "ActionID": action.action_id or "",
                "Application": channel.application,
                "Data": channel.app_data,
                "Seconds": str(int((time.monotonic() - channel.started) / self.speed)),
                "BridgeID": channel.bridge.uniqueid if channel.bridge else "",
            })
            for channel in self.channels.values()
            if action.fields.get("Channel") in (None, channel.name)
        ])

    async def _bridge_list(self, session: Session, action: Action) -> None:
        self._list(session, action, BRIDGES_FOLLOW, "BridgeListComplete", [
            event("BridgeListItem", bridge, extra={"ActionID": action.action_id or ""})
            for bridge in self.bridges.values()
        ])

    @staticmethod
    def _list(
        session: Session, action: Action, message: str, complete: str, items: list[Event]
    ) -> None:
        """A list action: start response, items carrying the ActionID, then ...Complete."""
        session.send(
            Response.answer(action, "Success", ("EventList", "start"), ("Message", message))
        )
        for item in items:
            session.send(item)
        session.send(event(complete, extra={
            "ActionID": action.action_id or "", "EventList": "Complete",
            "ListItems": str(len(items)),
        }))

    # -- originate ---------------------------------------------------------------------

    async def _originate(self, session: Session, action: Action) -> None:
        dial = action.fields.get("Channel")
        if not dial:
            session.send(Response.answer(action, "Error", ("Message", CHANNEL_NOT_SPECIFIED)))
            return
        result: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        is_async = (action.fields.get("Async") or "").lower() in _TRUE
        if is_async:
            session.send(Response.answer(action, "Success", ("Message", ORIGINATE_QUEUED)))
        self._spawn(self.place(action, dial, result, report=is_async))
        if not is_async:
            reason = await asyncio.shield(result)
            ok = reason == REASON_ANSWERED
            session.send(Response.answer(action, "Success" if ok else "Error",
                                         ("Message", ORIGINATE_QUEUED if ok else ORIGINATE_FAILED)))

    # -- hangups -----------------------------------------------------------------------

    async def _hangup(self, session: Session, action: Action) -> None:
        name = action.fields.get("Channel") or ""
        if name not in self.channels:
            session.send(Response.answer(action, "Error", ("Message", NO_SUCH_CHANNEL)))
            return
        session.send(Response.answer(action, "Success", ("Message", CHANNEL_HUNGUP)))
        self.hang_up(name, int(action.fields.get("Cause") or 16))

    # -- bridges -----------------------------------------------------------------------

    async def _bridge(self, session: Session, action: Action) -> None:
        names = [action.fields.get("Channel1") or "", action.fields.get("Channel2") or ""]
        for slot, name in enumerate(names, start=1):
            if name not in self.channels:
                session.send(Response.answer(
                    action, "Error", ("Message", f"Channel{slot} does not exist: {name}")
                ))
                return
        session.send(Response.answer(action, "Success", ("Message", CHANNELS_BRIDGED)))
        self.bridge_channels(*(self.channels[name] for name in names))

    # -- redirect and status -----------------------------------------------------------

    async def _redirect(self, session: Session, action: Action) -> None:
        fields = action.fields
        name = fields.get("Channel") or ""
        if name not in self.channels or not name.endswith(";1"):
            session.send(Response.answer(
                action, "Error", ("Message", f"Channel does not exist: {name}")
            ))
            return
        session.send(Response.answer(action, "Success", ("Message", "Redirect successful")))
        self.redirect(name, fields.get("Context"), fields.get("Exten"),
                      int(fields.get("Priority") or 1))

    _handlers: ClassVar[dict[str, Callable[..., Awaitable[bool | None]]]] = {
        "logoff": _logoff,
        "ping": _ping,
        "events": _events,
        "getvar": _getvar,
        "setvar": _setvar,
        "originate": _originate,
        "hangup": _hangup,
        "bridge": _bridge,
        "redirect": _redirect,
        "coreshowchannels": _core_show_channels,
        "status": _status,
        "bridgelist": _bridge_list,
    }
