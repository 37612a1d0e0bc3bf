"""The fake PBX's channels and bridges, and the event templates Asterisk 22 lays them out by.

Every channel event is built from one template per event name: the Privilege line, the
snapshots it carries (a channel with a prefix such as "Dest" or "LocalOne", or a bridge) and
its own keys, in the order the captures in tests/captures/ show.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import re
import time
import uuid
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field

from bridge.ami_protocol import Action, Event, Fields
from protocol.call_token import TOKEN_VARIABLE
from tests.fakepbx.agi_caller import CallTranscript, place_call
from tests.fakepbx.script import (
    Answers,
    Busy,
    BusyOnTrunk,
    Caller,
    Congestion,
    HangUp,
    NoAnswer,
    Phone,
    Rejects,
    Unreachable,
)

UNKNOWN = "<unknown>"
PHONES_CONTEXT = "fake-phones"
HOLDING_CONTEXT = "consult-hold"
NOBAT_HOLDING_CONTEXT = "nobat-consult-hold"
"""nobat's own holding context (asterisk/extensions.conf), as the real tier ran it."""
NOBAT_HOLD_SECONDS = 3600.0
"""How long nobat's holding context waits ([globals] NOBAT_HOLD_SECONDS as shipped)."""
NOBAT_BRIDGE_CONTEXT = "nobat-consult-bridge"
NOBAT_END_CONTEXT = "nobat-consult-end"
NOBAT_PATIENT_CALL_CONTEXT = "nobat-patient-call"
NOBAT_SURVEY_CONTEXT = "nobat-consult-survey"
PLAY_SECONDS = 1.0
"""How long every prompt lasts, in scripted seconds."""
NOBAT_MASK = "nobat-mask-connected-line,s,1"
SHUTDOWN_SOFT_CAUSE = "4"
"""SoftHangupRequest's Cause when Asterisk is shutting down (AST_SOFTHANGUP_SHUTDOWN)."""
DEFAULT_ORIGINATE_TIMEOUT_MS = 30000
PROTECTING_VARIABLES = frozenset(
    {"CONNECTED_LINE_SEND_SUB", "CONNECTED_LINE_CALLER_SEND_SUB", "CONNECTED_LINE_CALLEE_SEND_SUB"}
)
"""A channel with one of these set has its connected-line updates intercepted: no leak."""
_LOCAL = re.compile(rf"^Local/(?P<exten>[^@/]+)@{PHONES_CONTEXT}(?:/n)?$", re.IGNORECASE)

# Originate Reason codes (Asterisk's control frame numbers) seen in captures b and e;
# REASON_HANGUP (a hang-up before answer) is Asterisk's number, not captured.
REASON_FAILED, REASON_HANGUP, REASON_NO_ANSWER, REASON_ANSWERED = 0, 1, 3, 4
REASON_BUSY, REASON_CONGESTION = 5, 8


class State(enum.IntEnum):
    """Asterisk's channel states, with the numbers AMI prints in ChannelState."""

    Down = 0
    Ring = 4
    Ringing = 5
    Up = 6
    Busy = 7


CAUSES: dict[int, str] = {
    0: "Unknown",
    1: "Unallocated (unassigned) number",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    21: "Call Rejected",
    34: "Circuit/channel congestion",
}
"""Cause-txt for each Hangup cause, as Asterisk's causes table words it."""

CALLING_PRES = "0 (Presentation Allowed, Not Screened)"


@dataclass
class Channel:
    """One channel as AMI snapshots describe it; the ;1 and ;2 halves of a Local pair."""

    name: str
    uniqueid: str
    linkedid: str
    seq: int
    context: str
    exten: str
    started: float
    state: State = State.Down
    priority: int = 1
    cid_num: str = UNKNOWN
    cid_name: str = UNKNOWN
    cl_num: str = UNKNOWN
    cl_name: str = UNKNOWN
    application: str = ""
    app_data: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    bridge: Bridge | None = None
    linked_seq: int = 0

    def snapshot(self, prefix: str = "") -> tuple[tuple[str, str], ...]:
        """The fourteen fields every channel event carries, keys prefixed as the event needs."""
        values = (
            ("Channel", self.name),
            ("ChannelState", str(int(self.state))),
            ("ChannelStateDesc", self.state.name),
            ("CallerIDNum", self.cid_num),
            ("CallerIDName", self.cid_name),
            ("ConnectedLineNum", self.cl_num),
            ("ConnectedLineName", self.cl_name),
            ("Language", "en"),
            ("AccountCode", ""),
            ("Context", self.context),
            ("Exten", self.exten),
            ("Priority", str(self.priority)),
            ("Uniqueid", self.uniqueid),
            ("Linkedid", self.linkedid),
        )
        return tuple((prefix + key, value) for key, value in values)


