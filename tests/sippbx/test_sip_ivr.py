"""Callers on SIP phones reach the clinic's number through the carrier trunk: they are
answered, hear nobat's prompts, key in by RFC 2833 and book, move, cancel or reach the office."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from sqlalchemy import select

from clinic.schedule import TEHRAN, VisitKind
from db.booking import Booked, BookingService
from db.models import Appointment, InboundCall, Patient
from ivr import speech
from tests.sippbx.pbx import DID, ClinicLine, clinic_line, first_slot_after, in_order
from tests.support.server import ROOT

PATIENT = "09351110001"
PATIENT_E164 = "+989351110001"
LATER = dt.timedelta(hours=3)
"""A booking a caller changes starts later than this: past the change cut-off (2 h)."""
ALWAYS = ", ".join(f'{day} = "00:00-24:00"' for day in (
    "saturday", "sunday", "monday", "tuesday", "wednesday", "thursday", "friday"))


async def test_a_persian_caller_books_by_keys(tmp_path: Path, prompts: Path) -> None:
    steps = [("fa/welcome", "1"), ("fa/main-menu", "1"), ("fa/choose-specialty", "1"),
             ("fa/choose-day", "1"), ("fa/choose-time", "1"), ("fa/choose-kind", "1"),
             ("fa/confirm-keys", "1"), ("fa/anything-else", "9")]
    async with clinic_line(tmp_path, prompts) as line:
        call = await line.call(PATIENT, steps)
        answer = await call.answered()
        await call.follow()
        await call.ended_by_clinic()
        heard = call.heard()
        async with line.store.reading() as session:
            [booked] = (await session.scalars(select(Appointment))).all()
            patient = await session.get(Patient, booked.patient_id)
        [doctor] = [d for d in await BookingService(line.store).doctors()
                    if d.id == booked.doctor_id]
    # The call was answered with media, as a phone needs to hear anything and send keys.
    assert "m=audio" in answer.body and "telephone-event" in answer.body
    # The caller's number came from the carrier's P-Asserted-Identity.
    assert patient is not None and patient.phone == PATIENT_E164
    assert (booked.status, booked.kind, doctor.key) == ("booked", "in_person", "dr-ahmadi")
    # They heard the booking read back as the store holds it, then its code digit by digit.
    start = booked.start_at.astimezone(TEHRAN)
    said = ["fa/with-doctor", "fa/doctor/dr-ahmadi",
            *(f"fa/{key}" for key in speech.date(start.date(), "fa")),
            *(f"fa/{key}" for key in speech.clock(booked.start_at, "fa", TEHRAN)),
            "fa/kind/in_person", "fa/confirm-keys"]
    code = ["fa/your-code", *(f"fa/{key}" for key in speech.digits(booked.code, "fa"))]
    assert in_order(heard, ["fa/welcome", "fa/main-menu", "fa/choose-specialty",
                            "fa/choose-day", "fa/choose-time", "fa/choose-kind", *said, *code,
                            "fa/anything-else", "fa/goodbye"]), heard
    assert heard[-1] == "fa/goodbye"


async def test_a_caller_pressing_0_in_office_hours_rings_the_office(
        tmp_path: Path, prompts: Path) -> None:
    shipped = re.search(r"(?m)^office_hours = .*$", (ROOT / "config.toml").read_text())
    assert shipped is not None
    async with clinic_line(tmp_path, prompts, edits=[
            (shipped.group(0), f"office_hours = {{ {ALWAYS} }}")]) as line:
        call = await line.call(PATIENT, [("fa/welcome", "1"), ("fa/main-menu", "0")])
        await call.answered()
        await call.follow()
        invite = await line.office.wait_for(lambda m: m.received and m.method == "INVITE",
                                            "the office phone ringing", within=30)
        # The office answers (phones.xml) and talks with the caller; then the caller hangs up.
        await line.office.wait_for(lambda m: not m.received and m.status == 200
                                   and m.call_id == invite.call_id, "the office answering")
        await call.hang_up()
        await line.office.wait_for(lambda m: m.received and m.method == "BYE"
                                   and m.call_id == invite.call_id,
                                   "the office's call ending with the caller's")
        heard = call.heard()
        async with line.store.reading() as session:
            [logged] = (await session.scalars(select(InboundCall))).all()
    assert in_order(heard, ["fa/welcome", "fa/main-menu", "fa/transferring"]), heard
    # The office phone is shown who is calling: the caller's own number.
    assert invite.request_user == "office"
    assert f"<sip:{PATIENT}@" in (invite.header("From") or ""), invite
    assert (logged.caller, logged.dialled, logged.outcome) == (PATIENT_E164, DID, "office")


async def test_an_english_caller_moves_a_booking_then_cancels_it_from_another_phone(
        tmp_path: Path, prompts: Path) -> None:
    async with clinic_line(tmp_path, prompts) as line:
        service = BookingService(line.store)
        doctor = (await service.doctors())[0]
        first = await first_slot_after(service, doctor.id, dt.datetime.now(dt.UTC) + LATER)
        booked = await service.book(PATIENT_E164, doctor.id, first.start, VisitKind.IN_PERSON,
                                    via="staff")
        assert isinstance(booked, Booked)
        code = booked.appointment.code
        # From their own phone: the booking's code, then "move it" to the third day offered.
        mover = await line.call(PATIENT, [
            ("fa/welcome", "2"), ("en/main-menu", "2"), ("en/enter-code", code),
            ("en/cancel-it", "2"), ("en/choose-day", "3"), ("en/choose-time", "1"),
            ("en/confirm-keys", "1"), ("en/anything-else", "9")])
        await mover.answered()
        await mover.follow()
        await mover.ended_by_clinic()
        mover_heard = mover.heard()
        moved = await stored(line, booked.appointment.id)
        # From a phone that withholds its number: their mobile number, the code, "cancel it".
        canceller = await line.call(None, [
            ("fa/welcome", "2"), ("en/main-menu", "2"), ("en/enter-mobile", f"{PATIENT}#"),
            ("en/enter-code", moved.code), ("en/cancel-it", "1"), ("en/confirm-keys", "1"),
            ("en/anything-else", "9")])
        await canceller.answered()
        await canceller.follow()
        await canceller.ended_by_clinic()
        canceller_heard = canceller.heard()
        cancelled = await stored(line, booked.appointment.id)
        async with line.store.reading() as session:
            logged = (await session.scalars(select(InboundCall).order_by(InboundCall.id))).all()
    assert moved.status == "booked" and moved.start_at > first.start
    assert moved.start_at.astimezone(TEHRAN).date() > first.start.astimezone(TEHRAN).date()
    said = [*(f"en/{key}" for key in speech.date(moved.start_at.astimezone(TEHRAN).date(),
                                                 "en")),
            *(f"en/{key}" for key in speech.clock(moved.start_at, "en", TEHRAN))]
    assert in_order(mover_heard, ["fa/welcome", "en/main-menu", "en/enter-code", "en/cancel-it",
                                  "en/choose-day", "en/choose-time", *said, "en/confirm-keys",
                                  "en/rescheduled", "en/goodbye"]), mover_heard
    assert cancelled.status == "cancelled"
    assert in_order(canceller_heard, ["en/enter-mobile", "en/enter-code", *said, "en/cancel-it",
                                      "en/confirm-cancel", "en/confirm-keys", "en/cancelled",
                                      "en/goodbye"]), canceller_heard
    assert [(c.caller, c.language) for c in logged] == [(PATIENT_E164, "en"), (None, "en")]


async def stored(line: ClinicLine, ident: int) -> Appointment:
    """A booking as the store holds it now."""
    async with line.store.reading() as session:
        found = await session.get(Appointment, ident)
    assert found is not None
    return found
