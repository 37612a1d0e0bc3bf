"""A reminder call through the carrier trunk: nobat rings the patient the day before (config
[patient_calls]), the phone answers, hears the booking and confirms it by key (RFC 2833)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import select

from clinic.call_kinds import CallKind
from clinic.schedule import TEHRAN, VisitKind
from db.booking import Booked, BookingService
from db.models import Appointment, PatientCall
from ivr import speech
from tests.sippbx.pbx import clinic_line, first_slot_after, in_order
from tests.support.server import ROOT

PATIENT = "+989351110005"
LATER = dt.timedelta(hours=3)
"""The booking starts later than this: past the change cut-off (2 h) a reminder respects."""


def call_hours_around(now: dt.datetime) -> list[tuple[str, str]]:
    """config.toml edits that let nobat ring patients now, whatever the hour and weekday the
    tier runs at: no no-call days, quiet hours half a day away, the reminder two days ahead
    (so a booking for today or tomorrow is reminded at once, as a late booking is)."""
    shipped = (ROOT / "config.toml").read_text()
    local = now.astimezone(TEHRAN)
    quiet = local + dt.timedelta(hours=12)
    assert 'quiet_hours = "21:00-08:00"' in shipped and 'reminder_at = "18:00"' in shipped
    return [('no_call_days = ["friday"]', "no_call_days = []"),
            ('quiet_hours = "21:00-08:00"',
             f'quiet_hours = "{quiet:%H:%M}-{quiet + dt.timedelta(minutes=1):%H:%M}"'),
            ('reminder_at = "18:00"', f'reminder_at = "{local:%H:%M}"'),
            ("reminder_days_before = 1", "reminder_days_before = 2")]


async def test_a_reminder_is_answered_and_confirmed_by_key(tmp_path: Path,
                                                           prompts: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    async with clinic_line(tmp_path, prompts, edits=call_hours_around(now),
                           phone_steps=["1"], start_nobat=False) as line:
        service = BookingService(line.store)
        doctor = (await service.doctors())[0]
        slot = await first_slot_after(service, doctor.id, now + LATER)
        booked = await service.book(PATIENT, doctor.id, slot.start, VisitKind.IN_PERSON,
                                    via="staff")
        assert isinstance(booked, Booked)
        await line.start_nobat()
        # The patient's phone rings (the carrier answers it), and its owner listens.
        channel = await line.channel_of(CallKind.PATIENT_CALL.channel_id(1, 1), within=30)
        invite = await line.carrier.wait_for(
            lambda m: m.received and m.method == "INVITE" and m.request_user == "09351110005",
            "the reminder ringing the patient")
        await line.log.wait_played(channel, "fa/reminder/menu", within=40)
        line.carrier.press(invite.call_id)
        await line.carrier.wait_for(lambda m: m.received and m.method == "BYE"
                                    and m.call_id == invite.call_id,
                                    "nobat ending the reminder call", within=40)
        heard = line.log.played(channel)
        async with line.store.reading() as session:
            [call] = (await session.scalars(select(PatientCall))).all()
            appointment = await session.get(Appointment, booked.appointment.id)
    assert (call.purpose, call.state, call.attempts, call.outcome) == (
        "reminder", "done", 1, "confirmed")
    assert appointment is not None and appointment.status == "booked"
    start = slot.start.astimezone(TEHRAN)
    assert in_order(heard, [
        "fa/reminder/intro", "fa/with-doctor", f"fa/doctor/{doctor.key}",
        *(f"fa/{key}" for key in speech.date(start.date(), "fa")),
        *(f"fa/{key}" for key in speech.clock(slot.start, "fa", TEHRAN)),
        "fa/reminder/menu", "fa/reminder/confirmed", "fa/goodbye"]), heard
    # The phone was shown the clinic calling, never anything else.
    assert '"Nobat Clinic" <sip:+982188776655@' in (invite.header("P-Asserted-Identity") or "")
