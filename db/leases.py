"""Claims on outbound calls held through a lease: the conditions every claim and step share.

A consultation and a patient call are each dialled only by the instance whose conditional
UPDATE won it; each later step is written only while that claim still holds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.engine import Database
from db.models import Consultation, PatientCall

WAITING = ("scheduled", "retry_wait")
C = TypeVar("C")


class ClaimLost(RuntimeError):
    """A step was refused: another claim took over, or the state no longer allows it."""

    def __init__(self, message: str, taken_over: bool = False) -> None:
        super().__init__(message)
        self.taken_over = taken_over
        """Another instance runs this same attempt now: its legs are that instance's."""

Leased = type[Consultation] | type[PatientCall]


def lease_expired(model: Leased, now: dt.datetime, *states: str) -> ColumnElement[bool]:
    """In one of `states`, but the instance that claimed it stopped renewing (crashed or
    cut off)."""
    return and_(model.state.in_(states), model.lease_until < now)


def waiting_due(model: Leased, now: dt.datetime) -> ColumnElement[bool]:
    """Waiting for its next attempt, and due."""
    return and_(model.state.in_(WAITING), model.due_at <= now)


def claimable(model: Leased, now: dt.datetime) -> ColumnElement[bool]:
    """Due for a new attempt: waiting and due, or dialling under a lease that ran out."""
    return or_(waiting_due(model, now), lease_expired(model, now, "dialling"))


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


async def due_times(database: Database, model: Leased, after: dt.datetime,
                    until: dt.datetime) -> list[dt.datetime]:
    """The distinct moments waiting rows fall due in (after, until]: when to look again."""
    rows = await database.rows(
        select(model.due_at)
        .where(model.state.in_(WAITING), model.due_at > after, model.due_at <= until)
        .distinct()
        .order_by(model.due_at), None)
    return [row[0] for row in rows]


async def claim_oldest(database: Database, model: Leased,
                       due: Callable[[dt.datetime], ColumnElement[bool]],
                       claim: Callable[[list[int]], Awaitable[list[C]]], limit: int,
                       running: Iterable[int], clock: Callable[[], dt.datetime]) -> list[C]:
    """Claim up to `limit` rows that are `due`, oldest first, by `claim` (conditional UPDATEs
    over the candidates, in one transaction): rows another instance wins are skipped, and
    `running` (what this instance has in hand) are never tried. The look for candidates,
    every few seconds on an idle line, is a plain read (db/reads.py)."""
    claims: list[C] = []
    tried = set(running)
    while len(claims) < limit:
        candidates = [row[0] for row in await database.rows(
            select(model.id)
            .where(due(clock()), model.id.not_in(tried))
            .order_by(model.due_at, model.id)
            .limit(limit - len(claims)), None)]
        if not candidates:
            break
        tried.update(candidates)
        claims += await claim(list(candidates))
    return claims
