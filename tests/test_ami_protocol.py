"""The AMI codec against real Asterisk 22 bytes, at both ends, however the bytes arrive."""

from __future__ import annotations

import random
import re
from functools import cache
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.ami_protocol import (
    AUTH_ACCEPTED,
    AUTH_FAILED,
    NEED_DATA,
    PERMISSION_DENIED,
    Action,
    AmiClientConnection,
    AmiProtocolError,
    AmiServerConnection,
    AmiState,
    Banner,
    ConnectionClosed,
    Event,
    Fields,
    Response,
    unknown_action_message,
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

C1 = connection("c_ami_errors", "ami", 1)
C3 = connection("c_ami_errors", "ami", 3)
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
each_connection = pytest.mark.parametrize("conn", connections("ami"), ids=lambda c: c.name)
T = TypeVar("T")


def run(conn: CapturedConnection, chunker: Chunker) -> Replay:
    """Replay a capture through nobat's end and the fake PBX's end at once."""
    return replay(conn, AmiClientConnection(), AmiServerConnection(), chunker, NEED_DATA)


@cache
def seen(conn: CapturedConnection) -> Replay:
    """Both ends' view of a capture, read as the bytes came."""
    return run(conn, as_read)


def drain(codec: AmiClientConnection | AmiServerConnection, *chunks: bytes) -> list[object]:
    """Feed chunks and collect every event up to NEED_DATA or the end."""
    events: list[object] = []
    for chunk in chunks:
        codec.receive_data(chunk)
        while (event := codec.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return events
    return events


def of_type(events: list[object], kind: type[T]) -> list[T]:
    """Just the events of one kind, typed."""
    return [event for event in events if isinstance(event, kind)]


@each_connection
def test_replay_round_trips_both_directions(conn: CapturedConnection) -> None:
    replayed = seen(conn)
    for direction in (TO_ASTERISK, FROM_ASTERISK):
        assert replayed.resent[direction] == conn.stream(direction)
        assert replayed.events[direction][-1] == ConnectionClosed()
    assert replayed.events[FROM_ASTERISK][0] == Banner("11.0.0")


@each_connection
def test_replay_byte_by_byte_gives_the_same_events(conn: CapturedConnection) -> None:
    replayed = run(conn, bytewise)
    assert replayed.events == seen(conn).events
    assert replayed.resent == seen(conn).resent


@each_connection
@settings(max_examples=8, deadline=None)
@given(rng=st.randoms(use_true_random=False))
def test_replay_rechunked_gives_the_same_events(
    conn: CapturedConnection, rng: random.Random
) -> None:
    assert run(conn, rechunk(rng)).events == seen(conn).events


@each_connection
def test_every_action_id_is_echoed_once(conn: CapturedConnection) -> None:
    actions = of_type(seen(conn).events[TO_ASTERISK], Action)
    responses = of_type(seen(conn).events[FROM_ASTERISK], Response)
    assert [r.action_id for r in responses] == [a.action_id for a in actions][: len(responses)]


def test_wrong_password_is_refused_then_closed() -> None:
    events = seen(C1).events[FROM_ASTERISK]
    assert events == [
        Banner("11.0.0"),
        Response("Error", Fields.of(ActionID="c1-1", Message=PERMISSION_DENIED)),
        Response("Error", Fields.of(ActionID="c1-2", Message=AUTH_FAILED)),
        ConnectionClosed(),
    ]
    assert AUTH_FAILED == "Authentication failed"


def test_fake_pbx_answers_byte_for_byte() -> None:
    server = AmiServerConnection()
    assert server.send(Banner()) == BANNER
    (login, ping, _) = drain(server, C1.stream(TO_ASTERISK), b"")
    assert isinstance(login, Action) and isinstance(ping, Action)
    assert server.send(Response.answer(login, "Error", ("Message", PERMISSION_DENIED))) + (
        server.send(Response.answer(ping, "Error", ("Message", AUTH_FAILED)))
    ) == C1.stream(FROM_ASTERISK).removeprefix(BANNER)
    login_ok = Response.answer(
        Action("Login", action_id="c3-1"), "Success", ("Message", AUTH_ACCEPTED)
    )
    assert server.send(login_ok) in C3.stream(FROM_ASTERISK)


def test_actions_are_framed_as_captured() -> None:
    login = Action("Login", Fields.of(Username="ctrl", Secret="WRONG"), action_id="c1-2")
    assert AmiClientConnection().send(login) in C1.stream(TO_ASTERISK)
    assert "WRONG" not in repr(login)
    bridge = Action("Bridge", Fields.of([("Channel1", "a;1"), ("Channel2", "b;1"), ("Tone", "no")]))
    assert AmiClientConnection().send(bridge) == (
        b"Action: Bridge\r\nChannel1: a;1\r\nChannel2: b;1\r\nTone: no\r\n\r\n"
    )


def test_originate_response_fields_in_order() -> None:
    events = seen(connection("a_ivr_ami", "ami", 1)).events[FROM_ASTERISK]
    response = next(e for e in of_type(events, Event) if e.name == "OriginateResponse")
    assert response.action_id == "a1-originate"
    # The channel and Uniqueid of a run are the ones that reached FastAGI in the same run.
    agi_env = connection("a_ivr_agi", "agi", 1).chunks(FROM_ASTERISK)[0].decode()
    channel, uniqueid = (re.search(rf"(?m)^agi_{key}: (.*)$", agi_env).group(1)  # type: ignore[union-attr]
                         for key in ("channel", "uniqueid"))
    assert list(response.fields) == [
        ("Privilege", "call,all"),
        ("ActionID", "a1-originate"),
        ("Response", "Success"),
        ("Channel", channel),
        ("Context", "ivr-entry"),
        ("Exten", "s"),
        ("Reason", "4"),
        ("Uniqueid", uniqueid),
        ("CallerIDNum", "15551230001"),
        ("CallerIDName", "Pat Test"),
    ]


def test_failed_originate_names_the_dial_string() -> None:
    events = seen(connection("b_bridge_ami", "ami", 1)).events[FROM_ASTERISK]
    failures = [
        e
        for e in of_type(events, Event)
        if e.name == "OriginateResponse" and e.fields["Response"] == "Failure"
    ]
    assert {e.fields["Reason"] for e in failures} >= {"5", "3", "8", "0"}
    assert all(e.fields["Uniqueid"] == "<unknown>" for e in failures)


def test_repeated_variable_lines_are_kept() -> None:
    actions = of_type(seen(connection("b_bridge_ami", "ami", 1)).events[TO_ASTERISK], Action)
    variables = [a.fields.getall("Variable") for a in actions if a.name == "Originate"]
    assert max(len(v) for v in variables) == 2
    assert any("DIALTIMEOUT=6" in v for v in variables)


def test_core_show_channels_is_a_list_ending_in_complete() -> None:
    events = seen(connection("b_bridge_ami", "ami", 1)).events[FROM_ASTERISK]
    start = next(
        i
        for i, e in enumerate(events)
        if isinstance(e, Response) and e.message == "Channels will follow"
    )
    listing = events[start]
    assert isinstance(listing, Response)
    assert listing.fields["EventList"] == "start"
    items = of_type(events[start + 1 :], Event)
    complete = next(i for i, e in enumerate(items) if e.name == "CoreShowChannelsComplete")
    channels = [e for e in items[:complete] if e.action_id == listing.action_id]
    assert {e.name for e in channels} == {"CoreShowChannel"}
    assert items[complete].fields["ListItems"] == str(len(channels))
    assert items[complete].fields["EventList"] == "Complete"


def test_ping_without_action_id_is_answered_without_one() -> None:
    replayed = seen(C3)
    ping = next(a for a in of_type(replayed.events[TO_ASTERISK], Action) if a.action_id is None)
    assert ping.name == "Ping"
    pong = next(r for r in of_type(replayed.events[FROM_ASTERISK], Response) if r.action_id is None)
    assert [key for key, _ in pong.fields] == ["Ping", "Timestamp"]


def test_unknown_action_text() -> None:
    responses = of_type(seen(C3).events[FROM_ASTERISK], Response)
    assert unknown_action_message("NoSuchAction") in {r.message for r in responses}


def test_fully_booted_fields_are_read_by_name_in_any_order() -> None:
    booted = [
        e
        for conn in connections("ami")
        for e in of_type(seen(conn).events[FROM_ASTERISK], Event)
        if e.name == "FullyBooted"
    ]
    assert len({tuple(key for key, _ in e.fields) for e in booted}) == 2
    assert {e.fields["Status"] for e in booted} == {"Fully Booted"}


def test_actions_may_go_out_before_the_banner_arrives() -> None:
    client = AmiClientConnection()
    assert client.send(Action("Login", Fields.of(Username="ctrl", Secret="s")))
    assert client.state is AmiState.BANNER
    assert drain(client, BANNER) == [Banner("11.0.0")]


def test_output_lines_repeat() -> None:
    message = (
        b"Response: Success\r\nActionID: 7\r\nMessage: Command output follows\r\n"
        b"Output: line one\r\nOutput: line two\r\n\r\n"
    )
    (_, response) = drain(AmiClientConnection(), BANNER + message)
    assert isinstance(response, Response)
    assert response.fields.getall("Output") == ["line one", "line two"]
    assert response.fields.get("actionid") == "7"
    server = AmiServerConnection()
    server.send(Banner())
    assert server.send(response) == message


def test_persian_split_across_reads_survives() -> None:
    message = "Event: Newchannel\r\nCallerIDName: نوبت\r\n\r\n".encode()
    start = message.index("نوبت".encode())
    for split in range(start + 1, start + len("نوبت".encode())):
        (_, event) = drain(AmiClientConnection(), BANNER + message[:split], message[split:])
        assert isinstance(event, Event)
        assert event.fields["CallerIDName"] == "نوبت"


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    events = drain(
        AmiClientConnection(),
        BANNER + b"Event: Newchannel\r\nCallerIDName: caf\xe9\r\n\r\nEvent: Hangup\r\n\r\n",
    )
    assert events[1] == Event("Newchannel", Fields.of(CallerIDName="caf\ufffd"))
    assert events[2] == Event("Hangup")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not an Asterisk manager banner"),
        (BANNER + b"Action: Ping\r\n\r\n", "expected Response or Event"),
        (BANNER + b"Event: X\r\nno colon here\r\n\r\n", "not a 'Key: Value' line"),
        (BANNER + b"Event: X\nPrivilege: all\r\n\r\n", "not a 'Key: Value' line"),
        (BANNER + b"\r\n\r\n", "not a 'Key: Value' line"),
        (BANNER + b"Event: X\r\nData: " + b"x" * 70_000, "longer than 65536 bytes"),
        (b"x" * 70_000, "longer than 65536 bytes"),
    ],
)
def test_bad_input_from_asterisk_is_refused(data: bytes, error: str) -> None:
    client = AmiClientConnection()
    with pytest.raises(AmiProtocolError, match=error):
        drain(client, data)
    with pytest.raises(AmiProtocolError, match="already failed"):
        client.next_event()


