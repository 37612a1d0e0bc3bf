"""`nobat serve` dials a due phone consultation through AMI and records how it went."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from sqlalchemy import select

from db.booking import BookingService
from db.engine import Database
from db.models import Appointment, Consultation
from tests.fakepbx.ami_server import FakeAsterisk, nobat_user
from tests.fakepbx.script import Answers, Phone
from tests.support.consultations import attempts, book_due, first_phone_slot
from tests.support.server import ServerProcess, demo_copy, demo_store, dial_fake_pbx

SECRET = "ami-test-secret"
USERS = nobat_user(SECRET)
DOCTOR, PATIENT = "09121002001", "09121234567"


async def book_a_consultation_due(database: Database, due: dt.datetime) -> int:
    service = BookingService(database)
    doctor_id, start = await first_phone_slot(service, "dr-ahmadi")
    appointment, _ = await book_due(service, database, doctor_id, PATIENT, start, due)
    return appointment


async def ready_store(tmp_path: Path, pbx: FakeAsterisk, poll_seconds: float) -> Database:
    """The demo config dialling through the fake PBX, and its migrated store."""
    dial_fake_pbx(tmp_path / "config.toml", pbx.port,
                  ("poll_seconds = 5", f"poll_seconds = {poll_seconds}"))
    return await demo_store(tmp_path)


async def test_a_due_consultation_is_dialled_bridged_and_completed(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    phones = [Phone(DOCTOR, "+989121002001", Answers(0.5, talk=6.0), "Dr Ahmadi"),
              Phone(PATIENT, "+989121234567", Answers(0.3), "Patient")]
    async with FakeAsterisk(users=USERS, phones=phones, speed=0.1) as pbx:
        database = await ready_store(tmp_path, pbx, poll_seconds=0.2)
        appointment = await book_a_consultation_due(
            database, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10))
        server = await ServerProcess(config, env={"NOBAT_AMI_SECRET": SECRET}).start()
        try:
            state = ""
            for _ in range(200):
                async with database.reading() as session:
                    state = await session.scalar(select(Consultation.state)) or ""
                if state == "completed":
                    break
                await asyncio.sleep(0.1)
            assert state == "completed", "\n".join(server.log)
        finally:
            assert await server.stop() == 0
        async with database.reading() as session:
            status = await session.scalar(select(Appointment.status).where(
                Appointment.id == appointment))
        await database.close()
        assert status == "completed"
        originates = [a for s in pbx.sessions for a in s.actions if a.name == "Originate"]
        assert len(originates) == 2
        assert {a.fields.get("CallerID") for a in originates} == {
            '"Nobat Clinic" <+982188776655>'}
        assert pbx.leaks() == []
        # Each heard, from nobat's prompts folder, who calls and why, in the patient's language.
        def heard(phone: str) -> list[str]:
            return [path.split("/prompts/", 1)[1] for path in pbx.heard_by(phone)]

        assert heard(PATIENT) == ["fa/consult/patient-intro", "fa/doctor/dr-ahmadi",
                                  "fa/consult/is-starting"]
        assert heard(DOCTOR) == ["fa/consult/doctor-intro"]
        assert all(SECRET not in line for line in server.log)


async def test_a_consultation_is_rung_at_its_time_by_a_timer_set_at_start(
        tmp_path: Path) -> None:
    """The store is read every 300 s here: only the timer nobat sets from it at start can
    ring the consultation within seconds of its time."""
    config = demo_copy(tmp_path)
    phones = [Phone(DOCTOR, "+989121002001", Answers(0.2, talk=1.0), "Dr Ahmadi"),
              Phone(PATIENT, "+989121234567", Answers(0.2), "Patient")]
    async with FakeAsterisk(users=USERS, phones=phones, speed=0.1) as pbx:
        database = await ready_store(tmp_path, pbx, poll_seconds=300)
        due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=6)
        await book_a_consultation_due(database, due)
        server = await ServerProcess(config, env={"NOBAT_AMI_SECRET": SECRET}).start()
        try:
            assert dt.datetime.now(dt.UTC) < due, "nobat took too long to start for this test"
            for _ in range(300):
                if await attempts(database, 1):
                    break
                await asyncio.sleep(0.1)
            [attempt] = await attempts(database, 1)
        finally:
            assert await server.stop() == 0
        await database.close()
    assert due <= attempt.started_at < due + dt.timedelta(seconds=20), "\n".join(server.log)
