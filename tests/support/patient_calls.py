"""Calls to patients end to end: nobat's FastAGI server and dialer, the fake PBX and phones
whose owners press keys, on one real store, in scripted time (tests/support/dialer_line.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from clinic.schedule import TEHRAN
from db.engine import Database
from db.models import PatientCall
from ivr.prompts import PromptLibrary
from nobat.bridge_wiring import call_planning, patient_calls
from nobat.config import load_config
from nobat.ivr_wiring import build_line, fastagi_server
from tests.fakepbx.script import Phone
from tests.support.dialer_line import Line, ScaledClock, line
from tests.support.server import demo_copy

FAST_RETRIES = (("ring_seconds = 30", "ring_seconds = 10"),
                ("retry_minutes = 30", "retry_minutes = 1"))
"""Calls ring 10 s and are retried a minute later, so a test sees every try."""


@dataclass
class PatientLine:
    """The dialer line, and the prompt library the flows speak from."""

    pbx_line: Line
    prompts: PromptLibrary

    def heard(self, exten: str) -> list[list[str]]:
        """Per answered call to a phone, the prompts its owner heard, by name."""
        calls = []
        for transcript in self.pbx_line.pbx.flow_heard_by(exten):
            names = []
            for path in transcript.prompts:
                found = self.prompts.key_of(path)
                names.append(found[1] if found else path)
            calls.append(names)
        return calls


@asynccontextmanager
async def patient_line(database: Database, folder: Path, phones: Sequence[Phone],
                       start: dt.datetime, edits: Sequence[tuple[str, str]] = FAST_RETRIES,
                       instances: Sequence[str] = ("nobat-1",), cap: int = 8,
                       practice_share: float = 1.0) -> AsyncIterator[PatientLine]:
    """The shipped config (with `edits` to its text) and flows, serving and dialling on
    `database` from the scripted moment `start` (a dialer for each of `instances`, each with
    `cap` channels and a practice's `practice_share` of them); the clinic must be loaded
    already."""
    path = demo_copy(folder)
    text = path.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    config = load_config(path, env={})
    clock = ScaledClock(start)
    ivr = await build_line(config, database, clock)
    server = fastagi_server(config, ivr)
    port = await server.start("127.0.0.1", 0)
    try:
        async with line(database, phones, start, instances, clock=clock,
                        fastagi=("127.0.0.1", port),
                        patients=lambda plan: patient_calls(
                            config, database, plan, call_planning(config, TEHRAN), clock,
                            plan_every=0.0),
                        survey_in_call=config.patient_calls.survey == "in-call", cap=cap,
                        practice_share=practice_share) as pbx_line:
            yield PatientLine(pbx_line, ivr.services.prompts)
    finally:
        await server.close()


async def calls(database: Database) -> list[PatientCall]:
    """Every patient call in the store, by id."""
    async with database.reading() as session:
        return list((await session.scalars(select(PatientCall).order_by(PatientCall.id))).all())


def settled(database: Database, count: int, *states: str) -> Callable[[], Awaitable[bool]]:
    """A condition for Line.until: `count` patient calls are in one of `states`."""

    async def check() -> bool:
        return sum(call.state in states for call in await calls(database)) >= count

    return check
