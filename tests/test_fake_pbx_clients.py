"""The fake PBX against the ecosystem's own clients, not only against nobat's codecs.

panoramisk's `Manager` (1.4) and pyst2's classic `AGI` are independent implementations that
real deployments point at a real Asterisk; if the fake speaks AMI and AGI as Asterisk 22 does,
they must work against it unchanged and observe what they would observe there.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from panoramisk import Manager
from panoramisk.message import Message

from ivr.agi_protocol import AgiEnvironment
from tests.fakepbx.agi_caller import CallTranscript, FakeChannel, call_environment, converse
from tests.fakepbx.ami_server import AUTH_DELAY, FakeAsterisk, nobat_user
from tests.fakepbx.script import Answers, Caller, Hear, Phone

SPEED = 0.01
WAIT = 3.0  # seconds before a wait fails the test
# The shipped asterisk/manager.conf [nobat] user: read=call,system,user; write=call,originate,
# reporting.
USERS = nobat_user("nobatsecret")
DOCTOR = Phone("doctor", "15559990001", Answers(after=1.0), "Dr Doctor")
LOCAL_PAIR = re.compile(r"Local/doctor@fake-phones-[0-9a-f]{8};([12])")


# -- AMI: panoramisk's Manager ----------------------------------------------------------


@dataclass
class Observed:
    """What panoramisk handed to the application: login, callbacks, disconnects."""

    login: Message | None = None
    logged_in: asyncio.Event = field(default_factory=asyncio.Event)
    events: list[Message] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, manager: Manager, event: Message) -> None:
        self.events.append(event)
        self.arrived.set()

    def named(self, name: str) -> list[Message]:
        return [e for e in self.events if e.event == name]

    async def event(self, name: str, **match: str) -> Message:
        """Wait until the callbacks got an event called `name` with the fields in `match`."""
        async with asyncio.timeout(WAIT):
            while True:
                for evt in self.named(name):
                    if all(evt.get(k) == v for k, v in match.items()):
                        return evt
                self.arrived.clear()
                await self.arrived.wait()


@asynccontextmanager
async def panoramisk(pbx: FakeAsterisk, username: str, secret: str) -> AsyncIterator[
        tuple[Manager, Observed]]:
    """panoramisk's Manager connected and its Login answered, every event on one callback.

    Keep-alive pings and reconnects are pushed past the test so only the test's actions go out.
    """
    loop = asyncio.get_running_loop()
    seen = Observed()
    login_sent: asyncio.Future[asyncio.Future[Message]] = loop.create_future()

    manager = Manager(
        host="127.0.0.1", port=pbx.port, username=username, secret=secret, loop=loop,
        ping_delay=60, reconnect_timeout=60,
        on_connect=lambda m: login_sent.set_result(m.authenticated_future),
        on_login=lambda m: seen.logged_in.set(),
        on_disconnect=lambda m, exc: seen.disconnected.set(),
    )
    manager.register_event("*", seen.on_event)
    try:
        async with asyncio.timeout(WAIT):
            await manager.connect()
            seen.login = await (await login_sent)
        yield manager, seen
    finally:
        manager.close()


async def test_panoramisk_logs_in_pings_lists_and_originates() -> None:
    async with FakeAsterisk(users=USERS, phones=[DOCTOR], speed=SPEED) as pbx, \
            panoramisk(pbx, "nobat", "nobatsecret") as (manager, seen):
        assert seen.login is not None and seen.login.success
        assert seen.login.message == "Authentication accepted"
        assert manager.authenticated
        async with asyncio.timeout(WAIT):
            await seen.logged_in.wait()  # panoramisk's on_login hook ran
        booted = await seen.event("FullyBooted")
        assert (booted.privilege, booted.status) == ("system,all", "Fully Booted")
        assert seen.named("SuccessfulAuth") == []  # class "security": not in read=

        async with asyncio.timeout(WAIT):
            pong = await manager.send_action({"Action": "Ping"})
        assert (pong.response, pong.ping) == ("Success", "Pong")
        assert re.fullmatch(r"\d{10}\.\d{6}", pong.timestamp)

        async with asyncio.timeout(WAIT):
            empty = await manager.send_action({"Action": "CoreShowChannels"})
        start, complete = empty
        assert (start.response, start.eventlist, start.message) == (
            "Success", "start", "Channels will follow")
        assert (complete.event, complete.eventlist, complete.listitems) == (
            "CoreShowChannelsComplete", "Complete", "0")
        assert complete.actionid == start.actionid

        originate = {
            "Action": "Originate", "Channel": "Local/doctor@fake-phones",
            "Context": "consult-hold", "Exten": "s", "Priority": "1",
            "CallerID": '"Clinic" <15550001000>', "Timeout": "30000",
            "Async": "true",  # panoramisk 1.4 raises KeyError without it
            "ChannelId": "c1-doctor", "Variable": ["LEG=doctor", "CONSULTATION=1"],
        }
        async with asyncio.timeout(WAIT):
            queued, answered = await manager.send_action(originate)
        # panoramisk matches OriginateResponse to the action by its ActionID and resolves the
        # action's future with both messages; it never reaches the event callbacks.
        assert (queued.response, queued.message) == ("Success", "Originate successfully queued")
        assert answered.event == "OriginateResponse"
        assert answered.actionid == queued.actionid
        assert (answered.response, answered.reason, answered.uniqueid) == (
            "Success", "4", "c1-doctor")
        assert (answered.context, answered.exten) == ("consult-hold", "s")
        assert (answered.calleridnum, answered.calleridname) == ("15550001000", "Clinic")
        near = answered.channel
        assert (m := LOCAL_PAIR.fullmatch(near)) and m[1] == "1"
        far = near[:-1] + "2"
        assert seen.named("OriginateResponse") == []

        created = [await seen.event("Newchannel", Channel=name) for name in (near, far)]
        assert [(e.channelstatedesc, e.context, e.exten) for e in created] == [
            ("Down", "fake-phones", "doctor"), ("Ring", "fake-phones", "doctor")]
        assert created[0].uniqueid == "c1-doctor"
        assert {e.linkedid for e in created} == {"c1-doctor"}
        ready = await seen.event("UserEvent", UserEvent="LegReady")
        assert (ready.leg, ready.chan, ready.privilege) == ("doctor", near, "user,all")

        async with asyncio.timeout(WAIT):
            listing = await manager.send_action({"Action": "CoreShowChannels"})
        items = [m for m in listing if m.event == "CoreShowChannel"]
        assert sorted(i.channel for i in items) == [near, far]
        assert {i.actionid for i in listing} == {listing[0].actionid}
        assert {i.channelstatedesc for i in items} == {"Up"}
        assert listing[-1].event == "CoreShowChannelsComplete"
        assert listing[-1].listitems == "2"

        async with asyncio.timeout(WAIT):
            hungup = await manager.send_action({"Action": "Hangup", "Channel": near})
        assert (hungup.response, hungup.message) == ("Success", "Channel Hungup")
        gone = [await seen.event("Hangup", Channel=name) for name in (near, far)]
        assert [(e.cause, e["Cause-txt"]) for e in gone] == [("16", "Normal Clearing")] * 2
        assert [e.event for e in seen.events if e.event in ("Newchannel", "Hangup")] == [
            "Newchannel", "Newchannel", "Hangup", "Hangup"]

        assert [a.name for a in pbx.sessions[0].actions] == [
            "Login", "Ping", "CoreShowChannels", "Originate", "CoreShowChannels", "Hangup"]
        assert pbx.sessions[0].actions[0].fields.get("Events") == "on"
        pbx.assert_all_implemented()
        assert pbx.channels == {}


async def test_panoramisk_is_refused_a_wrong_secret() -> None:
    async with FakeAsterisk(users=USERS, speed=SPEED) as pbx:
        started = time.monotonic()
        async with panoramisk(pbx, "nobat", "wrong") as (manager, seen):
            assert time.monotonic() - started >= AUTH_DELAY * SPEED
            assert seen.login is not None and not seen.login.success
            assert (seen.login.response, seen.login.message) == ("Error", "Authentication failed")
            assert not manager.authenticated
            async with asyncio.timeout(WAIT):
                await seen.disconnected.wait()  # Asterisk closes the connection after refusing
            assert not seen.logged_in.is_set()
            assert seen.events == []  # not even FullyBooted
        assert [a.name for a in pbx.sessions[0].actions] == ["Login"]


# -- classic AGI: pyst2 ------------------------------------------------------------------

PYST2_SCRIPT = """
from asterisk.agi import AGI

