"""Single-statement reads for the hot paths, at the least cost each backend allows.

aiosqlite runs each step of a statement (cursor, execute, fetch, close) as a hop of its own
to its thread: measured here, 0.55 ms of CPU for one small Core read through the async
engine, 0.13 ms for the same statement on a synchronous engine in a reader thread (one hop),
0.002 ms for SQLite itself. So on SQLite the hot reads run in reader threads; on PostgreSQL,
where asyncpg is asynchronous itself, on an autocommit connection. Either way each statement
sees the store as of its own moment, with no transaction around it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, Row, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

Rows = Callable[[Executable, Mapping[str, Any] | None], Awaitable[Sequence[Row[Any]]]]
"""Runs one statement with its parameters and returns every row."""

READER_THREADS = 2
"""SQLite releases the GIL while it steps, so two threads keep both cores of a small box busy."""


def thread_engine(url: str | URL, busy_timeout_s: float, threads: int) -> Engine:
    """A synchronous engine of an aiosqlite URL's file, for `threads` threads of its own."""
    return create_engine(make_url(url).set(drivername="sqlite"), pool_size=threads,
                         connect_args={"timeout": busy_timeout_s, "check_same_thread": False})


class ThreadReads:
    """SQLite: statements on a synchronous engine of the same file, in reader threads."""

    def __init__(self, url: str | URL, busy_timeout_s: float) -> None:
        self.engine = thread_engine(url, busy_timeout_s, READER_THREADS)
        event.listen(self.engine, "connect", _autocommit)
        self._threads = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="nobat-read")

    async def __call__(self, statement: Executable, params: Mapping[str, Any] | None = None
                       ) -> Sequence[Row[Any]]:
        """Run `statement` in a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, self._run, statement, params)

    def _run(self, statement: Executable, params: Mapping[str, Any] | None
             ) -> Sequence[Row[Any]]:
        with self.engine.connect() as conn:
            return conn.execute(statement, dict(params or {})).all()

    def close(self) -> None:
        """Let running reads finish, then release the threads and connections."""
        self._threads.shutdown(wait=True)
        self.engine.dispose()


class ConnectionReads:
    """PostgreSQL: statements on an autocommit pooled connection (SQLite in memory, whose
    file a second engine cannot open: on its own engine, each in a read it rolls back)."""

    def __init__(self, engine: AsyncEngine, **options: Any) -> None:
        self.engine = engine.execution_options(**options)

    async def __call__(self, statement: Executable, params: Mapping[str, Any] | None = None
                       ) -> Sequence[Row[Any]]:
        """Run `statement` on a pooled connection."""
        async with self.engine.connect() as conn:
            return (await conn.execute(statement, dict(params or {}))).all()

    def close(self) -> None:
        """Nothing of its own: the engine's pool is the database's."""


def within(conn: AsyncConnection) -> Rows:
    """Reads inside a transaction already open, such as a booking's own."""

    async def rows(statement: Executable, params: Mapping[str, Any] | None = None
                   ) -> Sequence[Row[Any]]:
        return (await conn.execute(statement, dict(params or {}))).all()

    return rows


def _autocommit(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # a SELECT is its own snapshot; no BEGIN is sent
