"""Fixtures that hand tests real parts: SQLite files, a PostgreSQL server, a migrated store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from db.engine import Database
from db.schema import upgrade
from tests.support.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run; each test gets its own database in it."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend nobat supports."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'nobat.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return await server.create_database()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated store on each backend."""
    db = Database.from_url(database_url)
    await upgrade(db)
    try:
        yield db
    finally:
        await db.close()
