"""Many practices in one store: a load keeps to its own practice's rows (its office too), a
number or doctor's code another practice holds is refused with nothing changed, and a folder
loads file by file."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update

from clinic.calendar import Weekday
from clinic.call_times import PracticeCallRules
from clinic.clinic_file import ClinicSpec, ClosureSpec, read_clinic
from db import clinic_sync
from db.availability import Availability, catalogs
from db.booking import BookingService
from db.clinic_sync import HeldElsewhere, LoadRefused, load_clinic, loaded_digest
from db.engine import Database
from db.models import Clinic, ClinicNumber, Closure, Doctor, WeeklyHours
from db.practices import practices
from nobat.clinic_loading import load_clinics
from nobat.config import load_config
from nobat.serve import load_configured_clinic
from tests.support.clinics import DEMO_FILE, second_practice
from tests.test_clinic_practices_file import folder, practice
from tests.test_clinic_sync import DEMO, with_doctor

OTHER_NUMBER = "+982122223333"


def demo() -> ClinicSpec:
    """The shipped demo practice: number +982188776655, codes 101..105."""
    return read_clinic(DEMO)


def other() -> ClinicSpec:
    """A second practice with the same doctors (and doctor keys), its own number and codes."""
    spec = demo()
    return dataclasses.replace(
        spec, key="other", name_en="Other Practice", phone=OTHER_NUMBER,
        numbers=(OTHER_NUMBER,),
        doctors=tuple(dataclasses.replace(d, code=f"2{d.code[1:]}") for d in spec.doctors))


async def rows_of(database: Database, key: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the store holds for one practice, column by column."""
    async with database.reading() as session:
        clinic = await session.scalar(select(Clinic.id).where(Clinic.key == key))
        doctors = select(Doctor.id).where(Doctor.clinic_id == clinic)
        tables = {
            "clinic": select(Clinic.__table__).where(Clinic.id == clinic),
            "doctor": select(Doctor.__table__).where(Doctor.clinic_id == clinic)
            .order_by(Doctor.id),
            "weekly_hours": select(WeeklyHours.__table__)
            .where(WeeklyHours.doctor_id.in_(doctors)).order_by(WeeklyHours.id),
            "closure": select(Closure.__table__).where(Closure.clinic_id == clinic)
            .order_by(Closure.id),
            "clinic_number": select(ClinicNumber.__table__)
            .where(ClinicNumber.clinic_id == clinic).order_by(ClinicNumber.number),
        }
        return {name: [tuple(row) for row in (await session.execute(query)).all()]
                for name, query in tables.items()}


async def test_a_practice_added_in_one_go_holds_what_a_comparing_load_would_write(
        database: Database) -> None:
    """A practice new to the store is written one statement a table, not row by row; a load
    that then compares the same file with its rows finds every field, doctor, hour, code,
    number and closure as the file has it, and reports the same changes a load row by row
    did."""
    demo_spec = demo()
    spec = dataclasses.replace(
        demo_spec, office="PJSIP/office-a", dial="PJSIP/{national}@a-trunk", max_channels=4,
        office_hours={Weekday.SATURDAY: (9 * 60, 12 * 60 + 30)},
        call_times=PracticeCallRules(quiet_hours=(20 * 60, 9 * 60), reminder_at=17 * 60),
        closures=(*demo_spec.closures,
                  ClosureSpec("dr-karimi", dt.date(2026, 12, 1), dt.date(2026, 12, 3), "away")))
    report = await load_clinic(database, spec)
    assert report.changes == [
        "clinic nobat-demo added",
        "clinic nobat-demo: numbers +982188776655 (were none)",
        *(f"doctor {doctor.key} added" for doctor in spec.doctors),
        "closures: 3 listed (were 0)"]
    added = await rows_of(database, "nobat-demo")
    assert (await load_clinic(database, spec)).changes == []
    assert await rows_of(database, "nobat-demo") == added
    assert await revisions(database) == [("nobat-demo", 1)]
    assert [len(added[table]) for table in ("doctor", "weekly_hours", "closure")] == [5, 23, 3]


async def test_two_practices_may_both_have_a_doctor_key(database: Database) -> None:
    await load_clinic(database, demo())
    report = await load_clinic(database, other())
    assert "doctor dr-ahmadi added" in report.changes
    async with database.reading() as session:
        keys = (await session.execute(select(Clinic.key, Doctor.code).join(Clinic)
                                      .where(Doctor.key == "dr-ahmadi").order_by(Clinic.key))
                ).all()
    assert [tuple(row) for row in keys] == [("nobat-demo", "101"), ("other", "201")]


