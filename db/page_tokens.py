"""Each practice's own status page token, for its staff: the store keeps only its SHA-256,
so a copy of the store logs nobody in, and a new token for a practice replaces the old one
and ends every session the old one opened."""

from __future__ import annotations

import hmac

from sqlalchemy import delete, select

from db.engine import Clock, Database, utc_now
from db.models import Clinic, PageToken, WebSession
from db.practices import PracticeScope
from db.web_sessions import id_hash


class UnknownPractice(LookupError):
    """No practice in the store has this key."""


async def keep_token(database: Database, practice: str, token: str,
                     clock: Clock = utc_now) -> None:
    """Make `token` the practice's staff token, in place of any earlier one."""

    async def run() -> None:
        async with database.writing() as session:
            clinic = await session.scalar(select(Clinic.id).where(Clinic.key == practice))
            if clinic is None:
                raise UnknownPractice(practice)
            await session.execute(delete(WebSession).where(WebSession.clinic_id == clinic))
            await session.execute(delete(PageToken).where(PageToken.clinic_id == clinic))
            session.add(PageToken(clinic_id=clinic, token_hash=id_hash(token),
                                  created_at=clock()))

    await database.retry_locked(run)


async def token_practice(database: Database, token: str) -> PracticeScope | None:
    """The practice whose staff token this is, or None; every kept hash is compared, each in
    constant time, so how long it takes tells nothing of which came close."""
    given = id_hash(token).encode()
    async with database.reading() as session:
        rows = (await session.execute(
            select(PageToken.token_hash, Clinic.id, Clinic.key, Clinic.timezone)
            .join(Clinic, PageToken.clinic_id == Clinic.id))).all()
    found = None
    for kept, clinic, key, zone in rows:
        if hmac.compare_digest(given, kept.encode()):
            found = PracticeScope.of_row(clinic, key, zone)
    return found
