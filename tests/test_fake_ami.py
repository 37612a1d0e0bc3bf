"""The fake PBX's AMI side against the Asterisk 22 captures, over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache

import pytest

from bridge.ami_protocol import (
    NEED_DATA,
    SHUTTING_DOWN,
    Action,
    AmiClientConnection,
    AmiServerConnection,
    Banner,
    ConnectionClosed,
    Event,
    Fields,
    Response,
)
from tests.captures import FROM_ASTERISK, TO_ASTERISK, captures_dir, connection
from tests.fakepbx.ami_server import FakeAsterisk, nobat_user
from tests.fakepbx.script import Answers, Busy, Congestion, NoAnswer, Phone, Rejects

SPEED = 0.01
WAIT = 3.0  # seconds before a wait for the fake fails the test
CLINIC = '"Clinic" <15550001000>'
DOCTOR = Phone("doctor", "15559990001", Answers(after=2.0, talk=10.0), "Dr Doctor")
PATIENT = Phone("patient", "15557770001", Answers(after=1.5, talk=4.0), "Patient Private")
Message = Response | Event


# -- a small client over nobat's own codec ----------------------------------------------


class Client:
    """An AMI client on a real socket that keeps every message it receives, in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = AmiClientConnection()
        self.received: list[Message] = []
        self.closed = False
        self._arrived = asyncio.Event()
        self._task = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, port: int) -> Client:
        """Open a connection; the banner is checked by the codec."""
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    @classmethod
    async def login(cls, port: int, user: str = "ctrl", secret: str = "ctrlsecret",
                    **more: str) -> Client:
        """Connect and log in, waiting for the answer."""
        client = await cls.connect(port)
        response = await client.ask(Action("Login", Fields.of(Username=user, Secret=secret,
                                                              **more), "login"))
        assert response.status == "Success", response
        return client

    async def _read(self) -> None:
        while not self.closed:
            data = await self.reader.read(65536)
            self.conn.receive_data(data)
            while not self.closed and (msg := self.conn.next_event()) is not NEED_DATA:
                self.closed = isinstance(msg, ConnectionClosed)
                if isinstance(msg, Response | Event):
                    self.received.append(msg)
            self._arrived.set()

    def send(self, action: Action) -> None:
        """Write one action."""
        self.writer.write(self.conn.send(action))

    async def wait(self, found: Callable[[], object]) -> object:
        """Wait until `found()` is truthy, checking after each message; fail on timeout."""
        async with asyncio.timeout(WAIT):
            while not (result := found()):
                if self.closed:
                    raise AssertionError("connection closed while waiting")
                self._arrived.clear()
                await self._arrived.wait()
        return result

    async def ask(self, action: Action) -> Response:
        """Send an action and wait for the response with its ActionID."""
        self.send(action)
        found = await self.wait(lambda: next((m for m in self.received if isinstance(m, Response)
                                              and m.action_id == action.action_id), None))
        assert isinstance(found, Response)
        return found

    async def event(self, name: str, count: int = 1, **match: str) -> Event:
        """Wait for the count-th event called `name` whose fields include `match`."""
        def hit() -> Event | None:
            hits = [e for e in self.events(name) if all(e.fields.get(k) == v
                                                          for k, v in match.items())]
            return hits[count - 1] if len(hits) >= count else None
        found = await self.wait(hit)
        assert isinstance(found, Event)
        return found

    def events(self, name: str | None = None) -> list[Event]:
        """The events received so far, optionally of one name."""
        return [m for m in self.received if isinstance(m, Event) and name in (None, m.name)]

    async def eof(self) -> None:
        """Wait until the server closes the connection."""
        async with asyncio.timeout(WAIT):
            await self._task

    async def close(self) -> None:
        """Close our side and stop reading."""
        self.writer.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def originate(exten: str, action_id: str, *variables: str, **more: str) -> Action:
    """An Async Originate into the holding context, as nobat's dialer sends it."""
    fields = {"Channel": f"Local/{exten}@fake-phones", "Context": "consult-hold", "Exten": "s",
              "Priority": "1", "CallerID": CLINIC, "Timeout": "30000", "Async": "true", **more}
    return Action("Originate", Fields.of(
        [*fields.items(), *(("Variable", variable) for variable in variables)]), action_id)


