"""The log of inbound calls, kept for the daily figures and the day-by-hour heatmap."""

from __future__ import annotations

import datetime as dt

from db.engine import Database
from db.models import InboundCall


class CallLog:
    """Writes one row when a call starts and completes it when the call ends."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def started(self, at: dt.datetime, caller: str | None, dialled: str | None) -> int:
        """Record a new call and return its id."""
        async def run() -> int:
            async with self.db.writing() as session:
                row = InboundCall(started_at=at, caller=caller, dialled=(dialled or "")[:40])
                session.add(row)
                await session.flush()
                return row.id
        return await self.db.retry_locked(run)

    async def ended(self, call_id: int, at: dt.datetime, language: str, outcome: str) -> None:
        """Record how and when a call ended."""
        async def run() -> None:
            async with self.db.writing() as session:
                row = await session.get(InboundCall, call_id)
                if row is not None:
                    row.ended_at, row.language, row.outcome = at, language, outcome
        await self.db.retry_locked(run)
