"""The fake PBX's FastAGI caller: byte for byte against Asterisk 22's captures, then each rule."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from ivr.agi_protocol import (
    DEAD_CHANNEL,
    GET_DATA_USAGE,
    NEED_DATA,
    NO_USAGE,
    AgiClientConnection,
    AgiEnvironment,
    AgiServerConnection,
    Command,
    ConnectionClosed,
    Hangup,
    Reply,
    usage_reply,
)
from tests.captures import (
    FROM_ASTERISK,
    TO_ASTERISK,
    CapturedConnection,
    as_read,
    connection,
    replay,
)
from tests.fakepbx.agi_caller import (
    CallTranscript,
    FakeChannel,
    Timeline,
    call_environment,
    place_call,
    uniform_prompts,
)
from tests.fakepbx.script import Caller, CallerAction, HangUp, Hear, Press, Wait

DEAD = DEAD_CHANNEL.raw
PROMPTS = {
    "demo-congrats": 18.0,  # longer than the 3.22 s (endpos 25760) it played before the "1"
    "demo-instruct": 12.0,  # longer than the 2.82 s (endpos 22560) it played before the hang-up
    "vm-enter-num-to-call": 2.5,
    "beep": 3404 / 8000,  # a4 played it to the end: endpos 3404
    "menu": 5.0,
    "thanks": 1.0,
}.get
ENDPOS = re.compile(r"endpos=-?\d+")
ENDPOS_TOLERANCE = 0.5 * 8000


@dataclass(frozen=True)
class Scenario:
    """A captured session and the caller whose dialplan produced it."""

    conn: CapturedConnection
    caller: Caller
    variables: dict[str, str] = field(default_factory=dict)


SCENARIOS = [
    Scenario(
        connection("a_ivr_agi", "agi", 1),
        Caller(
            "15551230001",
            (Wait(3), Press("1"), Wait(2), Press("42#"), Wait(2), Press("7"), Wait(16), HangUp()),
            name="Pat Test",
        ),
        {"PATIENT_ID": "777"},
    ),
    Scenario(
        connection("a_ivr_agi", "agi", 2),
        Caller("15551230002", (Wait(2), Press("9"), Wait(1.5), HangUp()), name="Pat Two"),
    ),
    Scenario(
        connection("a_ivr_agi", "agi", 3),
        Caller("15551230003", (Wait(20), HangUp()), name="Pat Three"),
    ),
    Scenario(  # a SIP caller reaching FastAGI before anything answered the call (capture g)
        connection("g_sip_ivr_agi", "agi", 1),
        Caller("15551230009", (Wait(20), HangUp()), name="Pat Sip", dialled="02188776655"),
    ),
    Scenario(  # Read() as nobat's menus run it: prompts in one '&' list, then a wait
        connection("h_read_agi", "agi", 1),
        Caller("15551230004", (Wait(3), Press("5"), Wait(4.5), Press("#"), Wait(3), HangUp()),
               name="Pat Four"),
    ),
]
# What the fake is told about the channel; the rest of the environment is its own.
CHANNEL_FACTS = ("request", "channel", "type", "uniqueid", "context", "extension", "priority",
                 "threadid")


def captured(conn: CapturedConnection) -> tuple[list[Command], list[object]]:
    """The harness's commands and Asterisk's events, as nobat's codec reads them."""
    events = replay(conn, AgiServerConnection(), AgiClientConnection(), as_read, NEED_DATA).events
    return [e for e in events[TO_ASTERISK] if isinstance(e, Command)], events[FROM_ASTERISK]


def channel_facts(env: AgiEnvironment) -> dict[str, str]:
    """The per-channel values of a captured environment, as call_environment() takes them."""
    return {key: env.variables[f"agi_{key}"] for key in CHANNEL_FACTS}


def shape(event: object) -> object:
    """An event as a comparable value: environments as ordered lines, endpos numbers hidden."""
    if isinstance(event, AgiEnvironment):
        return list(event.variables.items())
    if isinstance(event, Reply):
        return ENDPOS.sub("endpos=N", event.raw)
    return event


