"""Several practices on one line: each practice's number runs its own line with its own words,
doctors and office, and the shared number asks for the doctor's card code first."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute

from clinic.clinic_file import read_clinic
from clinic.staff_toml import StaffFileError
from db.clinic_sync import load_clinic
from db.engine import Database
from db.models import Appointment, Clinic, Doctor, InboundCall, WeeklyHours
from db.unreadable import Unreadable
from nobat.cli import main
from nobat.ivr_wiring import build_line
from tests.fakepbx.ami_server import FakeAsterisk, nobat_user
from tests.fakepbx.script import Caller, HangUp, Hear
from tests.security.wire import log_in, post_form
from tests.support.clinic_day import AMI_SECRET, TOKEN
from tests.support.clinics import Clock, second_practice
from tests.support.ivr import ROOT, IvrRig, ivr_rig
from tests.support.server import ServerProcess, demo_copy, demo_store, dial_fake_pbx, edit_config
from tests.test_dialer_health_page import until_healthz
from tests.test_ivr_calls import BOOK_SATURDAY_1620, MOBILE, SATURDAY, at, contains
from tests.test_status_page import get
from tests.test_status_page_practices import make_token

TEHRAN_DID = "02188776655"
SHIRAZ_DID = "07132224455"
SHARED_DID = "02199990000"


@pytest.fixture
def clock() -> Clock:
    return Clock(at(SATURDAY, 9))


SHIRAZ_OFFICE = ('office = "PJSIP/office-shiraz"\n'
                 'office_hours = { saturday = "09:00-12:00", sunday = "09:00-12:00" }\n')
"""The Shiraz practice's own office, open far less than config.toml's (08:00-20:00)."""


def shiraz_file(folder: Path, office: str = "") -> Path:
    """The second practice's clinic file, with `office` lines in its [clinic] table."""
    shiraz = folder / "shiraz.toml"
    text = second_practice("shiraz-eye", "071 3222 4455")
    shiraz.write_text(text.replace("[clinic]\n", f"[clinic]\n{office}", 1), encoding="utf-8")
    return shiraz


@pytest.fixture
async def rig(database: Database, clock: Clock, tmp_path: Path) -> AsyncIterator[IvrRig]:
    async with ivr_rig(database, clock, practices=[shiraz_file(tmp_path)]) as started:
        yield started


@pytest.fixture
async def own_office(database: Database, clock: Clock, tmp_path: Path
                     ) -> AsyncIterator[IvrRig]:
    """Shiraz with its own office and hours; the demo practice keeps config.toml's."""
    async with ivr_rig(database, clock,
                       practices=[shiraz_file(tmp_path, SHIRAZ_OFFICE)]) as started:
        yield started


async def booked_at(database: Database) -> list[tuple[str, str, dt.datetime]]:
    """Each booking's practice and doctor, as the store holds them."""
    async with database.reading() as session:
        rows = await session.execute(
            select(Clinic.key, Doctor.key, Appointment.start_at).join(
                Doctor, Appointment.doctor_id == Doctor.id).join(
                Clinic, Doctor.clinic_id == Clinic.id).order_by(Appointment.id))
        return [tuple(r) for r in rows]


async def test_each_practices_number_books_with_its_own_doctor_and_words(
        rig: IvrRig, database: Database) -> None:
    tehran = await rig.call(Caller.dialling(MOBILE, Hear("welcome"), "1", *BOOK_SATURDAY_1620,
                                            dialled=TEHRAN_DID))
    shiraz = await rig.call(Caller.dialling(MOBILE, Hear("welcome"), "1", *BOOK_SATURDAY_1620,
                                            dialled=SHIRAZ_DID))
    assert tehran.prompts[0] == "fa/clinic/nobat-demo/welcome"
    assert shiraz.prompts[0] == "fa/clinic/shiraz-eye/welcome"
    assert rig.prompts.text("fa", "clinic/shiraz-eye/welcome") == "به مطب چشم شیراز خوش آمدید."
    assert contains(tehran.prompts, ["fa/with-doctor", "fa/doctor/nobat-demo/dr-ahmadi"])
    assert contains(shiraz.prompts, ["fa/with-doctor", "fa/doctor/shiraz-eye/dr-ahmadi"])
    assert not any("shiraz-eye" in p for p in tehran.prompts)
    assert not any("nobat-demo" in p for p in shiraz.prompts)
    assert await booked_at(database) == [("nobat-demo", "dr-ahmadi", at(SATURDAY, 16, 20)),
                                         ("shiraz-eye", "dr-ahmadi", at(SATURDAY, 16, 20))]


