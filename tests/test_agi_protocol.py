"""The FastAGI codec against real Asterisk 22 bytes, at both ends, however the bytes arrive."""

from __future__ import annotations

import random
import re
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.agi_protocol import (
    AGI_VERBS,
    DEAD_CHANNEL,
    GET_DATA_USAGE,
    INVALID_COMMAND,
    NEED_DATA,
    AgiClientConnection,
    AgiEnvironment,
    AgiProtocolError,
    AgiServerConnection,
    AgiState,
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
    Chunker,
    Replay,
    as_read,
    bytewise,
    connection,
    connections,
    rechunk,
    replay,
)

A1 = connection("a_ivr_agi", "agi", 1)
A2 = connection("a_ivr_agi", "agi", 2)
# Run-dependent values (Local channel counter, Uniqueid epoch, thread) come from the capture.
A1_ENV = dict(re.findall(r"(?m)^(agi_\w+): (.*)$", A1.chunks(FROM_ASTERISK)[0].decode()))
ENV = AgiEnvironment.for_request("agi://127.0.0.1:4573/ivr?clinic=1", channel="Local/x@y-1;1")
each_connection = pytest.mark.parametrize("conn", connections("agi"), ids=lambda c: c.name)


def run(conn: CapturedConnection, chunker: Chunker) -> Replay:
    """Replay a capture through nobat's end and the fake PBX's end at once."""
    return replay(conn, AgiServerConnection(), AgiClientConnection(), chunker, NEED_DATA)


@cache
def from_asterisk(conn: CapturedConnection) -> list[object]:
    """What nobat's end made of Asterisk's bytes, read as they came."""
    return run(conn, as_read).events[FROM_ASTERISK]


