"""Builds the IVR from configuration: prompts, flows, services, the line and its listener."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from db.availability import catalogs
from db.booking import BookingService, ClinicProfile
from db.call_log import CallLog
from db.engine import Clock, Database, utc_now
from db.models import Clinic
from db.patient_calls import PatientCallStore
from db.practices import Practice, practices
from db.surveys import SurveyStore
from db.unreadable import RowUnreadable, Unreadable
from ivr.actions.registry import ACTIONS
from ivr.call import ClinicFacts, DoctorChoice, OfficeHours, Services
from ivr.engine import FlowEngine
from ivr.fastagi import Access, FastAgiServer, Limits
from ivr.flow_store import FlowStore
from ivr.inbound import InboundLine
from ivr.outbound import PatientCallLine
from ivr.practice_routes import Routes
from ivr.prompts import ClinicWords, PromptLibrary
from nobat.config import Config

MANIFEST = "manifest.toml"
_PRACTICES_STAMP = select(func.count(Clinic.id), func.sum(Clinic.revision))
IVR_ROUTE = "ivr"
"""The FastAGI path the dialplan calls: AGI(agi://host:port/ivr)."""
PATIENT_CALL_ROUTE = "patient-call"
"""The path [nobat-patient-call] calls when a patient answers a call nobat made."""


def clinic_words(profile: ClinicProfile, folder: str = "", key: str = "") -> ClinicWords:
    """A practice's own words that become prompts; `folder` is its key when several share
    the line, `key` the only practice's (its words said into its folder too)."""
    return ClinicWords(
        name={"fa": profile.name, "en": profile.name_en},
        address={"fa": profile.address, "en": profile.address_en or profile.address},
        doctors={d.key: {"fa": d.name, "en": d.name_en} for d in profile.doctors},
        folder=folder, key=key)


def practice_words(profiles: Mapping[str | None, ClinicProfile | None], only: str = ""
                   ) -> list[ClinicWords]:
    """Every practice's own words, each in its own folder when several share the line; the
    only practice's (key `only`) both where they always were and in its own folder."""
    return [clinic_words(profile, key or "", "" if key else only)
            for key, profile in profiles.items() if profile]


class PracticeLines:
    """The line's routes from the practices in the store, built again at every flow load; each
    practice keeps its booking service (its catalog, its booking turns) from load to load."""

    def __init__(self, config: Config, database: Database, clock: Clock = utc_now) -> None:
        self.config = config
        self.database = database
        self.clock = clock
        self.patient_calls = PatientCallStore(database, clock)
        self.surveys = SurveyStore(database, clock)
        self._booking: dict[str | None, BookingService] = {}

    def booking(self, practice: str | None) -> BookingService:
        """The booking service of a practice (None: the only one)."""
        if practice not in self._booking:
            self._booking[practice] = BookingService(self.database, self.config.booking,
                                                     self.clock, practice)
        return self._booking[practice]

    async def routes(self) -> Routes:
        """Every practice with its services and words, the numbers and codes that reach each;
        with one practice (or none yet) the line is as it always was."""
        found = await practices(self.database)
        platform = len(found) > 1
        profiles, unreadable = await self.profiles(found)
        keys = list(profiles)
        only = found[0].key if found else ""
        library = PromptLibrary.load(self.config.ivr.prompts / MANIFEST,
                                     self.config.ivr.asterisk_prompts,
                                     practice_words(profiles, only))
        lines = {key or "": self._services(key, library, profiles[key], key or only)
                 for key in keys}
        choices = {doctor.id: DoctorChoice(key, doctor.key, doctor.specialty, lines[key])
                   for key, profile in profiles.items() if key and profile
                   for doctor in profile.doctors}
        codes = {code: choices[doctor] for p in found if platform
                 for code, doctor in p.doctor_codes.items() if doctor in choices}
        shared = dataclasses.replace(next(iter(lines.values())), prompts=library,
                                     doctor_codes=codes, practice="", office=self._office(None),
                                     platform_doctors=tuple(choices.values()))
        doctors = {ident: choice.practice for ident, choice in choices.items()}
        return Routes(library, lines, {n: p.key for p in found
                                       if platform and profiles[p.key] for n in p.numbers},
                      doctors, shared, unreadable)

    async def stamp(self) -> tuple[int, int]:
        """How many practices the store holds and the sum of their revisions: any load that
        changes one changes it."""
        rows = await self.database.rows(_PRACTICES_STAMP, None)
        return (rows[0][0], rows[0][1] or 0) if rows else (0, 0)

    async def profiles(self, found: list[Practice] | None = None
                       ) -> tuple[dict[str | None, ClinicProfile | None], tuple[Unreadable, ...]]:
        """Each practice's words and doctors by its key; with one practice (or none loaded
        yet), under None, as a deployment of one practice has always been served. A practice
        whose row cannot be read (edited by hand) has None, and is named with why."""
        found = await practices(self.database) if found is None else found
        if len(found) <= 1:
            only = await self._profile(None, found[0].key if found else "")
            return {None: only[0]}, only[1]
        read = await catalogs(self.database.rows, [p.id for p in found])
        profiles: dict[str | None, ClinicProfile | None] = {}
        unreadable: list[Unreadable] = []
        for practice in found:
            if practice.id in read.unreadable:
                profiles[practice.key] = None
                unreadable.append(Unreadable(practice.key, read.unreadable[practice.id]))
            elif practice.id in read.read:
                catalog = read.read[practice.id]
                self.booking(practice.key).availability.hold(practice.id, catalog)
                profiles[practice.key] = catalog.profile
            else:
                profiles[practice.key], left_out = await self._profile(practice.key,
                                                                       practice.key)
                unreadable += left_out
        return profiles, tuple(unreadable)

    async def _profile(self, key: str | None, practice: str
                       ) -> tuple[ClinicProfile | None, tuple[Unreadable, ...]]:
        """A practice's profile read alone; None, and why, if its row cannot be read."""
        try:
            return await self.booking(key).clinic_profile(), ()
        except RowUnreadable as exc:
            return None, (Unreadable(practice, exc.reason),)

    def _services(self, key: str | None, library: PromptLibrary,
                  profile: ClinicProfile | None, practice: str) -> Services:
        """A practice's services: its store, its own words, its office; `key` None for the
        only practice, whose words are where they always were."""
        return Services(booking=self.booking(key), prompts=library.practice(key or ""),
                        office=self._office(profile),
                        clinic=ClinicFacts(profile.tz if profile else ZoneInfo("Asia/Tehran")),
                        clock=self.clock, patient_calls=self.patient_calls,
                        surveys=self.surveys, practice=practice)

    def _office(self, profile: ClinicProfile | None) -> OfficeHours:
        """The practice's own office and hours where its clinic file names them, else the
        line's (config.toml's [ivr]), as a deployment of one practice has always had."""
        ivr = self.config.ivr
        office = profile.office if profile else None
        hours = profile.office_hours if profile else None
        return OfficeHours(ivr.office if office is None else office,
                           ivr.office_hours if hours is None else hours)


async def build_line(config: Config, database: Database, clock: Clock = utc_now
                     ) -> InboundLine:
    """The inbound line, its flows loaded and checked; a broken folder raises StaffFileError."""
    practices_ = PracticeLines(config, database, clock)
    store = FlowStore(config.ivr.flows, ACTIONS, practices_.routes,
                      watched=(config.ivr.prompts / MANIFEST,), practices=practices_.stamp)
    snapshot = await store.start()
    services = snapshot.routes.first
    return InboundLine(FlowEngine(ACTIONS), services, CallLog(database), store)


def fastagi_server(config: Config, line: InboundLine) -> FastAgiServer:
    """The FastAGI listener: the IVR at agi://host:port/ivr, answered patient calls at
    agi://host:port/patient-call."""
    assert line.services.patient_calls is not None
    access = Access(config.fastagi.secret.reveal(), config.fastagi.allow)
    patients = PatientCallLine(line, line.services.patient_calls, access.secret)
    return FastAgiServer({IVR_ROUTE: line.answer, PATIENT_CALL_ROUTE: patients.answer},
                         access, Limits(max_connections=config.fastagi.max_calls))
