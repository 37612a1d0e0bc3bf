"""Builds the IVR from configuration: prompts, flows, services, the line and its listener."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

from db.booking import BookingService, ClinicProfile
from db.call_log import CallLog
from db.engine import Database, utc_now
from db.patient_calls import PatientCallStore
from db.surveys import SurveyStore
from ivr.actions.registry import ACTIONS
from ivr.call import ClinicFacts, OfficeHours, Services
from ivr.engine import FlowEngine
from ivr.fastagi import Access, FastAgiServer, Limits
from ivr.flow_store import FlowStore
from ivr.inbound import InboundLine
from ivr.outbound import PatientCallLine
from ivr.prompts import ClinicWords, PromptLibrary
from nobat.config import Config

MANIFEST = "manifest.toml"
IVR_ROUTE = "ivr"
"""The FastAGI path the dialplan calls: AGI(agi://host:port/ivr)."""
PATIENT_CALL_ROUTE = "patient-call"
"""The path [nobat-patient-call] calls when a patient answers a call nobat made."""


def clinic_words(profile: ClinicProfile | None) -> ClinicWords | None:
    """The clinic's own words that become prompts."""
    if profile is None:
        return None
    return ClinicWords(
        name={"fa": profile.name, "en": profile.name_en},
        address={"fa": profile.address, "en": profile.address_en or profile.address},
        doctors={d.key: {"fa": d.name, "en": d.name_en} for d in profile.doctors})


async def prompt_library(config: Config, booking: BookingService) -> PromptLibrary:
    """Prompts from the manifest, the rules and the clinic as the store holds it."""
    profile = await booking.clinic_profile()
    return PromptLibrary.load(config.ivr.prompts / MANIFEST, config.ivr.asterisk_prompts,
                              clinic_words(profile))


async def build_line(config: Config, database: Database,
                     clock: Callable[[], dt.datetime] = utc_now) -> InboundLine:
    """The inbound line, its flows loaded and checked; a broken folder raises StaffFileError."""
    booking = BookingService(database, config.booking, clock)
    profile = await booking.clinic_profile()
    store = FlowStore(config.ivr.flows, ACTIONS, lambda: prompt_library(config, booking),
                      watched=(config.ivr.prompts / MANIFEST,))
    snapshot = await store.start()
    services = Services(
        booking=booking, prompts=snapshot.prompts,
        office=OfficeHours(config.ivr.office, config.ivr.office_hours),
        clinic=ClinicFacts(profile.tz if profile else ZoneInfo("Asia/Tehran")),
        clock=clock, patient_calls=PatientCallStore(database, clock),
        surveys=SurveyStore(database, clock))
    return InboundLine(FlowEngine(ACTIONS), services, CallLog(database), store)


def fastagi_server(config: Config, line: InboundLine) -> FastAgiServer:
    """The FastAGI listener: the IVR at agi://host:port/ivr, answered patient calls at
    agi://host:port/patient-call."""
    assert line.services.patient_calls is not None
    access = Access(config.fastagi.secret.reveal(), config.fastagi.allow)
    patients = PatientCallLine(line, line.services.patient_calls, access.secret)
    return FastAgiServer({IVR_ROUTE: line.answer, PATIENT_CALL_ROUTE: patients.answer},
                         access, Limits(max_connections=config.fastagi.max_calls))