@dataclass
class Bridge:
    """A basic two-party bridge as Action: Bridge makes it."""

    uniqueid: str
    channels: list[Channel] = field(default_factory=list)

    def snapshot(self) -> tuple[tuple[str, str], ...]:
        """The bridge fields BridgeCreate/Enter/Leave/Destroy and BridgeListItem carry."""
        return (
            ("BridgeUniqueid", self.uniqueid),
            ("BridgeType", "basic"),
            ("BridgeTechnology", "simple_bridge"),
            ("BridgeCreator", UNKNOWN),
            ("BridgeName", UNKNOWN),
            ("BridgeNumChannels", str(len(self.channels))),
            ("BridgeVideoSourceMode", "none"),
        )


@dataclass(frozen=True)
class Template:
    """How one event is laid out: "@<prefix>" is a channel snapshot, "#" a bridge one,
    "*" the remaining keys in the caller's order, "Key?" a key that may be absent."""

    privilege: str | None
    layout: tuple[str, ...]


_CHANNEL = Template("call,all", ("@",))
_CAUSED = Template("call,all", ("@", "Cause"))
_BRIDGE = Template("call,all", ("#",))
_IN_BRIDGE = Template("call,all", ("#", "@"))
_DIAL = ("@?", "@Dest")

TEMPLATES: dict[str, Template] = {
    "Newchannel": _CHANNEL,
    "Newstate": _CHANNEL,
    "NewConnectedLine": _CHANNEL,
    "NewCallerid": Template("call,all", ("@", "CID-CallingPres")),
    "HangupRequest": _CAUSED,
    "SoftHangupRequest": _CAUSED,
    "Hangup": Template("call,all", ("@", "Cause", "Cause-txt")),
    "LocalBridge": Template(
        "call,all", ("@LocalOne", "@LocalTwo", "Context", "Exten", "LocalOptimization")
    ),
    "DialBegin": Template("call,all", (*_DIAL, "DialString")),
    "DialState": Template("call,all", (*_DIAL, "DialStatus")),
    "DialEnd": Template("call,all", (*_DIAL, "DialStatus")),
    "UserEvent": Template("user,all", ("@", "UserEvent", "*")),
    "BridgeCreate": _BRIDGE,
    "BridgeDestroy": _BRIDGE,
    "BridgeEnter": _IN_BRIDGE,
    "BridgeLeave": _IN_BRIDGE,
    "OriginateResponse": Template(
        "call,all",
        (
            "ActionID?", "Response", "Channel", "Context?", "Exten?", "Application?", "Data?",
            "Reason", "Uniqueid", "CallerIDNum", "CallerIDName",
        ),
    ),
    "FullyBooted": Template("system,all", ("Uptime", "LastReload", "Status")),
    "Shutdown": Template("system,all", ("Shutdown", "Restart")),
    "SuccessfulAuth": Template(
        "security,all",
        (
            "EventTV", "Severity", "Service", "EventVersion", "AccountID", "SessionID",
            "LocalAddress", "RemoteAddress", "UsingPassword", "SessionTV",
        ),
    ),
    "RequestBadFormat": Template(
        "security,all",
        (
            "EventTV", "Severity", "Service", "EventVersion", "SessionID", "LocalAddress",
            "RemoteAddress", "RequestType", "SessionTV", "AccountID",
        ),
    ),
    "CoreShowChannel": Template(
        None, ("ActionID", "@", "Application", "ApplicationData", "Duration", "BridgeId")
    ),
    "BridgeListItem": Template(None, ("ActionID", "#")),
    # Not captured; a subset of Asterisk 22's Status item, in its order.
    "Status": Template(None, ("ActionID", "@", "Application", "Data", "Seconds", "BridgeID")),
    "StatusComplete": Template(None, ("ActionID", "EventList", "ListItems")),
    "CoreShowChannelsComplete": Template(None, ("ActionID", "EventList", "ListItems")),
    "BridgeListComplete": Template(None, ("ActionID", "EventList", "ListItems")),
}


def event(
    name: str,
    *subjects: Channel | Bridge | None,
    extra: Mapping[str, str] | None = None,
) -> Event:
    """Lay out one event from its template: subjects fill the snapshot slots in order."""
    template = TEMPLATES[name]
    given = dict(extra or {})
    pending = list(subjects)
    pairs: list[tuple[str, str]] = []
    if template.privilege is not None:
        pairs.append(("Privilege", template.privilege))
    for slot in template.layout:
        if slot == "#" or slot.startswith("@"):
            subject = pending.pop(0)
            if isinstance(subject, Bridge):
                pairs += subject.snapshot()
            elif subject is not None:
                pairs += subject.snapshot(slot[1:].removesuffix("?"))
            elif not slot.endswith("?"):
                raise ValueError(f"{name} needs a subject for {slot!r}")
        elif slot == "*":
            pairs += given.items()
            given.clear()
        elif slot.removesuffix("?") in given:
            key = slot.removesuffix("?")
            pairs.append((key, given.pop(key)))
        elif not slot.endswith("?"):
            raise ValueError(f"{name} needs the key {slot!r}")
    if given or pending:
        raise ValueError(f"{name} has no slot for {sorted(given)} or {len(pending)} subjects")
    return Event(name, Fields(tuple(pairs)))