def drain(codec: AgiServerConnection | AgiClientConnection, *chunks: bytes) -> list[object]:
    """Feed chunks and collect every event up to NEED_DATA or the end."""
    events: list[object] = []
    for chunk in chunks:
        codec.receive_data(chunk)
        while (event := codec.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return events
    return events


def waiting_server() -> AgiServerConnection:
    """nobat's end past the environment, with an ANSWER awaiting its reply."""
    server = AgiServerConnection()
    assert drain(server, AgiClientConnection().send(ENV)) == [ENV]
    server.send(Command.of("ANSWER"))
    return server


def commanded_client() -> AgiClientConnection:
    """The fake PBX's end after the environment, holding one command to answer."""
    client = AgiClientConnection()
    client.send(ENV)
    assert drain(client, b"GET DATA\n") == [Command("GET DATA")]
    return client


@each_connection
def test_replay_round_trips_both_directions(conn: CapturedConnection) -> None:
    seen = run(conn, as_read)
    for direction in (TO_ASTERISK, FROM_ASTERISK):
        assert seen.resent[direction] == conn.stream(direction)
        assert seen.events[direction][-1] == ConnectionClosed()


@each_connection
def test_replay_byte_by_byte_gives_the_same_events(conn: CapturedConnection) -> None:
    seen = run(conn, bytewise)
    assert seen.events == run(conn, as_read).events
    assert seen.resent[FROM_ASTERISK] == conn.stream(FROM_ASTERISK)


@each_connection
@settings(max_examples=30, deadline=None)
@given(rng=st.randoms(use_true_random=False))
def test_replay_rechunked_gives_the_same_events(
    conn: CapturedConnection, rng: random.Random
) -> None:
    seen = run(conn, rechunk(rng))
    assert seen.events == run(conn, as_read).events
    assert seen.resent[TO_ASTERISK] == conn.stream(TO_ASTERISK)


def test_a1_environment_as_asterisk_sent_it() -> None:
    env = from_asterisk(A1)[0]
    assert isinstance(env, AgiEnvironment)
    assert list(env.variables)[:3] == ["agi_network", "agi_network_script", "agi_request"]
    assert len(env.variables) == 25
    assert env.variables["agi_network_script"] == "ivr?clinic=1"
    assert (env.script, env.query) == ("ivr", {"clinic": "1"})
    assert env.request == "agi://127.0.0.1:4573/ivr?clinic=1"
    assert env.args == ["first arg", "15551230001", "x=y"]
    assert (env.callerid, env.calleridname) == ("15551230001", "Pat Test")
    assert (env.dnid, env.rdnis, env.accountcode) == (None, None, "")
    assert re.fullmatch(r"Local/caller@fake-phones-[0-9a-f]{8};1", env.channel or "")
    assert f"|{env.channel}|".encode() in A1.stream(FROM_ASTERISK)  # as ${CHANNEL} said it
    assert (env.context, env.extension) == ("ivr-entry", "s")
    assert re.fullmatch(r"\d{10}\.\d+", env.uniqueid or "")


def test_environment_without_extra_arguments_has_no_agi_arg_lines() -> None:
    env = from_asterisk(A2)[0]
    assert isinstance(env, AgiEnvironment)
    assert (len(env.variables), env.args, env.script) == (22, [], "ivr2")


def test_fake_environment_is_byte_identical_to_asterisk() -> None:
    env = AgiEnvironment.for_request(
        "agi://127.0.0.1:4573/ivr?clinic=1",
        ["first arg", "15551230001", "x=y"],
        channel=A1_ENV["agi_channel"],
        uniqueid=A1_ENV["agi_uniqueid"],
        callerid="15551230001",
        calleridname="Pat Test",
        context="ivr-entry",
        priority="2",
        threadid=A1_ENV["agi_threadid"],
    )
    assert AgiClientConnection().send(env) == A1.chunks(FROM_ASTERISK)[0]


def test_environment_builder_refuses_unknown_variables() -> None:
    with pytest.raises(TypeError, match="callerid_num"):
        AgiEnvironment.for_request("agi://h/ivr", callerid_num="1")


def test_hangup_line_then_dead_channel_replies() -> None:
    events = from_asterisk(A1)
    hangup = events.index(Hangup())
    assert events[hangup - 1] == Reply(200, "-1", None, 22560, "200 result=-1 endpos=22560")
    after = events[hangup + 1 : -2]
    assert [reply.code for reply in after] == [200, 511, 511, 200, 511]
    assert after[0].data == "42"
    assert after[1] == DEAD_CHANNEL
    assert DEAD_CHANNEL.data == "Command Not Permitted on a dead channel or intercept routine"
    assert events[-2:] == [Hangup(), ConnectionClosed()]


def test_unknown_command_gets_510() -> None:
    events = from_asterisk(A1)
    assert INVALID_COMMAND in events
    assert INVALID_COMMAND.raw == "510 Invalid or unknown command"


def test_520_usage_arrives_in_two_reads_and_is_rebuilt_exactly() -> None:
    reply = next(e for e in from_asterisk(A1) if isinstance(e, Reply) and e.code == 520)
    assert reply.usage == GET_DATA_USAGE
    assert reply == usage_reply(GET_DATA_USAGE)
    chunks = A1.chunks(FROM_ASTERISK)
    first = next(i for i, chunk in enumerate(chunks) if chunk.startswith(b"520-"))
    assert commanded_client().send(reply) == chunks[first] + chunks[first + 1]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("200 result=49 endpos=25760", (200, "49", None, 25760)),
        ("200 result=-1 endpos=0", (200, "-1", None, 0)),
        ("200 result= (timeout)", (200, "", "timeout", None)),
        ("200 result=1 (Up)", (200, "1", "Up", None)),
        (
            f"200 result=1 (15551230001|{A1_ENV['agi_channel']}|s)",
            (200, "1", f"15551230001|{A1_ENV['agi_channel']}|s", None),
        ),
        ("510 Invalid or unknown command", (510, None, "Invalid or unknown command", None)),
    ],
)
def test_replies_seen_in_the_captures_parse(line: str, expected: tuple[object, ...]) -> None:
    assert f"{line}\n".encode() in b"".join(c.stream(FROM_ASTERISK) for c in connections("agi"))
    (reply,) = drain(waiting_server(), f"{line}\n".encode())
    assert isinstance(reply, Reply)
    assert (reply.code, reply.result, reply.data, reply.endpos) == expected
    assert reply.raw == line


@pytest.mark.parametrize(
    ("command", "wire"),
    [
        (
            Command.of("STREAM FILE", "demo-congrats", "0123456789*#"),
            'STREAM FILE demo-congrats "0123456789*#"',
        ),
        (Command.of("SET VARIABLE", "IVR_STAGE", "menu one"), 'SET VARIABLE IVR_STAGE "menu one"'),
        (Command.of("GET DATA", "beep", 6000, 4), "GET DATA beep 6000 4"),
        (Command.of("SAY DIGITS", 123, ""), 'SAY DIGITS 123 ""'),
        (Command.of("EXEC", "Playback", "beep"), "EXEC Playback beep"),
        (Command.of("GET VARIABLE", "CHANNEL(state)"), "GET VARIABLE CHANNEL(state)"),
    ],
)
def test_commands_are_quoted_as_captured(command: Command, wire: str) -> None:
    assert f"{wire}\n".encode() in A1.stream(TO_ASTERISK) + A2.stream(TO_ASTERISK)
    assert command.encode() == f"{wire}\n".encode()
    assert Command.parse(wire) == command


