"""Status page sessions in the store, on each backend: random, hashed, ended by idleness, by
age and by logout, and purged once ended."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from db.engine import Database
from db.models import WebSession
from db.web_sessions import SessionLifetime, WebSessionStore, id_hash

LIFETIME = SessionLifetime(idle=dt.timedelta(minutes=30), absolute=dt.timedelta(hours=12))


class Clock:
    """The sessions' time, moved by the test."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 5, 8, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def forward(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    """The test's clock, at the same morning each time."""
    return Clock()


@pytest.fixture
def store(database: Database, clock: Clock) -> WebSessionStore:
    """The session store on the test's backend and clock, as one nobat instance holds it."""
    return WebSessionStore(database, LIFETIME, clock)


async def stored(database: Database) -> list[WebSession]:
    async with database.reading() as session:
        return list((await session.scalars(select(WebSession))).all())


async def test_a_session_is_random_and_the_store_keeps_only_its_hash(
        database: Database, store: WebSessionStore) -> None:
    first_id, first = await store.open()
    second_id, second = await store.open()
    assert first_id != second_id and first.csrf != second.csrf
    assert len(first_id) == 43 and len(first.csrf) == 43  # 256 bits each, URL-safe base64
    rows = await stored(database)
    assert {row.id_hash for row in rows} == {id_hash(first_id), id_hash(second_id)}
    assert all(first_id not in (row.id_hash, row.csrf) for row in rows)
    found = await store.find(first_id)
    assert found is not None and found.csrf == first.csrf
    assert await store.find(id_hash(first_id)) is None  # what the store holds opens nothing


async def test_an_idle_session_ends_and_use_keeps_one_open(store: WebSessionStore,
                                                           clock: Clock) -> None:
    used_id, _ = await store.open()
    idle_id, _ = await store.open()
    for _ in range(5):  # two hours of use, 25 minutes apart (idle ends a session at 30)
        clock.forward(minutes=25)
        assert await store.find(used_id) is not None
    assert await store.find(idle_id) is None
    clock.forward(minutes=30)
    assert await store.find(used_id) is None


async def test_a_session_in_use_still_ends_at_its_age(store: WebSessionStore, clock: Clock) -> None:
    session_id, _ = await store.open()
    for _ in range(12 * 4 - 1):  # every quarter of an hour, just short of twelve hours
        clock.forward(minutes=15)
        assert await store.find(session_id) is not None
    clock.forward(minutes=15)
    assert await store.find(session_id) is None


async def test_the_last_seen_time_is_written_at_most_once_a_minute(
        database: Database, store: WebSessionStore, clock: Clock) -> None:
    session_id, opened = await store.open()
    clock.forward(seconds=30)
    await store.find(session_id)
    assert [row.last_seen_at for row in await stored(database)] == [opened.last_seen_at]
    clock.forward(seconds=30)
    await store.find(session_id)
    assert [row.last_seen_at for row in await stored(database)] == [clock.now]


async def test_logout_ends_a_session_for_every_copy_of_its_id(
        database: Database, store: WebSessionStore) -> None:
    session_id, _ = await store.open()
    other_id, _ = await store.open()
    other_instance = WebSessionStore(database, LIFETIME, Clock())  # same store, other nobat
    assert await other_instance.find(session_id) is not None
    await store.end(session_id)
    assert await other_instance.find(session_id) is None
    assert await store.find(other_id) is not None


async def test_ended_sessions_are_purged_and_open_ones_kept(
        database: Database, store: WebSessionStore, clock: Clock) -> None:
    idle_id, _ = await store.open()
    old_id, _ = await store.open()
    for _ in range(12 * 4):  # keep one in use for twelve hours: it ends by age
        clock.forward(minutes=15)
        await store.find(old_id)
    fresh_id, _ = await store.open()
    assert await store.purge() == 2
    async with database.reading() as session:
        assert await session.scalar(select(func.count(WebSession.id))) == 1
    assert await store.find(fresh_id) is not None
    assert await store.find(idle_id) is None and await store.find(old_id) is None
