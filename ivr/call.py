"""One inbound call as the flow sees it: its session, language, caller and the clinic's services."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from clinic.calendar import Weekday
from db.booking import AppointmentView, BookingService
from db.patient_calls import DuePatientCall, PatientCallStore
from db.surveys import SurveyStore
from ivr.prompts import PromptLibrary
from ivr.session import ALL_KEYS, CallSession, Entry


@dataclass(frozen=True)
class OfficeHours:
    """When the clinic's office answers transfers, per weekday, in the clinic's zone."""

    endpoint: str
    hours: dict[Weekday, tuple[int, int]]

    def open_at(self, moment: dt.datetime, tz: ZoneInfo) -> bool:
        """Whether a transfer now would reach someone."""
        local = moment.astimezone(tz)
        span = self.hours.get(Weekday.of(local.date()))
        minute = local.hour * 60 + local.minute
        return span is not None and span[0] <= minute < span[1]


@dataclass(frozen=True)
class ClinicFacts:
    """What the IVR tells callers about the clinic."""

    tz: ZoneInfo


@dataclass
class Services:
    """Everything a call may use, handed in by the composition root."""

    booking: BookingService
    prompts: PromptLibrary
    office: OfficeHours
    clinic: ClinicFacts
    clock: Callable[[], dt.datetime]
    patient_calls: PatientCallStore | None = None
    surveys: SurveyStore | None = None
    practice: str = ""
    """The key of the practice these services are (its flows, its calls on the page); "" on
    the shared number's menu."""
    doctor_codes: Mapping[str, DoctorChoice] = field(default_factory=dict)
    """On the shared number: each card code's doctor and practice (ivr/actions/practice.py)."""
    platform_doctors: tuple[DoctorChoice, ...] = ()
    """On the shared number: every practice's doctors, for a choice by specialty."""


@dataclass(frozen=True)
class DoctorChoice:
    """A doctor a caller of the shared number may choose (by the code on their practice's
    card, or by specialty), and that practice's line."""

    practice: str
    doctor: str
    """The doctor's key, for the prompt of their name."""
    specialty: str
    services: Services


@dataclass(frozen=True)
class CallAbout:
    """What a call nobat made to a patient is about: the planned call and its booking."""

    call: DuePatientCall
    booking: AppointmentView


class CallEnd(enum.StrEnum):
    """How a call to the IVR ended, as the call log stores it."""

    UNFINISHED = "unfinished"
    COMPLETED = "completed"
    """A flow ended it (a hangup node)."""
    NO_INPUT = "no_input"
    """A menu heard no key, try after try."""
    OFFICE = "office"
    """Put through to the office."""
    HUNG_UP = "hung_up"
    FAILED = "failed"
    """nobat failed on it: the error is logged."""


@dataclass
class Call:
    """The state of one call as it moves through flows and actions."""

    session: CallSession
    services: Services
    language: str = "fa"
    patient_phone: str | None = None
    closed_today: bool = False
    failed_menus: int = 0
    doctor_codes_tried: int = 0
    """Doctors' codes keyed wrong on the shared number in this call: bounded, so a call
    cannot walk through every code."""
    code_tries: int = 0
    """Booking codes keyed wrong (or not at all) on this call: after three, none is taken, so
    going back to the menu never buys more guesses."""
    values: dict[str, str] = field(default_factory=dict)
    """Numbers the caller keyed into collect nodes, by name."""
    step: str = "start"
    outcome: CallEnd = CallEnd.UNFINISHED
    started_at: dt.datetime | None = None
    """When the line answered it, for the status page's elapsed time."""
    about: CallAbout | None = None
    """Set on calls nobat made to a patient (reminder, absence, survey); None on inbound."""

    async def say(self, keys: Sequence[str], interrupt: str = ALL_KEYS) -> str | None:
        """Play prompts by name in the call's language; return a key that cut them short."""
        if not keys:
            return None
        files = self.services.prompts.files(self.language, keys)
        return await self.session.play(files, interrupt)

    async def ask(self, keys: Sequence[str], seconds: float) -> str | None:
        """Play prompts by name (any key stops them), then wait up to `seconds` for a key."""
        return await self.session.ask(self.services.prompts.files(self.language, keys), seconds)

    async def read_digits(self, keys: Sequence[str], *, max_digits: int, digit_wait: float
                          ) -> Entry:
        """Play prompts by name, then collect keys ('#' ends, '*' goes back)."""
        files = self.services.prompts.files(self.language, keys)
        return await self.session.read_digits(files, max_digits=max_digits,
                                              digit_wait=digit_wait)

    async def enter(self, services: Services) -> None:
        """Go on in a practice's line: its store, its words, whether it is closed today (the
        shared number is no practice's: it is never closed, whatever the first one is)."""
        self.services = services
        today = self.now().astimezone(services.clinic.tz).date()
        self.closed_today = bool(services.practice) and await services.booking.closed_on(today)

    def now(self) -> dt.datetime:
        """The clinic's clock (tests move it)."""
        return self.services.clock()