async def run_commands(
    commands: Sequence[Command], caller: Caller, *, close: bool = True, **options: Any
) -> tuple[list[object], CallTranscript]:
    """Play nobat with fixed commands over loopback, as the capture harness did."""
    received: list[object] = []
    done = asyncio.get_running_loop().create_future()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        codec = AgiServerConnection()

        async def until(*kinds: type) -> None:
            while True:
                while (event := codec.next_event()) is NEED_DATA:
                    codec.receive_data(await reader.read(65536))
                received.append(event)
                if isinstance(event, (*kinds, ConnectionClosed)):
                    return

        try:
            await until(AgiEnvironment)
            for command in commands:
                writer.write(codec.send(command))
                await until(Reply)
            if close:
                writer.write_eof()
            await until(ConnectionClosed)
            writer.close()
            done.set_result(None)
        except Exception as exc:  # surfaced by the test, not lost in the server
            done.set_exception(exc)

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        options = {"prompt_seconds": PROMPTS, "strict": False, "secret": None, **options}
        try:
            transcript = await place_call("127.0.0.1", port, caller, **options)
        finally:
            await asyncio.wait_for(done, 5)
    return received, transcript


def call(*actions: CallerAction, variables: dict[str, str] | None = None) -> FakeChannel:
    """A fake channel for a caller who does `actions`, with the test prompts."""
    caller = Caller("15550000001", actions)
    env = call_environment(caller, "agi://127.0.0.1:4573/ivr")
    return FakeChannel(caller, env, PROMPTS, variables, answered=True)


def send(channel: FakeChannel, line: str) -> list[str]:
    """Send one command line; the lines Asterisk writes back."""
    events = channel.handle(Command.parse(line))
    return [event.raw if isinstance(event, Reply) else "HANGUP" for event in events]


# Conformance with the captures.


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.conn.name)
async def test_replies_match_the_capture(scenario: Scenario) -> None:
    commands, asterisk = captured(scenario.conn)
    env = asterisk[0]
    assert isinstance(env, AgiEnvironment)
    received, transcript = await run_commands(
        commands,
        scenario.caller,
        script=env.variables["agi_network_script"],
        args=env.args,
        variables=scenario.variables,
        environment=channel_facts(env),
    )
    assert [shape(e) for e in received] == [shape(e) for e in asterisk]
    for ours, theirs in zip(received, asterisk, strict=True):
        if isinstance(ours, Reply) and isinstance(theirs, Reply) and ours.endpos is not None:
            assert theirs.endpos is not None
            assert abs(ours.endpos - theirs.endpos) <= ENDPOS_TOLERANCE, (ours, theirs)
    assert transcript.nobat_closed
    assert [e.reply for e in transcript.exchanges] == [e for e in received if isinstance(e, Reply)]


async def test_a1_transcript_tells_the_story() -> None:
    commands, _ = captured(SCENARIOS[0].conn)
    _, transcript = await run_commands(commands, SCENARIOS[0].caller)
    assert transcript.consumed == "142#7"
    assert transcript.dropped == ""
    assert [(h.prompt, h.outcome, h.digit) for h in transcript.heard] == [
        ("demo-congrats", "interrupted", "1"),
        ("beep", "played", None),
        ("SAY DIGITS 123", "played", None),
        ("SAY NUMBER 42", "played", None),
        ("SAY DATE 1700000000", "played", None),
        ("beep", "played", None),
        ("beep", "played", None),
        ("no-such-prompt", "missing", None),
        ("demo-instruct", "hung up", None),
    ]
    assert transcript.heard[0].seconds == pytest.approx(3.2)
    assert (transcript.hung_up_by, transcript.hung_up_at) == ("caller", pytest.approx(25.05))
    assert transcript.unknown_commands == ["NO SUCH COMMAND"]
    assert [f.split(": ", 1)[1] for f in transcript.failures] == [
        "unknown command 'NO SUCH COMMAND' (510)",
        "'GET DATA': arguments Asterisk refuses (520)",
    ]
    assert transcript.applications[0].name == "Playback"
    assert transcript.variables["IVR_CHOICE"] == "42"
    assert transcript.variables["AFTER_HANGUP"] == "yes"
    with pytest.raises(AssertionError, match="NO SUCH COMMAND"):
        transcript.assert_clean()


