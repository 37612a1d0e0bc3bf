"""Platform mode in the clinic files: numbers, doctors' codes and the practice's own office
checked with their lines, and a folder of practices read together, with clashes between its
files naming both."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinic.calendar import Weekday
from clinic.call_times import PracticeCallRules
from clinic.clinic_file import ClinicSpec, read_clinic, read_clinic_files, read_clinics
from clinic.staff_toml import StaffFileError
from nobat.cli import main
from tests.test_clinic_file import DEMO, problems


def practice(key: str, number: str, *doctors: tuple[str, str]) -> str:
    """A small practice file: its key, one number, and (key, code) for each doctor."""
    text = f'[clinic]\nkey = "{key}"\nphone = "{number}"\nnumbers = ["{number}"]\n'
    for doctor, code in doctors:
        text += (f'\n[[doctors]]\nkey = "{doctor}"\ncode = "{code}"\nspecialty = "cardiology"\n'
                 'phone = "09121000001"\n')
    return text


def folder(tmp_path: Path, **files: str) -> Path:
    """A folder of clinic files, each named after its keyword (a → a.toml)."""
    path = tmp_path / "clinics"
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / f"{name}.toml").write_text(text, encoding="utf-8")
    return path


def test_the_demo_lists_its_number_and_doctors_codes() -> None:
    spec = read_clinic(DEMO)
    assert spec.numbers == ("+982188776655",)
    assert [d.code for d in spec.doctors] == ["101", "102", "103", "104", "105"]


def test_numbers_and_codes_are_optional(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[clinic]\nphone = "02188776655"\n[[doctors]]\nkey = "dr-a"\n'
                    'specialty = "cardiology"\nphone = "09121000001"\n', encoding="utf-8")
    spec = read_clinic(path)
    assert (spec.numbers, spec.doctors[0].code) == ((), None)


def test_numbers_are_stored_as_e164_in_the_order_written(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[clinic]\nphone = "02188776655"\n'
                    'numbers = ["021 2222 3333", "+98 21 8877 6655"]\n', encoding="utf-8")
    assert read_clinic(path).numbers == ("+982122223333", "+982188776655")


def test_a_bad_or_repeated_number_names_its_line(tmp_path: Path) -> None:
    text = ('[clinic]\nphone = "02188776655"\n'
            'numbers = ["021 2222 3333", "12", 2188776655, "+982122223333"]\n')
    assert problems(tmp_path, text) == [
        "clinic.toml:3: clinic.numbers[2]: '12' is not a valid Iranian number",
        "clinic.toml:3: clinic.numbers[3]: expected a phone number as a string, got a whole "
        "number 2188776655",
        "clinic.toml:3: clinic.numbers[4]: '+982122223333' is listed twice",
    ]
    assert problems(tmp_path, '[clinic]\nphone = "02188776655"\nnumbers = "02122223333"\n') == [
        "clinic.toml:3: clinic.numbers: expected a list of the numbers that reach this "
        "practice, got a string '02122223333'"]


@pytest.mark.parametrize(("code", "message"), [
    ('"1"', "'1' is not a doctor's code; expected 2 to 6 digits such as \"101\""),
    ('"1234567"', "'1234567' is not a doctor's code; expected 2 to 6 digits such as \"101\""),
    ('"10a"', "'10a' is not a doctor's code; expected 2 to 6 digits such as \"101\""),
    ('"۱۰۱"', "'۱۰۱' is not a doctor's code; expected 2 to 6 digits such as \"101\""),
    ("101", "expected the doctor's code as a string of digits, such as \"101\", got a whole "
            "number 101"),
])
def test_a_bad_doctor_code_names_its_line(tmp_path: Path, code: str, message: str) -> None:
    text = practice("p", "02188776655", ("dr-a", "101")).replace('code = "101"', f"code = {code}")
    assert problems(tmp_path, text) == [f"clinic.toml:8: doctors[1].code: {message}"]


def test_a_repeated_doctor_code_names_its_line(tmp_path: Path) -> None:
    text = practice("p", "02188776655", ("dr-a", "101"), ("dr-b", "102"), ("dr-c", "101"))
    assert problems(tmp_path, text) == [
        "clinic.toml:20: doctors[3].code: code '101' is already doctor 'dr-a''s"]


def practice_with(tmp_path: Path, lines: str) -> ClinicSpec:
    """A small practice whose [clinic] table goes on with `lines`, read back."""
    path = tmp_path / "c.toml"
    path.write_text(practice("p", "02188776655") + lines, encoding="utf-8")
    return read_clinic(path)


def test_a_practice_may_name_its_own_office_its_hours_and_its_trunk(tmp_path: Path) -> None:
    spec = practice_with(tmp_path, 'office = "PJSIP/office-shiraz"\n'
                         'dial = "PJSIP/{national}@shiraz-trunk"\n'
                         '[clinic.office_hours]\nsaturday = "09:00-12:30"\nthu = "16:00-18:00"\n')
    assert spec.office == "PJSIP/office-shiraz"
    assert spec.dial == "PJSIP/{national}@shiraz-trunk"
    assert spec.office_hours == {Weekday.SATURDAY: (9 * 60, 12 * 60 + 30),
                                 Weekday.THURSDAY: (16 * 60, 18 * 60)}
    demo = read_clinic(DEMO)
    assert (demo.office, demo.office_hours, demo.dial) == (None, None, None)


@pytest.mark.parametrize(("line", "message"), [
    ('office = "PJSIP/office-a,30"', "clinic.office: 'PJSIP/office-a,30' is not a dial target; "
     "expected TECH/resource such as \"PJSIP/office\" (several joined by &), without spaces, "
     "commas, quotes or ${...}"),
    ('office = "office-a"', "clinic.office: 'office-a' is not a dial target"),
    ('office = "PJSIP/${EVIL}"', "clinic.office: 'PJSIP/${EVIL}' is not a dial target"),
    ("office = 100", "clinic.office: expected a string, got a whole number 100"),
    ('office_hours = { saturday = "12:00-09:00" }',
     "clinic.office_hours: saturday: '12:00-09:00' ends before it starts"),
    ('office_hours = { funday = "09:00-12:00" }', "clinic.office_hours: unknown weekday 'funday'"),
    ('office_hours = { sunday = "09:00" }',
     "clinic.office_hours: sunday: expected \"HH:MM-HH:MM\" such as \"08:00-20:00\""),
    ('office_hours = "09:00-12:00"', "clinic.office_hours: expected a table of weekday = "
     "\"HH:MM-HH:MM\", got a string '09:00-12:00'"),
    ('dial = "PJSIP/office@trunk"', "clinic.dial: expected a dial string with {national} or "
     "{number}"),
])
def test_a_bad_office_office_hours_or_dial_names_its_line(tmp_path: Path, line: str, message: str
                                                     ) -> None:
    text = practice("p", "02188776655").replace("[clinic]\n", f"[clinic]\n{line}\n")
    [problem] = problems(tmp_path, text)
    assert problem.startswith(f"clinic.toml:2: {message}")


def test_a_practice_may_set_its_trunks_channels_and_its_own_call_times(tmp_path: Path) -> None:
    spec = practice_with(tmp_path, "max_channels = 6\n"
                         '[clinic.patient_calls]\nquiet_hours = "20:00-09:30"\n'
                         'no_call_days = ["thursday", "friday"]\nreminder_at = "17:30"\n')
    assert spec.max_channels == 6
    assert spec.call_times == PracticeCallRules(
        quiet_hours=(20 * 60, 9 * 60 + 30), reminder_at=17 * 60 + 30,
        no_call_days=frozenset({Weekday.THURSDAY, Weekday.FRIDAY}))
    assert PracticeCallRules.of_text(spec.call_times.text()) == spec.call_times


def test_a_practice_may_choose_which_calls_its_patients_get_and_how_they_are_tried(
        tmp_path: Path) -> None:
    spec = practice_with(tmp_path, '[clinic.patient_calls]\nreminders = false\n'
                         'reminder_days_before = 2\nabsence_calls = false\n'
                         'survey = "call-back"\nsurvey_after_minutes = 20\n'
                         'ring_seconds = 45\nattempts = 5\nretry_minutes = 60\n')
    assert spec.call_times == PracticeCallRules(
        reminders=False, reminder_days_before=2, absence_calls=False, survey="call-back",
        survey_after_minutes=20, ring_seconds=45, attempts=5, retry_minutes=60)
    assert PracticeCallRules.of_text(spec.call_times.text()) == spec.call_times
    demo = read_clinic(DEMO)
    assert (demo.max_channels, demo.call_times.text()) == (None, None)


@pytest.mark.parametrize(("lines", "message"), [
    ("max_channels = 2", "clinic.toml:2: clinic.max_channels: 2 is out of range; expected 3 "
     "(a consultation's two legs and a call to a patient) to 10000"),
    ('max_channels = "ten"', "clinic.toml:2: clinic.max_channels: expected a whole number"),
    ('[clinic.patient_calls]\nquiet_hours = "21:00"\nreminder_at = "12:00"', "clinic.toml:6: "
     "clinic.patient_calls.quiet_hours: expected \"HH:MM-HH:MM\" such as \"21:00-08:00\""),
    ('[clinic.patient_calls]\nquiet_hours = "17:00-09:00"', "clinic.toml:6: "
     "clinic.patient_calls.quiet_hours: set reminder_at beside it: config.toml's may fall "
     "inside the other"),
    ('[clinic.patient_calls]\nreminder_at = "23:30"', "clinic.toml:6: "
     "clinic.patient_calls.reminder_at: set quiet_hours beside it"),
    ('[clinic.patient_calls]\nno_call_days = ["saturday", "sunday", "monday", "tuesday", '
     '"wednesday", "thursday", "friday"]', "clinic.toml:6: clinic.patient_calls.no_call_days: "
     "every day is a no-call day"),
    ('[clinic.patient_calls]\nquiet_hours = "20:00-09:00"\nreminder_at = "08:30"',
     "clinic.toml:7: clinic.patient_calls.reminder_at: falls inside quiet_hours"),
    ('[clinic.patient_calls]\nmax_calls = 5', "clinic.toml:6: clinic.patient_calls."
     "max_calls: unknown key; expected one of quiet_hours, no_call_days, reminder_at, "
     "reminders, reminder_days_before, absence_calls, survey, survey_after_minutes, "
     "ring_seconds, attempts, retry_minutes"),
    ('[clinic.patient_calls]\nreminders = "no"', "clinic.toml:6: clinic.patient_calls."
     "reminders: expected true or false, got a string 'no'"),
    ('[clinic.patient_calls]\nsurvey = "sometimes"', "clinic.toml:6: clinic.patient_calls."
     "survey: expected one of in-call, call-back, off, got 'sometimes'"),
    ('[clinic.patient_calls]\nattempts = 0', "clinic.toml:6: clinic.patient_calls.attempts: "
     "expected a whole number from 1 to 10, got 0"),
    ('[clinic.patient_calls]\nring_seconds = 600', "clinic.toml:6: clinic.patient_calls."
     "ring_seconds: expected a whole number from 5 to 300, got 600"),
    ('[clinic.patient_calls]\nreminder_days_before = 8', "clinic.toml:6: clinic.patient_calls."
     "reminder_days_before: expected a whole number from 0 to 7, got 8"),
    ('[clinic.patient_calls]\nsurvey_after_minutes = 0', "clinic.toml:6: clinic.patient_calls."
     "survey_after_minutes: expected a whole number from 1 to 1440, got 0"),
    ('[clinic.patient_calls]\nretry_minutes = "30"', "clinic.toml:6: clinic.patient_calls."
     "retry_minutes: expected a whole number, got a string '30'"),
])
def test_a_bad_cap_or_call_time_names_its_line(tmp_path: Path, lines: str, message: str) -> None:
    base = practice("p", "02188776655")  # four lines: a table written after it is line 5
    text = base + lines + "\n" if lines.startswith("[") else base.replace(
        "[clinic]\n", f"[clinic]\n{lines}\n")
    [problem] = problems(tmp_path, text)
    assert problem.startswith(message)


def test_a_folder_gives_one_practice_per_toml_file_by_name(tmp_path: Path) -> None:
    path = folder(tmp_path, b=practice("b", "02122223333", ("dr-a", "201")),
                  a=practice("a", "02188776655", ("dr-a", "101")))
    (path / "notes.txt").write_text("not a clinic")
    (path / "old").mkdir()
    (path / "old" / "c.toml").write_text("[clinic\n")
    assert [spec.key for spec in read_clinics(path)] == ["a", "b"]
    assert [spec.key for spec in read_clinics(path / "b.toml")] == ["b"]


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    path = folder(tmp_path)
    with pytest.raises(StaffFileError) as caught:
        read_clinics(path)
    assert str(caught.value) == f"{path}: no clinic files (*.toml) in it"


def test_every_problem_of_every_file_is_listed_and_clashes_name_both_files(
        tmp_path: Path) -> None:
    path = folder(
        tmp_path,
        a=practice("a", "02188776655", ("dr-a", "101"), ("dr-b", "102")),
        b=practice("a", "02122223333", ("dr-a", "201")),
        c=practice("c", "021 8877 6655", ("dr-a", "301"), ("dr-x", "102")),
        d='[clinic]\nphone = "1"\n')
    a, b, c, d = (path / f"{name}.toml" for name in "abcd")
    with pytest.raises(StaffFileError) as caught:
        read_clinics(path)
    assert str(caught.value).splitlines() == [
        f"{b}:2: clinic.key: 'a' is already the key of {a}:2",
        f"{c}:4: clinic.numbers[1]: +982188776655 already reaches clinic 'a' ({a}:4)",
        f"{c}:14: doctors[2].code: '102' is already the code of dr-b in clinic 'a' ({a}:14)",
        f"{d}:2: clinic.phone: '1' is not a valid Iranian number",
    ]


def test_a_file_is_refused_for_a_clash_with_any_file_before_it(tmp_path: Path) -> None:
    path = folder(tmp_path, a=practice("a", "02188776655"), b=practice("b", "02122223333"),
                  c=practice("c", "02122223333"))
    reads = read_clinic_files(path)
    assert [(Path(r.file).name, r.spec is not None, len(r.problems)) for r in reads] == [
        ("a.toml", True, 0), ("b.toml", True, 0), ("c.toml", True, 1)]
    assert "already reaches clinic 'b'" in str(reads[2].problems[0])


def test_clinic_check_on_a_folder_reports_each_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = folder(tmp_path, a=practice("a", "02188776655", ("dr-a", "101")),
                  b=practice("b", "02122223333", ("dr-a", "101")))
    assert main(["clinic", "check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == f"{path / 'a.toml'}: ok (1 doctors, 0 closures)\n"
    assert err == (f"{path / 'b.toml'}:8: doctors[1].code: '101' is already the code of dr-a "
                   f"in clinic 'a' ({path / 'a.toml'}:8)\n")
    (path / "b.toml").write_text(practice("b", "02122223333", ("dr-a", "201")))
    assert main(["clinic", "check", str(path)]) == 0
    assert capsys.readouterr().out.count(": ok (1 doctors, 0 closures)") == 2
    assert main(["clinic", "check", str(folder(tmp_path / "x"))]) == 2
    assert "no clinic files (*.toml) in it" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["../../x", "", "a b", "a&b", "a,b", "a/b", "-a"])
def test_a_practice_key_is_a_safe_folder_name(tmp_path: Path, key: str) -> None:
    text = practice("p", "02188776655").replace('key = "p"', f'key = "{key}"')
    [problem] = problems(tmp_path, text)
    assert problem.startswith(f"clinic.toml:2: clinic.key: {key!r} is not a key; expected "
                              "letters, digits, '-' and '_'")