agi = AGI()  # reads the environment and installs its SIGHUP handler: main thread only
agi.answer()
first = agi.stream_file("welcome", "123")
entered = agi.get_data("enter-number", 3000, 4)
digit = agi.wait_for_digit(5000)
partial = agi.get_data("beep", 1000, 4)
nothing = agi.wait_for_digit(1000)
number = agi.get_variable("CALLERID(num)")
agi.set_variable("PYST2_GOT", "|".join(
    [first, entered, digit, partial, nothing, number, agi.env["agi_callerid"]]))
"""


def classic_environment(caller: Caller, script: str) -> AgiEnvironment:
    """What Asterisk writes to a classic AGI program: no agi_network lines."""
    env = call_environment(caller, script)
    return AgiEnvironment({k: v for k, v in env.variables.items()
                           if not k.startswith("agi_network")} | {"agi_request": script})


async def run_pyst2(caller: Caller, script: str) -> tuple[CallTranscript, str]:
    """Run `script` as the AGI program of one call, over its stdin and stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    logged = asyncio.create_task(process.stderr.read())
    channel = FakeChannel(caller, classic_environment(caller, "pyst2-test"))
    try:
        async with asyncio.timeout(WAIT):
            await converse(channel, process.stdout, process.stdin, stall_seconds=WAIT)
            process.stdin.close()
            code = await process.wait()
            log = (await logged).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0, log
    return channel.transcript, log