@settings(max_examples=200)
@given(
    verb=st.sampled_from(sorted(AGI_VERBS)),
    args=st.lists(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\0"))),
)
def test_any_argument_survives_res_agi_splitting(verb: str, args: list[str]) -> None:
    command = Command(verb, tuple(args))
    assert Command.parse(command.encode().decode().removesuffix("\n")) == command


def test_command_parsing_follows_res_agi() -> None:
    assert Command.parse("NO SUCH COMMAND") == Command("NO", ("SUCH", "COMMAND"))
    assert Command.parse('stream file "a b" ""') == Command("STREAM FILE", ("a b", ""))
    assert Command.parse(r'SET VARIABLE X "say \"hi\" \\ bye"') == Command(
        "SET VARIABLE", ("X", 'say "hi" \\ bye')
    )


def test_command_text_cannot_break_framing() -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        Command.of("SET VARIABLE", "X", "two\nlines").encode()


def test_persian_split_across_reads_survives() -> None:
    name = "نوبت"
    wire = AgiClientConnection().send(AgiEnvironment.for_request("agi://h/ivr", calleridname=name))
    start = wire.index(name.encode())
    for split in range(start + 1, start + len(name.encode())):
        (env,) = drain(AgiServerConnection(), wire[:split], wire[split:])
        assert isinstance(env, AgiEnvironment)
        assert env.calleridname == name


def test_commands_wait_for_the_environment_and_for_each_reply() -> None:
    with pytest.raises(RuntimeError, match="ENVIRONMENT"):
        AgiServerConnection().send(Command.of("ANSWER"))
    server = waiting_server()
    assert server.state is AgiState.COMMAND
    with pytest.raises(RuntimeError, match="COMMAND"):
        server.send(Command.of("ANSWER"))
    assert drain(server, b"HANGUP\n200 result=0\n") == [Hangup(), Reply.success(0)]
    assert server.state is AgiState.IDLE


def test_reply_without_a_command_is_a_protocol_error() -> None:
    server = waiting_server()
    with pytest.raises(AgiProtocolError, match="Reply is not allowed in state IDLE"):
        drain(server, b"200 result=0\n200 result=0\n")


def test_fake_pbx_end_refuses_what_asterisk_would_never_see() -> None:
    with pytest.raises(AgiProtocolError, match="ENVIRONMENT"):
        drain(AgiClientConnection(), b"ANSWER\n")
    with pytest.raises(AgiProtocolError, match="Command is not allowed in state COMMAND"):
        drain(commanded_client(), b"ANSWER\n")
    client = AgiClientConnection()
    client.send(ENV)
    with pytest.raises(RuntimeError, match="Reply is not allowed in state IDLE"):
        client.send(Reply.success(0))
    with pytest.raises(TypeError, match="cannot send Reply"):
        waiting_server().send(Reply.success(0))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"GET / HTTP/1.1\r\nHost: nobat\r\n\r\n", "expected an agi_\\* variable"),
        (b"\n", "empty AGI environment"),
        (b"agi_network: yes\nagi_network: yes\n\n", "repeats a variable"),
        (b"agi_calleridname: \xff\xfe\n\n", "not UTF-8"),
        (b"agi_" + b"x" * 70_000, "longer than 65536 bytes"),
        (b"".join(b"agi_v%d: x\n" % n for n in range(257)), "more than 256 variables"),
    ],
)
def test_bad_environments_are_refused(data: bytes, error: str) -> None:
    server = AgiServerConnection()
    with pytest.raises(AgiProtocolError, match=error):
        drain(server, data)
    with pytest.raises(AgiProtocolError, match="already failed"):
        server.next_event()


def test_environment_over_the_byte_limit_is_refused() -> None:
    server = AgiServerConnection(max_message_bytes=1024)
    with pytest.raises(AgiProtocolError, match="longer than 1024 bytes"):
        drain(server, b"".join(b"agi_v%d: %s\n" % (n, b"x" * 90) for n in range(20)))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"hello\n", "not an AGI reply"),
        (b"200 result\n", "not an AGI reply"),
        (b"200 result=1 (open\n", "not an AGI reply"),
        (b"200 result=1 (\xd9)\n", "not UTF-8"),
    ],
)
def test_bad_replies_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(AgiProtocolError, match=error):
        drain(waiting_server(), data)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"agi_network: yes\nagi_request: agi://h/ivr\n", "middle of the AGI environment"),
        (b"agi_network: yes\nagi_req", "middle of the AGI environment"),
    ],
)
def test_eof_inside_the_environment_is_an_error(data: bytes, error: str) -> None:
    with pytest.raises(AgiProtocolError, match=error):
        drain(AgiServerConnection(), data, b"")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"200 resu", "middle of a line"),
        (b"520-Invalid command syntax.  Proper usage follows:\nStream", "multi-line reply"),
    ],
)
def test_eof_inside_a_reply_is_an_error(data: bytes, error: str) -> None:
    with pytest.raises(AgiProtocolError, match=error):
        drain(waiting_server(), data, b"")


def test_clean_eof_is_an_event() -> None:
    assert drain(AgiServerConnection(), b"") == [ConnectionClosed()]
    server = waiting_server()
    assert drain(server, b"200 result=0\nHANGUP\n", b"") == [
        Reply.success(0),
        Hangup(),
        ConnectionClosed(),
    ]
    assert server.next_event() == ConnectionClosed()
    with pytest.raises(RuntimeError, match="after end of file"):
        server.receive_data(b"HANGUP\n")
