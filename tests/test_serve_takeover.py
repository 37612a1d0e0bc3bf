"""A nobat killed (SIGKILL) or stopped for a deploy (SIGTERM) mid-attempt, and started again:
the new process takes the attempt over from Asterisk's channels at any moment, rings nobody
twice and cuts off nobody."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from clinic.clinic_file import read_clinic
from db.booking import BookingService
from db.clinic_sync import load_clinic
from db.engine import Database
from db.schema import upgrade
from tests.fakepbx.ami_server import FakeAsterisk, nobat_user
from tests.fakepbx.channels import NOBAT_HOLD_SECONDS, State
from tests.fakepbx.script import Answers, Phone
from tests.support.consultations import attempts, book_due, consultation, first_phone_slot
from tests.support.server import ServerProcess, demo_copy, dial_fake_pbx, edit_config

SECRET = "ami-test-secret"
USERS = nobat_user(SECRET)
DOCTOR, PATIENT = "09121002001", "09121234567"
SPEED = 0.1
LEASE_S = 2


def legs(pbx: FakeAsterisk, ident: int) -> list[State]:
    """The states of the attempt's two ;1 channels at the fake PBX, doctor's first."""
    found = {c.uniqueid: c.state for c in pbx.channels.values()}
    return [found[f"nobat-c{ident}-a1-{leg}"] for leg in ("doctor", "patient")
            if f"nobat-c{ident}-a1-{leg}" in found]


MOMENTS: dict[str, Callable[[FakeAsterisk, Database, int], Awaitable[bool]]] = {
    "after the Originates": lambda pbx, db, ident: asyncio.sleep(0, result=len(
        [a for s in pbx.sessions for a in s.actions if a.name == "Originate"]) == 2),
    "while both ring": lambda pbx, db, ident: asyncio.sleep(
        0, result=legs(pbx, ident) == [State.Ringing, State.Ringing]),
    "after one answered": lambda pbx, db, ident: asyncio.sleep(
        0, result=legs(pbx, ident) == [State.Up, State.Ringing]),
    "after both answered, before the bridge": lambda pbx, db, ident: asyncio.sleep(
        0, result=legs(pbx, ident) == [State.Up, State.Up]),
    "while bridged": lambda pbx, db, ident: _bridged(db, ident),
}
"""When nobat is killed: the doctor answers after 1 s, the patient after 3 s (scripted)."""


async def _bridged(database: Database, ident: int, by: str | None = None) -> bool:
    """Bridged (and when `by` is given: by that instance, after it resumed the attempt)."""
    stored = await consultation(database, ident)
    if stored.state != "bridged" or by not in (None, stored.claimed_by):
        return False
    return by is None or (await attempts(database, ident))[0].resumes > 0


async def until(check: Callable[[], Awaitable[bool]], seconds: float, what: str,
                server: ServerProcess) -> None:
    """Poll `check` until it holds; fail with nobat's log after `seconds`."""
    for _ in range(int(seconds / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not {what} in {seconds} s:\n" + "\n".join(server.log[-60:]))


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "deploy"])
@pytest.mark.parametrize("moment", MOMENTS)
async def test_a_stopped_nobat_is_taken_over_by_the_next_at_any_moment_of_an_attempt(
        tmp_path: Path, database_url: str, moment: str, stop: signal.Signals) -> None:
    config = demo_copy(tmp_path)
    edit_config(config, ('url = "sqlite+aiosqlite:///nobat.db"', f'url = "{database_url}"'))
    phones = [Phone(DOCTOR, "+989121002001", Answers(1.0), "Dr Ahmadi"),
              Phone(PATIENT, "+989121234567", Answers(3.0), "Patient")]
    async with FakeAsterisk(users=USERS, phones=phones, speed=SPEED,
                            hold_seconds=NOBAT_HOLD_SECONDS) as pbx:
        dial_fake_pbx(config, pbx.port, ("poll_seconds = 5", "poll_seconds = 0.2"),
                      ("lease_seconds = 60", f"lease_seconds = {LEASE_S}"))
        database = Database.from_url(database_url)
        await upgrade(database)
        await load_clinic(database, read_clinic(tmp_path / "clinic.toml"))
        service = BookingService(database)
        doctor_id, start = await first_phone_slot(service, "dr-ahmadi")
        _, ident = await book_due(service, database, doctor_id, PATIENT, start,
                                  dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        env = {"NOBAT_AMI_SECRET": SECRET}
        first = await ServerProcess(config, env=env).start()
        try:
            await until(lambda: MOMENTS[moment](pbx, database, ident), 20, moment, first)
            assert first.process is not None
            first.process.send_signal(stop)
            assert await first.process.wait() == (-stop if stop == signal.SIGKILL else 0)
            second = await ServerProcess(config, env=env).start()
            assert second.process is not None
            taker = f"{socket.gethostname()}-{second.process.pid}"
            try:
                await until(lambda: _bridged(database, ident, taker), 20,
                            "taken over and bridged", second)
                stored = await consultation(database, ident)
                [attempt] = await attempts(database, ident)
            finally:
                assert await second.stop() == 0
        finally:
            await first.stop()
            await database.close()
        # The same attempt, each leg originated once, taken over by the new process and
        # bridged: nobody hung up, nobody told the call failed.
        originates = [a.fields.get("ChannelId") for s in pbx.sessions for a in s.actions
                      if a.name == "Originate"]
        assert sorted(originates) == [f"nobat-c{ident}-a1-doctor", f"nobat-c{ident}-a1-patient"]
        assert stored.attempts == 1
        assert attempt.bridged_at is not None
        assert attempt.resumes == 1, attempt.__dict__
        if stop == signal.SIGKILL:  # taken over once the lease ran out; a deploy hands over
            assert attempt.unseen_seconds >= LEASE_S - 1, attempt.__dict__
        assert [a for s in pbx.sessions for a in s.actions if a.name == "Hangup"] == []
        heard = [f for party in (DOCTOR, PATIENT) for f in pbx.heard_by(party)]
        assert not [f for f in heard if "unavailable" in f or "failed" in f], heard
