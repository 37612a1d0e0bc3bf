"""SQLite's grouped writes: each write stands or falls alone, the loop never waits on the file,
and a closed store answers every queued write."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.engine import Database
from db.models import AppointmentEvent, Patient
from db.schema import upgrade

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
"""The conftest store on SQLite alone: the backend whose writes are grouped."""


def adding(phone: str, then: BaseException | None = None
           ) -> Callable[[AsyncSession], Awaitable[str]]:
    """A write that adds a patient, and then fails with `then` if given."""

    async def work(session: AsyncSession) -> str:
        await session.execute(insert(Patient).values(phone=phone, language="fa",
                                                     created_at=NOW))
        if then is not None:
            raise then
        return phone

    return work


async def phones(database: Database) -> set[str]:
    async with database.reading() as session:
        return set((await session.scalars(select(Patient.phone))).all())


@SQLITE
async def test_a_failing_write_rolls_back_alone_and_the_others_of_its_moment_are_written(
        database: Database) -> None:
    await database.write(adding("+989120000000"))
    works = [adding(f"+98912000{n:04d}") for n in range(1, 40)]
    works[7] = adding("+989120000000")  # the number is already stored: the unique index refuses
    works[20] = adding("+989120009999", then=ValueError("the caller hung up"))

    results = await asyncio.gather(*(database.write(w) for w in works), return_exceptions=True)

    assert isinstance(results[7], IntegrityError)
    assert isinstance(results[20], ValueError)
    written = {r for r in results if isinstance(r, str)}
    assert len(written) == 37
    assert await phones(database) == written | {"+989120000000"}


@SQLITE
async def test_a_write_that_waits_on_something_else_is_refused_with_a_clear_error(
        database: Database) -> None:
    async def waits(session: AsyncSession) -> None:
        await session.execute(insert(Patient).values(phone="+989121111111", language="fa",
                                                     created_at=NOW))
        await asyncio.sleep(0)

    results = await asyncio.gather(database.write(waits), database.write(adding("+989122222222")),
                                   return_exceptions=True)

    assert isinstance(results[0], RuntimeError)
    assert "waited on something other than its session" in str(results[0])
    assert await phones(database) == {"+989122222222"}


@SQLITE
async def test_the_loop_goes_on_while_another_process_holds_the_file(
        database: Database, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "nobat.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write, holding SQLite's lock
    writing = asyncio.create_task(database.write(adding("+989123333333")))
    gaps, last = [], time.monotonic()
    for _ in range(30):
        await asyncio.sleep(0.01)
        gaps.append(time.monotonic() - last)
        last = time.monotonic()
    assert not writing.done()
    other.execute("COMMIT")
    other.close()

    assert await asyncio.wait_for(writing, 10) == "+989123333333"
    assert max(gaps) < 0.5  # ten-millisecond sleeps: the loop was never held
    assert await phones(database) == {"+989123333333"}


async def test_a_write_in_hand_at_close_is_made_and_one_after_it_is_refused_at_once(
        tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'nobat.db'}")
    await upgrade(database)
    first = asyncio.create_task(database.write(adding("+989124444444")))
    await asyncio.sleep(0)
    await database.close()

    assert await asyncio.wait_for(first, 5) == "+989124444444"
    with pytest.raises(RuntimeError, match="the store is closed"):
        await asyncio.wait_for(database.write(adding("+989125555555")), 5)
    with sqlite3.connect(tmp_path / "nobat.db") as check:
        assert check.execute("SELECT phone FROM patient").fetchall() == [("+989124444444",)]


@SQLITE
async def test_a_group_that_cannot_commit_fails_every_write_in_it_and_stores_none(
        database: Database) -> None:
    async def orphan(session: AsyncSession) -> None:
        """Its own statements pass, but its row breaks a foreign key checked only at COMMIT."""
        await session.execute(text("PRAGMA defer_foreign_keys = ON"))
        await session.execute(insert(AppointmentEvent).values(
            appointment_id=999, at=NOW, action="booked", via="ivr"))

    results = await asyncio.gather(database.write(adding("+989126666666")), database.write(orphan),
                                   database.write(adding("+989127777777")),
                                   return_exceptions=True)

    assert all(isinstance(result, IntegrityError) for result in results)
    assert await phones(database) == set()
    assert await database.write(adding("+989128888888")) == "+989128888888"  # the next group