async def test_the_shared_number_takes_a_doctors_code_and_goes_on_in_that_practice(
        rig: IvrRig, database: Database) -> None:
    heard = await rig.call(Caller.dialling(
        MOBILE, Hear("platform-welcome"), "1", Hear("shared-menu"), "1",
        Hear("enter-doctor-code"), "201#",
        Hear("confirm-keys"), "1", *BOOK_SATURDAY_1620, dialled=SHARED_DID))
    assert heard.prompts[0] == "fa/platform-welcome"
    assert contains(heard.prompts, ["fa/enter-doctor-code", "fa/doctor-chosen",
                                    "fa/doctor/shiraz-eye/dr-ahmadi", "fa/at-practice",
                                    "fa/clinic/shiraz-eye/name", "fa/confirm-keys",
                                    "fa/main-menu"])
    assert not any(prompt.endswith("/welcome") for prompt in heard.prompts)
    assert await booked_at(database) == [("shiraz-eye", "dr-ahmadi", at(SATURDAY, 16, 20))]


async def test_an_unknown_code_is_said_to_be_unknown_and_names_no_practice(
        rig: IvrRig, database: Database) -> None:
    heard = await rig.call(Caller.dialling(
        MOBILE, Hear("platform-welcome"), "2", Hear("shared-menu"), "1",
        Hear("enter-doctor-code"), "999#", Hear("enter-doctor-code"), "102#",
        Hear("confirm-keys"), "2", Hear("enter-doctor-code"), "*", Hear("shared-menu"), "1",
        Hear("goodbye"), dialled=SHARED_DID))
    assert contains(heard.prompts, ["en/enter-doctor-code", "en/doctor-code-unknown",
                                    "en/enter-doctor-code"])
    assert contains(heard.prompts, ["en/doctor-chosen", "en/doctor/nobat-demo/dr-karimi",
                                    "en/at-practice", "en/clinic/nobat-demo/name"])
    assert heard.prompts[-7:] == ["en/enter-doctor-code", "en/no-input"] * 3 + ["en/goodbye"]
    assert await booked_at(database) == []


async def test_a_number_no_practice_lists_never_reaches_a_practice(rig: IvrRig) -> None:
    for dialled in (SHARED_DID, None, "100"):
        heard = await rig.call(Caller.dialling(MOBILE, Hear("platform-welcome"), "9",
                                               dialled=dialled))
        assert heard.prompts[0] == "fa/platform-welcome", dialled
        assert "fa/main-menu" not in heard.prompts


async def test_a_caller_pressing_0_reaches_the_office_of_the_practice_they_called(
        own_office: IvrRig, clock: Clock) -> None:
    clock.now = at(SATURDAY, 10)
    tehran = await own_office.call(Caller.dialling(MOBILE, Hear("main-menu"), "0",
                                                   dialled=TEHRAN_DID))
    shiraz = await own_office.call(Caller.dialling(MOBILE, Hear("main-menu"), "0",
                                                   dialled=SHIRAZ_DID))
    by_code = await own_office.call(Caller.dialling(
        MOBILE, Hear("platform-welcome"), "1", Hear("shared-menu"), "1",
        Hear("enter-doctor-code"), "201#",
        Hear("confirm-keys"), "1", Hear("main-menu"), "0", dialled=SHARED_DID))
    for heard, office in ((tehran, "PJSIP/office"), (shiraz, "PJSIP/office-shiraz"),
                          (by_code, "PJSIP/office-shiraz")):
        assert heard.prompts[-1] == "fa/transferring"
        assert heard.transcript.variables["NOBAT_TRANSFER"] == office


