"""FastAGI against a real Asterisk 22, and nobat's [nobat-ivr] fallbacks.

A scripted caller (tests/fakepbx/script.py compiled to [fake-phones] dialplan) is
originated into nobat's [nobat-ivr]; Asterisk connects to a small FastAGI server in this
file, which sends a fixed list of commands and records every (command, reply) pair and
every HANGUP line. The same scenario can run against the fake PBX: see `PLACES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bridge.ami_protocol import Event
from ivr.agi_protocol import (
    DEAD_CHANNEL,
    GET_DATA_USAGE,
    INVALID_COMMAND,
    AgiEnvironment,
    Command,
    Hangup,
    Reply,
)
from tests.fakepbx.agi_caller import DIALPLAN_SECRET, place_call
from tests.fakepbx.script import Answers, Caller, HangUp, Phone, Wait
from tests.realpbx.asterisk import AmiLink, RealAsterisk, find_asterisk, sounds_dir
from tests.realpbx.dialplan import FakePhones, dial_string, originate_caller
from tests.realpbx.fastagi import AgiLink
from tests.realpbx.loopback import LoopbackServer

REPLY_SECONDS = 30.0
OFFICE = Phone("office", "15550009999", Answers(after=0.5, talk=1.0), name="Office")


# ---- the FastAGI side: a server that sends a fixed list of commands -----------------------
@dataclass(frozen=True)
class Send:
    """One command of the script; `then_hangup` waits for Asterisk's HANGUP line after it."""

    command: Command
    then_hangup: bool = False


def send(verb: str, *args: object, then_hangup: bool = False) -> Send:
    return Send(Command.of(verb, *args), then_hangup)


@dataclass
class Step:
    """What happened to one command: its reply, and whether HANGUP came before the reply."""

    command: Command
    reply: Reply | None
    hangup_before_reply: bool = False
    hangup_after_reply: bool = False


@dataclass
class AgiRun:
    """One FastAGI session as nobat's end saw it."""

    environment: AgiEnvironment | None = None
    steps: list[Step] = field(default_factory=list)
    closed_by_asterisk: bool = False
    after_close: list[str] = field(default_factory=list)

    def replies(self) -> list[tuple[str, str]]:
        return [(s.command.encode().decode().rstrip("\n"), s.reply.raw if s.reply else "(none)")
                for s in self.steps]


class FastAgiServer(LoopbackServer):
    """nobat's end of FastAGI, reduced to a script: send each command, record each reply."""

    def __init__(self, script: Sequence[Send], *, abort_after: int | None = None) -> None:
        self.script = list(script)
        self.abort_after = abort_after
        self.sessions: list[AgiRun] = []
        self._done: asyncio.Queue[AgiRun] = asyncio.Queue()

    async def session(self, within: float = 60.0) -> AgiRun:
        return await asyncio.wait_for(self._done.get(), within)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        run = AgiRun()
        self.sessions.append(run)
        agi = AgiLink(reader, writer, REPLY_SECONDS)
        try:
            run.environment = await agi.environment()
            for index, item in enumerate(self.script):
                if self.abort_after is not None and index >= self.abort_after:
                    writer.transport.abort()  # nobat's process dies: no FIN handshake
                    return
                await agi.send(item.command)
                step = Step(item.command, None)
                run.steps.append(step)
                while True:
                    event = await agi.next_event()
                    if isinstance(event, Hangup):
                        step.hangup_before_reply = True
                    elif isinstance(event, Reply):
                        step.reply = event
                        break
                    else:
                        run.closed_by_asterisk = True
                        return
                if item.then_hangup and not step.hangup_before_reply:
                    event = await agi.next_event()
                    step.hangup_after_reply = isinstance(event, Hangup)
            # nobat is done: it closes its side; Asterisk says HANGUP and closes too.
            run.after_close = ["HANGUP" if isinstance(event, Hangup) else repr(event)
                               for event in await agi.finish()]
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            await self._done.put(run)


# ---- where the call comes from: a real Asterisk, or the fake PBX ------------------------