async def test_g1_prompt_before_answer_reaches_nobody_as_on_a_sip_line() -> None:
    scenario = SCENARIOS[3]
    commands, asterisk = captured(scenario.conn)
    env = asterisk[0]
    assert isinstance(env, AgiEnvironment)
    _, transcript = await run_commands(commands, scenario.caller,
                                       script=env.variables["agi_network_script"],
                                       environment=channel_facts(env))
    assert transcript.unheard == ["beep"]  # the SIP phone had only 100 Trying then
    assert [h.prompt for h in transcript.heard] == ["beep"]  # after ANSWER
    assert "played into a call nobody answered" in transcript.failures[0]


async def test_h1_read_plays_the_list_and_waits_as_asterisk_timed_it() -> None:
    scenario = SCENARIOS[4]
    commands, _ = captured(scenario.conn)
    _, transcript = await run_commands(commands, scenario.caller)
    assert [(h.prompt, h.outcome, h.digit) for h in transcript.heard] == [
        ("beep", "played", None),
        ("demo-congrats", "interrupted", "5"),
        ("beep", "played", None),
        ("beep", "played", None),
        ("no-such-prompt", "missing", None),
        ("beep", "played", None),
        ("beep", "played", None),
        ("no-such-prompt", "missing", None),
        ("demo-instruct", "interrupted", "#"),
        ("demo-congrats", "hung up", None),
    ]
    reads = [round(e.at, 2) for e in transcript.exchanges if e.command.verb == "EXEC"]
    # h_read_agi.jsonl: each Read's reply came 3.21, 5.11, 5.54, 6.01, 8.16 and 11.41 s after
    # ANSWER: two beeps, 50 ms between them and the 1 s wait make 1.90 s, a beep before a
    # missing last file 0.48 s (its 50 ms included)
    assert reads == pytest.approx([3.21, 5.11, 5.54, 6.01, 8.16, 11.41], abs=0.1)
    assert transcript.variables["READSTATUS"] == "HANGUP"


def test_environment_is_byte_identical_to_asterisk() -> None:
    conn = SCENARIOS[0].conn
    env = captured(conn)[1][0]
    assert isinstance(env, AgiEnvironment)
    facts = channel_facts(env)
    built = call_environment(SCENARIOS[0].caller, facts.pop("request"), env.args, **facts)
    assert AgiClientConnection().send(built) == conn.chunks(FROM_ASTERISK)[0]


def test_withheld_caller_is_unknown_and_channels_count_up() -> None:
    first = call_environment(Caller(None, ()), "agi://127.0.0.1:4573/ivr")
    second = call_environment(Caller(None, ()), "agi://127.0.0.1:4573/ivr")
    assert (first.variables["agi_callerid"], first.variables["agi_calleridname"]) == (
        "unknown",
        "unknown",
    )
    assert (first.callerid, first.dnid) == (None, None)
    assert re.fullmatch(r"Local/caller@fake-phones-[0-9a-f]{8};1", first.channel)
    assert int(second.channel[-10:-2], 16) == int(first.channel[-10:-2], 16) + 1


# The caller's timeline and keys.


def test_keys_arrive_when_senddtmf_ends_each_tone() -> None:
    timeline = Timeline.of(Caller(None, (Wait(3), Press("42#"), HangUp())))
    assert [at for at, _ in timeline.keys] == pytest.approx([3.2, 3.55, 3.9])
    assert [digit for _, digit in timeline.keys] == list("42#")
    assert timeline.hangup_at == pytest.approx(4.15)
    with pytest.raises(ValueError, match="after HangUp"):
        Timeline.of(Caller(None, (HangUp(), Press("1"))))


