"""Fixtures that hand tests real parts: SQLite files, a PostgreSQL server, a migrated store."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import pytest

from db.engine import Database
from db.schema import upgrade
from tests.support.postgres import PostgresServer

T = TypeVar("T")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run; each test gets its own database in it."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store migrated to the newest revision; each test's store is a copy, as
    running the migrations for every test cost a quarter second each."""
    path = tmp_path_factory.mktemp("migrated") / "nobat.db"
    _apart(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def migrated_postgres(postgres: PostgresServer) -> str:
    """A database on the session's server migrated to the newest revision, the template each
    test's migrated database is created from."""
    async def made() -> str:
        url = await postgres.create_database()
        await _migrate(url)
        return url

    return _apart(made()).rsplit("/", 1)[1]


def _apart(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end on a loop of its own: these session fixtures are first asked
    for inside a test's running loop."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, work).result()


async def _migrate(url: str) -> None:
    db = Database.from_url(url)
    try:
        await upgrade(db)
    finally:
        await db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database on each backend nobat supports: empty, or, for a test that also
    takes `database`, a copy of the migrated one."""
    migrated = "database" in request.fixturenames
    if request.param == "sqlite":
        path = tmp_path / "nobat.db"
        if migrated:
            _copy_store(request.getfixturevalue("migrated_sqlite"), path)
        return f"sqlite+aiosqlite:///{path}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return await server.create_database(
        request.getfixturevalue("migrated_postgres") if migrated else None)


def _copy_store(template: Path, path: Path) -> None:
    """A SQLite store copied whole, with the mode nobat gives a new one."""
    with closing(sqlite3.connect(template)) as source, closing(sqlite3.connect(path)) as copy:
        source.backup(copy)
    path.chmod(template.stat().st_mode & 0o777)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated store on each backend."""
    db = Database.from_url(database_url)
    try:
        yield db
    finally:
        await db.close()
