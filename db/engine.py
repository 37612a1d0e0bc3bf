"""Engines for SQLite and PostgreSQL that behave alike under concurrent writers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import InvalidatePoolError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from db.batches import Batches
from db.reads import ConnectionReads, ThreadReads, thread_engine
from db.write_groups import WriteGroups

T = TypeVar("T")
_WRITE = "nobat_write"
_IN_MEMORY = (None, "", ":memory:")


Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """Return the current instant, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another process's lock before "database is locked"."""


def one_line(exc: BaseException) -> str:
    """An error for a log line or the page: its type and first line, since a driver's error
    goes on with the whole SQL statement and a link."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


def _make_sqlite_file(url: str) -> None:
    """Create a new SQLite store with mode 0660 (less the umask) instead of SQLite's 0644, so
    that the group it shares with Asterisk's user (nobat-agi, the classic AGI fallback) can
    write it: its -wal and -shm files then take the same mode. An empty file is an empty
    store."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        os.close(os.open(parsed.database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660))


def make_engine(url: str, *, pool_size: int = 5, busy_timeout_s: float = BUSY_TIMEOUT_S
                ) -> AsyncEngine:
    """Create an async engine; on SQLite: WAL, a busy timeout, and BEGIN IMMEDIATE for writes;
    on PostgreSQL at most `pool_size` connections, each kept once opened."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": busy_timeout_s})
        _tune_sqlite(engine.sync_engine, busy_timeout_s)
        return engine
    # No overflow: a connection opened for a burst and closed after it (SQLAlchemy's
    # max_overflow) cost a PostgreSQL backend's start per statement at the peak, and 4% of a
    # busy nobat in bench.platform; a statement waits its turn for a kept one instead.
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=0)
    _ping_when_idle(engine.sync_engine)
    return engine


IDLE_PING_S = 1.0
"""A pooled PostgreSQL connection idle this long is pinged before it is used again."""
_IDLE_SINCE = "nobat_idle_since"


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection at checkout at the least cost that tells: one the server
    closed (a restart, a failover) is known closed without a round trip, and only one idle
    for a while is pinged. SQLAlchemy's pre-ping pinged on every checkout (BEGIN, ";",
    ROLLBACK: three round trips before each statement's own, 30% of a busy nobat's loop in
    bench.platform). Either finding replaces every pooled connection, as the server that
    dropped one has likely dropped all. What it cannot tell: a connection cut without the
    server closing it (a network partition) and used again within IDLE_PING_S fails its
    first statement, once."""

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _idle(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.driver_connection.is_closed():
            raise InvalidatePoolError("the server closed the connection")
        if time.monotonic() - record.info.get(_IDLE_SINCE, 0.0) < IDLE_PING_S:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:  # the pool replaces it and checks out another
            raise InvalidatePoolError(one_line(exc)) from exc


def _writer_engine(url: URL, busy_timeout_s: float) -> Engine:
    """The SQLite file's synchronous engine for the writer's thread (db/write_groups.py)."""
    engine = thread_engine(url, busy_timeout_s, 1)
    _tune_sqlite(engine, busy_timeout_s)
    return engine.execution_options(**{_WRITE: True})


def _tune_sqlite(engine: Engine, busy_timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        writing = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


class Database:
    """One engine and its two session kinds: readers, and writers that lock early on SQLite."""

    def __init__(self, engine: AsyncEngine, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._read = async_sessionmaker(engine, expire_on_commit=False)
        self._write = async_sessionmaker(engine.execution_options(**{_WRITE: True}),
                                         expire_on_commit=False)
        self._writer_turn = asyncio.Lock() if self.is_sqlite else contextlib.nullcontext()
        on_file = self.is_sqlite and engine.url.database not in _IN_MEMORY
        self._groups = WriteGroups(_writer_engine(engine.url, busy_timeout_s),
                                   self._writer_turn) if on_file else None
        """SQLite's writes of this process, grouped in the writer's thread; None: each write
        is a transaction of its own (PostgreSQL, or SQLite in memory, which only this engine
        sees)."""
        self.rows: ThreadReads | ConnectionReads = (
            ThreadReads(engine.url, busy_timeout_s) if on_file
            else ConnectionReads(engine) if self.is_sqlite
            else ConnectionReads(engine, isolation_level="AUTOCOMMIT"))
        """One statement, one answer, at the least cost (db/reads.py): the hot paths' reads."""
        self.batches = Batches()
        """The hot reads many callers of any practice ask at one moment, as one statement."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Database:
        """Build from a SQLAlchemy URL; a SQLite file not there yet is made first."""
        _make_sqlite_file(url)
        return cls(make_engine(url, **options),
                   options.get("busy_timeout_s", BUSY_TIMEOUT_S))

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for reads; nothing it does is committed."""
        async with self._read() as session:
            yield session

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncSession]:
        """A transaction that commits on success and rolls back on any error.

        On SQLite the writers of this process, the write groups among them, queue here in
        order, so that only one of them at a time polls the file lock (SQLite's busy handler
        sleeps and wakes unfairly); the unique indexes, not this queue, are what forbid
        double booking across processes.
        """
        async with self._writer_turn, self._write() as session, session.begin():
            yield session

    async def write(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `work` in a transaction of its own, or on a SQLite file in a group of the writes
        queued with it (db/write_groups.py), each in its own SAVEPOINT; the result once
        committed."""
        if self._groups is None:
            async with self.writing() as session:
                return await work(session)
        return await self._groups.run(work)

    async def retry_locked(self, work: Callable[[], Awaitable[T]], attempts: int = 8) -> T:
        """Run `work` again when SQLite answers "database is locked" at once despite the timeout."""
        for attempt in range(attempts):
            try:
                return await work()
            except OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def close(self) -> None:
        """Release every pooled connection and reader thread."""
        await asyncio.to_thread(self.rows.close)
        if self._groups is not None:
            await asyncio.to_thread(self._groups.close)
        await self.engine.dispose()
