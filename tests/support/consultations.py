"""Reading a consultation and its attempts back from the store, as tests check them."""

from __future__ import annotations

from sqlalchemy import select

from db.engine import Database
from db.models import CallAttempt, Consultation


async def consultation(database: Database, ident: int) -> Consultation:
    """The consultation row as the store holds it now."""
    async with database.reading() as session:
        found = await session.get(Consultation, ident)
    assert found is not None
    return found


async def attempts(database: Database, ident: int) -> list[CallAttempt]:
    """A consultation's call attempts, first to last."""
    async with database.reading() as session:
        return list((await session.scalars(select(CallAttempt).where(
            CallAttempt.consultation_id == ident).order_by(CallAttempt.number))).all())
