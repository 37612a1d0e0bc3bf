"""Platform mode over the SIP trunk: two practices on one line (tests/sippbx/practices/), each
reached by its own DID as the carrier sends it (the INVITE's request-URI user), book with
their own doctor in their own words; a caller on the trunk's own number, which no practice
lists, keys a doctor's card code and books in that practice; and a phone consultation of
each practice shows both its phones only that practice's number and name.

It all happens at once on one Asterisk and one nobat, as on a platform's busy minute: the
two consultations come due as nobat starts, and the three callers dial in meanwhile."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import select

from clinic.call_kinds import Leg
from clinic.phones import national
from db.models import Appointment, Clinic, Doctor, InboundCall, Patient
from tests.sippbx.pbx import DID, Call, ClinicLine, build_prompts, clinic_line, in_order
from tests.sippbx.sipp import HERE
from tests.sippbx.test_sip_consultations import (
    EDITS,
    PhoneLeg,
    Result,
    assert_shows_only_the_clinic,
    from_asterisk,
    identity_report,
    result_of,
    settled,
    wait_all_ended,
)
from tests.support.consultations import attempts, consultation

pytestmark = pytest.mark.asyncio(loop_scope="module")

PRACTICES = HERE / "practices"
PLATFORM_NUMBER = "+982188776655"
PLATFORM_NAME = "Nobat Platform"
"""The trunk's account (pjsip.conf's contact_user and from_user: pbx.DID), which no practice
lists: the platform's own number, whose callers get the shared menu, and the identity the
dialplan's [globals] give, which each call nobat makes must override with its practice's."""
TALK = dt.timedelta(seconds=40)
"""From due to the booked end: time to answer, be announced and be bridged for a while."""
NO_WARNING = ("warn_minutes = 1", "warn_minutes = 0")
"""A 40 s consultation has no minute to be warned in (the SIP consultations test hears it)."""


@dataclass(frozen=True)
class Practice:
    """One practice of the platform, as its clinic file says, and the phones of the test."""

    key: str
    number: str
    """Its phone and its only DID (E.164)."""
    dialled: str
    """The DID as this practice's carrier puts it in the request URI."""
    name: str
    persian_name: str
    doctor: str
    doctor_phone: str
    patient: str
    """The patient of its consultation."""
    caller: str
    """The patient who dials its DID and books."""


TEHRAN = Practice("tehran-eye", "+982144001100", "02144001100", "Tehran Eye Practice",
                  "مطب چشم تهران", "dr-rahimi", "+989123001001", "+989353330001",
                  "09353330011")
KARAJ = Practice("karaj-heart", "+982633002200", "+982633002200", "Karaj Heart Practice",
                 "مطب قلب کرج", "dr-nouri", "+989123002001", "+989353330002",
                 "09353330012")
"""Its carrier sends the DID in E.164, as some do."""
BOTH = (TEHRAN, KARAJ)
SHARED_CALLER = "09353330013"
BOOK = [("fa/main-menu", "1"), ("fa/choose-day", "2"), ("fa/choose-time", "1"),
        ("fa/choose-kind", "1"), ("fa/confirm-keys", "1"), ("fa/anything-else", "9")]
"""A practice's main menu on: book (its only specialty and doctor are not asked), the second
day offered (the first may be today, late at night down to its last time), the first time,
in person, confirm, goodbye."""


def own_line(practice: Practice) -> list[tuple[str, str]]:
    """A caller of the practice's DID: Persian at its own welcome, then books."""
    return [(f"fa/clinic/{practice.key}/welcome", "1"), *BOOK]


SHARED = [("fa/platform-welcome", "1"), ("fa/shared-menu", "1"), ("fa/enter-doctor-code", "201#"),
          ("fa/confirm-keys", "1"), *((p, "2" if p == "fa/choose-time" else k) for p, k in BOOK)]
"""A caller of the platform's number: Persian, by a doctor's code, Dr. Nouri's, yes, then
books his second time (Karaj's own caller takes the first at the same moment)."""


@dataclass
class Platform:
    """What the platform's busy minute left: the calls, the store, the phones."""

    heard: dict[str, list[str]]
    """What each caller heard, by their number."""
    booked: dict[str, tuple[str, str]]
    """Each caller's booking as the store holds it: (practice, doctor), by their number."""
    dialled: dict[str, str]
    """The number each caller's call logged as dialled, by their number."""
    consultations: dict[str, Result]
    """Each practice's consultation, by its key."""


