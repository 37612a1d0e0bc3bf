"""nobat's AMI client against the fake Asterisk and raw loopback servers: real sockets only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from bridge.ami_client import (
    AmiAuthFailed,
    AmiClient,
    AmiDisconnected,
    AmiTimeout,
    LinkState,
)
from bridge.ami_protocol import (
    NEED_DATA,
    SHUTTING_DOWN,
    Action,
    AmiServerConnection,
    Banner,
    Event,
    Fields,
    Response,
)
from tests.fakepbx.ami_server import FakeAsterisk
from tests.fakepbx.script import Answers, Phone

SPEED = 0.01
WAIT = 3.0
SECRET = "ctrlsecret"
PERSIAN = "نوبت دکتر"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def client_for(port: int, secret: str = SECRET, **options: object) -> AmiClient:
    """A client with test-sized timeouts and backoff."""
    settings: dict[str, object] = {"action_timeout": 1.0, "backoff": (0.02, 0.1)} | options
    return AmiClient("127.0.0.1", port, "ctrl", secret, **settings)  # type: ignore[arg-type]


def sent(pbx: FakeAsterisk, name: str) -> list[Action]:
    """Every action called `name` that reached the fake, over all its connections."""
    return [a for s in pbx.sessions for a in s.actions if a.name.lower() == name.lower()]


async def until(check: Callable[[], object]) -> None:
    """Poll a condition on the loop, failing the test after WAIT seconds."""
    for _ in range(int(WAIT / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met in time")


def originate(exten: str, action_id: str, *, async_: bool = True, **more: str) -> Action:
    """An Originate into the holding context, as the dialer sends it."""
    fields = {"Channel": f"Local/{exten}@fake-phones", "Context": "consult-hold", "Exten": "s",
              "Priority": "1", "CallerID": f'"{PERSIAN}" <15550001000>', "Timeout": "30000",
              **({"Async": "true"} if async_ else {}), **more}
    return Action("Originate", Fields.of(fields), action_id)


async def test_login_sees_fully_booted_and_ping_round_trips() -> None:
    events: list[Event] = []
    async with FakeAsterisk(speed=SPEED) as pbx:
        client = client_for(pbx.port, on_event=events.append)
        await client.start()
        assert client.status.state is LinkState.CONNECTED and client.ready.is_set()
        assert client.status.connected_since is not None
        await until(lambda: any(e.name == "FullyBooted" for e in events))
        pong = await client.send(Action("Ping"))
        assert pong.fields.get("Ping") == "Pong"
        assert pong.action_id is not None and pong.action_id.startswith("nobat-")
        assert sent(pbx, "Ping")[-1].action_id == pong.action_id
        await client.close()
        assert client.status.state is LinkState.STOPPED
        assert sent(pbx, "Logoff")


async def test_async_originate_reaches_subscribers_and_lists_channels() -> None:
    phones = [Phone("doctor", "15559990001", Answers(after=1.0))]
    async with FakeAsterisk(phones=phones, speed=SPEED) as pbx:
        client = client_for(pbx.port)
        results: list[Event] = []
        unsubscribe = client.subscribe(
            lambda e: results.append(e) if e.name == "OriginateResponse" else None)
        await client.start()
        queued = await client.send(originate("doctor", "appt-7-1-doctor"))
        assert (queued.status, queued.action_id) == ("Success", "appt-7-1-doctor")
        await until(lambda: results)
        result = results[0]
        assert (result.action_id, result.fields["Response"]) == ("appt-7-1-doctor", "Success")
        assert result.fields["CallerIDName"] == PERSIAN
        listing, items = await client.send_list(Action("CoreShowChannels"))
        assert listing.fields.get("EventList") == "start"
        assert items and {e.name for e in items} == {"CoreShowChannel"}
        assert {e.action_id for e in items} == {listing.action_id}
        unsubscribe()
        await client.close()


async def test_wrong_secret_stops_without_retrying(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bridge.ami_client")
    async with FakeAsterisk(speed=SPEED) as pbx:
        client = client_for(pbx.port, secret="hunter2-wrong")
        await client.start()
        assert client.status.state is LinkState.AUTH_FAILED
        assert client.status.last_error == "Authentication failed"
        with pytest.raises(AmiAuthFailed):
            await client.wait_ready(1.0)
        await asyncio.sleep(0.3)  # several backoff periods
        assert len(sent(pbx, "Login")) == 1
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "Authentication failed" in errors[0].getMessage()
        assert "hunter2" not in caplog.text and "hunter2" not in repr(client)
        assert "hunter2" not in repr(client.status)
        await client.start()  # an operator's explicit retry
        assert len(sent(pbx, "Login")) == 2
        await client.close()


async def test_drop_fails_the_pending_action_once_and_reconnects() -> None:
    phones = [Phone("doctor", "15559990001", Answers(after=30.0))]
    async with FakeAsterisk(phones=phones, speed=SPEED) as pbx:
        client = client_for(pbx.port)
        await client.start()
        ringing = asyncio.ensure_future(client.send(originate("doctor", "o1", async_=False)))
        await until(lambda: sent(pbx, "Originate"))
        dropping = asyncio.ensure_future(pbx.drop())
        with pytest.raises(AmiDisconnected):
            await ringing
        await dropping
        await client.wait_ready(WAIT)
        assert (await client.send(Action("Ping"))).status == "Success"
        assert [a.action_id for a in sent(pbx, "Originate")] == ["o1"]
        assert len(pbx.sessions) == 2
        await client.close()


async def test_clean_restart_reconnects_after_the_refusal_window() -> None:
    events: list[Event] = []
    async with FakeAsterisk(speed=SPEED) as pbx:
        client = client_for(pbx.port, on_event=events.append)
        await client.start()
        await pbx.restart(clean=True)
        assert "Shutdown" in [e.name for e in events]
        await until(lambda: len(pbx.sessions) >= 2)
        await client.wait_ready(WAIT)
        assert (await client.send(Action("Ping"))).status == "Success"
        await client.close()


async def test_a_login_while_asterisk_still_boots_is_not_ready_until_fully_booted() -> None:
    async with FakeAsterisk(speed=SPEED) as pbx:
        client = client_for(pbx.port)
        await client.start()
        restarting = asyncio.create_task(pbx.restart(clean=False, boot_seconds=30))
        await until(lambda: len(sent(pbx, "Login")) >= 2)  # logged in again, modules loading
        await asyncio.sleep(10 * SPEED)
        assert client.status.state is LinkState.CONNECTING
        with pytest.raises(AmiDisconnected):
            await client.send(Action("Ping"))
        await client.wait_ready(WAIT)  # FullyBooted came: now it is up, and knows the restart
        assert client.boots == 1
        await restarting
        await client.close()


async def test_a_link_without_fully_booted_goes_on_after_the_boot_wait(
        caplog: pytest.LogCaptureFixture) -> None:
    users = {"ctrl": (SECRET, "call", "call,originate")}  # no `system`: no FullyBooted
    async with FakeAsterisk(users=users, speed=SPEED) as pbx:
        client = client_for(pbx.port, boot_wait=0.2)
        await client.start()
        await client.wait_ready(WAIT)
        assert (await client.send(Action("Ping"))).status == "Success"
        assert "sent no FullyBooted" in caplog.text and "read=system" in caplog.text
        await client.close()


async def test_shutting_down_is_a_disconnect_with_backoff() -> None:
    async with FakeAsterisk(speed=SPEED) as pbx:
        client = client_for(pbx.port, backoff=(0.05, 0.1))
        await client.start()
        pbx.shutting_down = True
        with pytest.raises(AmiDisconnected, match=SHUTTING_DOWN):
            await client.send(Action("Ping"))
        await until(lambda: client.status.state is LinkState.CONNECTING)
        assert client.status.last_error == SHUTTING_DOWN
        await asyncio.sleep(0.4)
        tries = len(sent(pbx, "Login")) - 1
        assert 2 <= tries <= 12, tries  # backed off, not a storm
        pbx.shutting_down = False
        await client.wait_ready(WAIT)
        assert (await client.send(Action("Ping"))).status == "Success"
        await client.close()


async def test_action_timeout_leaves_the_link_up() -> None:
    phones = [Phone("doctor", "15559990001", Answers(after=30.0))]
    async with FakeAsterisk(phones=phones, speed=SPEED) as pbx:
        client = client_for(pbx.port)
        await client.start()
        with pytest.raises(AmiTimeout):
            await client.send(originate("doctor", "slow", async_=False), seconds=0.05)
        assert client.status.state is LinkState.CONNECTED
        assert (await client.send(Action("Ping"))).status == "Success"
        await client.close()


async def test_unreachable_pbx_keeps_retrying_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FakeAsterisk(speed=SPEED) as pbx:
        port = pbx.port
    caplog.set_level(logging.INFO, logger="bridge.ami_client")
    client = client_for(port)
    await client.start()
    await asyncio.sleep(0.3)
    assert client.status.state is LinkState.CONNECTING
    assert client.status.last_error
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    with pytest.raises(AmiDisconnected):
        await client.send(Action("Ping"))
    with pytest.raises(AmiTimeout):
        await client.wait_ready(0.05)
    await client.close()


# -- raw servers, for byte-level behaviour the fake does not produce ---------------------


@asynccontextmanager
async def raw_server(
    handler: Handler,
) -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A loopback server running `handler` per connection; yields its port and connections."""
    seen: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()


