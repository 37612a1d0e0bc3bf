"""Mistakes in the clinic file are all reported, each with its file, line and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinic.clinic_file import read_clinic
from clinic.staff_toml import StaffFileError
from nobat.cli import main

DEMO = Path(__file__).resolve().parents[1] / "clinic.toml"


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "clinic.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(StaffFileError) as caught:
        read_clinic(path)
    return [str(p).replace(str(path), "clinic.toml") for p in caught.value.problems]


GOOD_DOCTOR = '''
[[doctors]]
key = "dr-a"
name = "دکتر الف"
specialty = "cardiology"
phone = "09121000001"
'''


def test_the_demo_clinic_is_valid() -> None:
    spec = read_clinic(DEMO)
    assert spec.phone == "+982188776655"
    assert {d.specialty for d in spec.doctors} >= {"ophthalmology", "psychiatry", "midwifery"}


def test_a_syntax_error_names_its_line(tmp_path: Path) -> None:
    assert problems(tmp_path, '[clinic]\nname = "x"\nphone = \n') == [
        "clinic.toml:3: invalid TOML: Invalid value"]


def test_text_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "clinic.toml"
    path.write_bytes(b'[clinic]\nname = "\xe1\xed"\n')
    with pytest.raises(StaffFileError, match=r"clinic\.toml:2: not UTF-8 text"):
        read_clinic(path)


def test_every_mistake_is_listed_with_its_line(tmp_path: Path) -> None:
    text = '''[clinic]
name = "x"
phone = "12345"
weekend = ["funday"]
colour = "blue"
''' + GOOD_DOCTOR + '''
[[doctors]]
key = "dr-a"
name = "دکتر ب"
specialty = "astrology"
phone = "09121000002"
languages = ["de"]

[[doctors.hours]]
days = ["saturday"]
from = "16:00"
to = "25:00"

[[doctors.hours]]
days = ["sunday"]
from = "16:00"
to = "17:00"
slot_minutes = "ten"
kinds = ["video"]

[[closures]]
doctor = "dr-z"
from = "1405/13/01"
'''
    assert problems(tmp_path, text) == [
        "clinic.toml:3: clinic.phone: '12345' is not a valid Iranian number",
        "clinic.toml:4: clinic.weekend: unknown weekday 'funday'; expected one of saturday, "
        "sunday, monday, tuesday, wednesday, thursday, friday",
        "clinic.toml:5: clinic.colour: unknown key; expected one of key, name, name_en, phone, "
        "numbers, address, address_en, timezone, weekend, office, office_hours, dial, "
        "max_channels, patient_calls",
        "clinic.toml:14: doctors[2].key: doctor 'dr-a' is listed twice",
        "clinic.toml:16: doctors[2].specialty: unknown specialty 'astrology'; expected one of "
        "ophthalmology, psychiatry, midwifery, general_practice, gastroenterology, "
        "obstetrics_gynaecology, breast_surgery, internal_medicine, endocrinology, cardiology, "
        "dermatology, paediatrics, ent, neurology, orthopaedics, urology, nutrition, psychology",
        "clinic.toml:18: doctors[2].languages: expected a list of fa, en, got ['de']",
        "clinic.toml:23: doctors[2].hours[1].to: '25:00' is not a time of day; expected 00:00 "
        "to 24:00",
        "clinic.toml:29: doctors[2].hours[2].slot_minutes: expected a whole number, got a "
        "string 'ten'",
        "clinic.toml:30: doctors[2].hours[2].kinds: expected visit kinds from in_person, phone, "
        "got ['video']",
        "clinic.toml:33: closures[1].doctor: no doctor has key 'dr-z'",
        "clinic.toml:34: closures[1].from: '1405/13/01' is not a Jalali date: no such day in "
        "the calendar (months 1-12; months 7-12 have 30 days or fewer)",
    ]


def test_hours_on_the_weekend_and_overlapping_hours_are_refused(tmp_path: Path) -> None:
    text = '[clinic]\nphone = "02188776655"\n' + GOOD_DOCTOR + '''
[[doctors.hours]]
days = ["friday", "monday"]
from = "09:00"
to = "12:00"

[[doctors.hours]]
days = ["monday"]
from = "11:00"
to = "13:00"
'''
    assert problems(tmp_path, text) == [
        "clinic.toml:11: doctors[1].hours[1].days: friday is the clinic's weekend",
        "clinic.toml:15: doctors[1].hours[2]: overlaps other hours on monday",
    ]


def test_missing_required_keys_say_what_belongs_there(tmp_path: Path) -> None:
    assert problems(tmp_path, '[[doctors]]\nname = "x"\n') == [
        "clinic.toml:1: clinic: missing; the file needs a [clinic] table",
        "clinic.toml:1: clinic.phone: missing; expected the clinic's number, shown to patients "
        "as caller id",
        "clinic.toml:1: doctors[1].key: missing; expected a short unique id such as "
        "\"dr-ahmadi\"",
        "clinic.toml:1: doctors[1].phone: missing; expected the doctor's consultation number",
        "clinic.toml:1: doctors[1].specialty: missing; expected a specialty such as "
        "\"cardiology\"",
    ]


def test_clinic_check_prints_problems_and_exits_2(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "clinic.toml"
    path.write_text('[clinic]\nphone = "1"\n', encoding="utf-8")
    assert main(["clinic", "check", str(path)]) == 2
    assert f"{path}:2: clinic.phone: '1' is not a valid Iranian number" in capsys.readouterr().err
    assert main(["clinic", "check", str(DEMO)]) == 0
    assert "ok (5 doctors, 2 closures)" in capsys.readouterr().out