async def test_loading_one_practice_leaves_the_others_rows_alone(database: Database) -> None:
    await load_clinic(database, demo())
    await load_clinic(database, other())
    before = await rows_of(database, "other")
    changed = with_doctor(demo(), "dr-ahmadi", name_en="Dr. M. Ahmadi", code="109", hours=())
    changed = dataclasses.replace(
        changed, name_en="Nobat Clinic North", numbers=("+982144445555",),
        doctors=changed.doctors[:-1],
        closures=(*changed.closures, ClosureSpec(None, dt.date(2027, 1, 1),
                                                 dt.date(2027, 1, 2), "")))
    report = await load_clinic(database, changed)
    assert report.changes == [
        "clinic nobat-demo: name_en changed",
        "clinic nobat-demo: numbers +982144445555 (were +982188776655)",
        "doctor dr-ahmadi: name_en changed",
        "doctor dr-ahmadi: weekly hours changed",
        "doctor dr-moradi removed (kept as inactive for history)",
        "doctor dr-ahmadi: code 109 (was 101)",
        "closures: 3 listed (were 2)",
    ]
    assert await rows_of(database, "other") == before
    assert await revisions(database) == [("nobat-demo", 2), ("other", 1)]


async def revisions(database: Database) -> list[tuple[str, int]]:
    async with database.reading() as session:
        rows = (await session.execute(select(Clinic.key, Clinic.revision)
                                      .order_by(Clinic.key))).all()
    return [(key, revision) for key, revision in rows]


@pytest.mark.parametrize(("edit", "held"), [
    (lambda s: dataclasses.replace(s, numbers=(*s.numbers, "+982188776655")),
     "number +982188776655 reaches clinic 'nobat-demo'"),
    (lambda s: with_doctor(s, "dr-karimi", code="105"),
     "code '105' is doctor dr-moradi's in clinic 'nobat-demo'"),
])
async def test_a_number_or_code_another_practice_holds_is_refused_and_nothing_changes(
        database: Database, edit: Any, held: str) -> None:
    await load_clinic(database, demo())
    await load_clinic(database, other())
    before = {key: await rows_of(database, key) for key in ("nobat-demo", "other")}
    changed = edit(dataclasses.replace(other(), name_en="Renamed"))
    with pytest.raises(HeldElsewhere) as refused:
        await load_clinic(database, changed)
    assert isinstance(refused.value, LoadRefused)
    assert str(refused.value) == (
        "refused: another practice holds what this file gives its own; take it out of one of "
        f"the two files:\n  {held}")
    assert {key: await rows_of(database, key) for key in before} == before
    with pytest.raises(HeldElsewhere):
        await load_clinic(database, dataclasses.replace(changed, key="new"))
    assert [key for key, _ in await revisions(database)] == ["nobat-demo", "other"]


async def test_a_code_may_move_between_two_doctors_of_one_practice(database: Database) -> None:
    await load_clinic(database, demo())
    swapped = with_doctor(with_doctor(demo(), "dr-ahmadi", code="102"), "dr-karimi", code="101")
    report = await load_clinic(database, swapped)
    assert report.changes == ["doctor dr-ahmadi: code 102 (was 101)",
                              "doctor dr-karimi: code 101 (was 102)"]
    codes = (await practices(database))[0].doctor_codes
    assert (codes["101"], codes["102"]) == (await doctor_id(database, "dr-karimi"),
                                            await doctor_id(database, "dr-ahmadi"))


async def doctor_id(database: Database, key: str) -> int:
    async with database.reading() as session:
        return await session.scalar(select(Doctor.id).where(Doctor.key == key))


async def test_a_dropped_doctor_frees_their_code_for_another_practice(
        database: Database) -> None:
    await load_clinic(database, demo())
    await load_clinic(database, other())
    await load_clinic(database, dataclasses.replace(demo(), doctors=demo().doctors[:-1]))
    report = await load_clinic(database, with_doctor(other(), "dr-karimi", code="105"))
    assert report.changes == ["doctor dr-karimi: code 105 (was 202)"]


async def test_practices_lists_each_practice_with_its_numbers_and_active_codes(
        database: Database) -> None:
    assert await practices(database) == []
    await load_clinic(database, demo())
    await load_clinic(database, dataclasses.replace(other(), doctors=other().doctors[:2]))
    demo_practice, other_practice = await practices(database)
    assert (demo_practice.key, demo_practice.name_en, demo_practice.phone,
            demo_practice.numbers) == ("nobat-demo", "Nobat Clinic", "+982188776655",
                                       ("+982188776655",))
    assert sorted(demo_practice.doctor_codes) == ["101", "102", "103", "104", "105"]
    assert demo_practice.doctor_codes["101"] == await doctor_id(database, "dr-ahmadi")
    assert (other_practice.key, other_practice.numbers) == ("other", (OTHER_NUMBER,))
    assert sorted(other_practice.doctor_codes) == ["201", "202"]


