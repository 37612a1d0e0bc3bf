"""Schema creation and upgrades through Alembic, run at start so a new file or server just works."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from db.engine import Database

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    """Build Alembic's configuration in code; no alembic.ini to keep in step."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def upgrade(database: Database) -> str:
    """Bring the schema to the newest revision and return it."""

    def _run(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), "head")

    async with database.engine.begin() as conn:
        await conn.run_sync(_run)
    return head_revision()


async def current_revision(database: Database) -> str | None:
    """Return the revision the database is at (None for an empty database)."""
    async with database.engine.connect() as conn:
        return await conn.run_sync(
            lambda c: MigrationContext.configure(c).get_current_revision())


def head_revision() -> str:
    """Return the newest revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head
