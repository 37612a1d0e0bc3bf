"""Whole calls through the fake PBX: what the caller heard, in order, and what the store holds."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from clinic.schedule import VisitKind
from db.booking import Booked, BookingService
from db.engine import Database
from db.models import Appointment, InboundCall, Patient
from ivr.agi_protocol import Command
from tests.fakepbx.agi_caller import files_played, place_call
from tests.fakepbx.script import Caller, HangUp, Hear, Wait
from tests.support.clinics import Clock
from tests.support.ivr import ROOT, HeardCall, IvrRig, ivr_rig

TEHRAN = ZoneInfo("Asia/Tehran")
SATURDAY = dt.date(2026, 11, 28)
MOBILE = "09121234567"


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=TEHRAN).astimezone(dt.UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(at(SATURDAY, 9))


@pytest.fixture
async def rig(database: Database, clock: Clock) -> AsyncIterator[IvrRig]:
    async with ivr_rig(database, clock) as started:
        yield started


def contains(heard: list[str], expected: list[str]) -> bool:
    """Whether the caller heard `expected` as one unbroken run."""
    size = len(expected)
    return any(heard[i:i + size] == expected for i in range(len(heard) - size + 1))


def spoken_code(heard: list[str]) -> str:
    """The booking code as the caller heard it, digit by digit after "your-code"."""
    start = heard.index(next(p for p in heard if p.endswith("/your-code"))) + 1
    digits = []
    for prompt in heard[start:]:
        if not prompt.split("/")[-1].isdigit():
            break
        digits.append(prompt.split("/")[-1])
    return "".join(digits)


async def appointments(database: Database) -> list[tuple[str, dt.datetime, str, str]]:
    async with database.reading() as session:
        rows = await session.execute(
            select(Appointment.code, Appointment.start_at, Appointment.status, Patient.phone)
            .join(Patient).order_by(Appointment.id))
        return [tuple(r) for r in rows]


BOOK_SATURDAY_1620 = (Hear("main-menu"), "1", Hear("choose-specialty"), "1",
                      Hear("choose-day"), "1", Hear("choose-time"), "2",
                      Hear("confirm-keys"), "1", Hear("anything-else"), "9")


async def test_a_new_caller_books_and_hears_the_booking_read_back_and_its_code(
        rig: IvrRig, database: Database) -> None:
    heard = await rig.call(Caller.dialling(MOBILE, Hear("welcome"), "1", *BOOK_SATURDAY_1620))
    assert heard.prompts[:5] == ["fa/welcome", "fa/main-menu", "fa/choose-specialty",
                                 "fa/choose-day", "fa/choose-time"]
    assert contains(heard.prompts, [
        "fa/with-doctor", "fa/doctor/dr-ahmadi", "fa/day/saturday", "fa/ord/7", "fa/month/9",
        "fa/time/hour", "fa/num/16-o", "fa/num/20", "fa/time/minutes", "fa/kind/in_person",
        "fa/confirm-keys", "fa/your-code"])
    assert heard.prompts[-3:] == ["fa/repeat-code", "fa/anything-else", "fa/goodbye"]
    code = spoken_code(heard.prompts)
    assert await appointments(database) == [(code, at(SATURDAY, 16, 20), "booked",
                                             "+989121234567")]
    assert heard.transcript.hung_up_by == "nobat"
    assert heard.transcript.variables["NOBAT_RESULT"] == "done"


async def test_nothing_is_written_without_the_confirming_key(
        rig: IvrRig, database: Database) -> None:
    heard = await rig.call(Caller.dialling(
        MOBILE, Hear("main-menu"), "1", Hear("choose-specialty"), "1", Hear("choose-day"), "1",
        Hear("choose-time"), "2", Hear("confirm-keys"), "2", Hear("choose-time"), Wait(1),
        HangUp()))
    assert heard.prompts.count("fa/choose-time") == 2
    assert await appointments(database) == []


async def test_english_is_one_key_away_for_a_patient_too(
        rig: IvrRig, database: Database) -> None:
    await rig.call(Caller.dialling(MOBILE, *BOOK_SATURDAY_1620))
    heard = await rig.call(Caller.dialling(MOBILE, Hear("welcome"), "2", Hear("main-menu"),
                                           "3", Hear("anything-else"), "9"))
    assert heard.prompts == ["fa/welcome", "en/main-menu", "en/address-intro",
                             "en/clinic/address", "en/anything-else", "en/goodbye"]


def commands(heard: HeardCall) -> list[tuple[str, tuple[str, ...]]]:
    """What nobat sent, but for the call's own session number."""
    return [(e.command.verb, tuple(e.command.args)) for e in heard.transcript.exchanges
            if not (e.command.verb == "SET VARIABLE" and e.command.args[0] == "NOBAT_SESSION")]