@dataclass
class Seen:
    """An identity shown to a phone: the caller id it rang with, or a connected-line update."""

    exten: str
    number: str
    name: str
    how: str


@dataclass
class Played:
    """A prompt a phone heard: the file Asterisk played on its line."""

    exten: str
    file: str


@dataclass(frozen=True)
class FlowHeard:
    """A flow nobat ran over FastAGI on a phone's answered line, as Asterisk saw it."""

    exten: str
    transcript: CallTranscript


@dataclass(eq=False)
class Call:
    """One originated Local pair: ;1 runs the dialplan, ;2 rings the scripted phone."""

    action: Action
    dial: str
    one: Channel
    two: Channel
    phone: Phone | None
    result: asyncio.Future[int]
    report: bool
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    hold: asyncio.Task[None] | None = None
    ended: bool = False
    after_bridge: str = ""
    """Pulled into a Bridge(): "" back to its dialplan when that bridge ends, "hangup" with
    the x option, or the context the F option names."""


_CALLERID = re.compile(r'^\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^<]*?))\s*(?:<(?P<num>[^>]*)>)?\s*$')


def parse_callerid(text: str | None) -> tuple[str, str]:
    """Split '"Clinic" <15550001000>' into (number, name), "<unknown>" where one is missing."""
    match = _CALLERID.match(text or "")
    if not text or match is None:
        return UNKNOWN, UNKNOWN
    name = (match["quoted"] if match["quoted"] is not None else match["bare"]) or ""
    number = match["num"]
    if number is None and name.replace("+", "").isdigit():
        number, name = name, ""
    return number or UNKNOWN, name or UNKNOWN


def event_class(evt: Event) -> str | None:
    """The class an event is filtered by (its Privilege's first word), None for list items."""
    privilege = evt.fields.get("Privilege")
    return None if privilege is None else privilege.split(",")[0]


