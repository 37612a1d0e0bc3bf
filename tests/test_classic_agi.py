"""`nobat-agi`, one process per call as AGI(nobat-agi) runs it: same flows, same store."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from sqlalchemy import select

from clinic.clinic_file import read_clinic
from db.clinic_sync import load_clinic
from db.engine import Database
from db.models import Appointment, InboundCall
from db.schema import upgrade
from ivr.agi_protocol import AgiEnvironment
from tests.fakepbx.agi_caller import CallTranscript, FakeChannel, call_environment, converse
from tests.fakepbx.script import Caller, Hear
from tests.support.ivr import SECONDS_PER_CHARACTER
from tests.support.server import demo_copy
from tests.test_ivr_calls import BOOK_SATURDAY_1620


def classic_environment(caller: Caller) -> AgiEnvironment:
    """What Asterisk writes to a classic AGI program: no agi_network lines."""
    env = call_environment(caller, "nobat-agi")
    return AgiEnvironment({k: v for k, v in env.variables.items()
                           if not k.startswith("agi_network")} | {"agi_request": "nobat-agi"})


async def run_classic(caller: Caller, config: Path) -> CallTranscript:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from nobat.agi_entry import main; raise SystemExit(main())",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "NOBAT_CONFIG": str(config)})
    assert process.stdin is not None and process.stdout is not None
    channel = FakeChannel(caller, classic_environment(caller),
                          lambda path: max(0.5, len(path) * SECONDS_PER_CHARACTER))
    await converse(channel, process.stdout, process.stdin, stall_seconds=30)
    process.stdin.close()
    assert await asyncio.wait_for(process.wait(), 30) == 0
    channel.transcript.assert_clean()
    return channel.transcript


async def test_a_classic_agi_call_books_on_the_same_store(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'nobat.db'}")
    await upgrade(database)
    await load_clinic(database, read_clinic(tmp_path / "clinic.toml"))
    transcript = await run_classic(
        Caller.dialling("09121234567", Hear("welcome"), "1", *BOOK_SATURDAY_1620[:-2],
                        Hear("anything-else"), "9"), config)
    assert transcript.exchanges[0].command.verb == "ANSWER"
    assert transcript.prompts[0].endswith("/fa/welcome")
    assert transcript.prompts[-1].endswith("/fa/goodbye")
    async with database.reading() as session:
        assert len((await session.scalars(select(Appointment))).all()) == 1
        assert (await session.scalars(select(InboundCall.outcome))).all() == ["completed"]
    await database.close()