async def test_every_caller_is_greeted_the_same_way_patient_or_not(
        rig: IvrRig, database: Database) -> None:
    await book_for(rig, MOBILE, at(SATURDAY, 16))
    keys = (Hear("main-menu"), "3", Hear("anything-else"), "9")
    patient = await rig.call(Caller.dialling(MOBILE, *keys))
    stranger = await rig.call(Caller.dialling("09350000001", *keys))
    assert patient.prompts[:3] == ["fa/welcome", "fa/choose-language", "fa/main-menu"]
    assert patient.prompts == stranger.prompts
    assert commands(patient) == commands(stranger)


async def test_english_by_the_number_dialled(rig: IvrRig) -> None:
    heard = await rig.call(Caller.dialling(MOBILE, Hear("main-menu"), "9"), args=("lang=en",))
    assert heard.prompts == ["en/main-menu", "en/goodbye"]


async def test_a_menu_prompt_missing_on_the_pbx_is_logged_and_the_caller_still_chooses(
        rig: IvrRig, caplog: pytest.LogCaptureFixture) -> None:
    def main_menu_missing(path: str) -> float | None:
        return None if path.endswith("/fa/main-menu") else rig.seconds(path)

    caller = Caller.dialling(MOBILE, Hear("no-input"), "3", Hear("anything-else"), "9")
    with caplog.at_level(logging.ERROR, logger="ivr.agi_session"):
        transcript = await place_call("127.0.0.1", rig.port, caller,
                                      prompt_seconds=main_menu_missing, strict=False)
    assert [h.prompt.rpartition("/fa/")[2] for h in transcript.heard][:5] == [
        "welcome", "choose-language", "main-menu", "no-input", "address-intro"]
    assert transcript.heard[2].outcome == "missing"
    assert "main-menu" in caplog.text and "could not be played" in caplog.text


@pytest.mark.parametrize("caller_id", [None, "12345", "+15551230001"])
async def test_a_withheld_or_bad_caller_id_is_asked_for_a_mobile_number(
        rig: IvrRig, database: Database, caller_id: str | None) -> None:
    heard = await rig.call(Caller.dialling(
        caller_id, Hear("main-menu"), "1", Hear("enter-mobile"), "0912#", Hear("enter-mobile"),
        "09351112233#", *BOOK_SATURDAY_1620[2:]))
    assert contains(heard.prompts, ["fa/enter-mobile", "fa/mobile-invalid", "fa/enter-mobile",
                                    "fa/choose-specialty"])
    assert [row[3] for row in await appointments(database)] == ["+989351112233"]


async def test_a_slot_taken_meanwhile_offers_the_nearest_free_ones(
        rig: IvrRig, database: Database) -> None:
    async def someone_else_books_first(command: Command) -> None:
        if any(file.endswith("/confirm-keys") for file in files_played(command)) \
                and not await appointments(database):
            result = await rig.line.services.booking.book(
                "09350000000", 1, at(SATURDAY, 16, 20), VisitKind.IN_PERSON)
            assert isinstance(result, Booked)

    heard = await rig.call(Caller.dialling(
        MOBILE, *BOOK_SATURDAY_1620[:-4], Hear("confirm-keys"), "1", Hear("nearest-slots"), "2",
        Hear("confirm-keys"), "1", Hear("anything-else"), "9"), before=someone_else_books_first)
    assert contains(heard.prompts, ["fa/slot-taken", "fa/nearest-slots"])
    assert [(row[1], row[3]) for row in await appointments(database)] == [
        (at(SATURDAY, 16, 20), "+989350000000"), (at(SATURDAY, 16, 40), "+989121234567")]
    assert spoken_code(heard.prompts) == (await appointments(database))[1][0]


