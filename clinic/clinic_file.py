"""The clinic TOML that staff edit: read, checked as a whole, and turned into plain values."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clinic import phones
from clinic.calendar import Weekday, parse_date
from clinic.call_times import (
    COUNTS,
    SURVEY_MODES,
    PracticeCallRules,
    is_quiet,
    parse_no_call_days,
    parse_quiet_hours,
)
from clinic.office import (
    OFFICE_HOURS_FORMAT,
    OfficeWeek,
    parse_dial_target,
    parse_office_hours,
)
from clinic.schedule import HoursRule, VisitKind, parse_clock
from clinic.specialties import SPECIALTIES
from clinic.staff_toml import (
    KeyPath,
    Problem,
    StaffFileError,
    StaffToml,
    describe,
    in_range,
    one_of,
    staff_bytes,
)

LANGUAGES = ("fa", "en")


@dataclass(frozen=True)
class DoctorSpec:
    """A doctor as the clinic file describes them; `key` ties the file to the database."""

    key: str
    name: str
    name_en: str
    specialty: str
    phone: str
    languages: tuple[str, ...]
    hours: tuple[HoursRule, ...]
    code: str | None = None
    """Printed on the practice's card; a caller keys it on a platform number shared by
    several practices, so it is unique across every practice of the store."""


@dataclass(frozen=True)
class ClosureSpec:
    """Whole local days when the clinic (doctor None) or one doctor sees nobody."""

    doctor: str | None
    first_day: dt.date
    last_day: dt.date
    reason: str


@dataclass(frozen=True)
class ClinicSpec:
    """Everything the clinic file says, checked."""

    key: str
    name: str
    name_en: str
    phone: str
    address: str
    address_en: str
    timezone: str
    weekend: tuple[Weekday, ...]
    doctors: tuple[DoctorSpec, ...]
    closures: tuple[ClosureSpec, ...]
    numbers: tuple[str, ...] = ()
    """The numbers (DIDs) that reach this practice, in E.164; one practice each."""
    office: str | None = None
    """Where a caller who asks for the office is put through; None: config's [ivr] office."""
    office_hours: OfficeWeek | None = None
    """When that office answers; None: config's [ivr] office_hours."""
    dial: str | None = None
    """How its calls are rung (its own trunk); None: config's [consultations] dial."""
    max_channels: int | None = None
    """The most outbound channels its calls hold at once (its trunk's); None: only the line's
    cap and share."""
    call_times: PracticeCallRules = field(default_factory=PracticeCallRules)
    """When its patients may be rung, which calls they get and how each is tried; unset
    parts: config's [patient_calls]."""


def read_clinic(path: Path | str) -> ClinicSpec:
    """Read and check a clinic file; raises StaffFileError listing every problem."""
    return parse_clinic(StaffToml.load(path))


@dataclass(frozen=True)
class ClinicRead:
    """One file of a platform's practices: its spec unless the file itself is broken, and its
    problems, its own or clashes with a file read before it (then it must not be loaded)."""

    file: str
    spec: ClinicSpec | None
    problems: tuple[Problem, ...]
    source: bytes = b""
    """The bytes read and checked: a load keeps their digest (db/clinic_sync.py)."""


def read_clinics(path: Path | str) -> list[ClinicSpec]:
    """Every practice of a clinic file or folder; raises StaffFileError listing every problem
    of every file, clashes between files too."""
    reads = read_clinic_files(path)
    problems = [problem for read in reads for problem in read.problems]
    if problems:
        raise StaffFileError(problems)
    return [read.spec for read in reads if read.spec is not None]


def read_clinic_files(path: Path | str) -> list[ClinicRead]:
    """Read one clinic file, or each *.toml of a folder (by name, not recursive), each checked
    alone and then against the files before it, so that every good file can be loaded though
    another is broken; an empty folder raises StaffFileError."""
    reads: list[ClinicRead] = []
    earlier: list[tuple[StaffToml, ClinicSpec]] = []
    for file in clinic_files(Path(path)):
        try:
            source = staff_bytes(file)
            doc = StaffToml.parse(source, str(file))
            spec = parse_clinic(doc)
        except StaffFileError as exc:
            reads.append(ClinicRead(str(file), None, tuple(exc.problems)))
            continue
        for other, other_spec in earlier:
            _clashes(doc, spec, other, other_spec)
        earlier.append((doc, spec))
        reads.append(ClinicRead(doc.file, spec, tuple(sorted(
            doc.problems, key=lambda p: (p.line or 0, p.key))), source))
    return reads


