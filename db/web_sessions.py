"""Status page logins kept in the store, so every instance on it knows them and a logout
anywhere ends them everywhere.

The browser holds a random id; the store keeps only its SHA-256, so someone who reads the
store (or a backup of it) cannot log in with what they read. Each session has its own random
CSRF value, and ends when it has been idle too long or has lasted too long, whichever comes
first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, or_, select, update

from db.engine import Database, utc_now
from db.models import Clinic, WebSession
from db.practices import PracticeScope

ID_BYTES = 32
"""256 random bits: the id cannot be guessed, so a lookup by its hash needs no slowing."""
TOUCH_AT_MOST_EVERY = dt.timedelta(seconds=60)
"""A page refreshing itself every few seconds writes its last-seen time once a minute."""


@dataclass(frozen=True)
class SessionLifetime:
    """How long a session lives: since its last request, and at all."""

    idle: dt.timedelta
    absolute: dt.timedelta


@dataclass(frozen=True)
class LiveSession:
    """A session that is still open, as the page needs it."""

    csrf: str
    created_at: dt.datetime
    last_seen_at: dt.datetime
    practice: PracticeScope | None = None
    """The one practice it may see (a practice's staff token opened it); None: all."""


def id_hash(session_id: str) -> str:
    """What the store keeps of an id: its SHA-256, hex."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


class WebSessionStore:
    """Opens, finds, ends and purges status page sessions."""

    def __init__(self, database: Database, lifetime: SessionLifetime,
                 clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.database, self.lifetime, self.clock = database, lifetime, clock

    async def open(self, practice: PracticeScope | None = None) -> tuple[str, LiveSession]:
        """Start a session that sees one practice (None: every one); returns the id for the
        cookie (never stored) and the session."""
        session_id = secrets.token_urlsafe(ID_BYTES)
        now = self.clock()
        live = LiveSession(secrets.token_urlsafe(ID_BYTES), now, now, practice)

        async def run() -> None:
            async with self.database.writing() as session:
                session.add(WebSession(id_hash=id_hash(session_id), csrf=live.csrf,
                                       created_at=now, last_seen_at=now,
                                       clinic_id=None if practice is None else practice.id))

        await self.database.retry_locked(run)
        return session_id, live

    async def find(self, session_id: str) -> LiveSession | None:
        """The open session with this id, its last-seen time moved on; None if there is none
        (never opened, ended by logout, idle too long or too old)."""
        now = self.clock()
        async with self.database.reading() as session:
            found = (await session.execute(
                select(WebSession, Clinic.key, Clinic.timezone)
                .outerjoin(Clinic, WebSession.clinic_id == Clinic.id)
                .where(WebSession.id_hash == id_hash(session_id)))).first()
        if found is None:
            return None
        row, key, zone = found
        if self._ended(row.created_at, row.last_seen_at, now):
            return None
        if now - row.last_seen_at >= min(TOUCH_AT_MOST_EVERY, self.lifetime.idle / 10):
            await self._touch(row.id, now)
        practice = (None if row.clinic_id is None
                    else PracticeScope.of_row(row.clinic_id, key, zone))
        return LiveSession(row.csrf, row.created_at, now, practice)

    def _ended(self, created_at: dt.datetime, last_seen_at: dt.datetime,
               now: dt.datetime) -> bool:
        return (now - last_seen_at >= self.lifetime.idle
                or now - created_at >= self.lifetime.absolute)

    async def _touch(self, row_id: int, now: dt.datetime) -> None:
        async def run() -> None:
            async with self.database.writing() as session:
                await session.execute(update(WebSession).where(WebSession.id == row_id)
                                      .values(last_seen_at=now))

        await self.database.retry_locked(run)

    async def end(self, session_id: str) -> None:
        """Log out: the session is gone, so a copy of its cookie opens nothing any more."""
        async def run() -> None:
            async with self.database.writing() as session:
                await session.execute(delete(WebSession).where(
                    WebSession.id_hash == id_hash(session_id)))

        await self.database.retry_locked(run)

    async def purge(self) -> int:
        """Delete every ended session; returns how many went."""
        now = self.clock()

        async def run() -> int:
            async with self.database.writing() as session:
                result = await session.execute(delete(WebSession).where(or_(
                    WebSession.last_seen_at <= now - self.lifetime.idle,
                    WebSession.created_at <= now - self.lifetime.absolute)))
                return int(result.rowcount or 0)  # type: ignore[attr-defined]

        return await self.database.retry_locked(run)
