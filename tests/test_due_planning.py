"""What falls due is looked for on a cadence: patient calls planned every `plan_every`,
timers refreshed every poll, however often the dialer's loop turns."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bridge.due_planning import Cadence, DuePlanning
from bridge.due_timers import DueTimers
from clinic.clinic_file import read_clinic
from clinic.schedule import VisitKind
from db.booking import BookingPolicy, BookingService
from db.clinic_sync import load_clinic
from db.consultations import ConsultationStore
from db.engine import Database
from db.schema import upgrade
from tests.support.clinics import Clock
from tests.support.consultations import book_due

DEMO = Path(__file__).resolve().parents[1] / "clinic.toml"


class Seconds:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_work_is_due_at_once_then_once_per_period() -> None:
    seconds = Seconds()
    every_minute = Cadence(60.0, seconds)
    assert every_minute.due()
    seconds.now += 59.9
    assert not every_minute.due()
    seconds.now += 0.1
    assert every_minute.due()
    assert not every_minute.due()  # the loop turned again at once: nothing to do


def test_a_late_turn_restarts_the_period_from_when_the_work_was_done() -> None:
    seconds = Seconds()
    every_minute = Cadence(60.0, seconds)
    every_minute.due()
    seconds.now += 150.0
    assert every_minute.due()
    seconds.now += 30.0
    assert not every_minute.due()


def test_a_zero_period_makes_every_turn_do_the_work() -> None:
    seconds = Seconds()
    always = Cadence(0.0, seconds)
    assert always.due() and always.due()


async def test_timers_are_set_from_the_store_once_per_poll(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'nobat.db'}")
    await upgrade(database)
    clock, seconds = Clock(dt.datetime(2026, 11, 28, 5, 30, tzinfo=dt.UTC)), Seconds()
    await load_clinic(database, read_clinic(DEMO), clock=clock)
    service = BookingService(database, BookingPolicy(), clock)
    doctor = next(d.id for d in await service.doctors() if d.key == "dr-hosseini")
    starts = [slot.start for day in await service.next_free_days(doctor, limit=14)
              for slot in await service.free_slots(doctor, day) if VisitKind.PHONE in slot.kinds]
    due = [clock.now + dt.timedelta(minutes=n) for n in (10, 20, 60 * 24 * 3)]
    await book_due(service, database, doctor, "09121234567", starts[0], due[0])
    timers = DueTimers(lambda: None, clock)
    planning = DuePlanning(ConsultationStore(database, clock), None, timers, clock,
                           horizon=dt.timedelta(days=1), poll=5.0, now=seconds)
    try:
        await planning.refresh_timers()
        assert timers.pending == {due[0]}
        await book_due(service, database, doctor, "09121234568", starts[1], due[1])
        await book_due(service, database, doctor, "09121234569", starts[2], due[2])  # too far
        seconds.now += 4.0
        await planning.refresh_timers()
        assert timers.pending == {due[0]}  # within the poll: the store is not asked
        seconds.now += 1.0
        await planning.refresh_timers()
        assert timers.pending == {due[0], due[1]}
        assert await planning.set_timers() == 0  # each due time has one timer
    finally:
        timers.close()
        await database.close()