async def login_then(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
) -> tuple[AmiServerConnection, Action]:
    """Send the banner, accept the Login with FullyBooted as a booted Asterisk does, and
    return the codec for the rest."""
    conn = AmiServerConnection()
    writer.write(conn.send(Banner()))
    while True:
        conn.receive_data(await reader.read(65536))
        action = conn.next_event()
        if isinstance(action, Action):
            writer.write(conn.send(Response.answer(action, "Success",
                                                   ("Message", "Authentication accepted"))))
            writer.write(conn.send(Event("FullyBooted", Fields.of(Uptime="5", LastReload="5",
                                                                  Status="Fully Booted"))))
            return conn, action
        assert action is NEED_DATA


async def test_persian_name_split_across_reads_survives() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn, _ = await login_then(reader, writer)
        data = conn.send(Event("Newchannel", Fields.of(CallerIDName=PERSIAN)))
        cut = data.index(PERSIAN.encode()) + 1  # inside the first two-byte letter
        for part in (data[:cut], data[cut:]):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.02)
        await reader.read()

    events: list[Event] = []
    async with raw_server(handler) as (port, seen):
        client = client_for(port, action_timeout=0.2, on_event=events.append)
        await client.start()
        await until(lambda: len(events) == 2)
        assert events[1].fields["CallerIDName"] == PERSIAN
        assert len(seen) == 1
        await client.close()


async def test_silent_socket_is_dropped_by_the_keepalive_ping() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await login_then(reader, writer)
        await reader.read()  # then never answers, like the CLOSE-WAIT socket of run d6

    async with raw_server(handler) as (port, seen):
        client = client_for(port, action_timeout=0.05, ping_interval=0.05)
        await client.start()
        await until(lambda: len(seen) >= 2)
        assert client.status.last_error == "no answer to a keepalive Ping"
        await client.close()