async def test_outside_its_own_hours_a_practices_office_is_closed_though_configs_is_open(
        own_office: IvrRig, clock: Clock) -> None:
    clock.now = at(SATURDAY, 13)
    shiraz = await own_office.call(Caller.dialling(
        MOBILE, Hear("main-menu"), "0", Hear("main-menu"), "9", dialled=SHIRAZ_DID))
    assert contains(shiraz.prompts, [
        "fa/office-closed", "fa/day/saturday", "fa/and", "fa/day/sunday", "fa/hours/from",
        "fa/num/9", "fa/hours/to", "fa/num/12", "fa/main-menu"])
    assert "NOBAT_TRANSFER" not in shiraz.transcript.variables
    tehran = await own_office.call(Caller.dialling(MOBILE, Hear("main-menu"), "0",
                                                   dialled=TEHRAN_DID))
    assert tehran.transcript.variables["NOBAT_TRANSFER"] == "PJSIP/office"


def flows_with_shiraz_own_main(folder: Path) -> Path:
    """The shipped flows, and Shiraz's own main.toml whose main menu is the short one."""
    flows = folder / "flows"
    shutil.copytree(ROOT / "flows", flows)
    (flows / "shiraz-eye").mkdir()
    main = (ROOT / "flows" / "main.toml").read_text(encoding="utf-8")
    assert 'prompt = ["main-menu"]\n' in main
    (flows / "shiraz-eye" / "main.toml").write_text(
        main.replace('prompt = ["main-menu"]\n', 'prompt = ["main-menu-short"]\n'))
    return flows


async def test_a_practice_with_flows_of_its_own_runs_them_and_another_the_folders(
        database: Database, clock: Clock, tmp_path: Path) -> None:
    shiraz = tmp_path / "shiraz.toml"
    shiraz.write_text(second_practice("shiraz-eye", "071 3222 4455"), encoding="utf-8")
    book = ("1", Hear("choose-specialty"), "1", Hear("choose-day"), "1", Hear("choose-time"),
            "2", Hear("confirm-keys"), "1", Hear("anything-else"), "9")
    async with ivr_rig(database, clock, flows=flows_with_shiraz_own_main(tmp_path),
                       practices=[shiraz]) as rig:
        tehran = await rig.call(Caller.dialling(MOBILE, Hear("welcome"), "1",
                                                Hear("main-menu"), *book, dialled=TEHRAN_DID))
        own = await rig.call(Caller.dialling(MOBILE, Hear("welcome"), "1",
                                             Hear("main-menu-short"), *book,
                                             dialled=SHIRAZ_DID))
        chosen = await rig.call(Caller.dialling(
            MOBILE, Hear("platform-welcome"), "1", Hear("shared-menu"), "1",
            Hear("enter-doctor-code"), "202#",
            Hear("confirm-keys"), "1", Hear("main-menu-short"), "9", dialled=SHARED_DID))
    assert "fa/main-menu" in tehran.prompts and "fa/main-menu-short" not in tehran.prompts
    assert "fa/main-menu-short" in own.prompts and "fa/main-menu" not in own.prompts
    assert contains(chosen.prompts, ["fa/confirm-keys", "fa/main-menu-short"])
    assert [(practice, doctor) for practice, doctor, _ in await booked_at(database)] == [
        ("nobat-demo", "dr-ahmadi"), ("shiraz-eye", "dr-ahmadi")]


