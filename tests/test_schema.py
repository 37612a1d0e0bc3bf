"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from db.engine import Database
from db.models import Base
from db.schema import current_revision, head_revision, upgrade


async def test_migrations_match_the_models(database: Database) -> None:
    def differences(connection: Connection) -> list[object]:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)

    async with database.engine.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_upgrading_again_is_harmless(database: Database) -> None:
    assert await current_revision(database) == head_revision()
    assert await upgrade(database) == head_revision()


async def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: object) -> None:
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path}/w.db")
    try:
        async with database.engine.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
    finally:
        await database.close()
    assert (mode, timeout) == ("wal", 30000)