async def test_a_slot_the_menu_offered_free_but_the_database_refuses_is_just_taken(
        rig: IvrRig, database: Database, database_url: str) -> None:
    """Another instance holds the slot in a transaction not yet committed while this caller
    confirms: every read nobat makes says free, and only the store's write decides (the
    in-transaction check on SQLite, whose writer waits for the lock; the unique index on
    PostgreSQL, whose insert waits for the other transaction)."""
    other = Database.from_url(database_url)
    holding, released = asyncio.Event(), asyncio.Event()

    async def other_instance_books() -> None:
        now = dt.datetime.now(dt.UTC)
        async with other.writing() as session:
            patient = Patient(phone="+989350000000", language="fa", created_at=now)
            session.add(patient)
            await session.flush()
            session.add(Appointment(
                doctor_id=1, patient_id=patient.id, start_at=at(SATURDAY, 16, 20),
                end_at=at(SATURDAY, 16, 40), kind="in_person", status="booked",
                code="424242", created_via="ivr", created_at=now, updated_at=now))
            await session.flush()
            holding.set()
            await asyncio.sleep(0.5)  # this caller's key arrives and nobat checks meanwhile
        released.set()

    async def someone_else_holds_the_slot(command: Command) -> None:
        if any(file.endswith("/confirm-keys") for file in files_played(command)) \
                and not holding.is_set():
            competitor.append(asyncio.create_task(other_instance_books()))
            await holding.wait()

    competitor: list[asyncio.Task[None]] = []
    try:
        heard = await rig.call(Caller.dialling(
            MOBILE, *BOOK_SATURDAY_1620[:-4], Hear("confirm-keys"), "1", Hear("nearest-slots"),
            "2", Hear("confirm-keys"), "1", Hear("anything-else"), "9"),
            before=someone_else_holds_the_slot)
        await asyncio.gather(*competitor)
    finally:
        await other.close()
    assert released.is_set()
    assert contains(heard.prompts, ["fa/slot-taken", "fa/nearest-slots"])
    assert [(row[1], row[3]) for row in await appointments(database)] == [
        (at(SATURDAY, 16, 20), "+989350000000"), (at(SATURDAY, 16, 40), "+989121234567")]


async def book_for(rig: IvrRig, phone: str, start: dt.datetime, kind: VisitKind
                   = VisitKind.IN_PERSON) -> str:
    service: BookingService = rig.line.services.booking
    result = await service.book(phone, 1, start, kind)
    assert isinstance(result, Booked)
    return result.appointment.code


def not_the_code(code: str) -> str:
    """A six-digit code that is not `code`."""
    return "100000" if code != "100000" else "100001"


def says_nothing_of_bookings(heard: list[str]) -> bool:
    """Whether the caller heard no booking: no doctor, no time, no code, no count."""
    return not any(p.split("/", 1)[1] in ("with-doctor", "your-code", "appointments-count",
                                          "no-appointments") or "/doctor/" in p
                   or "/time/" in p for p in heard)


async def test_a_caller_moves_their_booking_with_its_code(
        rig: IvrRig, database: Database) -> None:
    code = await book_for(rig, MOBILE, at(SATURDAY, 16))
    heard = await rig.call(Caller.dialling(
        MOBILE, Hear("main-menu"), "2", Hear("enter-code"), code, Hear("move-it"), "2",
        Hear("choose-day"), "2", Hear("choose-time"), "3", Hear("confirm-keys"), "1",
        Hear("anything-else"), "9"))
    assert contains(heard.prompts, ["fa/main-menu", "fa/enter-code", "fa/with-doctor",
                                    "fa/doctor/dr-ahmadi", "fa/day/saturday"])
    assert contains(heard.prompts, ["fa/rescheduled", "fa/your-code"])
    assert spoken_code(heard.prompts) == code
    assert await appointments(database) == [(code, at(dt.date(2026, 11, 30), 16, 40), "booked",
                                              "+989121234567")]