async def offices(database: Database, *keys: str | None) -> list[tuple[object, object]]:
    """Each practice's own office and hours as its profile reads them (None: config's)."""
    profiles = [await BookingService(database, practice=key).clinic_profile() for key in keys]
    return [(p.office, p.office_hours) if p else (None, None) for p in profiles]


async def test_a_practices_own_office_is_kept_with_its_clinic_and_read_with_its_profile(
        database: Database) -> None:
    await load_clinic(database, demo())
    await load_clinic(database, other())
    demo_rows = await rows_of(database, "nobat-demo")
    service = BookingService(database, practice="other")
    assert (await service.clinic_profile()) is not None  # held now: the load must refresh it
    hours = {Weekday.SATURDAY: (9 * 60, 12 * 60 + 30), Weekday.THURSDAY: (16 * 60, 18 * 60)}
    own = dataclasses.replace(other(), office="PJSIP/office-other", office_hours=hours)
    report = await load_clinic(database, own)
    assert report.changes == ["clinic other: office, office_hours changed"]
    assert await offices(database, None, "other") == [(None, None),
                                                     ("PJSIP/office-other", hours)]
    held = await service.clinic_profile()
    assert held is not None and held.office == "PJSIP/office-other"
    assert (await load_clinic(database, own)).changes == []
    report = await load_clinic(database, dataclasses.replace(own, office_hours={}))
    assert report.changes == ["clinic other: office_hours changed"]
    assert await offices(database, "other") == [("PJSIP/office-other", {})]
    assert (await load_clinic(database, other())).changes == [
        "clinic other: office, office_hours changed"]
    assert await offices(database, "other") == [(None, None)]
    assert await revisions(database) == [("nobat-demo", 1), ("other", 4)]
    assert await rows_of(database, "nobat-demo") == demo_rows