async def call_through_real_asterisk(
    binary: Path, caller: Caller, fastagi: str, *, agi_scripts: dict[str, str] | None = None,
    call_id: str = "call-1",
) -> list[Event]:
    """Originate `caller` into nobat's [nobat-ivr] and return the AMI events nobat's user saw
    until the caller's line is gone (and a little longer, to catch a late fallback)."""
    phones = FakePhones()
    exten = phones.add_caller(caller)
    phones.add_phone(OFFICE)
    pbx = RealAsterisk(phones=phones, binary=binary, agi_scripts=agi_scripts or {},
                       globals={"NOBAT_FASTAGI": fastagi,
                                "NOBAT_FASTAGI_SECRET": DIALPLAN_SECRET,
                                "NOBAT_OFFICE": dial_string(OFFICE.exten)})
    async with pbx:
        ami: AmiLink = await pbx.connect()
        response = await ami.send(originate_caller(caller, exten, action_id=call_id,
                                                   channel_id=call_id))
        assert response.status == "Success", response
        await ami.wait_event("Hangup", within=90, Uniqueid=call_id)
        await asyncio.sleep(0.5)
        return ami.events()


def prompt_seconds(name: str, sounds: Path | None) -> float | None:
    """How long a prompt really plays, from the WAV file, for the fake PBX's clock."""
    if sounds is None:
        return None
    path = sounds / f"{name}.wav"
    if not path.is_file():
        return None
    with wave.open(str(path)) as audio:
        return audio.getnframes() / audio.getframerate()


# ---- the scenario ----------------------------------------------------------------------
CALLER = Caller.dialling(
    "15551230001",
    Wait(3), "1",           # interrupts STREAM FILE demo-congrats
    Wait(2), "42#",         # GET DATA beep 6000 4 -> 42
    Wait(2), "7",           # WAIT FOR DIGIT -> 7 (55)
    Wait(8), HangUp(),      # SAY NUMBER, a GET DATA that times out, ... hangs up in demo-instruct
    dialled="02188776655",
)

IVR_SCRIPT = [
    send("SET VARIABLE", "NOBAT_SESSION", "test-session"),
    send("ANSWER"),
    send("GET VARIABLE", "CALLERID(num)"),
    send("GET VARIABLE", "NOBAT_NOT_SET"),
    send("STREAM FILE", "demo-congrats", "0123456789*#"),
    send("GET DATA", "beep", 6000, 4),
    send("WAIT FOR DIGIT", 6000),
    send("SAY NUMBER", 42, ""),
    send("GET DATA", "beep", 2000, 3),
    send("STREAM FILE", "nobat-no-such-prompt", ""),
    send("NO SUCH COMMAND"),
    send("GET DATA"),
    send("STREAM FILE", "demo-instruct", "", then_hangup=True),
    send("GET VARIABLE", "NOBAT_SESSION"),
    send("STREAM FILE", "beep", ""),
    send("CHANNEL STATUS"),
    send("SET VARIABLE", "NOBAT_RESULT", "done"),
]

ENDPOS = re.compile(r"endpos=(\d+)")
EXPECTED = [  # (reply pattern, seconds of audio endpos should show, or None)
    (r"200 result=1", None),
    (r"200 result=0", None),
    (r"200 result=1 \(15551230001\)", None),
    (r"200 result=0", None),
    (r"200 result=49 endpos=\d+", 3.2),
    (r"200 result=42", None),
    (r"200 result=55", None),
    (r"200 result=0", None),
    (r"200 result= \(timeout\)", None),
    (r"200 result=-1 endpos=0", None),
    (re.escape(INVALID_COMMAND.raw), None),
    (r"520-Invalid command syntax\.  Proper usage follows:\n(.|\n)*\n520 End of proper usage\.",
     None),
    (r"200 result=-1 endpos=\d+", 4.0),
    (r"200 result=1 \(test-session\)", None),
    (re.escape(DEAD_CHANNEL.raw), None),
    (re.escape(DEAD_CHANNEL.raw), None),
    (r"200 result=1", None),
]