async def test_a_caller_cancels_their_booking_with_its_code(
        rig: IvrRig, database: Database) -> None:
    await book_for(rig, MOBILE, at(SATURDAY, 17))
    code = await book_for(rig, MOBILE, at(SATURDAY, 16))
    heard = await rig.call(Caller.dialling(
        MOBILE, Hear("main-menu"), "2", Hear("enter-code"), code, Hear("cancel-it"), "1",
        Hear("confirm-keys"), "1", Hear("anything-else"), "9"))
    assert contains(heard.prompts, [
        "fa/enter-code", "fa/with-doctor", "fa/doctor/dr-ahmadi", "fa/day/saturday", "fa/ord/7",
        "fa/month/9", "fa/time/hour", "fa/num/16", "fa/kind/in_person", "fa/menu/for",
        "fa/cancel-it"])
    assert contains(heard.prompts, ["fa/confirm-cancel", "fa/confirm-keys", "fa/cancelled"])
    assert [row[1:3] for row in await appointments(database)] == [
        (at(SATURDAY, 17), "booked"), (at(SATURDAY, 16), "cancelled")]


async def test_a_wrong_code_then_the_right_one(rig: IvrRig, database: Database) -> None:
    code = await book_for(rig, MOBILE, at(SATURDAY, 16))
    heard = await rig.call(Caller.dialling(
        MOBILE, Hear("main-menu"), "2", Hear("enter-code"), not_the_code(code),
        Hear("code-other-mobile"), MOBILE + "#", Hear("code-not-found"), Hear("enter-code"),
        code, Hear("cancel-it"), "1", Hear("confirm-keys"), "1", Hear("anything-else"), "9"))
    assert heard.prompts[2:7] == ["fa/main-menu", "fa/enter-code", "fa/code-other-mobile",
                                  "fa/code-not-found", "fa/enter-code"]
    assert says_nothing_of_bookings(heard.prompts[:7])
    assert "fa/cancelled" in heard.prompts
    assert await appointments(database) == [(code, at(SATURDAY, 16), "cancelled",
                                              "+989121234567")]


def three_wrong_codes(*codes: str) -> tuple[Hear | str, ...]:
    """Change or cancel, then three codes none of `codes` is; the caller id's own number is
    keyed when the first one does not match it."""
    first, second, third = [c for c in (d * 6 for d in "123456789") if c not in codes][:3]
    return ("2", Hear("enter-code"), first, Hear("code-other-mobile"), MOBILE + "#",
            Hear("code-not-found"), Hear("enter-code"), second, Hear("code-not-found"),
            Hear("enter-code"), third)


async def test_three_wrong_codes_end_at_the_office_with_nothing_changed(
        rig: IvrRig, database: Database, caplog: pytest.LogCaptureFixture) -> None:
    code = await book_for(rig, MOBILE, at(SATURDAY, 16))
    with caplog.at_level(logging.WARNING, "ivr.actions.appointments"):
        heard = await rig.call(Caller.dialling(MOBILE, Hear("main-menu"),
                                               *three_wrong_codes(code)))
    [warning] = [r.getMessage() for r in caplog.records if r.name == "ivr.actions.appointments"]
    assert "3 wrong booking codes" in warning and "4567" in warning
    assert "1234567" not in warning
    assert heard.prompts[2:] == [
        "fa/main-menu", "fa/enter-code", "fa/code-other-mobile", "fa/code-not-found",
        "fa/enter-code", "fa/code-not-found", "fa/enter-code", "fa/code-not-found",
        "fa/transferring"]
    assert heard.transcript.variables["NOBAT_TRANSFER"] == "PJSIP/office"
    assert await appointments(database) == [(code, at(SATURDAY, 16), "booked",
                                              "+989121234567")]