async def run_nobat(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nobat", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def platform_folder(tmp_path: Path) -> Path:
    """a: good; b: broken; c: holds demo's number, which the store gives nobat-demo."""
    return folder(tmp_path, a=practice("a", "02122223333", ("dr-a", "301")),
                  b='[clinic]\nkey = "b"\nphone = "1"\n',
                  c=practice("c", "02188776655", ("dr-a", "401")))


async def test_clinic_load_on_a_folder_loads_every_good_file_and_reports_the_rest(
        database: Database, database_url: str, tmp_path: Path) -> None:
    await load_clinic(database, demo())
    path = platform_folder(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n')
    code, out, err = await run_nobat("-c", str(config), "clinic", "load", str(path))
    assert code == 2
    assert out.startswith(f"{path / 'a.toml'}: clinic a added; ")
    assert f"{path / 'b.toml'}:3: clinic.phone: '1' is not a valid Iranian number" in err
    assert (f"{path / 'c.toml'}: refused: another practice holds what this file gives its own"
            in err)
    held_at = next(n for n, line in enumerate((path / "c.toml").read_text().splitlines(), 1)
                   if "02188776655" in line and "numbers" in line)
    assert (f"  {path / 'c.toml'}:{held_at}: clinic.numbers[1]: number +982188776655 "
            "reaches clinic 'nobat-demo'") in err  # where the file says it, as every check
    assert [key for key, _ in await revisions(database)] == ["a", "nobat-demo"]
    (path / "b.toml").unlink()
    code, out, _ = await run_nobat("-c", str(config), "clinic", "load", str(path))
    assert (code, out) == (1, f"{path / 'a.toml'}: unchanged since its last load\n")


async def test_serve_loads_a_folder_logging_each_file(
        database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    await load_clinic(database, demo())
    path = platform_folder(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nclinic_file = "{path.name}"\n')
    with caplog.at_level(logging.INFO, logger="nobat"):
        await load_configured_clinic(load_config(config), database)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith(f"clinic file {path / 'a.toml'}: clinic a added; ")
    assert lines[1].startswith(f"clinic file {path / 'b.toml'} not loaded; serving what the "
                               "database holds:\n")
    assert lines[2].startswith(f"clinic file {path / 'c.toml'} not loaded; serving what the "
                               "database holds:\nrefused: another practice")
    assert [key for key, _ in await revisions(database)] == ["a", "nobat-demo"]


async def test_a_code_moved_from_one_practice_to_another_loads_in_one_go(
        database: Database, tmp_path: Path) -> None:
    """a.toml takes the code b.toml gives up: a.toml, read first, waits for b.toml."""
    clinics = tmp_path / "clinics"
    clinics.mkdir()
    (clinics / "a.toml").write_text(second_practice("shiraz-eye", "071 3222 4455"))
    (clinics / "b.toml").write_text(DEMO_FILE.read_text())
    assert all(load.failure is None for load in await load_clinics(database, clinics))
    (clinics / "b.toml").write_text(DEMO_FILE.read_text().replace('code = "101"', 'code = "199"'))
    (clinics / "a.toml").write_text(second_practice("shiraz-eye", "071 3222 4455")
                                    .replace('code = "201"', 'code = "101"'))
    loads = await load_clinics(database, clinics)
    assert [(Path(load.file).name, load.failure) for load in loads] == [
        ("a.toml", None), ("b.toml", None)]
    assert {p.key: sorted(p.doctor_codes) for p in await practices(database)} == {
        "nobat-demo": ["102", "103", "104", "105", "199"],
        "shiraz-eye": ["101", "202", "203", "204", "205"]}


@contextlib.contextmanager
def statements_of(database: Database) -> Iterator[list[str]]:
    """Every statement the store is sent while inside, with its parameters, as text."""
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, parameters: object,
               *_: object) -> None:
        sent.append(f"{statement} {parameters}")

    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_a_folder_loaded_again_compares_only_the_files_that_changed(
        database: Database, tmp_path: Path) -> None:
    path = folder(tmp_path, a=practice("a-clinic", "02122223333", ("dr-a", "301")),
                  b=practice("b-clinic", "02144445555", ("dr-b", "401")))
    await load_clinics(database, path)
    (path / "b.toml").write_text(practice("b-clinic", "02144445555", ("dr-b", "402")))
    with statements_of(database) as sent:
        loads = await load_clinics(database, path)
    assert [(Path(load.file).name, load.changes) for load in loads] == [
        ("a.toml", ()), ("b.toml", ("doctor dr-b: code 402 (was 401)",))]
    assert any("b-clinic" in statement for statement in sent)
    assert not any("a-clinic" in statement for statement in sent)
    assert await revisions(database) == [("a-clinic", 1), ("b-clinic", 2)]


async def test_a_newer_nobat_compares_every_file_with_its_rows_once_more(
        database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A nobat whose schema or code writing the rows differs does not trust the digests an
    older one kept: each file is compared with its rows, which it puts right, and kept anew."""
    path = folder(tmp_path, a=practice("a-clinic", "02122223333", ("dr-a", "301")))
    await load_clinics(database, path)
    async with database.writing() as session:
        await session.execute(update(Clinic).values(name_en="edited by hand"))
    assert [load.summary() for load in await load_clinics(database, path)] == [
        "unchanged since its last load"]
    monkeypatch.setattr(clinic_sync, "_rows_form", lambda: "a newer nobat's")
    assert [load.summary() for load in await load_clinics(database, path)] == [
        "clinic a-clinic: name_en changed"]
    async with database.reading() as session:
        clinic = (await session.scalars(select(Clinic))).one()
    assert clinic.name_en != "edited by hand"
    assert clinic.loaded_digest == loaded_digest((path / "a.toml").read_bytes())


async def test_clinic_load_compare_puts_right_a_row_edited_by_hand(
        database: Database, database_url: str, tmp_path: Path) -> None:
    path = folder(tmp_path, a=practice("a-clinic", "02122223333", ("dr-a", "301")))
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n')
    await load_clinics(database, path)
    async with database.writing() as session:
        await session.execute(update(Doctor).values(code="399"))
    code, out, _ = await run_nobat("-c", str(config), "clinic", "load", str(path))
    assert (code, out) == (0, f"{path / 'a.toml'}: unchanged since its last load\n")
    code, out, _ = await run_nobat("-c", str(config), "clinic", "load", "--compare", str(path))
    assert (code, out) == (0, f"{path / 'a.toml'}: doctor dr-a: code 301 (was 399)\n")
    assert {p.key: sorted(p.doctor_codes) for p in await practices(database)} == {
        "a-clinic": ["301"]}


async def test_a_refused_file_is_refused_again_not_skipped(
        database: Database, tmp_path: Path) -> None:
    """Nothing of a refused load is kept, its digest neither: the practice stays as its last
    good file left it, and the refused file is refused each time it is loaded."""
    await load_clinic(database, demo())
    path = folder(tmp_path, a=practice("a-clinic", "02122223333", ("dr-a", "301")))
    await load_clinics(database, path)
    before = await rows_of(database, "a-clinic")
    (path / "a.toml").write_text(practice("a-clinic", "02188776655", ("dr-a", "301")))
    for _ in range(2):
        [load] = await load_clinics(database, path)
        assert isinstance(load.failure, HeldElsewhere)
    assert await rows_of(database, "a-clinic") == before
    (path / "a.toml").write_text(practice("a-clinic", "02122223333", ("dr-a", "301")))
    assert [load.unchanged for load in await load_clinics(database, path)] == [True]


async def test_two_loads_of_one_changed_practice_at_once_take_turns(
        database: Database, database_url: str) -> None:
    """Two nobat starting together after an edit: the practice's hours are written once."""
    spec = demo()
    await load_clinic(database, spec)
    before = await rows_of(database, "nobat-demo")
    changed = with_doctor(spec, "dr-ahmadi", hours=tuple(
        dataclasses.replace(h, slot_minutes=30) for h in spec.doctors[0].hours))
    other_nobat = Database.from_url(database_url)
    try:
        await load_clinic(other_nobat, spec)  # its connection opened, as a running nobat's is
        reports = await asyncio.gather(*(load_clinic(db, changed)
                                         for db in (database, other_nobat)))
    finally:
        await other_nobat.close()
    assert sorted(report.changes for report in reports) == [
        [], ["doctor dr-ahmadi: weekly hours changed"]]
    after = (await rows_of(database, "nobat-demo"))["weekly_hours"]
    assert len(after) == len(before["weekly_hours"])  # each rule once, none twice


async def test_a_file_rewritten_with_the_same_contents_is_compared_once(
        database: Database, tmp_path: Path) -> None:
    """The digest is of the file's bytes: a comment added is compared with the rows (no
    change), and from then on the new bytes are the ones skipped."""
    path = folder(tmp_path, a=practice("a-clinic", "02122223333", ("dr-a", "301")))
    await load_clinics(database, path)
    (path / "a.toml").write_text("# checked by the office\n" + (path / "a.toml").read_text())
    for summary in ("no changes", "unchanged since its last load"):
        assert [load.summary() for load in await load_clinics(database, path)] == [summary]
    assert await revisions(database) == [("a-clinic", 1)]


async def test_a_copy_of_an_unchanged_file_is_refused_as_a_clash(
        database: Database, tmp_path: Path) -> None:
    """Files that all match their practices are not read again, but a copy of one beside it
    matches the same practice: the folder is read and the copy refused for its key."""
    path = folder(tmp_path, a=practice("a-clinic", "02122223333", ("dr-a", "301")),
                  b=practice("b-clinic", "02144445555", ("dr-b", "401")))
    await load_clinics(database, path)
    (path / "c.toml").write_bytes((path / "a.toml").read_bytes())
    loads = await load_clinics(database, path)
    assert [load.summary() for load in loads[:2]] == ["unchanged since its last load"] * 2
    assert loads[2].failure is not None
    assert f"'a-clinic' is already the key of {path / 'a.toml'}:" in str(loads[2].failure)
    assert await revisions(database) == [("a-clinic", 1), ("b-clinic", 1)]


async def test_the_practices_read_together_are_each_as_read_alone(
        database: Database) -> None:
    """The line's start reads every practice's catalog at once: each keeps its own doctors,
    hours and closures, as its own read would give them."""
    await load_clinic(database, demo())
    holiday = ClosureSpec("dr-rahimi", dt.date(2031, 3, 1), dt.date(2031, 3, 2), "congress")
    await load_clinic(database, dataclasses.replace(other(), closures=(holiday,)))
    ids = [p.id for p in await practices(database)]
    together = await catalogs(database.rows, ids)
    alone = [await Availability(database.rows, key).catalog(database.rows)
             for key in ("nobat-demo", "other")]
    assert [together.read[i] for i in ids] == alone and together.unreadable == {}
    assert alone[0] != alone[1] and alone[1].grids != alone[0].grids


async def test_two_first_loads_of_one_practice_at_once_add_it_once(
        database: Database, database_url: str) -> None:
    other_nobat = Database.from_url(database_url)
    try:
        await load_clinic(other_nobat, other())  # its connection opened, as a running nobat's is
        reports = await asyncio.gather(*(load_clinic(db, demo())
                                         for db in (database, other_nobat)))
    finally:
        await other_nobat.close()
    assert sorted(bool(report.changes) for report in reports) == [False, True]
    assert [key for key, _ in await revisions(database)] == ["nobat-demo", "other"]