def check_ivr_run(run: AgiRun) -> None:
    """What the captures (a1/a2) and res_agi say Asterisk 22 answers to IVR_SCRIPT."""
    env = run.environment
    assert env is not None
    assert env.script == "ivr" and env.query == {"lang": "fa"}
    assert env.variables["agi_network_script"] == "ivr?lang=fa"
    assert env.args == ["02188776655", f"key={DIALPLAN_SECRET}"], env.args
    assert env.callerid == "15551230001"
    assert env.extension == "s" and env.context == "nobat-ivr"
    assert env.variables["agi_version"].startswith("22.")
    replies = run.replies()
    assert len(replies) == len(EXPECTED), replies
    for (line, raw), (pattern, seconds) in zip(replies, EXPECTED, strict=True):
        assert re.fullmatch(pattern, raw), (line, raw)
        if seconds is not None:
            endpos = int(ENDPOS.search(raw).group(1))  # type: ignore[union-attr]
            assert abs(endpos / 8000 - seconds) < 1.0, (line, raw)
    usage = run.steps[11].reply
    assert usage is not None and usage.code == 520 and usage.usage is not None
    assert GET_DATA_USAGE.split("\n")[0] in usage.usage
    hangup_step = run.steps[12]
    assert hangup_step.hangup_after_reply and not hangup_step.hangup_before_reply
    assert not any(s.hangup_before_reply for s in run.steps)
    assert run.after_close == ["HANGUP"] and not run.closed_by_asterisk


ENDPOS_SHAPE = (re.compile(r"endpos=\d+"), "endpos=N")


def shape(run: AgiRun) -> list[tuple[str, str, bool, bool]]:
    """A session as comparable between PBXes: each command, its reply with endpos by shape,
    and where HANGUP lines came."""
    pattern, placeholder = ENDPOS_SHAPE
    return [(line, pattern.sub(placeholder, raw), step.hangup_before_reply,
             step.hangup_after_reply)
            for (line, raw), step in zip(run.replies(), run.steps, strict=True)]


async def fake_ivr_run() -> AgiRun:
    """The same caller and script through the fake PBX (tests/fakepbx/agi_caller.py), its
    clock set by the real prompt lengths."""
    sounds = sounds_dir(find_asterisk())
    async with FastAgiServer(IVR_SCRIPT) as server:
        await place_call("127.0.0.1", server.port, CALLER, script="ivr?lang=fa",
                         args=[CALLER.dialled or ""], strict=False,
                         prompt_seconds=lambda name: prompt_seconds(name, sounds))
        return await server.session()


def office_dialled(events: list[Event]) -> bool:
    prefix = dial_string(OFFICE.exten)
    return any((e.fields.get("Channel") or "").startswith(prefix)
               or (e.fields.get("DestChannel") or "").startswith(prefix) for e in events)


async def test_ivr_session_on_real_asterisk(asterisk_binary: Path) -> None:
    async with FastAgiServer(IVR_SCRIPT) as server:
        events = await call_through_real_asterisk(asterisk_binary, CALLER,
                                                  f"127.0.0.1:{server.port}")
        run = await server.session()
    print("\n".join(f"{line!r} -> {raw!r}" for line, raw in run.replies()))
    check_ivr_run(run)
    # A missing prompt made AGISTATUS FAILURE (res_agi), yet the caller who hung up never
    # reaches classic AGI or the office: Asterisk stops the dialplan on a hung-up channel.
    assert not office_dialled(events)
    # The fake PBX gives the same replies, HANGUP lines and environment layout.
    fake = await fake_ivr_run()
    assert shape(fake) == shape(run)
    assert fake.after_close == run.after_close
    assert fake.environment is not None and run.environment is not None
    assert list(fake.environment.variables) == list(run.environment.variables)
    for (_, real_raw), (_, fake_raw) in zip(run.replies(), fake.replies(), strict=True):
        if match := ENDPOS.search(real_raw):
            fake_endpos = int(ENDPOS.search(fake_raw).group(1))  # type: ignore[union-attr]
            assert abs(int(match.group(1)) - fake_endpos) <= 8000 * 0.5, (real_raw, fake_raw)


async def test_unreachable_nobat_sends_the_caller_to_the_office(asterisk_binary: Path) -> None:
    # Nothing listens on the FastAGI port and there is no classic nobat-agi: the office rings.
    caller = Caller.dialling("15551230002", Wait(20), HangUp())
    closed = await _closed_port()
    events = await call_through_real_asterisk(asterisk_binary, caller, f"127.0.0.1:{closed}")
    dial_end = [e for e in events if e.name == "DialEnd"
                and (e.fields.get("DestChannel") or "").startswith(dial_string(OFFICE.exten))]
    assert dial_end and dial_end[0].fields["DialStatus"] == "ANSWER", dial_end
    begin = next(e for e in events if e.name == "DialBegin" and e.fields.get("Channel"))
    assert begin.fields["Uniqueid"] == "call-1"