def test_a_caller_who_waits_to_hear_a_prompt_acts_from_its_start() -> None:
    caller = Caller(None, (Hear("menu"), Wait(0.5), Press("5"), Hear("goodbye"), HangUp()))
    channel = FakeChannel(caller, call_environment(caller, "agi://127.0.0.1/ivr"),
                          uniform_prompts, answered=True)
    assert send(channel, 'STREAM FILE welcome "0123456789"') == ["200 result=0 endpos=16000"]
    assert send(channel, 'STREAM FILE other/menu-long "0123456789"') == [
        "200 result=0 endpos=16000"]
    assert send(channel, 'STREAM FILE fa/menu "0123456789"') == ["200 result=53 endpos=5600"]
    assert channel.transcript.heard[2].at == pytest.approx(4.0)
    assert send(channel, "WAIT FOR DIGIT 2000") == ["200 result=0"]
    assert send(channel, 'STREAM FILE fa/goodbye ""') == ["200 result=-1 endpos=0", "HANGUP"]
    assert channel.transcript.hung_up_at == pytest.approx(6.7)


def test_typed_ahead_keys_reach_the_next_command_that_listens() -> None:
    channel = call(Wait(1), Press("123#"), Wait(5), HangUp())
    assert send(channel, 'STREAM FILE menu "0123456789"') == ["200 result=49 endpos=9600"]
    assert send(channel, "GET DATA beep 3000 4") == ["200 result=23"]
    assert channel.transcript.heard[1].digit == "2"  # the beep was cut short by the "2"
    assert channel.transcript.consumed == "123#"


def test_keys_outside_the_escape_digits_are_lost() -> None:
    keys = (Wait(1), Press("5"), Wait(1), Press("1"), Wait(0.5), Press("7"))
    channel = call(*keys, Wait(9), HangUp())
    assert send(channel, 'STREAM FILE menu "12"') == ["200 result=49 endpos=21280"]
    assert send(channel, 'SAY DIGITS 42 ""') == ["200 result=0"]  # the 7 comes while it plays
    assert send(channel, "WAIT FOR DIGIT 1000") == ["200 result=0"]
    assert (channel.transcript.consumed, channel.transcript.dropped) == ("1", "57")


@pytest.mark.parametrize(
    ("actions", "line", "reply"),
    [
        ((Wait(1), Press("42#")), "GET DATA beep 5000 4", "200 result=42"),
        ((Wait(1), Press("42")), "GET DATA beep 5000 4", "200 result=42 (timeout)"),
        ((), "GET DATA beep 2000 3", "200 result= (timeout)"),
        ((Wait(1), Press("#")), "GET DATA beep 2000 3", "200 result="),
        ((Press("12345"),), "GET DATA beep 5000 3", "200 result=123"),
        ((Wait(6), Press("1"), Wait(1.5), Press("2"), Wait(2), Press("3")), "GET DATA beep",
         "200 result=12 (timeout)"),  # Asterisk's defaults: 6 s for the first key, 2 s after
        ((Press("1"),), "GET DATA nosuch 5000 4", "200 result=-1"),
        ((Press("1"),), "GET DATA beep 5000 0", "200 result=-1"),
    ],
)  # fmt: skip
def test_get_data(actions: tuple[CallerAction, ...], line: str, reply: str) -> None:
    assert send(call(*actions, Wait(30), HangUp()), line) == [reply]


@pytest.mark.parametrize(
    ("actions", "line", "reply"),
    [
        ((Wait(1), Press("5")), 'GET OPTION beep "12" 2000', "200 result=0 endpos=3404"),
        ((Wait(1), Press("2")), 'GET OPTION beep "12" 2000', "200 result=50 endpos=3404"),
        ((Wait(1), Press("5")), 'CONTROL STREAM FILE menu "5"', "200 result=53 endpos=1200"),
        ((), 'CONTROL STREAM FILE menu "5"', "200 result=0 endpos=-1"),
        ((Press("#"), Press("5")), 'CONTROL STREAM FILE menu "5"', "200 result=53 endpos=3650"),
        ((Press("0"), Wait(1), Press("0")), 'CONTROL STREAM FILE menu "" 3000 # * 0',
         "200 result=0 endpos=-1"),
        ((), 'CONTROL STREAM FILE nosuch "5"', "200 result=-1 endpos=-1"),
        ((), 'STREAM FILE nosuch "" 800', "200 result=-1 endpos=800"),
        ((Wait(1), Press("1")), 'STREAM FILE menu "1" 8000', "200 result=49 endpos=17600"),
    ],
)  # fmt: skip
def test_playback_commands(actions: tuple[CallerAction, ...], line: str, reply: str) -> None:
    assert send(call(*actions, Wait(30), HangUp()), line) == [reply]