async def test_after_three_wrong_codes_no_more_are_taken_on_the_call(
        rig: IvrRig, database: Database, clock: Clock) -> None:
    """With the office closed the caller is back at the menu, but gets no more guesses."""
    code = await book_for(rig, MOBILE, at(dt.date(2026, 11, 30), 16))
    clock.now = at(SATURDAY, 22)
    heard = await rig.call(Caller.dialling(
        MOBILE, Hear("main-menu"), *three_wrong_codes(code), Hear("office-closed"),
        Hear("main-menu"), "2", Hear("code-tries-used"), Hear("main-menu"), "9"))
    assert heard.prompts.count("fa/enter-code") == 3
    assert contains(heard.prompts, ["fa/main-menu", "fa/code-tries-used", "fa/office-closed"])
    assert heard.prompts[-2:] == ["fa/main-menu", "fa/goodbye"]
    assert await appointments(database) == [(code, at(dt.date(2026, 11, 30), 16), "booked",
                                              "+989121234567")]


async def test_a_forged_caller_id_changes_nothing_and_hears_nothing_of_the_bookings(
        rig: IvrRig, database: Database) -> None:
    """Someone calls with a patient's number: they hear exactly what a stranger hears."""
    first = await book_for(rig, MOBILE, at(SATURDAY, 16))
    second = await book_for(rig, MOBILE, at(dt.date(2026, 12, 2), 10), VisitKind.PHONE)
    before = await appointments(database)
    keys = three_wrong_codes(first, second)
    forged = await rig.call(Caller.dialling(MOBILE, Hear("main-menu"), *keys))
    stranger = await rig.call(Caller.dialling("09350000001", Hear("main-menu"), *keys))
    assert forged.prompts == stranger.prompts
    assert says_nothing_of_bookings(forged.prompts)
    assert not any(p.startswith("fa/num/") for p in forged.prompts)
    assert forged.prompts[-1] == "fa/transferring"
    assert await appointments(database) == before


async def test_another_phone_cancels_with_mobile_number_and_booking_code(
        rig: IvrRig, database: Database) -> None:
    code = await book_for(rig, MOBILE, at(SATURDAY, 16))
    heard = await rig.call(Caller.dialling(
        "02144556677", Hear("main-menu"), "2", Hear("enter-code"), code,
        Hear("code-other-mobile"), MOBILE + "#", Hear("cancel-it"), "1", Hear("confirm-keys"),
        "1", Hear("anything-else"), "9"))
    assert contains(heard.prompts, ["fa/main-menu", "fa/enter-code", "fa/code-other-mobile",
                                    "fa/with-doctor"])
    assert (await appointments(database))[0][2] == "cancelled"


async def test_a_withheld_number_keys_the_mobile_then_the_code(
        rig: IvrRig, database: Database) -> None:
    code = await book_for(rig, MOBILE, at(SATURDAY, 16))
    heard = await rig.call(Caller.dialling(
        None, Hear("main-menu"), "2", Hear("enter-mobile"), MOBILE + "#", Hear("enter-code"),
        not_the_code(code), Hear("code-not-found"), Hear("enter-code"), code,
        Hear("move-it"), "1", Hear("confirm-keys"), "2", Hear("anything-else"), "9"))
    assert heard.prompts[2:8] == ["fa/main-menu", "fa/enter-mobile", "fa/enter-code",
                                  "fa/code-not-found", "fa/enter-code", "fa/with-doctor"]
    assert contains(heard.prompts, ["fa/confirm-cancel", "fa/confirm-keys", "fa/not-changed"])
    assert (await appointments(database))[0][2] == "booked"


async def test_a_cancellation_past_the_cutoff_is_refused_with_the_reason(
        rig: IvrRig, database: Database, clock: Clock) -> None:
    code = await book_for(rig, MOBILE, at(SATURDAY, 16))
    clock.now = at(SATURDAY, 15)
    heard = await rig.call(Caller.dialling(
        MOBILE, Hear("main-menu"), "2", Hear("enter-code"), code, Hear("cancel-it"), "1",
        Hear("confirm-keys"), "1", Hear("anything-else"), "9"))
    assert contains(heard.prompts, ["fa/past-cutoff", "fa/anything-else"])
    assert await appointments(database) == [(code, at(SATURDAY, 16), "booked", "+989121234567")]