class Switch:
    """The calls, channels and bridges behind the AMI: scripted phones answer, ring out,
    hang up; every step is an event in the captured shape, passed to `_publish`."""

    def __init__(
        self,
        phones: Iterable[Phone],
        speed: float,
        hold_seconds: float,
        trust_id_inbound: bool,
        fastagi: tuple[str, int] | None = None,
    ) -> None:
        self.phones = {phone.exten: phone for phone in phones}
        self.fastagi = fastagi
        """Where nobat's FastAGI server listens, for [nobat-patient-call]'s AGI()."""
        self.flows: list[FlowHeard] = []
        self.speed = speed
        self.hold_seconds = hold_seconds
        self.trust_id_inbound = trust_id_inbound
        self.events: list[Event] = []
        self.channels: dict[str, Channel] = {}
        self.bridges: dict[str, Bridge] = {}
        self.seen: list[Seen] = []
        self.played: list[Played] = []
        self._calls: dict[str, Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pair_counter = itertools.count()
        self._uniqueid_counter = itertools.count()
        self._epoch = int(time.time())

    def emit(self, evt: Event) -> None:
        """Record an event and publish it to whoever listens."""
        self.events.append(evt)
        self._publish(evt)

    def _publish(self, evt: Event) -> None:
        """Hand an event to listeners; the AMI server sends it to its sessions."""

    async def sleep(self, seconds: float) -> None:
        """Wait for a scripted time, scaled by `speed`."""
        await asyncio.sleep(seconds * self.speed)

    def _spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    def _own(call: Call, task: asyncio.Task[object] | None) -> None:
        """Tie a task to a call, so the call's hang-up cancels whatever it is waiting for."""
        if task is not None:
            call.tasks.add(task)  # type: ignore[arg-type]
            task.add_done_callback(call.tasks.discard)  # type: ignore[arg-type]

    def seen_by(self, exten: str) -> list[str]:
        """Every number shown to a phone: its ring caller id and connected-line updates."""
        return [seen.number for seen in self.seen if seen.exten == exten]

    def heard_by(self, exten: str) -> list[str]:
        """The prompt files a phone heard, in order."""
        return [played.file for played in self.played if played.exten == exten]

    async def _play(self, call: Call, files: str) -> None:
        """Playback(file1&file2...) on a call's line, each file PLAY_SECONDS long."""
        for name in filter(None, files.split("&")):
            if call.phone is not None:
                self.played.append(Played(call.phone.exten, name))
            await self.sleep(PLAY_SECONDS)

    def leaks(self) -> list[Seen]:
        """Identities a phone was shown that are another scripted phone's own number."""
        owners = {phone.number: exten for exten, phone in self.phones.items()}
        return [s for s in self.seen if owners.get(s.number, s.exten) != s.exten]

    def state_of(self, channel: str) -> str:
        """A live channel's ChannelStateDesc, or "Gone" once it hung up."""
        found = self.channels.get(channel)
        return "Gone" if found is None else found.state.name

    def callerid_of(self, channel: str) -> tuple[str, str]:
        """A live channel's (CallerIDNum, CallerIDName)."""
        found = self.channels[channel]
        return found.cid_num, found.cid_name

    def _emit(self, name: str, *subjects: Channel | Bridge | None, **extra: str) -> None:
        self.emit(event(name, *subjects, extra=extra))

    def duration(self, channel: Channel) -> str:
        """How long a channel has lived in scripted time, as CoreShowChannel prints it."""
        seconds = int((time.monotonic() - channel.started) / self.speed)
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    async def place(
        self, action: Action, dial: str, result: asyncio.Future[int], report: bool
    ) -> None:
        """Originate: create the Local pair, ring the phone, run its behaviour to the end;
        `result` gets the Reason, and `report` sends OriginateResponse as Async does."""
        match = _LOCAL.match(dial)
        if match is None:
            self._respond(action, dial, None, REASON_FAILED, result, report)
            return
        exten = match["exten"]
        call = self._new_pair(action, dial, exten, result, report)
        self._own(call, asyncio.current_task())
        one, two = call.one, call.two
        self._set_callerid(call, action.fields.get("CallerID"))
        behaviour = call.phone.behaviour if call.phone else Unreachable()
        if isinstance(behaviour, Unreachable):
            self._hangup_event(two, 0)
            self._finish(call, REASON_FAILED)
            self._hangup_event(one, 0)
            return
        self._emit("LocalBridge", one, two, Context=PHONES_CONTEXT, Exten=exten,
                   LocalOptimization="Yes")
        self._emit("DialBegin", None, one, DialString=f"{exten}@{PHONES_CONTEXT}")
        if isinstance(behaviour, BusyOnTrunk):
            if behaviour.after:
                self._set_state(one, State.Ringing)
                self._emit("DialState", None, one, DialStatus="RINGING")
                await self.sleep(behaviour.after)
            self._set_state(two, State.Busy)
            self._emit("HangupRequest", one, Cause="17")
            self._finish(call, REASON_FAILED)
            self._emit("DialEnd", None, one, DialStatus="BUSY")
            self._hangup_event(two, 17)
            self._hangup_event(one, 17)
            return
        if isinstance(behaviour, Busy | Congestion):
            busy = isinstance(behaviour, Busy)
            self._set_state(two, State.Busy)
            self._emit("DialEnd", None, one, DialStatus="BUSY" if busy else "CONGESTION")
            self._emit("HangupRequest", two, Cause="0")
            self._emit("SoftHangupRequest", two, Cause="16")
            self._hangup_event(two, 17 if busy else 34)
            self._finish(call, REASON_BUSY if busy else REASON_CONGESTION)
            self._hangup_event(one, 0)
            return
        await self._ring(call, behaviour)

    async def _ring(self, call: Call, behaviour: Answers | NoAnswer | Rejects) -> None:
        one, two, phone = call.one, call.two, call.phone
        assert phone is not None
        if isinstance(behaviour, Answers):
            seen = f'"{two.cid_name}" <{two.cid_num}>'
            self._emit("UserEvent", two, UserEvent="FakePhone", Party=phone.exten,
                       SeesCallerID=seen, Chan=two.name)
        self._set_state(one, State.Ringing)
        self._emit("DialState", None, one, DialStatus="RINGING")
        timeout = float(call.action.fields.get("Timeout") or DEFAULT_ORIGINATE_TIMEOUT_MS) / 1000
        after = None if isinstance(behaviour, NoAnswer) else behaviour.after
        if after is None or after >= timeout:
            await self.sleep(timeout)
            self._emit("HangupRequest", two, Cause="19")
            self._finish(call, REASON_NO_ANSWER)
            self._emit("SoftHangupRequest", two, Cause="16")
            self._hangup_event(two, 19)
            self._hangup_event(one, 19)
            return
        await self.sleep(after)
        if isinstance(behaviour, Rejects):
            self._emit("DialEnd", None, one, DialStatus="NOANSWER")
            self._emit("SoftHangupRequest", two, Cause="16")
            self._emit("HangupRequest", one, Cause="21")
            self._hangup_event(two, 21)
            self._finish(call, REASON_HANGUP)
            self._hangup_event(one, 21)
            return
        await self._answer(call, behaviour)

    async def _answer(self, call: Call, behaviour: Answers) -> None:
        one, two = call.one, call.two
        self._set_state(two, State.Up)
        self._set_state(one, State.Up)
        self._emit("DialEnd", None, one, DialStatus="ANSWER")
        one.context = call.action.fields.get("Context") or one.context
        one.exten = call.action.fields.get("Exten") or "s"
        one.priority = int(call.action.fields.get("Priority") or 1)
        self._finish(call, REASON_ANSWERED)
        two.application, two.app_data = "Wait", str(behaviour.talk or "")
        self._start_holding(call)
        if behaviour.talk is not None:
            await self.sleep(behaviour.talk)
            self._far_hangup(call, 16)

    def _start_holding(self, call: Call) -> None:
        """Run the holding context on ;1: LegReady, then wait; after the wait, hang up."""
        one = call.one
        self._stop_holding(call)
        nobat = {NOBAT_HOLDING_CONTEXT: self._hold_as_nobat,
                 NOBAT_BRIDGE_CONTEXT: self._bridge_as_nobat, NOBAT_END_CONTEXT: self._end_as_nobat,
                 NOBAT_PATIENT_CALL_CONTEXT: self._patient_call_as_nobat,
                 NOBAT_SURVEY_CONTEXT: self._patient_call_as_nobat}
        if one.context in nobat:
            nobat[one.context](call)
            return
        if one.context != HOLDING_CONTEXT:
            one.application, one.app_data = call.action.fields.get("Application") or "", ""
            return
        leg = one.variables.get("LEG", "")
        if one.priority == 1:
            self._emit("UserEvent", one, UserEvent="LegReady", Leg=leg, Chan=one.name)
        one.priority, one.application, one.app_data = 4, "Wait", str(int(self.hold_seconds))

        async def hold() -> None:
            await self.sleep(self.hold_seconds)
            self._emit("UserEvent", one, UserEvent="LegAfterBridge", Leg=leg, Chan=one.name)
            self._near_hangup(call, 16)

        call.hold = self._spawn(hold())
        self._own(call, call.hold)

    @staticmethod
    def _leg_fields(one: Channel) -> dict[str, str]:
        """What nobat's dialplan puts in its NobatLegReady/NobatLegDone UserEvents."""
        return {"Leg": one.variables.get("LEG", ""),
                "Consultation": one.variables.get("CONSULTATION", ""), "Chan": one.name}

    def _leg_done(self, call: Call, bridged: bool) -> None:
        """The end of each nobat context: UserEvent NobatLegDone, then Hangup()."""
        self._emit("UserEvent", call.one, UserEvent="NobatLegDone",
                   **self._leg_fields(call.one), Bridged="yes" if bridged else "no")
        self._near_hangup(call, 16)

    def _run(self, call: Call, steps: Coroutine[object, object, None]) -> None:
        """Run a context's steps as the ;1 half's dialplan (a Redirect or hang-up stops it)."""
        call.hold = self._spawn(steps)
        self._own(call, call.hold)

    def _hold_as_nobat(self, call: Call) -> None:
        """[nobat-consult-hold]: mask connected line, show the clinic, play the announcement,
        NobatLegReady, wait; a leg that was bridged (NOBAT_BRIDGED) skips every hold step:
        NobatLegDone, then hang up."""
        one = call.one
        names = one.variables
        fresh = one.priority == 1
        if fresh:
            names["CONNECTED_LINE_SEND_SUB"] = NOBAT_MASK
            one.cid_num = names.get("NOBAT_CLINIC_NUMBER", one.cid_num)
            one.cid_name = names.get("NOBAT_CLINIC_NAME", one.cid_name)

        async def hold() -> None:
            if fresh:
                one.priority, one.application = 6, "Playback"
                one.app_data = names.get("NOBAT_ANNOUNCE", "")
                await self._play(call, one.app_data)
                names["NOBAT_LEG_READY"] = "1"
                one.priority, one.application, one.app_data = 8, "UserEvent", "NobatLegReady"
                self._emit("UserEvent", one, UserEvent="NobatLegReady", **self._leg_fields(one))
            one.priority, one.application, one.app_data = 9, "Wait", str(int(self.hold_seconds))
            bridged = bool(names.get("NOBAT_BRIDGED"))
            if not bridged:
                await self.sleep(self.hold_seconds)
            self._leg_done(call, bridged)

        self._run(call, hold())

    def _bridge_as_nobat(self, call: Call) -> None:
        """[nobat-consult-bridge]: Bridge(${NOBAT_PEER},xL(<exten>:${NOBAT_WARN_MS})) pulls the
        peer in; the warning and the time-up prompt play to both, then both legs end. When
        the bridge ends otherwise, Bridge() returns: NobatLegDone, Hangup()."""
        one = call.one
        if one.priority != 1:
            self._leg_done(call, bridged=True)
            return
        peer = next((c for c in self.channels.values()
                     if c.uniqueid == one.variables.get("NOBAT_PEER")), None)
        peer_call = self._calls.get(peer.name) if peer is not None else None
        if peer is None or peer_call is None:
            self._leg_done(call, bridged=False)  # BRIDGERESULT=NONEXISTENT
            return
        in_call = one.variables.get("NOBAT_SURVEY") == "in-call"
        peer_call.after_bridge = NOBAT_SURVEY_CONTEXT if in_call else "hangup"
        self.bridge_channels(peer, one)
        one.priority, one.application = 7, "Bridge"  # it runs the app; the peer was pulled
        peer.priority = 10  # out of its Wait (capture i: no application, the hold's next step)
        limit = int(one.exten) / 1000
        warn = int(one.variables.get("NOBAT_WARN_MS") or 0) / 1000
        sounds = one.variables.get("NOBAT_SOUNDS", "")

        async def limited() -> None:
            if 0 < warn < limit:
                await self.sleep(limit - warn)
                for party in (call, peer_call):
                    self._spawn(self._play(party, f"{sounds}/ending-soon"))
                await self.sleep(warn)
            else:
                await self.sleep(limit)
            for party in (call, peer_call):
                self._spawn(self._play(party, f"{sounds}/time-up"))
            await self.sleep(PLAY_SECONDS)
            if in_call:  # the bridge ends: Bridge() returns, the patient goes to F()
                self._leg_done(call, bridged=True)
            else:
                self._near_hangup(peer_call, 16)

        self._run(call, limited())

    def _end_as_nobat(self, call: Call) -> None:
        """[nobat-consult-end]: play the prompt the extension names, NobatLegDone, Hangup()."""
        one = call.one
        one.application = "Playback"

        async def end() -> None:
            await self._play(call, f"{one.variables.get('NOBAT_SOUNDS', '')}/{one.exten}")
            self._leg_done(call, bridged=False)

        self._run(call, end())

    def _patient_call_as_nobat(self, call: Call) -> None:
        """[nobat-patient-call] (AGI(agi://${NOBAT_FASTAGI}/patient-call?lang=...,
        call=${NOBAT_CALL_TOKEN},key=${NOBAT_FASTAGI_SECRET})) and [nobat-consult-survey] (the
        same path, ?survey=in-call) on ;1: the phone's owner keys
        as scripted (in the AGI fake's own virtual time), then Hangup(). A transfer to the
        office is not dialled here: the transcript shows it was asked for. With no FastAGI
        server known the AGI fails and the line is hung up, as Asterisk does."""
        one, phone = call.one, call.phone
        assert phone is not None
        if self.fastagi is None:  # AGI cannot connect: AGISTATUS=FAILURE, then Hangup()
            self._near_hangup(call, 16)
            return
        fastagi = self.fastagi
        one.application = "AGI"
        query = ("survey=in-call" if one.context == NOBAT_SURVEY_CONTEXT
                 else f"lang={one.variables.get('NOBAT_LANGUAGE', '')}")

        token = f"call={one.variables.get(TOKEN_VARIABLE, '')}"

        async def run() -> None:
            transcript = await place_call(
                *fastagi, Caller(one.cid_num, phone.listens), args=(token,),
                script=f"patient-call?{query}", strict=False, answered=True,
                environment={"channel": one.name, "uniqueid": one.uniqueid,
                             "context": one.context, "extension": one.exten})
            self.flows.append(FlowHeard(phone.exten, transcript))
            if any(isinstance(step, HangUp) for step in phone.listens):
                self._far_hangup(call, 16)
            else:
                self._near_hangup(call, 16)

        self._run(call, run())

    def flow_heard_by(self, exten: str) -> list[CallTranscript]:
        """What each flow nobat ran on a phone's line played and took, in order."""
        return [heard.transcript for heard in self.flows if heard.exten == exten]

    def _new_pair(
        self, action: Action, dial: str, exten: str, result: asyncio.Future[int], report: bool
    ) -> Call:
        base = f"Local/{exten}@{PHONES_CONTEXT}-{next(self._pair_counter):08x}"
        ids = (action.fields.get("ChannelId"), action.fields.get("OtherChannelId"))
        halves = []
        for half, given in zip((1, 2), ids, strict=True):
            seq = next(self._uniqueid_counter)
            uniqueid = given or f"{self._epoch}.{seq}"
            halves.append(Channel(
                name=f"{base};{half}", uniqueid=uniqueid, linkedid=uniqueid, seq=seq,
                context=PHONES_CONTEXT, exten=exten, started=time.monotonic(),
                state=State.Down if half == 1 else State.Ring, linked_seq=seq,
            ))
        one, two = halves
        one.application, one.app_data = "AppDial2", "(Outgoing Line)"  # no dialplan runs yet
        two.linkedid, two.linked_seq = one.linkedid, one.linked_seq
        for variable in action.fields.getall("Variable"):
            for assignment in separate_args(variable.lstrip(" \t")):
                key, sep, value = assignment.partition("=")
                if sep and key:
                    one.variables[key] = two.variables[key] = value
        call = Call(action, dial, one, two, self.phones.get(exten), result, report)
        for channel in halves:
            self.channels[channel.name] = channel
            self._calls[channel.name] = call
            self._emit("Newchannel", channel)
        return call

    def _set_callerid(self, call: Call, callerid: str | None) -> None:
        """Originate's CallerID lands on both halves, and is what the phone sees ringing."""
        number, name = parse_callerid(callerid)
        if callerid is None:
            return
        call.two.cl_num, call.two.cl_name = number, name  # ;1's line reached ;2 first
        for channel in (call.one, call.two):
            channel.cid_num, channel.cid_name = number, name
            self._emit("NewCallerid", channel, **{"CID-CallingPres": CALLING_PRES})
            channel.cl_num, channel.cl_name = number, name
            self._emit("NewConnectedLine", channel)
        if call.phone is not None:
            self.seen.append(Seen(call.phone.exten, number, name, "callerid"))

    def _set_state(self, channel: Channel, state: State) -> None:
        channel.state = state
        self._emit("Newstate", channel)

    def _finish(self, call: Call, reason: int) -> None:
        """Settle the originate once: OriginateResponse for Async, the future for sync."""
        if not call.result.done():
            self._respond(call.action, call.dial, call, reason, call.result, call.report)

    def _respond(
        self,
        action: Action,
        dial: str,
        call: Call | None,
        reason: int,
        result: asyncio.Future[int],
        report: bool,
    ) -> None:
        if not result.done():
            result.set_result(reason)
        if not report:
            return
        ok = reason == REASON_ANSWERED
        fields = action.fields
        number, name = parse_callerid(fields.get("CallerID"))
        target = (
            {"Application": fields.get("Application") or "", "Data": fields.get("Data") or ""}
            if "Application" in fields
            else {"Context": fields.get("Context") or "", "Exten": fields.get("Exten") or ""}
        )
        uniqueid = call.one.uniqueid if call and ok else fields.get("ChannelId") or UNKNOWN
        extra = {} if action.action_id is None else {"ActionID": action.action_id}
        self._emit(
            "OriginateResponse",
            **extra,
            Response="Success" if ok else "Failure",
            Channel=call.one.name if call and ok else dial,
            **target,
            Reason=str(reason),
            Uniqueid=uniqueid,
            CallerIDNum=number,
            CallerIDName=name,
        )

    def _hangup_event(self, channel: Channel, cause: int) -> None:
        """The final Hangup event; the channel is gone after it."""
        self._emit("Hangup", channel, Cause=str(cause), **{"Cause-txt": CAUSES.get(cause, "")})
        self.channels.pop(channel.name, None)
        self._calls.pop(channel.name, None)

    def _stop_tasks(self, call: Call) -> None:
        call.ended = True
        current = asyncio.current_task()
        for task in list(call.tasks):
            if task is not current:
                task.cancel()

    def _far_hangup(self, call: Call, cause: int) -> None:
        """The phone hangs up (;2 side): the ;1 half follows, leaving any bridge it was in."""
        if call.ended:
            return
        self._stop_tasks(call)
        one, two = call.one, call.two
        self._emit("SoftHangupRequest", two, Cause="16")
        self._emit("HangupRequest", one, Cause=str(cause))
        self._hangup_event(two, cause)
        self._finish(call, REASON_HANGUP)
        if one.bridge is not None:
            bridge = self._leave(one)
            self._hangup_event(one, cause)
            self._dissolve(bridge)
        else:
            self._emit("SoftHangupRequest", one, Cause="16")
            self._hangup_event(one, cause)

    def _near_hangup(self, call: Call, cause: int) -> None:
        """;1 is hung up (AMI Hangup, or its dialplan ends): the phone's half follows."""
        if call.ended:
            return
        self._stop_tasks(call)
        one, two = call.one, call.two
        self._emit("SoftHangupRequest", one, Cause=str(cause))
        self._emit("HangupRequest", two, Cause=str(cause))
        bridge = self._leave(one) if one.bridge is not None else None
        self._finish(call, REASON_HANGUP)
        self._hangup_event(one, cause)
        if bridge is not None:
            self._dissolve(bridge)
        self._emit("SoftHangupRequest", two, Cause=str(cause))
        self._hangup_event(two, cause)

    def hang_up(self, name: str, cause: int) -> bool:
        """Hang a channel up as AMI Hangup does; False if there is no such channel."""
        call = self._calls.get(name)
        if call is None:
            return False
        if name == call.two.name:
            self._far_hangup(call, cause)
        else:
            self._near_hangup(call, cause)
        return True

    def shut_down(self) -> None:
        """Asterisk's normal shutdown (core restart now, SIGTERM): ast_softhangup_all flags
        every channel first (SoftHangupRequest, Cause 4: AST_SOFTHANGUP_SHUTDOWN), then each
        call ends; the Shutdown event comes after (main/asterisk.c, main/channel.c)."""
        for channel in list(self.channels.values()):
            self._emit("SoftHangupRequest", channel, Cause=SHUTDOWN_SOFT_CAUSE)
        for call in set(self._calls.values()):
            self._near_hangup(call, 16)

    def vanish(self) -> None:
        """Drop every call and bridge without events, as a killed Asterisk does."""
        for call in set(self._calls.values()):
            self._stop_tasks(call)
        self._calls.clear()
        self.channels.clear()
        self.bridges.clear()

    async def stop(self) -> None:
        """Cancel every scripted wait, for shutting the fake down."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


    @staticmethod
    def _stop_holding(call: Call) -> None:
        """A bridged or redirected ;1 stops running the holding context's Wait."""
        if call.hold is not None and call.hold is not asyncio.current_task():
            call.hold.cancel()
        call.hold = None

    def _enter(self, bridge: Bridge, channel: Channel) -> None:
        bridge.channels.append(channel)
        channel.bridge = bridge
        channel.application, channel.app_data = "", ""
        self._emit("BridgeEnter", bridge, channel)

    def _leave(self, channel: Channel) -> Bridge:
        bridge = channel.bridge
        assert bridge is not None
        bridge.channels.remove(channel)
        channel.bridge = None
        self._emit("BridgeLeave", bridge, channel)
        return bridge

    def _dissolve(self, bridge: Bridge) -> None:
        """A two-party bridge ends when one leaves: the other leaves too and stays up, silent."""
        for survivor in list(bridge.channels):
            self._leave(survivor)
            owner = self._calls.get(survivor.name)
            if owner is not None and survivor is owner.one and owner.after_bridge == "hangup":
                self._near_hangup(owner, 16)
            elif owner is not None and survivor is owner.one and owner.after_bridge:
                survivor.context, survivor.exten, survivor.priority = owner.after_bridge, "s", 1
                self._start_holding(owner)
            elif owner is not None and survivor is owner.one:
                self._start_holding(owner)
        self.bridges.pop(bridge.uniqueid, None)
        self._emit("BridgeDestroy", bridge)

    def _share_identities(self, receiver: Channel, other: Channel) -> None:
        """Connected line after a bridge forms: the receiver is shown the other party (capture f)
        unless the receiver intercepts updates or identities from phones are not trusted."""
        protected = PROTECTING_VARIABLES & receiver.variables.keys()
        if receiver.variables.get("CONNECTED_LINE_SEND_SUB") == NOBAT_MASK:
            receiver.variables["NOBAT_BRIDGED"] = "1"
        sender = self._calls.get(other.name)
        if protected or not self.trust_id_inbound or sender is None or sender.phone is None:
            return
        phone = sender.phone
        receiver.cl_num, receiver.cl_name = phone.number, phone.name or UNKNOWN
        self._emit("NewConnectedLine", receiver)
        shown_to = self._calls.get(receiver.name)
        if shown_to is not None and shown_to.phone is not None:
            self.seen.append(
                Seen(shown_to.phone.exten, phone.number, phone.name, "connected line")
            )

    def bridge_channels(self, first: Channel, second: Channel) -> None:
        """Action: Bridge: both leave what they were in, then enter a new basic bridge."""
        for channel in (first, second):
            if channel.bridge is not None:
                self._dissolve(self._leave(channel))
            owner = self._calls.get(channel.name)
            if owner is not None:
                self._stop_holding(owner)
        bridge = Bridge(str(uuid.uuid4()))
        self.bridges[bridge.uniqueid] = bridge
        self._emit("BridgeCreate", bridge)
        self._enter(bridge, first)
        oldest = min((first, second), key=lambda c: c.linked_seq)  # the older Linkedid wins
        for channel in (first, second):
            channel.linkedid, channel.linked_seq = oldest.linkedid, oldest.linked_seq
        self._enter(bridge, second)
        self._share_identities(second, first)
        self._share_identities(first, second)

    def redirect(self, name: str, context: str | None, exten: str | None, priority: int) -> bool:
        """Send a ;1 half to another place in the dialplan, out of any bridge; False if there
        is no such ;1 channel."""
        call = self._calls.get(name)
        if call is None or name != call.one.name:
            return False
        one = call.one
        if one.bridge is not None:
            self._dissolve(self._leave(one))
        one.context = context or one.context
        one.exten = exten or one.exten
        one.priority = priority
        self._start_holding(call)
        return True


def separate_args(text: str, delim: str = ",") -> list[str]:
    """app.c __ast_app_separate_args with remove_chars, as AMI reads a Variable header: split
    at `delim` outside quotes, parentheses and brackets; double quotes dropped; a backslash
    dropped and the next character taken as it is."""
    args: list[str] = []
    current: list[str] = []
    paren = bracket = 0
    quote = False
    chars = iter(text)
    for char in chars:
        if char == "(":
            paren += 1
        elif char == ")":
            paren = max(0, paren - 1)
        elif char == "[":
            bracket += 1
        elif char == "]":
            bracket = max(0, bracket - 1)
        elif char == '"' and delim != '"':
            quote = not quote
            continue
        elif char == "\\":
            char = next(chars, "")
        elif char == delim and not (paren or quote or bracket):
            args.append("".join(current))
            current = []
            continue
        current.append(char)
    if current or text.endswith(delim):
        args.append("".join(current))
    return args
