"""PostgreSQL restarted under a running nobat: the next callers' reads and bookings are answered,
on connections the pool replaced, with no ping before every statement."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from clinic.schedule import VisitKind
from db.booking import Booked, BookingService
from db.clinic_sync import load_clinic
from db.engine import Database
from db.schema import upgrade
from tests.support.clinics import every_day_clinic, tomorrow_tehran
from tests.support.postgres import PostgresServer


@pytest.fixture
async def own_server() -> AsyncIterator[PostgresServer]:
    """A server of this test's own: restarting the session's would cut other tests' pools."""
    server = await asyncio.to_thread(PostgresServer().start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def test_after_a_restart_every_caller_is_answered_on_fresh_connections(
        own_server: PostgresServer) -> None:
    database = Database.from_url(await own_server.create_database(), pool_size=4)
    try:
        await upgrade(database)
        await load_clinic(database, every_day_clinic(20))
        service = BookingService(database)
        doctor = (await service.doctors())[0].id
        slots = await service.free_slots(doctor, tomorrow_tehran())

        async def backend_pid() -> int:
            async with database.reading() as session:
                return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())

        before = set(await asyncio.gather(*(backend_pid() for _ in range(8))))
        await asyncio.to_thread(own_server.restart)  # fast shutdown: every session is cut
        after = await asyncio.gather(*(backend_pid() for _ in range(8)),
                                     *(service.book(f"0912000{n:04d}", doctor, slots[n].start,
                                                    VisitKind.IN_PERSON) for n in range(4)),
                                     return_exceptions=True)
    finally:
        await database.close()

    assert not [a for a in after if isinstance(a, BaseException)]
    assert not before & set(after[:8])  # none of the cut connections was handed out again
    assert all(isinstance(result, Booked) for result in after[8:])