def clinic_files(path: Path) -> list[Path]:
    """The file itself, or a folder's *.toml by name; an empty folder raises StaffFileError."""
    if not path.is_dir():
        return [path]
    files = sorted((f for f in path.glob("*.toml") if f.is_file()), key=lambda f: f.name)
    if not files:
        raise StaffFileError([Problem(str(path), None, "", "no clinic files (*.toml) in it")])
    return files


def _clashes(doc: StaffToml, spec: ClinicSpec, other: StaffToml, other_spec: ClinicSpec
             ) -> None:
    """What the platform cannot tell apart: a key, a number or a doctor's code in two files."""
    def at(path: KeyPath) -> str:
        return f"{other.file}:{other.line_of(path)}"

    if spec.key == other_spec.key:
        doc.error(("clinic", "key"), f"{spec.key!r} is already the key of {at(('clinic', 'key'))}")
    for index, number in enumerate(spec.numbers):
        if number in other_spec.numbers:
            where = at(("clinic", "numbers", other_spec.numbers.index(number)))
            doc.error(("clinic", "numbers", index),
                      f"{number} already reaches clinic {other_spec.key!r} ({where})")
    codes = {d.code: (i, d.key) for i, d in enumerate(other_spec.doctors) if d.code}
    for index, doctor in enumerate(spec.doctors):
        if doctor.code in codes:
            other_index, other_key = codes[doctor.code]
            where = at(("doctors", other_index, "code"))
            doc.error(("doctors", index, "code"), f"{doctor.code!r} is already the code of "
                      f"{other_key} in clinic {other_spec.key!r} ({where})")


def parse_clinic(doc: StaffToml) -> ClinicSpec:
    """Check a parsed clinic file and build its spec."""
    doc.table((), ("clinic", "doctors", "closures"))
    top = doc.table(("clinic",), ("key", "name", "name_en", "phone", "numbers", "address",
                                  "address_en", "timezone", "weekend", "office",
                                  "office_hours", "dial", "max_channels", "patient_calls"))
    if "clinic" not in doc.data:
        doc.error(("clinic",), "missing; the file needs a [clinic] table")
    path: KeyPath = ("clinic",)
    name = doc.value(top, path, "name", str, default="")
    timezone = doc.value(top, path, "timezone", str, default="Asia/Tehran", convert=_zone)
    weekend = doc.value(top, path, "weekend", list, default=(Weekday.FRIDAY,), convert=_weekdays,
                        what="a list of weekday names")
    doctors = _doctors(doc, tuple(weekend or ()))
    keys = {d.key for d in doctors}
    closures = _closures(doc, keys)
    spec = ClinicSpec(
        key=doc.value(top, path, "key", str, default="main", convert=_practice_key),
        name=name,
        name_en=doc.value(top, path, "name_en", str, default=name),
        phone=doc.value(top, path, "phone", str, convert=phones.normalize,
                        what="the clinic's number, shown to patients as caller id") or "",
        address=doc.value(top, path, "address", str, default=""),
        address_en=doc.value(top, path, "address_en", str, default=""),
        timezone=timezone or "Asia/Tehran",
        weekend=tuple(weekend or ()),
        doctors=tuple(doctors),
        closures=tuple(closures),
        numbers=_numbers(doc, top, path),
        office=doc.value(top, path, "office", str, default=None, convert=parse_dial_target),
        office_hours=doc.value(top, path, "office_hours", dict, default=None,
                               convert=parse_office_hours,
                               what=OFFICE_HOURS_FORMAT),
        dial=doc.value(top, path, "dial", str, default=None,
                       convert=phones.parse_dial_template),
        max_channels=doc.value(top, path, "max_channels", int, default=None,
                               convert=_channels),
        call_times=_call_times(doc),
    )
    doc.raise_problems()
    return spec


_PRACTICE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A practice's key names its folders of prompts and flows: no path, no list separator."""


def _practice_key(text: str) -> str:
    if not _PRACTICE_KEY.fullmatch(text):
        raise ValueError(f"{text!r} is not a key; expected letters, digits, '-' and '_' "
                         "(up to 64), such as \"shiraz-eye\"")
    return text