def test_message_over_a_smaller_limit_is_refused_even_when_complete() -> None:
    client = AmiClientConnection(max_message_bytes=1024)
    with pytest.raises(AmiProtocolError, match="longer than 1024 bytes"):
        drain(client, BANNER + b"Event: X\r\nData: " + b"x" * 2000 + b"\r\n\r\n")


def test_message_without_action_is_refused_by_the_fake_pbx() -> None:
    with pytest.raises(AmiProtocolError, match="without an Action"):
        drain(AmiServerConnection(), b"Username: ctrl\r\n\r\n")


@pytest.mark.parametrize("data", [b"", BANNER, BANNER + b"Event: Hangup\r\n\r\n"])
def test_eof_between_messages_is_an_event(data: bytes) -> None:
    assert drain(AmiClientConnection(), data, b"")[-1] == ConnectionClosed()


@pytest.mark.parametrize(
    "data", [b"Asterisk Call", BANNER + b"Response: Success\r\nActionID: 1\r\n"]
)
def test_eof_inside_a_message_is_an_error(data: bytes) -> None:
    with pytest.raises(AmiProtocolError, match="middle of a message"):
        drain(AmiClientConnection(), data, b"")


def test_each_end_sends_only_its_own_messages() -> None:
    with pytest.raises(RuntimeError, match="Response is not allowed in state BANNER"):
        AmiServerConnection().send(Response("Success"))
    with pytest.raises(TypeError, match="cannot send Response"):
        AmiClientConnection().send(Response("Success"))
    with pytest.raises(TypeError, match="cannot send Action"):
        AmiServerConnection().send(Action("Ping"))
    with pytest.raises(ValueError, match="cannot send AMI field"):
        AmiClientConnection().send(Action("Ping", Fields.of(Note="two\r\nlines")))