# -- the captures, split into cases -----------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One captured scenario: what the controller sent and what Asterisk said, in order."""

    actions: tuple[Action, ...]
    received: tuple[tuple[Message, int], ...]  # each message and how many actions preceded it


@cache
def case(stem: str, name: str) -> Case:
    """The AMI traffic between the "### <name>:" marker and the next marker."""
    actions: list[Action] = []
    received: list[tuple[Message, int]] = []
    client, server = AmiClientConnection(), AmiServerConnection()
    inside = False
    for line in (captures_dir() / f"{stem}.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["dir"] == "###":
            inside = record.get("note", "").startswith(f"{name}:")
        if "Action: Logoff" in record.get("data", ""):
            inside = False  # the last case runs up to the session's end
        if record.get("link") != "ami" or record["dir"] not in (TO_ASTERISK, FROM_ASTERISK):
            continue
        codec = server if record["dir"] == TO_ASTERISK else client
        codec.receive_data(record["data"].encode("latin-1"))
        while (msg := codec.next_event()) is not NEED_DATA:
            if inside and isinstance(msg, Action):
                actions.append(msg)
            elif inside and isinstance(msg, Response | Event):
                received.append((msg, len(actions)))
    return Case(tuple(actions), tuple(received))


MODELLED = frozenset({
    "Newchannel", "Newstate", "NewCallerid", "NewConnectedLine", "LocalBridge", "DialBegin",
    "DialState", "DialEnd", "HangupRequest", "SoftHangupRequest", "Hangup", "UserEvent",
    "BridgeCreate", "BridgeEnter", "BridgeLeave", "BridgeDestroy",
})
# Values compared exactly in per-channel sequences; the rest are compared by shape.
EXACT = ("ChannelStateDesc", "Cause", "Cause-txt", "DialStatus", "UserEvent", "Leg",
         "BridgeNumChannels", "CallerIDNum", "ConnectedLineNum")
_PAIR_SUFFIX = re.compile(r"-[0-9a-f]{8}(;[12])$")


def leg(name: str) -> str:
    """A Local channel name without its counter, so runs can be compared."""
    return _PAIR_SUFFIX.sub(r"\1", name)


def per_channel(events: Iterable[Event], exact: bool) -> dict[str, list[tuple[str, ...]]]:
    """Modelled events grouped by the channel they are about (Dial* by the dialled one)."""
    grouped: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for evt in events:
        if evt.name not in MODELLED:
            continue
        channel = evt.fields.get("DestChannel") or evt.fields.get("Channel")
        if channel is None:
            continue  # LocalBridge, BridgeCreate/Destroy are checked by shape only
        key = leg(channel)
        far = key.endswith(";2")
        if far and evt.name == "NewCallerid" and any(i[0] == "NewCallerid" for i in grouped[key]):
            continue  # the harness phone's own Set(CALLERID(all)) and its undo: not modelled
        values = tuple(
            "" if far and k == "CallerIDNum" else evt.fields.get(k, "") for k in EXACT
        ) if exact else ()
        grouped[key].append((evt.name, *values))
    for items in grouped.values():  # Newstate Ringing and DialBegin came in either order
        for i in range(len(items) - 1):
            if items[i][0] == "Newstate" and items[i + 1][0] == "DialBegin":
                items[i], items[i + 1] = items[i + 1], items[i]
    return dict(grouped)


_SHAPES = [
    (re.compile(r"^\d{10}\.\d+$"), "<epoch>.<seq>"),
    (re.compile(r"^Local/[\w-]+@fake-phones-[0-9a-f]{8};[12]$"), "Local/<exten>@ctx-<hex>;n"),
    (re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"), "<uuid>"),
    # ChannelIds: which leg's id a Linkedid takes depends on which Originate ran first
    (re.compile(r"^[a-z]\w*-[\w-]+$"), "<ChannelId>"),
]


def shape(value: str) -> str:
    """What a value looks like: ids and channel names by form, everything else as is."""
    return next((label for pattern, label in _SHAPES if pattern.match(value)), value)


ID_KEYS = ("Privilege", "Channel", "DestChannel", "LocalOneChannel", "LocalTwoChannel",
           "Uniqueid", "Linkedid", "DestUniqueid", "DestLinkedid", "BridgeUniqueid")
LISTED = frozenset({"CoreShowChannel", "CoreShowChannelsComplete"})


def signature(evt: Event) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """An event's name, its keys in order, and the form of its ids and channel names."""
    return (evt.name, tuple(k for k, _ in evt.fields),
            tuple(shape(evt.fields.get(k, "")) for k in ID_KEYS))


def assert_shapes_match(sent: Iterable[Event], captured: Iterable[Event]) -> None:
    """Every event the fake sent is laid out as an event of that name in the captured case."""
    allowed = {signature(e) for e in captured}
    for evt in sent:
        if evt.name in MODELLED | LISTED:
            assert signature(evt) in allowed, evt


# -- conformance: the error dialogues of capture c, byte for byte -----------------------


def _frames(data: bytes) -> list[bytes]:
    """Split an AMI stream after the banner into whole messages, timestamps blanked."""
    body = data.split(b"\r\n", 1)[1]
    return [re.sub(rb"Timestamp: \d+\.\d{6}", b"Timestamp: T", frame + b"\r\n\r\n")
            for frame in body.split(b"\r\n\r\n") if frame]


@pytest.mark.parametrize("conn", [1, 2, 3])
async def test_error_dialogues_match_capture_byte_for_byte(conn: int) -> None:
    captured = connection("c_ami_errors", "ami", conn)
    async with FakeAsterisk(phones=[], speed=SPEED,
                            globals_={"CLINIC_CID": "15550001000"}) as pbx:
        reader, writer = await asyncio.open_connection("127.0.0.1", pbx.port)
        started = time.monotonic()
        writer.write(captured.stream(TO_ASTERISK))
        async with asyncio.timeout(3):
            data = await reader.read(-1)
        elapsed = time.monotonic() - started
        writer.close()
    assert data.startswith(b"Asterisk Call Manager/11.0.0\r\n")
    mine, theirs = _frames(data), _frames(captured.stream(FROM_ASTERISK))
    responses = [f for f in theirs if f.startswith(b"Response:")]
    assert [f for f in mine if f.startswith(b"Response:")] == responses
    heads = [f.split(b"\r\n")[0] for f in theirs if f.startswith(b"Event:")]
    assert [f.split(b"\r\n")[0] for f in mine if f.startswith(b"Event:")] == heads
    if conn in (1, 2):
        assert elapsed >= 1.0 * SPEED  # the refusal comes only after Asterisk's delay


# -- conformance: call scenarios of captures b and e ------------------------------------

FULL_CASES = {
    "e1": ("e_simultaneous", [DOCTOR, PATIENT]),
    "e2": ("e_simultaneous", [Phone("doctor", "1", Answers(2.0)), Phone("patient-busy", "2",
                                                                         Busy())]),
    "e3": ("e_simultaneous", [Phone("doctor-congestion", "1", Congestion()),
                              Phone("patient", "2", Answers(1.5))]),
    "b7": ("b_bridge_ami", [Phone("doctor-busy", "1", Busy())]),
    "b8": ("b_bridge_ami", [Phone("doctor-noanswer", "1", NoAnswer())]),
    "b9": ("b_bridge_ami", [Phone("doctor-congestion", "1", Congestion())]),
    "b10": ("b_bridge_ami", []),
}


def _live_name(pbx: FakeAsterisk, captured: str) -> str:
    """The fake's channel standing where the capture named one."""
    return next(name for name in pbx.channels if leg(name) == leg(captured))


async def replay_case(stem: str, name: str, phones: list[Phone]) -> tuple[Client, FakeAsterisk]:
    """Send a case's actions to the fake, each once the capture's preceding events arrived.
    Capture e's Local-channel phones sent no identity of their own: no trusted identity."""
    captured = case(stem, name)
    async with FakeAsterisk(phones=phones, speed=SPEED, trust_id_inbound=False) as pbx:
        client = await Client.login(pbx.port)
        for index, action in enumerate(captured.actions):
            before = [m.name for m, n in captured.received
                      if n <= index and isinstance(m, Event) and m.name in MODELLED | {
                          "OriginateResponse"}]
            if before:
                await client.event(before[-1], count=before.count(before[-1]))
            pairs = [(k, _live_name(pbx, v) if k.startswith("Channel") and "Local/" in v
                      and ";" in v else v) for k, v in action.fields]
            client.send(Action(action.name, Fields(tuple(pairs)), action.action_id))
        await client.wait(lambda: not pbx.channels and len(client.events("OriginateResponse"))
                          >= sum(a.name == "Originate" for a in captured.actions))
        await client.close()
    return client, pbx


@pytest.mark.parametrize("name", sorted(FULL_CASES))
async def test_call_scenarios_match_capture(name: str) -> None:
    stem, phones = FULL_CASES[name]
    captured = case(stem, name)
    client, pbx = await replay_case(stem, name, phones)
    theirs = [m for m, _ in captured.received if isinstance(m, Event)]
    assert per_channel(client.events(), exact=True) == per_channel(theirs, exact=True)
    assert_shapes_match(client.events(), theirs)
    mine = {e.action_id: e for e in client.events("OriginateResponse")}
    for orig in (e for e in theirs if e.name == "OriginateResponse"):
        ours = mine[orig.action_id]
        assert [k for k, _ in ours.fields] == [k for k, _ in orig.fields]
        assert [shape(v) for _, v in ours.fields] == [shape(v) for _, v in orig.fields]
    responses = [m for m, _ in captured.received if isinstance(m, Response)]
    assert [(r.status, r.message) for r in client.received if isinstance(r, Response)][1:] == [
        (r.status, r.message) for r in responses]
    pbx.assert_all_implemented()


@pytest.mark.parametrize(("name", "behaviour"), [
    ("b2", Busy()), ("b3", NoAnswer()), ("b4", Congestion()),
])
async def test_far_party_half_matches_capture_when_dialled(name: str, behaviour: object) -> None:
    """b2-b4 fail the patient inside [clinic-bridge]'s Dial, which the fake does not model;
    the phone's own (;2) half behaves the same when originated, so that half is compared."""
    captured = case("b_bridge_ami", name)
    fields = captured.actions[0].fields
    variables = dict(v.split("=") for v in fields.getall("Variable"))
    exten = variables["PATIENT"]
    timeout = str(int(variables.get("DIALTIMEOUT", "30")) * 1000)
    async with FakeAsterisk(phones=[Phone(exten, "2", behaviour)], speed=SPEED) as pbx:  # type: ignore[arg-type]
        client = await Client.login(pbx.port)
        client.send(originate(exten, "o", Timeout=timeout))
        await client.event("OriginateResponse")
        await client.wait(lambda: not pbx.channels)
        await client.close()
    theirs = [m for m, _ in captured.received if isinstance(m, Event)]
    far = f"Local/{exten}@fake-phones;2"
    assert per_channel(client.events(), exact=False)[far] == per_channel(theirs, False)[far]
    assert_shapes_match(client.events(), theirs)


# -- behaviour --------------------------------------------------------------------------


async def test_events_follow_read_classes_and_masks() -> None:
    users = {"ctrl": ("ctrlsecret", "all", "all"), "calls": ("s", "call", "all"),
             "users": ("s", "user", "all")}
    async with FakeAsterisk(users=users, phones=[DOCTOR], speed=SPEED) as pbx:
        everything = await Client.login(pbx.port)
        calls = await Client.login(pbx.port, "calls", "s")
        users_only = await Client.login(pbx.port, "users", "s")
        masked = await Client.login(pbx.port, Events="call")
        silent = await Client.login(pbx.port)
        assert (await silent.ask(Action("Events", Fields.of(EventMask="off"), "e"))).fields.get(
            "Events") == "Off"
        booted = len(silent.events())
        everything.send(originate("doctor", "o1"))
        await everything.event("UserEvent", UserEvent="LegReady")
        await calls.event("OriginateResponse")
        await users_only.event("UserEvent", UserEvent="LegReady")
        await masked.event("OriginateResponse")
        assert {e.fields["Privilege"] for e in calls.events()} == {"call,all"}
        assert {e.fields["Privilege"] for e in masked.events()} == {"call,all"}
        assert {e.fields["Privilege"] for e in users_only.events()} == {"user,all"}
        assert "system,all" in {e.fields["Privilege"] for e in everything.events()}
        assert len(silent.events()) == booted
        for client in (everything, calls, users_only, masked, silent):
            await client.close()


async def test_wrong_secret_is_refused_after_a_delay_and_closed() -> None:
    async with FakeAsterisk(speed=0.05) as pbx:
        client = await Client.connect(pbx.port)
        started = time.monotonic()
        response = await client.ask(Action("Login", Fields.of(Username="ctrl", Secret="no"), "l"))
        assert response.message == "Authentication failed"
        assert time.monotonic() - started >= 0.05
        await client.eof()


async def test_action_before_login_is_denied() -> None:
    async with FakeAsterisk(speed=SPEED) as pbx:
        client = await Client.connect(pbx.port)
        response = await client.ask(Action("Originate", Fields.of(Channel="x"), "o"))
        assert response.message == "Permission denied"
        await client.close()


async def test_write_classes_are_asterisks_own() -> None:
    users = nobat_user("s") | {"callonly": ("s", "all", "call")}
    async with FakeAsterisk(users=users, speed=SPEED) as pbx:
        nobat = await Client.login(pbx.port, "nobat", "s")
        listing = await nobat.ask(Action("CoreShowChannels", Fields.of(), "l"))
        assert listing.status == "Success"
        limited = await Client.login(pbx.port, "callonly", "s")
        denied = await limited.ask(Action("CoreShowChannels", Fields.of(), "l"))
        assert denied.message == "Permission denied"
        await nobat.close()
        await limited.close()


async def test_drop_gives_plain_eof_and_the_pbx_keeps_listening() -> None:
    async with FakeAsterisk(speed=SPEED) as pbx:
        client = await Client.login(pbx.port)
        await pbx.drop()
        await client.eof()
        assert client.events("Shutdown") == []
        again = await Client.login(pbx.port)
        await again.close()


async def test_restart_refuses_connections_then_boots_again() -> None:
    async with FakeAsterisk(phones=[Phone("doctor", "1", Answers(0.1))], speed=SPEED) as pbx:
        client = await Client.login(pbx.port)
        client.send(originate("doctor", "o"))
        await client.event("OriginateResponse")
        restarting = asyncio.ensure_future(pbx.restart(clean=True))
        shutdown = await client.event("Shutdown")
        assert list(shutdown.fields) == [("Privilege", "system,all"), ("Shutdown", "Cleanly"),
                                         ("Restart", "True")]
        await client.eof()
        await asyncio.sleep(0.1 * SPEED)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", pbx.port)
        await restarting
        again = await Client.login(pbx.port)
        booted = await again.event("FullyBooted")
        assert booted.fields["Uptime"] == "0"
        listing = await again.ask(Action("CoreShowChannels", action_id="csc"))
        assert listing.fields.get("EventList") == "start"
        complete = await again.event("CoreShowChannelsComplete")
        assert complete.fields["ListItems"] == "0"
        await again.close()


async def test_shutting_down_answers_login_with_an_error() -> None:
    async with FakeAsterisk(speed=SPEED) as pbx:
        pbx.shutting_down = True
        client = await Client.connect(pbx.port)
        for name in ("Login", "Ping"):
            response = await client.ask(Action(name, Fields.of(Username="ctrl"), name))
            assert (response.status, response.message) == ("Error", SHUTTING_DOWN)
        await client.close()


async def _bridged(client: Client, *variables: str) -> tuple[str, str]:
    """Originate both legs, wait for both LegReady events, bridge them; return the ;1 names."""
    client.send(originate("patient", "op", "LEG=patient", *variables, ChannelId="c1-patient"))
    client.send(originate("doctor", "od", "LEG=doctor", *variables, ChannelId="c1-doctor"))
    ready = [await client.event("UserEvent", count=n, UserEvent="LegReady") for n in (1, 2)]
    chans = {e.fields["Leg"]: e.fields["Chan"] for e in ready}
    response = await client.ask(Action("Bridge", Fields.of(
        [("Channel1", chans["doctor"]), ("Channel2", chans["patient"]), ("Tone", "no")]), "br"))
    assert response.message == "Channels have been bridged"
    return chans["doctor"], chans["patient"]


async def test_bridge_survivor_stays_up_when_the_other_hangs_up() -> None:
    phones = [Phone("doctor", "15559990001", Answers(0.2)),
              Phone("patient", "15557770001", Answers(0.1, talk=1.0))]
    async with FakeAsterisk(phones=phones, speed=SPEED) as pbx:
        client = await Client.login(pbx.port)
        doctor, patient = await _bridged(client)
        assert [e.fields["BridgeNumChannels"] for e in client.events("BridgeEnter")] == ["1", "2"]
        assert pbx.channels[doctor].linkedid == "c1-patient"  # the older call's id wins
        await client.event("BridgeDestroy")
        assert pbx.state_of(doctor) == "Up" and pbx.state_of(patient) == "Gone"
        assert pbx.bridges == {}
        assert [e.fields["Channel"] for e in client.events("BridgeLeave")] == [patient, doctor]
        assert not [e for e in client.events("Hangup") if e.fields["Channel"] == doctor]
        response = await client.ask(Action("Hangup", Fields.of(Channel=doctor, Cause="16"), "h"))
        assert response.message == "Channel Hungup"
        await client.event("Hangup", Channel=doctor)
        missing = await client.ask(Action("Hangup", Fields.of(Channel=doctor), "h2"))
        assert missing.message == "No such channel"
        await client.close()


async def test_connected_line_leaks_unless_intercepted() -> None:
    phones = [Phone("doctor", "15559990001", Answers(0.2), "Dr Doctor"),
              Phone("patient", "15557770002", Answers(0.1), "Patient")]
    async with FakeAsterisk(phones=phones, speed=SPEED) as pbx:
        client = await Client.login(pbx.port)
        doctor, patient = await _bridged(client)
        await client.event("NewConnectedLine", count=2, Channel=doctor)
        shown = {e.fields["Channel"]: e.fields["ConnectedLineNum"]
                 for e in client.events("NewConnectedLine")[-2:]}
        assert shown == {patient: "15559990001", doctor: "15557770002"}  # as in capture f
        f1 = case("f_sip_connected_line", "f1").received
        layout = {tuple(k for k, _ in m.fields) for m, _ in f1 if isinstance(m, Event)
                  and m.name == "NewConnectedLine"}
        assert {tuple(k for k, _ in e.fields) for e in client.events("NewConnectedLine")} == layout
        assert {(s.exten, s.number) for s in pbx.leaks()} == {
            ("patient", "15559990001"), ("doctor", "15557770002")}
        assert pbx.seen_by("doctor") == ["15550001000", "15557770002"]
    async with FakeAsterisk(phones=phones, speed=SPEED) as pbx:
        client = await Client.login(pbx.port)
        await _bridged(client, "CONNECTED_LINE_SEND_SUB=mask-cl,s,1")
        assert pbx.leaks() == []
        assert set(pbx.seen_by("doctor")) == {"15550001000"}
        await client.close()


async def test_unknown_action_is_answered_and_recorded() -> None:
    async with FakeAsterisk(speed=SPEED) as pbx:
        client = await Client.login(pbx.port)
        response = await client.ask(Action("QueueAdd", Fields.of(Queue="q"), "q"))
        assert response.message == (
            "Invalid/unknown command: QueueAdd. Use Action: ListCommands to show available "
            "commands.")
        with pytest.raises(AssertionError, match="QueueAdd"):
            pbx.assert_all_implemented()
        assert pbx.sessions[0].actions[-1].name == "QueueAdd"
        await client.close()


@pytest.mark.parametrize("speed", [0.01, 0.04])
async def test_speed_scales_ringing(speed: float) -> None:
    async with FakeAsterisk(phones=[Phone("doctor", "1", Answers(after=2.0))], speed=speed) as pbx:
        client = await Client.login(pbx.port)
        started = time.monotonic()
        client.send(originate("doctor", "o"))
        await client.event("OriginateResponse")
        # the ring is scaled: never shorter than its scaled length, and far from the
        # unscaled two seconds even when the machine running the suite is busy
        assert 2.0 * speed <= time.monotonic() - started < 2.0 * speed + 1.0
        await client.close()


async def test_synchronous_originate_answers_only_when_settled() -> None:
    phones = [Phone("doctor-busy", "1", Busy()), Phone("doctor", "2", Answers(1.0))]
    async with FakeAsterisk(phones=phones, speed=SPEED) as pbx:
        client = await Client.login(pbx.port)
        busy = originate("doctor-busy", "s1")
        sync = Action("Originate", Fields(tuple(p for p in busy.fields if p[0] != "Async")), "s1")
        assert (await client.ask(sync)).message == "Originate failed"
        ok = Action("Originate", Fields.of(Channel="Local/doctor@fake-phones",
                                           Application="Wait", Data="5"), "s2")
        assert (await client.ask(ok)).message == "Originate successfully queued"
        assert client.events("OriginateResponse") == []
        missing = await client.ask(Action("Originate", Fields.of(Exten="s"), "s3"))
        assert missing.message == "Channel not specified"
        await client.close()


async def test_rejected_and_unanswered_legs_report_their_reasons() -> None:
    phones = [Phone("rejects", "1", Rejects(0.5)), Phone("rings", "2", NoAnswer())]
    async with FakeAsterisk(phones=phones, speed=SPEED) as pbx:
        client = await Client.login(pbx.port)
        client.send(originate("rejects", "r"))
        client.send(originate("rings", "n", Timeout="1000"))
        rejected = await client.event("OriginateResponse", ActionID="r")
        unanswered = await client.event("OriginateResponse", ActionID="n")
        assert (rejected.fields["Reason"], unanswered.fields["Reason"]) == ("1", "3")
        causes = {(leg(e.fields["Channel"]), e.fields["Cause"]) for e in client.events("Hangup")}
        assert ("Local/rejects@fake-phones;2", "21") in causes
        assert ("Local/rings@fake-phones;1", "19") in causes
        await client.close()


async def test_variables_redirect_and_listings() -> None:
    async with FakeAsterisk(phones=[Phone("doctor", "1", Answers(0.1))], speed=SPEED) as pbx:
        client = await Client.login(pbx.port)
        client.send(originate("doctor", "o", ChannelId="appt-7", OtherChannelId="appt-7-2"))
        answered = await client.event("OriginateResponse")
        chan = answered.fields["Channel"]
        assert re.fullmatch(r"Local/doctor@fake-phones-[0-9a-f]{8};1", chan)
        assert answered.fields["Uniqueid"] == "appt-7"
        assert pbx.channels[chan.replace(";1", ";2")].linkedid == "appt-7"
        await client.ask(Action("Setvar", Fields.of(Channel=chan, Variable="X", Value="1"), "s"))
        got = await client.ask(Action("Getvar", Fields.of(Channel=chan, Variable="X"), "g"))
        assert got.fields["Value"] == "1"
        moved = await client.ask(Action("Redirect", Fields.of(
            Channel=chan, Context="consult-hold", Exten="s", Priority="1"), "r"))
        assert moved.message == "Redirect successful"
        await client.event("UserEvent", count=2, UserEvent="LegReady")
        await client.ask(Action("BridgeList", action_id="bl"))
        assert (await client.event("BridgeListComplete")).fields["ListItems"] == "0"
        await client.ask(Action("Status", action_id="st"))
        assert (await client.event("StatusComplete")).fields["ListItems"] == "2"
        assert [e.fields["ActionID"] for e in client.events("Status")] == ["st", "st"]
        assert pbx.callerid_of(chan) == ("15550001000", "Clinic")
        pbx.assert_all_implemented()
        await client.close()


def test_banner_is_the_captured_one() -> None:
    assert AmiServerConnection().send(Banner()) == b"Asterisk Call Manager/11.0.0\r\n"


async def test_nobats_own_holding_context_masks_and_ends_a_bridged_survivor() -> None:
    phones = [Phone("doctor", "09121000001", Answers(0.2), "Dr Doctor"),
              Phone("patient", "09351112233", Answers(0.1, talk=1.0), "Patient")]
    clinic = ("NOBAT_CLINIC_NUMBER=02188776655", "NOBAT_CLINIC_NAME=Clinic",
              "CONSULTATION=7")
    async with FakeAsterisk(phones=phones, speed=SPEED) as pbx:
        client = await Client.login(pbx.port)
        for leg in ("patient", "doctor"):
            client.send(originate(leg, f"o-{leg}", f"LEG={leg}", *clinic,
                                  Context="nobat-consult-hold", ChannelId=f"c7-{leg}"))
        ready = [await client.event("UserEvent", count=n, UserEvent="NobatLegReady")
                 for n in (1, 2)]
        assert {(e.fields["Leg"], e.fields["Consultation"]) for e in ready} == {
            ("patient", "7"), ("doctor", "7")}
        chans = {e.fields["Leg"]: e.fields["Chan"] for e in ready}
        response = await client.ask(Action("Bridge", Fields.of(
            [("Channel1", chans["doctor"]), ("Channel2", chans["patient"])]), "br"))
        assert response.message == "Channels have been bridged"
        done = await client.event("UserEvent", UserEvent="NobatLegDone")
        assert (done.fields["Leg"], done.fields["Bridged"]) == ("doctor", "yes")
        await client.event("Hangup", Channel=chans["doctor"])
        assert pbx.leaks() == []
        assert {e.fields["CallerIDNum"] for e in ready} == {"02188776655"}
        await client.close()