def _numbers(doc: StaffToml, top: dict[str, Any], parent: KeyPath) -> tuple[str, ...]:
    items = doc.value(top, parent, "numbers", list, default=[],
                      what="a list of the numbers that reach this practice")
    numbers: list[str] = []
    for index, item in enumerate(items or ()):
        path = (*parent, "numbers", index)
        if not isinstance(item, str):
            doc.error(path, f"expected a phone number as a string, got {describe(item)}")
            continue
        try:
            number = phones.normalize(item)
        except ValueError as exc:
            doc.error(path, str(exc))
            continue
        if number in numbers:
            doc.error(path, f"{item!r} is listed twice")
            continue
        numbers.append(number)
    return tuple(numbers)


def _channels(count: int) -> int:
    if not 3 <= count <= 10000:
        raise ValueError(f"{count} is out of range; expected 3 (a consultation's two legs and "
                         "a call to a patient) to 10000")
    return count


def _call_times(doc: StaffToml) -> PracticeCallRules:
    """[clinic.patient_calls]: the practice's own rules for calling its patients: when,
    which calls and how each is tried."""
    path: KeyPath = ("clinic", "patient_calls")
    table = doc.table(path, tuple(f.name for f in dataclasses.fields(PracticeCallRules)))
    times = PracticeCallRules(
        quiet_hours=doc.value(table, path, "quiet_hours", str, default=None,
                              convert=parse_quiet_hours),
        no_call_days=doc.value(table, path, "no_call_days", list, default=None,
                               convert=parse_no_call_days, what="a list of weekday names"),
        reminder_at=doc.value(table, path, "reminder_at", str, default=None,
                              convert=parse_clock),
        reminders=doc.value(table, path, "reminders", bool, default=None),
        absence_calls=doc.value(table, path, "absence_calls", bool, default=None),
        survey=doc.value(table, path, "survey", str, default=None, convert=one_of(SURVEY_MODES)),
        **{name: doc.value(table, path, name, int, default=None, convert=in_range(*bounds))
           for name, bounds in COUNTS.items()})
    if ("reminder_at" in table) != ("quiet_hours" in table):
        given, missing = ("quiet_hours", "reminder_at") if "quiet_hours" in table \
            else ("reminder_at", "quiet_hours")
        doc.error(path + (given,), f"set {missing} beside it: config.toml's may fall inside "
                  "the other, and a reminder then never comes at its time")
    elif times.reminder_at is not None and times.quiet_hours is not None and \
            is_quiet(times.reminder_at, times.quiet_hours):
        doc.error(path + ("reminder_at",), "falls inside quiet_hours, when nobody is called")
    return times


def _code(text: str) -> str:
    if not (text.isascii() and text.isdigit() and 2 <= len(text) <= 6):
        raise ValueError(f"{text!r} is not a doctor's code; expected 2 to 6 digits such as "
                         "\"101\"")
    return text


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; expected a name like Asia/Tehran") from None
    return name


def _weekdays(names: list[Any]) -> tuple[Weekday, ...]:
    if not all(isinstance(n, str) for n in names):
        raise ValueError("expected weekday names such as \"friday\"")
    return tuple(Weekday.parse(n) for n in names)


def _languages(codes: list[Any]) -> tuple[str, ...]:
    bad = [c for c in codes if c not in LANGUAGES]
    if bad or not codes:
        raise ValueError(f"expected a list of {', '.join(LANGUAGES)}, got {codes!r}")
    return tuple(codes)


def _specialty(key: str) -> str:
    if key not in SPECIALTIES:
        raise ValueError(f"unknown specialty {key!r}; expected one of {', '.join(SPECIALTIES)}")
    return key


def _kinds(names: list[Any]) -> frozenset[VisitKind]:
    try:
        kinds = frozenset(VisitKind(n) for n in names)
    except ValueError:
        choices = ", ".join(VisitKind)
        raise ValueError(f"expected visit kinds from {choices}, got {names!r}") from None
    if not kinds:
        raise ValueError("expected at least one visit kind")
    return kinds


