"""Survey answers after phone consultations, and their averages for the status page."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sqlalchemy import select, true, update
from sqlalchemy.exc import IntegrityError

from clinic.calendar import Weekday
from db.engine import Clock, Database, utc_now
from db.models import Appointment, Clinic, Doctor, SurveyAnswer

QUESTIONS = ("audio", "doctor", "book_again")


@dataclass(frozen=True)
class SurveyAverage:
    """Averages over one group of answers (a doctor, or a week); None where nobody answered."""

    label: str
    """The doctor's name in English, or the ISO date of the week's Saturday."""
    answers: int
    audio: float | None
    doctor: float | None
    book_again: float | None
    """The share who would book again, 0 to 1."""
    label_fa: str = ""
    """The doctor's name in Persian (weeks: empty)."""
    practice: str = field(default="", compare=False)
    """The doctor's practice's key (weeks: empty): where the group is, not what it says."""


class SurveyStore:
    """Writes each answer as it is given, so a patient who hangs up mid-survey still counts."""

    def __init__(self, database: Database, clock: Clock = utc_now) -> None:
        self.db = database
        self.clock = clock

    async def answer(self, appointment_id: int, question: str, value: int | bool) -> None:
        """Store one answer of the survey about `appointment_id` (a later one replaces it)."""
        if question not in QUESTIONS:
            raise ValueError(f"unknown survey question {question!r}")

        async def run() -> None:
            async with self.db.writing() as session:
                now = self.clock()
                done = await session.execute(
                    update(SurveyAnswer).where(SurveyAnswer.appointment_id == appointment_id)
                    .values({question: value, "answered_at": now})
                    .execution_options(synchronize_session=False))
                if done.rowcount == 0:
                    doctor_id = await session.scalar(
                        select(Appointment.doctor_id).where(Appointment.id == appointment_id))
                    session.add(SurveyAnswer(appointment_id=appointment_id, doctor_id=doctor_id,
                                             answered_at=now, **{question: value}))

        try:
            await self.db.retry_locked(run)
        except IntegrityError:
            await self.db.retry_locked(run)  # another writer added the row first: update it

    async def averages(self, tz: ZoneInfo, weeks: int = 8, clinic: int | None = None
                       ) -> tuple[list[SurveyAverage], list[SurveyAverage]]:
        """Per doctor and per week (Saturday to Friday, newest first), over `weeks` weeks:
        one practice's doctors (by clinic id), or every practice's."""
        today = self.clock().astimezone(tz).date()
        first = week_start(today) - dt.timedelta(weeks=weeks - 1)
        since = dt.datetime.combine(first, dt.time(0), tzinfo=tz)
        async with self.db.reading() as session:
            rows = (await session.execute(
                select(Doctor.name, Doctor.name_en, Clinic.key, SurveyAnswer.answered_at,
                       SurveyAnswer.audio, SurveyAnswer.doctor, SurveyAnswer.book_again)
                .join(Doctor, SurveyAnswer.doctor_id == Doctor.id)
                .join(Clinic, Doctor.clinic_id == Clinic.id)
                .where(SurveyAnswer.answered_at >= since,
                       true() if clinic is None else Doctor.clinic_id == clinic))).all()
        by_doctor: dict[tuple[str, str, str],
                        list[tuple[int | None, int | None, bool | None]]] = defaultdict(list)
        by_week: dict[dt.date, list[tuple[int | None, int | None, bool | None]]] = \
            defaultdict(list)
        for name, name_en, practice, at, audio, doctor, again in rows:
            by_doctor[(name_en or name, name, practice)].append((audio, doctor, again))
            by_week[week_start(at.astimezone(tz).date())].append((audio, doctor, again))
        doctors = [_average(label, answers, label_fa, practice)
                   for (label, label_fa, practice), answers in sorted(by_doctor.items())]
        weeks_ = [_average(start.isoformat(), by_week[start])
                  for start in sorted(by_week, reverse=True)]
        return doctors, weeks_


def week_start(day: dt.date) -> dt.date:
    """The Saturday that begins `day`'s week."""
    return day - dt.timedelta(days=int(Weekday.of(day)))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _average(label: str, answers: list[tuple[int | None, int | None, bool | None]],
             label_fa: str = "", practice: str = "") -> SurveyAverage:
    return SurveyAverage(
        label, len(answers),
        _mean([a for a, _, _ in answers if a is not None]),
        _mean([d for _, d, _ in answers if d is not None]),
        _mean([1.0 if g else 0.0 for _, _, g in answers if g is not None]), label_fa,
        practice)