def test_flows_check_names_the_line_of_a_practices_own_broken_flow(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/c.db"\n'
                      f'[ivr]\nprompts = "{ROOT / "prompts"}"\n')
    clinics = tmp_path / "clinics"
    clinics.mkdir()
    shutil.copy(ROOT / "clinic.toml", clinics / "a.toml")
    (clinics / "b.toml").write_text(second_practice("shiraz-eye", "071 3222 4455"),
                                    encoding="utf-8")
    assert main(["-c", str(config), "clinic", "load", str(clinics)]) == 0
    flows = flows_with_shiraz_own_main(tmp_path)
    assert main(["-c", str(config), "flows", "check", str(flows)]) == 0
    assert f"{flows / 'shiraz-eye' / 'main.toml'}: ok" in capsys.readouterr().out
    own = flows / "shiraz-eye" / "main.toml"
    own.write_text(own.read_text().replace('prompt = ["main-menu-short"]',
                                           'prompt = ["main-menu-shrt"]'))
    assert main(["-c", str(config), "flows", "check", str(flows)]) == 2
    assert (f"{own}:50: nodes.main-menu.prompt: prompt 'main-menu-shrt' has no fa text"
            in capsys.readouterr().err)
    (flows / "shiraz-eye").rename(flows / "shiraz")  # its key misspelt: it would never run
    assert main(["-c", str(config), "flows", "check", str(flows)]) == 2
    assert (f"{flows / 'shiraz'}: names no practice in the store, so its flows would never "
            "run; did you mean 'shiraz-eye'? (a practice's own flows go in flows/<its key>/, "
            "docs/platform.md)") in capsys.readouterr().err


async def test_the_shared_number_offers_a_specialty_and_its_doctors_across_practices(
        rig: IvrRig, database: Database) -> None:
    """Ophthalmology is dr-ahmadi at both practices: each is named with their practice."""
    heard = await rig.call(Caller.dialling(
        MOBILE, Hear("platform-welcome"), "2", Hear("shared-menu"), "2",
        Hear("choose-specialty"), "1", Hear("choose-doctor"), Hear("press-2"), "2",
        *BOOK_SATURDAY_1620,
        dialled=SHARED_DID))
    assert contains(heard.prompts, [
        "en/choose-doctor", "en/menu/for", "en/doctor/nobat-demo/dr-ahmadi", "en/at-practice",
        "en/clinic/nobat-demo/name", "en/menu/press-1", "en/menu/for",
        "en/doctor/shiraz-eye/dr-ahmadi", "en/at-practice", "en/clinic/shiraz-eye/name",
        "en/menu/press-2"])
    assert await booked_at(database) == [("shiraz-eye", "dr-ahmadi", at(SATURDAY, 16, 20))]


async def test_specialties_past_a_page_are_offered_after_9(
        database: Database, clock: Clock, tmp_path: Path) -> None:
    """Shiraz's doctors have five specialties the demo has none of: ten in all, two pages."""
    text = second_practice("shiraz-eye", "071 3222 4455")
    for old, new in (("ophthalmology", "dermatology"), ("psychiatry", "neurology"),
                     ("midwifery", "paediatrics"), ("general_practice", "ent"),
                     ("cardiology", "urology")):
        text = text.replace(f'specialty = "{old}"', f'specialty = "{new}"')
    shiraz = tmp_path / "shiraz.toml"
    shiraz.write_text(text, encoding="utf-8")
    async with ivr_rig(database, clock, practices=[shiraz]) as rig:
        heard = await rig.call(Caller.dialling(
            MOBILE, Hear("platform-welcome"), "2", Hear("shared-menu"), "2",
            Hear("choose-specialty"), Hear("more-specialties"), Hear("press-9"), "9",
            Hear("choose-specialty"), Hear("press-5"), "1", Hear("choose-doctor"),
            Hear("press-1"), "1", Hear("main-menu"), "9", dialled=SHARED_DID))
    assert contains(heard.prompts, ["en/specialty/cardiology", "en/menu/press-5",
                                    "en/more-specialties", "en/menu/press-9",
                                    "en/choose-specialty", "en/menu/for",
                                    "en/specialty/dermatology", "en/menu/press-1"])
    assert contains(heard.prompts, ["en/menu/for", "en/doctor/shiraz-eye/dr-ahmadi",
                                    "en/at-practice", "en/clinic/shiraz-eye/name"])


async def test_a_call_keys_six_wrong_codes_at_most_however_often_it_goes_back(
        rig: IvrRig) -> None:
    twice = ("111#", Hear("doctor-code-unknown"), Hear("enter-doctor-code"), "112#",
             Hear("doctor-code-unknown"), Hear("enter-doctor-code"))
    back = ("*", Hear("shared-menu"), "1", Hear("enter-doctor-code"))
    heard = await rig.call(Caller.dialling(
        MOBILE, Hear("platform-welcome"), "2", Hear("shared-menu"), "1",
        Hear("enter-doctor-code"), *twice, *back, *twice, *back, "113#",
        Hear("doctor-code-unknown"), Hear("enter-doctor-code"), "114#", Hear("goodbye"),
        dialled=SHARED_DID))
    assert heard.prompts.count("en/doctor-code-unknown") == 6
    assert heard.prompts[-3:] == ["en/enter-doctor-code", "en/doctor-code-unknown",
                                  "en/goodbye"]


