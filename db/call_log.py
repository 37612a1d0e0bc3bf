"""The log of inbound calls, kept for the daily figures and the day-by-hour heatmap."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from db.engine import Database
from db.models import InboundCall


@dataclass(frozen=True)
class CallRecord:
    """One finished call: written once, at its end, so a rush of new calls waits on nothing."""

    started: dt.datetime
    ended: dt.datetime
    caller: str | None
    dialled: str | None
    language: str
    outcome: str


class CallLog:
    """Writes one row per finished call."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def record(self, call: CallRecord) -> None:
        """Store a finished call."""
        async def run() -> None:
            async with self.db.writing() as session:
                session.add(InboundCall(
                    started_at=call.started, ended_at=call.ended, caller=call.caller,
                    dialled=(call.dialled or "")[:40] or None, language=call.language,
                    outcome=call.outcome))
        await self.db.retry_locked(run)