def flows_listing(folder: Path, listing: str) -> Path:
    """The shipped flows with `listing` chosen for "change or cancel"."""
    folder.mkdir()
    for source in (ROOT / "flows").glob("*.toml"):
        (folder / source.name).write_text(source.read_text(encoding="utf-8").replace(
            'params = { listing = "off" }', f'params = {{ listing = "{listing}" }}'),
            encoding="utf-8")
    return folder


async def test_listing_off_says_nothing_before_the_code(rig: IvrRig) -> None:
    await book_for(rig, MOBILE, at(SATURDAY, 16))
    heard = await rig.call(Caller.dialling(MOBILE, Hear("main-menu"), "2", Hear("enter-code"),
                                           Wait(1), HangUp()))
    assert heard.prompts == ["fa/welcome", "fa/choose-language", "fa/main-menu",
                             "fa/enter-code"]


async def test_listing_count_says_how_many_for_the_caller_ids_number_only(
        database: Database, clock: Clock, tmp_path: Path) -> None:
    async with ivr_rig(database, clock, flows=flows_listing(tmp_path / "flows", "count")) as rig:
        await book_for(rig, MOBILE, at(SATURDAY, 16))
        await book_for(rig, MOBILE, at(dt.date(2026, 11, 30), 16))
        to_the_code = (Hear("main-menu"), "2", Hear("enter-code"), Wait(1), HangUp())
        patient = await rig.call(Caller.dialling(MOBILE, *to_the_code))
        stranger = await rig.call(Caller.dialling("09350000001", *to_the_code))
        keyed = await rig.call(Caller.dialling(None, Hear("main-menu"), "2", Hear("enter-mobile"),
                                               MOBILE + "#", *to_the_code[2:]))
    assert patient.prompts[2:] == ["fa/main-menu", "fa/appointments-count", "fa/num/2",
                                   "fa/enter-code"]
    assert stranger.prompts[2:] == ["fa/main-menu", "fa/no-appointments", "fa/enter-code"]
    assert keyed.prompts[2:] == ["fa/main-menu", "fa/enter-mobile", "fa/enter-code"]


async def test_the_doctors_hours_are_said_from_the_store(rig: IvrRig) -> None:
    heard = await rig.call(Caller.dialling(MOBILE, Hear("main-menu"), "4",
                                           Hear("choose-specialty"), "1", Hear("anything-else"),
                                           "9"))
    assert contains(heard.prompts, [
        "fa/hours-of", "fa/doctor/dr-ahmadi",
        "fa/day/saturday", "fa/and", "fa/day/monday", "fa/hours/from", "fa/num/16",
        "fa/hours/to", "fa/num/20",
        "fa/day/wednesday", "fa/hours/from", "fa/num/10", "fa/hours/to", "fa/num/12"])


async def test_the_office_takes_the_call_in_its_hours(rig: IvrRig) -> None:
    heard = await rig.call(Caller.dialling(MOBILE, Hear("main-menu"), "0"))
    assert heard.prompts[-1] == "fa/transferring"
    variables = heard.transcript.variables
    assert variables["NOBAT_TRANSFER"] == "PJSIP/office"
    assert variables["NOBAT_SESSION"].isdigit() and "NOBAT_RESULT" not in variables
    assert heard.transcript.nobat_closed


async def test_outside_office_hours_the_caller_hears_them_and_returns_to_the_menu(
        rig: IvrRig, clock: Clock) -> None:
    clock.now = at(SATURDAY, 22)
    heard = await rig.call(Caller.dialling(MOBILE, Hear("main-menu"), "0", Hear("main-menu"),
                                           "9"))
    assert contains(heard.prompts, ["fa/office-closed", "fa/day/saturday", "fa/and",
                                    "fa/day/sunday"])
    assert heard.prompts[-2:] == ["fa/main-menu", "fa/goodbye"]
    assert "NOBAT_TRANSFER" not in heard.transcript.variables


async def test_wrong_keys_and_silence_reprompt_shorter_then_reach_the_office(
        rig: IvrRig) -> None:
    heard = await rig.call(Caller.dialling(MOBILE, Hear("main-menu"), "7",
                                           Hear("main-menu-short"), Wait(30)))
    assert heard.prompts == ["fa/welcome", "fa/choose-language", "fa/main-menu", "fa/invalid",
                             "fa/main-menu-short", "fa/no-input", "fa/main-menu-short",
                             "fa/transferring"]