async def test_pyst2_classic_agi_script_gets_the_callers_digits() -> None:
    caller = Caller.dialling("09121234567", Hear("welcome"), "1", Hear("enter-number"),
                             "42#", "7", Hear("beep"), "5")
    transcript, log = await run_pyst2(caller, PYST2_SCRIPT)
    transcript.assert_clean()
    assert "agi_request': 'pyst2-test'" in log  # pyst2 read the whole environment
    assert [(x.command.verb, x.command.args) for x in transcript.exchanges] == [
        ("ANSWER", ()),
        ("STREAM FILE", ("welcome", "123", "0")),
        ("GET DATA", ("enter-number", "3000", "4")),
        ("WAIT FOR DIGIT", ("5000",)),
        ("GET DATA", ("beep", "1000", "4")),
        ("WAIT FOR DIGIT", ("1000",)),
        ("GET VARIABLE", ("CALLERID(num)",)),
        ("SET VARIABLE", ("PYST2_GOT", "1|42|7|5||09121234567|09121234567")),
    ]
    assert [x.reply.raw for x in transcript.exchanges][1:6] == [
        "200 result=49 endpos=1600", "200 result=42", "200 result=55",
        "200 result=5 (timeout)", "200 result=0"]  # pyst2 drops GET DATA's (timeout)
    # What the script set is what it got from pyst2: each key reached it intact.
    assert transcript.variables["PYST2_GOT"] == "1|42|7|5||09121234567|09121234567"
    assert transcript.consumed == "142#75" and transcript.dropped == ""
    assert [(h.prompt, h.outcome, h.digit) for h in transcript.heard] == [
        ("welcome", "interrupted", "1"), ("enter-number", "interrupted", "4"),
        ("beep", "interrupted", "5")]
    assert transcript.hung_up_at is None and transcript.nobat_closed