async def called_in(line: ClinicLine, caller: str, steps: list[tuple[str, str]],
                    did: str) -> Call:
    """A caller dials `did`, keys in their steps and is ended by the practice's goodbye."""
    call = await line.call(caller, steps, did=did)
    await call.answered()
    await call.follow()
    await call.ended_by_clinic()
    return call


async def consulted(line: ClinicLine, practice: Practice, ident: int,
                    within: float = TALK.total_seconds() + 40) -> Result:
    """The practice's consultation, once run to its end."""
    deadline = time.monotonic() + within
    while not settled(row := await consultation(line.store, ident),
                      tries := await attempts(line.store, ident)):
        assert time.monotonic() < deadline, f"not settled: {row}\n{line.logs()}"
        await asyncio.sleep(0.5)
    await wait_all_ended(line, [practice.doctor_phone, practice.patient])
    return await result_of(line, row.appointment_id, row, tries, practice.doctor_phone,
                           practice.patient)


async def bookings(line: ClinicLine) -> dict[str, tuple[str, str]]:
    """Each patient's bookings made on the phone line: (practice, doctor), by national
    number."""
    async with line.store.reading() as session:
        rows = await session.execute(
            select(Patient.phone, Clinic.key, Doctor.key)
            .join(Appointment, Appointment.patient_id == Patient.id)
            .join(Doctor, Appointment.doctor_id == Doctor.id)
            .join(Clinic, Doctor.clinic_id == Clinic.id)
            .where(Appointment.created_via == "ivr"))
        return {national(phone): (clinic, doctor) for phone, clinic, doctor in rows}


async def busy_minute(folder: Path, prompts: Path) -> Platform:
    """Both consultations due as nobat starts; both practices' callers and the shared number's
    dial in meanwhile; everything run to its end."""
    async with clinic_line(folder, prompts, edits=[*EDITS, NO_WARNING], start_nobat=False,
                           practices=PRACTICES, shown=(PLATFORM_NUMBER, PLATFORM_NAME)) as line:
        due = {p.key: (await line.book_due_now(p.doctor, p.patient, TALK, p.key))[0]
               for p in BOTH}
        await line.start_nobat()
        calls = await asyncio.gather(
            *(called_in(line, p.caller, own_line(p), p.dialled) for p in BOTH),
            called_in(line, SHARED_CALLER, SHARED, DID))
        done = {p.key: await consulted(line, p, due[p.key]) for p in BOTH}
        async with line.store.reading() as session:
            logged = (await session.scalars(select(InboundCall))).all()
        return Platform(
            heard={caller: call.heard() for caller, call in
                   zip((TEHRAN.caller, KARAJ.caller, SHARED_CALLER), calls, strict=True)},
            booked=await bookings(line),
            dialled={national(c.caller): c.dialled or "" for c in logged if c.caller},
            consultations=done)


@pytest.fixture(scope="module")
def platform_prompts(tmp_path_factory: pytest.TempPathFactory, prompts: Path) -> Path:
    """The tier's prompts and the practices' own words (only those are spoken)."""
    return build_prompts(tmp_path_factory.mktemp("platform-prompts"), PRACTICES,
                         built_from=prompts)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def platform(tmp_path_factory: pytest.TempPathFactory, platform_prompts: Path
                   ) -> Platform:
    """The busy minute, once for the module (it takes a minute and more of real time)."""
    found = await busy_minute(tmp_path_factory.mktemp("platform"), platform_prompts)
    print(identity_report(found.consultations))
    return found


@pytest.mark.parametrize("practice", BOTH, ids=lambda p: p.key)
async def test_each_practices_did_books_with_its_own_doctor_in_its_own_words(
        platform: Platform, practice: Practice) -> None:
    [other] = [p for p in BOTH if p is not practice]
    heard = platform.heard[practice.caller]
    # The DID reached nobat as the carrier sent it, and routed the call to its practice.
    assert platform.dialled[practice.caller] == practice.dialled
    assert platform.booked[practice.caller] == (practice.key, practice.doctor)
    assert in_order(heard, [f"fa/clinic/{practice.key}/welcome", "fa/main-menu",
                            "fa/choose-day", "fa/choose-time", "fa/choose-kind",
                            "fa/with-doctor", f"fa/doctor/{practice.key}/{practice.doctor}",
                            "fa/confirm-keys", "fa/your-code", "fa/anything-else",
                            "fa/goodbye"]), heard
    assert not any(f"/{other.key}/" in prompt for prompt in heard), heard


