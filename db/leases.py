"""Claims on outbound calls held through a lease: the conditions every claim and step share.

A consultation and a patient call are each dialled only by the instance whose conditional
UPDATE won it; each later step is written only while that claim still holds.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Consultation, PatientCall

WAITING = ("scheduled", "retry_wait")


class ClaimLost(RuntimeError):
    """A step was refused: another claim took over, or the state no longer allows it."""

Leased = type[Consultation] | type[PatientCall]


def lease_expired(model: Leased, now: dt.datetime, *states: str) -> ColumnElement[bool]:
    """In one of `states`, but the instance that claimed it stopped renewing (crashed or
    cut off)."""
    return and_(model.state.in_(states), model.lease_until < now)


def claimable(model: Leased, now: dt.datetime) -> ColumnElement[bool]:
    """Due for a new attempt: waiting and due, or dialling under a lease that ran out."""
    return or_(and_(model.state.in_(WAITING), model.due_at <= now),
               lease_expired(model, now, "dialling"))


async def held_update(session: AsyncSession, model: Leased, ident: int, instance: str,
                      attempt: int, allowed: tuple[str, ...], values: dict[str, Any]) -> bool:
    """Update one row only while this instance's claim on `attempt` holds in an allowed state."""
    held = await session.execute(
        update(model)
        .where(model.id == ident, model.claimed_by == instance, model.attempts == attempt,
               model.state.in_(allowed))
        .values(**values)
        .execution_options(synchronize_session=False))
    return held.rowcount == 1