def test_control_stream_file_pause_stops_the_clock_of_the_prompt() -> None:
    channel = call(Press("0"), Wait(1), Press("0"), Wait(30), HangUp())
    assert send(channel, 'CONTROL STREAM FILE menu "" 3000 # * 0') == ["200 result=0 endpos=-1"]
    assert channel.clock == pytest.approx(5.0 + 1.45)  # paused from 0.2 s to 1.65 s


def test_exec_plays_records_and_returns_background_keys() -> None:
    channel = call(Wait(1.5), Press("3"), Wait(30), HangUp())
    assert send(channel, "EXEC Playback beep&nosuch&thanks") == ["200 result=0"]
    assert send(channel, "EXEC Background menu") == ["200 result=51"]
    assert send(channel, 'EXEC Dial "Local/office@clinic,30"') == ["200 result=0"]
    assert send(channel, "EXEC Playback") == ["200 result=-1"]  # app_playback needs a file
    transcript = channel.transcript
    assert transcript.prompts == ["beep", "nosuch", "thanks", "menu"]
    dial = transcript.applications[2]
    assert (dial.name, dial.data) == ("Dial", "Local/office@clinic,30")


def test_variables_and_channel_settings() -> None:
    channel = call(Wait(30), HangUp(), variables={"PATIENT_ID": "777"})
    name = channel.transcript.environment.channel
    assert send(channel, "GET FULL VARIABLE ${CALLERID(num)}|${EXTEN}|${PATIENT_ID}|${NONE}") == [
        "200 result=1 (15550000001|s|777|)"
    ]
    assert send(channel, 'SET CALLERID "\\"Clinic\\" <15550001000>"') == ["200 result=1"]
    assert send(channel, "GET VARIABLE CALLERID(num)") == ["200 result=1 (15550001000)"]
    assert send(channel, "SET CONTEXT office") == ["200 result=0"]
    assert send(channel, "GET FULL VARIABLE ${CONTEXT}") == ["200 result=1 (office)"]
    assert send(channel, "SET PRIORITY label") == [NO_USAGE.raw]
    assert send(channel, f"CHANNEL STATUS {name}") == ["200 result=6"]
    assert send(channel, "CHANNEL STATUS Local/other-1;1") == ["200 result=-1"]
    assert send(channel, "SET MUSIC on default") == ["200 result=0"]
    assert send(channel, "VERBOSE hello 1") == ["200 result=1"]


# Hang-ups.

CALLER_HANGS_UP_AT_1S = (Wait(1), HangUp())


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ('STREAM FILE menu ""', "200 result=-1 endpos=8000"),
        ('STREAM FILE menu "1"', "200 result=-1 endpos=8000"),
        ("GET DATA menu 5000 4", "200 result=-1"),
        ('GET DATA "" 5000 4', "200 result=-1"),
        ("WAIT FOR DIGIT -1", "200 result=-1"),
        ('GET OPTION menu "1"', "200 result=-1 endpos=8000"),
        ('GET OPTION thanks "1" 5000', "200 result=-1 endpos=8000"),
        ('CONTROL STREAM FILE menu "1"', "200 result=-1 endpos=1000"),
        ('SAY DIGITS 123 ""', "200 result=-1"),
        ('SAY DATETIME 1700000000 "1"', "200 result=-1"),
        ("EXEC Playback menu", "200 result=-1"),
    ],
)
def test_caller_hangs_up_inside_a_command(line: str, reply: str) -> None:
    channel = call(*CALLER_HANGS_UP_AT_1S)
    assert send(channel, line) == [reply, "HANGUP"]
    assert send(channel, "GET VARIABLE CHANNEL(state)") == ["200 result=1 (Up)"]
    assert send(channel, "SET VARIABLE OUTCOME hungup") == ["200 result=1"]
    assert send(channel, 'STREAM FILE beep ""') == [DEAD]
    assert send(channel, "HANGUP") == [DEAD]
    assert (channel.transcript.hung_up_by, channel.transcript.hung_up_at) == ("caller", 1.0)