async def test_the_platforms_number_books_with_the_practice_of_the_doctors_code(
        platform: Platform) -> None:
    heard = platform.heard[SHARED_CALLER]
    assert platform.dialled[SHARED_CALLER] == DID
    assert platform.booked[SHARED_CALLER] == (KARAJ.key, KARAJ.doctor)
    # Nothing of any practice before the code; then Karaj's doctor and name, and its line.
    chosen = heard.index("fa/doctor-chosen")
    assert not any("/clinic/" in p or "/doctor/" in p for p in heard[:chosen]), heard
    assert in_order(heard, ["fa/platform-welcome", "fa/shared-menu", "fa/enter-doctor-code",
                            "fa/doctor-chosen",
                            f"fa/doctor/{KARAJ.key}/{KARAJ.doctor}", "fa/at-practice",
                            f"fa/clinic/{KARAJ.key}/name", "fa/confirm-keys", "fa/main-menu",
                            f"fa/doctor/{KARAJ.key}/{KARAJ.doctor}", "fa/goodbye"]), heard
    assert not any(f"/{TEHRAN.key}/" in prompt for prompt in heard), heard


@pytest.mark.parametrize("practice", BOTH, ids=lambda p: p.key)
async def test_each_practices_consultation_shows_both_phones_only_that_practice(
        platform: Platform, practice: Practice) -> None:
    [other] = [p for p in BOTH if p is not practice]
    result = platform.consultations[practice.key]
    heard = {leg: result.legs[leg].heard for leg in Leg}
    assert (result.consultation.state, result.appointment.status) == ("completed", "completed")
    assert result.attempts[0].bridged_at is not None
    # Each party heard the practice's own words: its doctor's name, its name.
    assert in_order(heard[Leg.PATIENT], [
        "fa/consult/patient-intro", f"fa/doctor/{practice.key}/{practice.doctor}",
        "fa/consult/is-starting", "fa/consult/time-up"]), heard[Leg.PATIENT]
    assert in_order(heard[Leg.DOCTOR], [f"fa/clinic/{practice.key}/consult/doctor-intro",
                                        "fa/consult/time-up"]), heard[Leg.DOCTOR]
    # Every SIP message either phone got shows the practice's number (From's user is the
    # trunk's account, which from_user puts there) and name; never the other practice's.
    everyone = [n for p in BOTH for n in (p.doctor_phone, p.patient)]
    for leg in Leg:
        phone = result.legs[leg]
        assert_shows_only_the_clinic(
            phone, [n for n in [*everyone, other.number] if n != phone.number],
            users=(practice.number, DID), name=practice.name)
        assert_never_named(phone, other)
        assert_asserts(phone, practice)
        # Bridged, each leg's connected line was masked with the practice's number (not the
        # dialplan's platform-wide one), and no update went out (no re-INVITE, no UPDATE).
        assert phone.connected and set(phone.connected) == {practice.number}, phone.connected
        assert [m.method for m in from_asterisk(phone)] == ["INVITE", "ACK", "BYE"], phone


def assert_never_named(phone: PhoneLeg, other: Practice) -> None:
    """No message Asterisk sent the phone names the other practice, nor the platform."""
    for message in from_asterisk(phone):
        for name in (other.name, other.persian_name, PLATFORM_NAME):
            assert name not in str(message), (name, message)


def assert_asserts(phone: PhoneLeg, practice: Practice) -> None:
    """The phone's INVITE asserts the practice's own number and name (P-Asserted-Identity),
    not the trunk's account nor the dialplan's platform-wide identity."""
    invite = next(m for m in from_asterisk(phone) if m.method == "INVITE")
    asserted = invite.header("P-Asserted-Identity") or ""
    assert f'"{practice.name}" <sip:{practice.number}@' in asserted, invite