def _doctors(doc: StaffToml, weekend: tuple[Weekday, ...]) -> list[DoctorSpec]:
    items = doc.data.get("doctors", [])
    if not isinstance(items, list):
        doc.error(("doctors",), "expected [[doctors]] tables")
        return []
    doctors: list[DoctorSpec] = []
    seen: set[str] = set()
    codes: dict[str, str] = {}
    for index, _ in enumerate(items):
        path: KeyPath = ("doctors", index)
        table = doc.table(path, ("key", "code", "name", "name_en", "specialty", "phone",
                                 "languages", "hours"))
        key = doc.value(table, path, "key", str, what="a short unique id such as \"dr-ahmadi\"")
        if key in seen:
            doc.error(path + ("key",), f"doctor {key!r} is listed twice")
        seen.add(key or "")
        code = doc.value(table, path, "code", str, default=None, convert=_code,
                         what="the doctor's code as a string of digits, such as \"101\"")
        if code in codes:
            doc.error(path + ("code",), f"code {code!r} is already doctor {codes[code]!r}'s")
        elif code is not None:
            codes[code] = key or ""
        name = doc.value(table, path, "name", str, default="")
        doctors.append(DoctorSpec(
            key=key or "",
            name=name,
            name_en=doc.value(table, path, "name_en", str, default=name),
            specialty=doc.value(table, path, "specialty", str, convert=_specialty,
                                what="a specialty such as \"cardiology\"") or "",
            phone=doc.value(table, path, "phone", str, convert=phones.normalize,
                            what="the doctor's consultation number") or "",
            languages=doc.value(table, path, "languages", list, default=["fa"],
                                convert=_languages) or ("fa",),
            hours=tuple(_hours(doc, path, table.get("hours", []), weekend)),
            code=code,
        ))
    return doctors


def _hours(doc: StaffToml, parent: KeyPath, items: Any, weekend: tuple[Weekday, ...]
           ) -> list[HoursRule]:
    if not isinstance(items, list):
        doc.error(parent + ("hours",), "expected [[doctors.hours]] tables")
        return []
    rules: list[HoursRule] = []
    for index, _ in enumerate(items):
        path = (*parent, "hours", index)
        table = doc.table(path, ("days", "from", "to", "slot_minutes", "kinds"))
        days = doc.value(table, path, "days", list, convert=_weekdays,
                         what="a list of weekday names") or ()
        start = doc.value(table, path, "from", str, convert=parse_clock)
        end = doc.value(table, path, "to", str, convert=parse_clock)
        slot = doc.value(table, path, "slot_minutes", int, default=15)
        kinds = doc.value(table, path, "kinds", list, default=["in_person"], convert=_kinds)
        for day in days:
            if day in weekend:
                doc.error(path + ("days",), f"{day.name.lower()} is the clinic's weekend")
        if start is None or end is None or kinds is None:
            continue
        try:
            new = [HoursRule(day, start, end, slot, kinds) for day in days]
        except ValueError as exc:
            doc.error(path, str(exc))
            continue
        for rule in new:
            if any(rule.overlaps(old) for old in rules):
                doc.error(path, f"overlaps other hours on {rule.weekday.name.lower()}")
        rules.extend(new)
    return rules


def _closures(doc: StaffToml, doctor_keys: set[str]) -> list[ClosureSpec]:
    items = doc.data.get("closures", [])
    if not isinstance(items, list):
        doc.error(("closures",), "expected [[closures]] tables")
        return []
    closures: list[ClosureSpec] = []
    for index, _ in enumerate(items):
        path: KeyPath = ("closures", index)
        table = doc.table(path, ("doctor", "from", "to", "reason"))
        doctor = doc.value(table, path, "doctor", str, default=None)
        if doctor is not None and doctor not in doctor_keys:
            doc.error(path + ("doctor",), f"no doctor has key {doctor!r}")
        first = doc.value(table, path, "from", (str, dt.date), convert=_date,
                          what="a date: Jalali \"1405/09/15\" or 2026-12-06")
        last = doc.value(table, path, "to", (str, dt.date), default=first, convert=_date,
                         what="a date: Jalali \"1405/09/15\" or 2026-12-06")
        reason = doc.value(table, path, "reason", str, default="")
        if first is None or last is None:
            continue
        if last < first:
            doc.error(path + ("to",), "ends before it starts")
            continue
        closures.append(ClosureSpec(doctor, first, last, reason))
    return closures


def _date(value: str | dt.date) -> dt.date:
    if isinstance(value, dt.datetime):
        raise ValueError("expected a date without a time")
    return value if isinstance(value, dt.date) else parse_date(value)
