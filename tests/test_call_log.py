"""The call log keeps what the daily figures count even when the database is away."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from pathlib import Path

from sqlalchemy import select

from clinic.clinic_file import read_clinic
from db.call_log import CallLog, CallRecord
from db.clinic_sync import load_clinic
from db.engine import Database
from db.models import Clinic, InboundCall
from db.schema import upgrade
from tests.fakepbx.agi_caller import place_call
from tests.fakepbx.script import Caller, HangUp, Wait
from tests.support.clinics import DEMO_FILE, Clock, second_practice
from tests.support.ivr import ivr_rig
from tests.support.postgres import PostgresServer

START = dt.datetime(2026, 11, 28, 7, 0, tzinfo=dt.UTC)


def finished(n: int) -> CallRecord:
    """Caller n's call, a minute long, n minutes after START."""
    began = START + dt.timedelta(minutes=n)
    return CallRecord(began, began + dt.timedelta(minutes=1), f"+98912000000{n}", "02188776655",
                      "fa", "completed")


async def logged(database: Database) -> list[str | None]:
    async with database.reading() as session:
        return list((await session.scalars(
            select(InboundCall.caller).order_by(InboundCall.started_at))).all())


async def test_calls_that_end_while_postgresql_is_down_are_written_when_it_is_back() -> None:
    server = PostgresServer().start()
    database = Database.from_url(await server.create_database())
    try:
        await upgrade(database)
        call_log = CallLog(database, retry_seconds=0.1)
        await call_log.record(finished(1))
        server.pause()
        # The caller's line is never held up by the outage: the call waits in memory, and
        # one that ends while it is being tried waits behind it, in order.
        second = asyncio.create_task(call_log.record(finished(2)))
        await asyncio.sleep(0.5)
        await asyncio.wait_for(call_log.record(finished(3)), 30)
        await asyncio.wait_for(second, 30)
        assert list(call_log.waiting) == [finished(2), finished(3)]
        server.resume()
        for _ in range(300):
            if not call_log.waiting:
                break
            await asyncio.sleep(0.1)
        assert await logged(database) == [f"+98912000000{n}" for n in (1, 2, 3)]
        await call_log.record(finished(4))
        assert len(await logged(database)) == 4
    finally:
        await database.close()
        server.stop()


async def test_calls_that_end_together_are_each_logged_at_their_own_practice(
        database: Database, tmp_path: Path) -> None:
    """A rush's calls end together and are written together: each row keeps its caller and
    the practice the call ended in, or none for a call that never left the shared menu."""
    await load_clinic(database, read_clinic(DEMO_FILE))
    (tmp_path / "shiraz.toml").write_text(second_practice(), encoding="utf-8")
    await load_clinic(database, read_clinic(tmp_path / "shiraz.toml"))
    keys = ("nobat-demo", "shiraz-eye", "")
    ended = [dataclasses.replace(finished(n), practice=keys[n % 3]) for n in range(1, 61)]
    await asyncio.gather(*(CallLog(database).record(call) for call in ended[:30]))
    together = CallLog(database)
    await asyncio.gather(*(together.record(call) for call in ended[30:]))
    async with database.reading() as session:
        rows = (await session.execute(
            select(InboundCall.caller, Clinic.key).outerjoin(Clinic)
            .order_by(InboundCall.started_at))).all()
    assert [(caller, key or "") for caller, key in rows] == [
        (call.caller, call.practice) for call in ended]


async def test_calls_still_waiting_at_shutdown_get_a_last_try(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'nobat.db'}")
    await upgrade(database)
    call_log = CallLog(database, retry_seconds=3600)
    call_log.waiting.append(finished(1))  # as if the store had refused it a moment ago
    await call_log.close()
    assert await logged(database) == ["+989120000001"]
    assert not call_log.waiting
    await database.close()


async def test_a_call_answered_while_postgresql_is_down_goes_to_the_office_and_is_logged(
        ) -> None:
    """nobat took the call (its session is set) but cannot read the store: the dialplan
    hands the caller to the office, and the call reaches the log once the store is back."""
    server = PostgresServer().start()
    database = Database.from_url(await server.create_database())
    try:
        await upgrade(database)
        async with ivr_rig(database, Clock(START)) as rig:
            server.pause()
            transcript = await place_call("127.0.0.1", rig.port, Caller.dialling(
                "09121234567", Wait(5), HangUp()), strict=False)
            assert transcript.variables.get("NOBAT_SESSION")
            assert "NOBAT_RESULT" not in transcript.variables
            assert transcript.nobat_closed
            server.resume()
            for _ in range(300):
                if not rig.line.call_log.waiting:
                    break
                await asyncio.sleep(0.1)
        async with database.reading() as session:
            rows = (await session.execute(select(InboundCall.caller, InboundCall.outcome))).all()
        assert rows == [("+989121234567", "failed")]
    finally:
        await database.close()
        server.stop()