async def test_star_goes_back_one_step(rig: IvrRig) -> None:
    heard = await rig.call(Caller.dialling(MOBILE, Hear("main-menu"), "1",
                                           Hear("choose-specialty"), "*", Hear("main-menu"), "9"))
    assert heard.prompts[-4:] == ["fa/main-menu", "fa/choose-specialty", "fa/main-menu",
                                  "fa/goodbye"]


async def test_every_call_is_logged_with_how_it_ended(rig: IvrRig, database: Database) -> None:
    await rig.call(Caller.dialling(MOBILE, Hear("main-menu"), "9"))
    await rig.call(Caller.dialling(None, Hear("main-menu"), HangUp()))
    await rig.call(Caller.dialling(MOBILE, Hear("main-menu"), "0"))
    async with database.reading() as session:
        rows = (await session.execute(select(InboundCall.caller, InboundCall.outcome)
                                      .order_by(InboundCall.id))).all()
    assert [tuple(r) for r in rows] == [("+989121234567", "completed"), (None, "hung_up"),
                                        ("+989121234567", "office")]


async def test_a_silent_caller_outside_office_hours_is_not_cycled_forever(
        rig: IvrRig, clock: Clock, database: Database) -> None:
    clock.now = at(SATURDAY, 22)
    heard = await rig.call(Caller.dialling(MOBILE, Wait(600)))
    assert heard.prompts.count("fa/office-closed") == 1
    assert heard.prompts[-1] == "fa/goodbye"
    assert heard.transcript.hung_up_by == "nobat"
    async with database.reading() as session:
        assert (await session.scalars(select(InboundCall.outcome))).all() == ["no_input"]


async def test_the_ivr_answers_a_call_the_dialplan_left_ringing(rig: IvrRig) -> None:
    heard = await rig.call(Caller.dialling(MOBILE, Hear("main-menu"), "3",
                                           Hear("anything-else"), "9"))
    verbs = [exchange.command.verb for exchange in heard.transcript.exchanges]
    assert verbs[:2] == ["CHANNEL STATUS", "ANSWER"]
    assert heard.transcript.answered_at == 0.0
    assert heard.transcript.unheard == []
    assert heard.prompts[:5] == ["fa/welcome", "fa/choose-language", "fa/main-menu",
                                 "fa/address-intro", "fa/clinic/address"]


async def test_a_call_the_dialplan_answered_is_not_answered_again(rig: IvrRig) -> None:
    heard = await rig.call(Caller.dialling(MOBILE, Hear("main-menu"), "3",
                                           Hear("anything-else"), "9"), answered=True)
    verbs = [exchange.command.verb for exchange in heard.transcript.exchanges]
    assert verbs[0] == "CHANNEL STATUS"
    assert "ANSWER" not in verbs
    assert "fa/clinic/address" in heard.prompts


async def test_a_caller_who_hangs_up_while_it_rings_leaves_a_hung_up_record(
        rig: IvrRig, database: Database) -> None:
    heard = await rig.call(Caller.dialling(MOBILE, gives_up_after=0.0))
    assert heard.prompts == []
    async with database.reading() as session:
        assert (await session.scalars(select(InboundCall.outcome))).all() == ["hung_up"]


async def test_times_past_a_page_are_offered_after_9(rig: IvrRig, database: Database) -> None:
    """Saturday 16:00-20:00 in 20-minute slots is twelve times: five, then five more."""
    heard = await rig.call(Caller.dialling(
        MOBILE, Hear("welcome"), "1", Hear("main-menu"), "1", Hear("choose-specialty"), "1",
        Hear("choose-day"), "1", Hear("choose-time"), Hear("more-times"), Hear("press-9"), "9",
        Hear("choose-time"), "1", Hear("confirm-keys"), "1", Hear("anything-else"), "9"))
    assert contains(heard.prompts, ["fa/more-times", "fa/menu/press-9", "fa/choose-time"])
    assert [start for _, start, _, _ in await appointments(database)] == [at(SATURDAY, 17, 40)]
