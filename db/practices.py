"""The practices one store serves and what reaches each, so a call can be routed to its own."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from zoneinfo import ZoneInfo

from sqlalchemy import select

from db.engine import Database, one_line
from db.models import Clinic, ClinicNumber, Doctor
from db.unreadable import UNREADABLE, RowUnreadable


@dataclass(frozen=True)
class Practice:
    """One practice: its numbers (E.164) and its active doctors' codes, each to a doctor id."""

    id: int
    key: str
    name: str
    name_en: str
    phone: str
    timezone: str
    """Its zone's name, as the store keeps it (a hand edit may have made it nonsense)."""
    numbers: tuple[str, ...]
    doctor_codes: Mapping[str, int]


async def practices(database: Database) -> list[Practice]:
    """Every practice in the store, in the order they were first loaded."""
    async with database.reading() as session:
        clinics = (await session.execute(
            select(Clinic.id, Clinic.key, Clinic.name, Clinic.name_en, Clinic.phone,
                   Clinic.timezone)
            .order_by(Clinic.id))).all()
        numbers = (await session.execute(
            select(ClinicNumber.clinic_id, ClinicNumber.number)
            .order_by(ClinicNumber.number))).all()
        codes = (await session.execute(
            select(Doctor.clinic_id, Doctor.code, Doctor.id)
            .where(Doctor.code.is_not(None), Doctor.active.is_(True))
            .order_by(Doctor.code))).all()
    numbers_of: dict[int, list[str]] = defaultdict(list)
    for row in numbers:
        numbers_of[row.clinic_id].append(row.number)
    codes_of: dict[int, dict[str, int]] = defaultdict(dict)
    for row in codes:
        codes_of[row.clinic_id][row.code] = row.id
    return [Practice(id=clinic.id, key=clinic.key, name=clinic.name, name_en=clinic.name_en,
                     phone=clinic.phone, timezone=clinic.timezone,
                     numbers=tuple(numbers_of[clinic.id]),
                     doctor_codes=MappingProxyType(codes_of[clinic.id]))
            for clinic in clinics]


@dataclass(frozen=True)
class PracticeScope:
    """The one practice a status page login may see: its clinic id, key and time zone."""

    id: int
    key: str
    tz: ZoneInfo
    """Its clinic file's zone: its staff's page shows their own day and clock."""

    @classmethod
    def of_row(cls, clinic_id: int, key: str, zone: str) -> PracticeScope:
        """The scope of a stored practice; RowUnreadable when its zone was edited into one
        that does not exist (its staff are told so, not shown another zone's day)."""
        try:
            return cls(clinic_id, key, ZoneInfo(zone))
        except UNREADABLE as exc:
            raise RowUnreadable(one_line(exc)) from None