def test_caller_hangs_up_between_commands() -> None:
    channel = call(Wait(1), HangUp())
    assert send(channel, 'STREAM FILE thanks ""') == ["200 result=0 endpos=8000"]
    assert send(channel, "NOOP") == ["HANGUP", "200 result=0"]
    assert send(channel, "WAIT FOR DIGIT 1000") == [DEAD]
    assert send(call(HangUp()), "ANSWER") == ["HANGUP", DEAD]


def test_nobat_hangs_up() -> None:
    channel = call(Wait(30), HangUp())
    assert send(channel, "HANGUP") == ["200 result=1", "HANGUP"]
    assert send(channel, "CHANNEL STATUS") == [DEAD]
    assert send(channel, "EXEC Playback beep") == ["200 result=-1"]
    assert (channel.transcript.hung_up_by, channel.transcript.hung_up_at) == ("nobat", 0.0)


def test_autohangup_ends_the_call_at_its_time() -> None:
    channel = call(Wait(30), HangUp())
    assert send(channel, "SET AUTOHANGUP 2") == ["200 result=0"]
    assert send(channel, 'STREAM FILE menu ""') == ["200 result=-1 endpos=16000", "HANGUP"]
    assert channel.transcript.hung_up_by == "autohangup"


# Failing loudly.


def test_bad_commands_are_answered_as_asterisk_does_and_recorded() -> None:
    channel = call(Wait(30), HangUp())
    assert send(channel, "NO SUCH COMMAND") == ["510 Invalid or unknown command"]
    assert send(channel, "GET DATA") == [usage_reply(GET_DATA_USAGE).raw]
    assert send(channel, "WAIT FOR DIGIT soon") == [NO_USAGE.raw]
    assert send(channel, "DATABASE GET family key") == ["510 Invalid or unknown command"]
    assert channel.transcript.unknown_commands == ["NO SUCH COMMAND"]
    assert len(channel.transcript.failures) == 4
    with pytest.raises(AssertionError, match="does not model DATABASE GET"):
        channel.transcript.assert_clean()


def test_waiting_forever_on_a_silent_caller_fails_instead_of_hanging() -> None:
    channel = call(Wait(1))
    assert send(channel, "WAIT FOR DIGIT -1") == ["200 result=-1", "HANGUP"]
    assert channel.transcript.hung_up_by == "fake PBX"
    assert "waits forever" in channel.transcript.failures[0]


async def test_unknown_command_makes_a_strict_call_raise() -> None:
    with pytest.raises(AssertionError, match="unknown command 'NO SUCH COMMAND'"):
        await run_commands([Command("NO", ("SUCH", "COMMAND"))], Caller(None, ()), strict=True)


async def test_nobat_closing_first_gets_a_hangup_line() -> None:
    received, transcript = await run_commands([Command("ANSWER")], Caller(None, (Wait(9),)))
    assert [shape(e) for e in received[1:]] == ["200 result=0", Hangup(), ConnectionClosed()]
    assert transcript.nobat_closed
    assert transcript.hung_up_at is None
    transcript.assert_clean()


async def test_stalled_nobat_is_hung_up_on() -> None:
    started = time.monotonic()
    received, transcript = await run_commands(
        [Command("ANSWER")], Caller(None, (Wait(9), HangUp())), close=False, stall_seconds=0.2
    )
    assert time.monotonic() - started < 2
    assert [shape(e) for e in received[1:]] == ["200 result=0", Hangup(), ConnectionClosed()]
    assert transcript.stalled
    assert not transcript.nobat_closed
    assert transcript.hung_up_by == "fake PBX"
    with pytest.raises(AssertionError, match=r"no command for 0\.2 s"):
        transcript.assert_clean()