async def test_classic_agi_takes_the_call_when_fastagi_is_down(
    asterisk_binary: Path, tmp_path: Path
) -> None:
    seen = tmp_path / "classic-env.txt"
    script = f"""#!/bin/sh
# A stand-in for nobat's classic AGI entry: record the environment, finish the call.
while read line && [ -n "$line" ]; do echo "$line" >> {seen}; done
echo 'SET VARIABLE NOBAT_SESSION classic'; read reply; echo "$reply" >> {seen}
echo 'SET VARIABLE NOBAT_RESULT done'; read reply; echo "$reply" >> {seen}
"""
    caller = Caller.dialling("15551230003", Wait(20), HangUp())
    closed = await _closed_port()
    events = await call_through_real_asterisk(asterisk_binary, caller, f"127.0.0.1:{closed}",
                                              agi_scripts={"nobat-agi": script})
    lines = seen.read_text().splitlines()
    assert "agi_request: nobat-agi" in lines
    assert "agi_arg_1: lang=fa" in lines
    assert "agi_network_script: " not in "\n".join(lines)
    assert lines[-2:] == ["200 result=1", "200 result=1"]
    assert not office_dialled(events)


async def test_nobat_dying_mid_call_sends_the_caller_to_the_office(
    asterisk_binary: Path,
) -> None:
    caller = Caller.dialling("15551230004", Wait(20), HangUp())
    script = [send("SET VARIABLE", "NOBAT_SESSION", "s-4"), send("ANSWER"),
              send("STREAM FILE", "beep", "")]
    async with FastAgiServer(script, abort_after=2) as server:
        events = await call_through_real_asterisk(asterisk_binary, caller,
                                                  f"127.0.0.1:{server.port}")
        run = await server.session()
    assert [raw for _, raw in run.replies()] == ["200 result=1", "200 result=0"]
    assert office_dialled(events)


async def test_nobat_finishing_the_flow_hangs_up_without_fallback(
    asterisk_binary: Path,
) -> None:
    caller = Caller.dialling("15551230005", Wait(20), HangUp())
    script = [send("SET VARIABLE", "NOBAT_SESSION", "s-5"), send("ANSWER"),
              send("SET VARIABLE", "NOBAT_RESULT", "done")]
    async with FastAgiServer(script) as server:
        events = await call_through_real_asterisk(asterisk_binary, caller,
                                                  f"127.0.0.1:{server.port}")
        run = await server.session()
    assert run.after_close == ["HANGUP"]
    assert not office_dialled(events)
    ended = next(e for e in events if e.name == "Hangup" and e.fields.get("Uniqueid") == "call-1")
    assert ended.fields["Cause"] == "16"


async def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port




async def test_a_classic_agi_process_hears_of_a_hang_up_by_sighup_not_a_line(
    asterisk_binary: Path, tmp_path: Path
) -> None:
    """What the fake PBX models for nobat-agi: res_agi signals a classic process (SIGHUP)
    and never writes it the HANGUP line FastAGI gets; commands after that are 511."""
    seen = tmp_path / "classic-hangup.txt"
    script = f"""#!/bin/sh
trap 'echo SIGHUP >> {seen}' HUP
while read line && [ -n "$line" ]; do :; done
echo 'SET VARIABLE NOBAT_SESSION classic'; read reply
echo 'EXEC Wait 10'; read reply; echo "reply: $reply" >> {seen}
echo 'STREAM FILE beep ""'; read reply; echo "reply: $reply" >> {seen}
"""
    caller = Caller.dialling("15551230006", Wait(2), HangUp())
    closed = await _closed_port()
    await call_through_real_asterisk(asterisk_binary, caller, f"127.0.0.1:{closed}",
                                     agi_scripts={"nobat-agi": script})
    lines = seen.read_text().splitlines()
    assert "SIGHUP" in lines, lines
    replies = [line for line in lines if line.startswith("reply: ")]
    assert replies[0] == "reply: 200 result=-1", lines
    assert replies[1].startswith("reply: 511"), lines
    assert not any("HANGUP" in line for line in lines), lines
