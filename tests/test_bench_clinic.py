"""The IVR load bench's clinic offers the same days and times at any hour, so its runs compare."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bench.ivr_load import round_the_clock_clinic
from clinic.clinic_file import read_clinic
from clinic.schedule import day_slots

DEMO_DOCTORS = ["dr-ahmadi", "dr-karimi", "dr-rahimi", "dr-hosseini", "dr-moradi"]


def test_every_demo_doctor_works_every_day_round_the_clock_with_no_closure(tmp_path: Path
                                                                           ) -> None:
    file = tmp_path / "clinic.toml"
    file.write_text(round_the_clock_clinic(), encoding="utf-8")
    clinic = read_clinic(file)
    assert [doctor.key for doctor in clinic.doctors] == DEMO_DOCTORS
    assert clinic.closures == () and clinic.weekend == ()
    friday, monday = dt.date(2026, 12, 4), dt.date(2026, 12, 7)
    for doctor in clinic.doctors:
        for day in (friday, monday):
            assert len(day_slots(day, doctor.hours)) == 24 * 4, (doctor.key, day)
