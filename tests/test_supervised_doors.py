"""nobat's doors (the FastAGI and page listeners, the AMI link) under the supervisor: one that
closes by itself is reported, opened again on its address, and serves again."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp import web

from bridge.ami_client import AmiClient, LinkState
from db.engine import Database
from nobat.serve import page_opener
from nobat.supervisor import Backoff, Supervisor
from protocol.listening import Listener
from tests.fakepbx.ami_server import FakeAsterisk
from tests.support.clinics import Clock
from tests.support.ivr import IvrRig, ivr_rig
from tests.test_fastagi_server import QUICK, SATURDAY_9, normal_call_completes
from tests.test_supervisor import until, view

FAST = Backoff(first=0.02, most=0.05)


async def test_a_fastagi_listener_that_closes_is_reported_and_opened_again(
        database: Database, caplog: pytest.LogCaptureFixture) -> None:
    async with ivr_rig(database, Clock(SATURDAY_9), QUICK) as rig:
        await closed_and_opened_again(rig, caplog)


async def closed_and_opened_again(rig: IvrRig, caplog: pytest.LogCaptureFixture) -> None:
    """A call is answered, the listener closes, the supervisor opens it: calls are answered."""
    parts = Supervisor(backoff=FAST)
    parts.add("fastagi", rig.server.serve)
    await normal_call_completes(rig)
    with caplog.at_level(logging.ERROR, logger="nobat.supervisor"):
        rig.server.listener.close()  # type: ignore[union-attr]  # the fault: the socket goes
        await until(lambda: view(parts, "fastagi").restarts == 1 and rig.server.listening)
    assert "fastagi failed (1 in a row)" in caplog.text
    assert "the FastAGI listener stopped listening" in caplog.text
    part = view(parts, "fastagi")
    assert (part.state, part.last_error) == (
        "running", "ListenerClosed: the FastAGI listener stopped listening")
    await normal_call_completes(rig)  # the same port answers calls again
    await parts.close()
    assert not rig.server.listening  # stopping the part closes the door


async def test_a_page_listener_that_closes_is_opened_again_on_its_port() -> None:
    app = web.Application()
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    page = Listener("the status page", page_opener(runner), "127.0.0.1", 0)
    [(_, port)] = await page.open()
    parts = Supervisor(backoff=FAST)
    parts.add("status_page", page.serve)
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"http://127.0.0.1:{port}/healthz") as reply:
                assert await reply.text() == "ok"
            page.close()  # the fault: the socket goes, nobody stopping the part
            await until(lambda: view(parts, "status_page").restarts == 1 and page.listening)
            async with client.get(f"http://127.0.0.1:{port}/healthz") as reply:
                assert await reply.text() == "ok"
    finally:
        await parts.close()
        await runner.cleanup()


def supervised_ami(pbx: FakeAsterisk, secret: str) -> tuple[AmiClient, Supervisor]:
    """An AMI client to the fake, kept by a supervisor as `nobat serve` keeps it."""
    ami = AmiClient("127.0.0.1", pbx.port, "ctrl", secret, backoff=(0.02, 0.1))
    parts = Supervisor(backoff=FAST)
    parts.add("ami", ami.keep)
    return ami, parts


async def test_an_ami_link_keeper_that_dies_is_started_again_and_logs_in_again() -> None:
    async with FakeAsterisk(speed=0.01) as pbx:
        ami, parts = supervised_ami(pbx, "ctrlsecret")
        await until(lambda: ami.status.state is LinkState.CONNECTED)
        ami._task.cancel()  # type: ignore[union-attr]  # the fault: the keeper task is gone
        await until(lambda: view(parts, "ami").restarts == 1)
        await ami.wait_ready(3.0)
        assert ami.status.state is LinkState.CONNECTED
        assert view(parts, "ami").last_error == (
            "AmiDisconnected: the AMI link keeper was cancelled")
        logins = [a for s in pbx.sessions for a in s.actions if a.name == "Login"]
        assert len(logins) == 2
        await parts.close()
        assert ami.status.state is LinkState.CONNECTED  # stopping the part leaves the link
        await ami.close()  # to nobat's orderly close, which logs off
        assert [a.name for a in pbx.sessions[-1].actions][-1] == "Logoff"


async def test_a_refused_ami_login_is_the_links_state_not_a_restart_storm() -> None:
    async with FakeAsterisk(speed=0.01) as pbx:
        ami, parts = supervised_ami(pbx, "wrong")
        await until(lambda: ami.status.state is LinkState.AUTH_FAILED)
        await asyncio.sleep(0.2)
        assert view(parts, "ami").state == "running" and view(parts, "ami").restarts == 0
        assert len([a for s in pbx.sessions for a in s.actions if a.name == "Login"]) == 1
        await parts.close()
        await ami.close()