async def test_several_practices_need_the_shared_flow(
        database: Database, clock: Clock, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    (flows / "shared.toml").unlink()
    shiraz = tmp_path / "shiraz.toml"
    shiraz.write_text(second_practice("shiraz-eye", "071 3222 4455"), encoding="utf-8")
    with pytest.raises(StaffFileError, match=r"shared\.toml: several practices share the line"):
        async with ivr_rig(database, clock, flows=flows, practices=[shiraz]):
            pass


async def test_a_practice_loaded_while_serving_is_answered_as_itself_within_the_watch(
        database: Database, clock: Clock, tmp_path: Path) -> None:
    shiraz = tmp_path / "shiraz.toml"
    shiraz.write_text(second_practice("shiraz-eye", "071 3222 4455"), encoding="utf-8")
    async with ivr_rig(database, clock) as rig:
        flows = rig.line.flows
        watching = asyncio.create_task(flows.watch(0.05))
        try:
            await load_clinic(database, read_clinic(shiraz), clock)
            for _ in range(100):  # the watch looks every 0.05 s
                if flows.current().routes.platform:
                    break
                await asyncio.sleep(0.05)
        finally:
            watching.cancel()
        assert flows.current().routes.platform
        heard = await rig.call(Caller.dialling(MOBILE, Hear("welcome"), "1",
                                               *BOOK_SATURDAY_1620, dialled=SHIRAZ_DID))
    assert heard.prompts[0] == "fa/clinic/shiraz-eye/welcome"
    assert [practice for practice, _, _ in await booked_at(database)] == ["shiraz-eye"]


@pytest.mark.parametrize("hear", ["platform-welcome", "shared-menu", "enter-doctor-code",
                                  "doctor-chosen", "choose-specialty"])
async def test_a_caller_hanging_up_anywhere_on_the_shared_menu_leaves_nothing(
        rig: IvrRig, database: Database, hear: str) -> None:
    welcome = (Hear("platform-welcome"), "1")
    before = {"platform-welcome": (), "shared-menu": welcome,
              "enter-doctor-code": (*welcome, Hear("shared-menu"), "1"),
              "doctor-chosen": (*welcome, Hear("shared-menu"), "1", Hear("enter-doctor-code"),
                                "201#"),
              "choose-specialty": (*welcome, Hear("shared-menu"), "2")}[hear]
    heard = await rig.call(Caller.dialling(MOBILE, *before, Hear(hear), HangUp(),
                                           dialled=SHARED_DID))
    assert heard.transcript.hung_up_by == "caller"
    assert await booked_at(database) == []
    async with database.reading() as session:
        outcomes = (await session.scalars(select(InboundCall.outcome))).all()
    assert list(outcomes) == ["hung_up"]
    assert rig.line.calls == {}


NOWHERE = "ZoneInfoNotFoundError: 'No time zone found with key Asia/Nowhere'"
"""Why a practice whose zone was edited to Asia/Nowhere cannot be read."""


BROKEN_ROWS = {
    "an unknown zone": (Clinic.timezone, "Asia/Nowhere", "No time zone found"),
    "office hours edited by hand": (Clinic.office_hours, "saturday 9-12",
                                    "expected day=HH:MM-HH:MM"),
    "office hours of no day": (Clinic.office_hours, "noday=09:00-12:00", "noday"),
    "a visit kind nobody offers": (WeeklyHours.kinds, "by-hand", "'by-hand' is not a valid"),
}
"""A practice's row as a hand edit might leave it (the column, its value), and what the
status page says of it."""


async def edit_shiraz(database: Database, column: InstrumentedAttribute[Any], value: object
                      ) -> None:
    """Write `value` into the Shiraz practice's `column` (its doctors' hours too), as by hand."""
    doctors = select(Doctor.id).join(Clinic).where(Clinic.key == "shiraz-eye")
    async with database.writing() as session:
        if column.class_ is Clinic:
            await session.execute(update(Clinic).where(Clinic.key == "shiraz-eye")
                                  .values({column.key: value}))
        else:
            await session.execute(update(WeeklyHours).where(
                WeeklyHours.doctor_id.in_(doctors)).values({column.key: value}))


@pytest.mark.parametrize("broken", BROKEN_ROWS)
async def test_a_practice_whose_row_cannot_be_read_is_off_the_line_and_the_others_book(
        rig: IvrRig, database: Database, clock: Clock, tmp_path: Path, broken: str) -> None:
    """One practice's row edited by hand keeps no other practice's callers from booking, at
    a reload or a start; its own number reaches the shared menu, never another practice,
    and the status page names it until its file is loaded again."""
    column, value, why = BROKEN_ROWS[broken]
    await edit_shiraz(database, column, value)
    await rig.line.flows.reload("practices changed")
    started = await build_line(rig.config, database, clock)
    for flows in (rig.line.flows, started.flows):
        assert [(off.practice, why in off.reason) for off in flows.left_out] == [
            ("shiraz-eye", True)]
        assert flows.last_error is None
    tehran = await rig.call(Caller.dialling(MOBILE, Hear("welcome"), "1", *BOOK_SATURDAY_1620,
                                            dialled=TEHRAN_DID))
    assert tehran.prompts[0] == "fa/clinic/nobat-demo/welcome"
    shiraz = await rig.call(Caller.dialling(
        MOBILE, Hear("platform-welcome"), "1", Hear("shared-menu"), "1",
        Hear("enter-doctor-code"), "201#", Hear("enter-doctor-code"), "*",
        Hear("shared-menu"), "9", dialled=SHIRAZ_DID))
    assert shiraz.prompts[0] == "fa/platform-welcome"
    assert contains(shiraz.prompts, ["fa/enter-doctor-code", "fa/doctor-code-unknown"])
    assert not any("shiraz-eye" in p or "nobat-demo" in p for p in shiraz.prompts)
    await load_clinic(database, read_clinic(tmp_path / "shiraz.toml"), clock)
    await rig.line.flows.reload("practices changed")
    assert rig.line.flows.left_out == ()
    shiraz = await rig.call(Caller.dialling(MOBILE, Hear("welcome"), "1", *BOOK_SATURDAY_1620,
                                            dialled=SHIRAZ_DID))
    assert shiraz.prompts[0] == "fa/clinic/shiraz-eye/welcome"
    assert await booked_at(database) == [("nobat-demo", "dr-ahmadi", at(SATURDAY, 16, 20)),
                                         ("shiraz-eye", "dr-ahmadi", at(SATURDAY, 16, 20))]


async def test_a_lone_practice_whose_row_cannot_be_read_hands_its_callers_to_the_office(
        database: Database, clock: Clock) -> None:
    """With one practice there is no shared menu: its callers are not finished by nobat, so
    the dialplan rings its office; the status page names the row meanwhile."""
    async def nowhere(database: Database) -> None:
        async with database.writing() as session:
            await session.execute(update(Clinic).values(timezone="Asia/Nowhere"))

    async with ivr_rig(database, clock, edit=nowhere) as rig:
        assert rig.line.flows.left_out == (Unreadable("nobat-demo", NOWHERE),)
        heard = await rig.call(Caller.dialling(MOBILE, Hear("welcome"), "1",
                                               dialled=TEHRAN_DID))
    assert "NOBAT_SESSION" in heard.transcript.variables
    assert "NOBAT_RESULT" not in heard.transcript.variables


async def zone_nowhere(folder: Path, practice: str) -> None:
    """The store beside a demo copy in `folder` with the demo practice and Shiraz loaded from
    its clinics folder, and `practice`'s zone then edited by hand to one that does not exist."""
    clinics = folder / "clinics"
    clinics.mkdir()
    shutil.copy(folder / "clinic.toml", clinics / "demo.toml")
    shiraz_file(clinics)
    database = await demo_store(folder, clinics)
    try:
        async with database.writing() as session:
            await session.execute(update(Clinic).where(Clinic.key == practice)
                                  .values(timezone="Asia/Nowhere"))
    finally:
        await database.close()


async def test_nobat_serve_starts_and_dials_with_the_first_practices_row_unreadable(
        tmp_path: Path) -> None:
    """The first practice stands in for the line's defaults (the dialer's, the page's zone):
    its row edited by hand stops neither, and /healthz and the page say what is off."""
    config = demo_copy(tmp_path)
    edit_config(config, ('clinic_file = "clinic.toml"', 'clinic_file = "clinics"'))
    await zone_nowhere(tmp_path, "nobat-demo")
    async with FakeAsterisk(users=nobat_user(AMI_SECRET)) as pbx:
        dial_fake_pbx(config, pbx.port)
        server = await ServerProcess(config, env={"NOBAT_WEB_TOKEN": TOKEN,
                                                  "NOBAT_AMI_SECRET": AMI_SECRET}).start()
        try:
            body = await until_healthz(server, 200, "running")
            assert (body["ami"], body["flows"]) == ("connected", "error")
            status, text = await get(server, "/api/status")
            health = json.loads(text)["health"]
            assert (status, health["flows_error"], health["ok"]) == (200, None, False)
            assert health["practices_off"] == [{"practice": "nobat-demo", "reason": NOWHERE}]
            status, page = await get(server, "/?lang=en")
            assert status == 200
            assert f"Practices off the line</th><td class=\"bad error\" dir=\"ltr\">nobat-demo " \
                   f"({NOWHERE})" in page.replace("&#39;", "'")
            code, token, _ = await make_token(config, "shiraz-eye")
            status, text = await get(server, "/api/status", token.strip())
            assert (code, status, json.loads(text)["health"]["practices_off"]) == (0, 200, [])
            code, token, _ = await make_token(config, "nobat-demo")
            status, text = await get(server, "/api/status?lang=en", token.strip())
            assert (code, status) == (0, 503)
            assert "This practice's row in the store cannot be read" in text
            tomorrow = (dt.date.today() + dt.timedelta(days=2)).isoformat()
            refused = await post_form(server, "/absences?lang=en", await log_in(server, TOKEN),
                                      ("practice", "nobat-demo"), ("first", tomorrow),
                                      ("last", tomorrow), ("reason", "away"))
            assert refused.status == 400
            assert "this practice's row in the store cannot be read" in \
                refused.text.replace("&#39;", "'")
        finally:
            assert await server.stop() == 0


async def test_with_the_first_practice_off_the_line_the_others_and_the_shared_number_book(
        database: Database, clock: Clock, tmp_path: Path) -> None:
    """The shared number's menu is no practice's: the first practice's row, unreadable,
    fails neither it nor the second practice's own number."""
    async def nowhere(database: Database) -> None:
        async with database.writing() as session:
            await session.execute(update(Clinic).where(Clinic.key == "nobat-demo")
                                  .values(timezone="Asia/Nowhere"))

    async with ivr_rig(database, clock, practices=[shiraz_file(tmp_path)],
                       edit=nowhere) as rig:
        assert rig.line.flows.left_out == (Unreadable("nobat-demo", NOWHERE),)
        own = await rig.call(Caller.dialling(MOBILE, Hear("welcome"), "1", Hear("main-menu"),
                                             "9", dialled=SHIRAZ_DID))
        shared = await rig.call(Caller.dialling(
            MOBILE, Hear("platform-welcome"), "1", Hear("shared-menu"), "1",
            Hear("enter-doctor-code"), "201#", Hear("confirm-keys"), "1", *BOOK_SATURDAY_1620,
            dialled=TEHRAN_DID))
    assert own.prompts[0] == "fa/clinic/shiraz-eye/welcome"
    assert shared.prompts[0] == "fa/platform-welcome"
    assert await booked_at(database) == [("shiraz-eye", "dr-ahmadi", at(SATURDAY, 16, 20))]
