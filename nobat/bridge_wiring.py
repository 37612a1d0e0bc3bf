"""Builds the dialer from configuration: AMI client, call plans, stores, patient calls."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import os
import socket
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from bridge.ami_client import AmiClient
from bridge.dialer import Dialer, Tuning
from bridge.outbound import CallPlan, PlanFactory
from bridge.patient_call import PatientCalls
from clinic.call_times import CallHours, CallTries, ReminderTimes, retry_time
from clinic.phones import national
from clinic.schedule import TEHRAN
from db.consultations import ConsultationStore, RetryPolicy
from db.engine import Clock, Database, one_line, utc_now
from db.leases import LeasedClaim
from db.patient_calls import CallPlanning, PatientCallClaim, PatientCallStore
from db.practices import practices
from db.unreadable import UNREADABLE
from ivr.prompts import PromptLibrary
from nobat.config import Config
from nobat.ivr_wiring import MANIFEST
from protocol.call_token import call_token

log = logging.getLogger("nobat")


def phone_fields(number: str) -> Mapping[str, str]:
    """What a dial string may name: {number} (E.164) and {national} (09…)."""
    return {"number": number, "national": national(number)}


def per_practice(plan: CallPlan, prompts: PromptLibrary, planning: CallPlanning,
                 patient_call: bool = False) -> PlanFactory:
    """Each call dialled by `plan` as its own practice: the number and name of its doctor's
    clinic, as the store held them when the call was claimed (platform mode keeps many
    clinics in one store; a clinic loaded or changed since start shows at once), its own
    prompts (its doctors' names, the words that name it) and trunk, if it has its own, and
    its own rules for its patients: how long a `patient_call` rings, whether a
    consultation's patient stays on for the survey."""

    def made(claim: LeasedClaim) -> CallPlan:
        practice = claim.practice
        calling = planning.without_zone(practice.rules)
        return dataclasses.replace(
            plan, clinic_number=practice.phone, clinic_name=practice.name,
            prompt_file=prompts.practice(practice.folder).file,
            dial_template=practice.dial or plan.dial_template,
            ring_seconds=calling.tries.ring_seconds if patient_call else plan.ring_seconds,
            survey_in_call=calling.survey_in_call)

    return made


def outbound_prompts(config: Config) -> PromptLibrary:
    """Where Asterisk finds the prompts calls nobat makes announce, each practice's own."""
    return PromptLibrary.load(config.ivr.prompts / MANIFEST, config.ivr.asterisk_prompts)


async def build_dialer(config: Config, database: Database) -> Dialer | None:
    """The dialer, or None when no AMI secret is set (no consultation or patient call is
    then dialled)."""
    ami_config = config.ami
    if not ami_config.secret:
        log.warning("no AMI secret set (ami.secret or NOBAT_AMI_SECRET): phone consultations "
                    "and calls to patients will not be dialled")
        return None
    found = await practices(database)
    if not found:
        log.warning("no clinic loaded: phone consultations and calls to patients will not "
                    "be dialled")
        return None
    first = found[0]
    try:  # the zone of the line's own patient-call hours, a practice's stand-in
        tz = ZoneInfo(first.timezone)
    except UNREADABLE as exc:  # its own calls are held alone; the others' are dialled
        log.error("%s: its zone cannot be read (%s); the line's patient-call hours are in %s "
                  "meanwhile", first.key, one_line(exc), TEHRAN.key)
        tz = TEHRAN
    calls = config.consultations
    planning = call_planning(config, tz)
    plan = CallPlan(calls.dial, first.phone, first.name_en or first.name,
                    ring_seconds=calls.ring_seconds,
                    grace=dt.timedelta(minutes=calls.grace_minutes),
                    warn_before=dt.timedelta(minutes=calls.warn_minutes),
                    address=phone_fields,
                    call_token=functools.partial(call_token, config.fastagi.secret.reveal()))
    ami = AmiClient(ami_config.host, ami_config.port, ami_config.username,
                    ami_config.secret.reveal(), action_timeout=ami_config.action_timeout)
    return Dialer(ConsultationStore(database), ami,
                  per_practice(plan, outbound_prompts(config), planning),
                  f"{socket.gethostname()}-{os.getpid()}",
                  RetryPolicy(calls.attempts, dt.timedelta(minutes=calls.retry_minutes)),
                  Tuning(calls.max_channels, poll=calls.poll_seconds,
                         practice_share=calls.practice_share_percent / 100,
                         missed_grace=dt.timedelta(minutes=calls.missed_grace_minutes),
                         lease=dt.timedelta(seconds=calls.lease_seconds)),
                  patient_calls=patient_calls(config, database, plan, planning))


def call_planning(config: Config, tz: ZoneInfo) -> CallPlanning:
    """config.toml's [patient_calls], the line's rules, in `tz`; a practice's own replace
    them for its patients."""
    wanted = config.patient_calls
    hours = CallHours(*wanted.quiet_hours, wanted.no_call_days, tz)
    return CallPlanning(
        hours, ReminderTimes(wanted.reminder_days_before, wanted.reminder_at, hours,
                             config.booking.change_cutoff),
        wanted.reminders, wanted.absence_calls, wanted.survey,
        dt.timedelta(minutes=wanted.survey_after_minutes),
        CallTries(wanted.ring_seconds, wanted.attempts,
                  dt.timedelta(minutes=wanted.retry_minutes)))


def patient_calls(config: Config, database: Database, consultation: CallPlan,
                  planning: CallPlanning, clock: Clock = utc_now, plan_every: float = 60.0
                  ) -> PatientCalls:
    """Reminders, absence calls and surveys as config.toml [patient_calls] and each
    practice's own rules have them."""

    def retry(claim: PatientCallClaim, failed_at: dt.datetime) -> dt.datetime | None:
        due = claim.call
        # A practice whose rules cannot be read: the line's stand in, and its claim holds it.
        calling = (planning.calling_of(due.clinic_timezone, due.clinic_call_times)
                   or planning.without_zone(None))
        if claim.attempt >= calling.tries.attempts:
            return None
        return retry_time(calling.hours, failed_at, calling.tries.spacing, due.not_after)

    return PatientCalls(PatientCallStore(database, clock), planning,
                        per_practice(consultation, outbound_prompts(config), planning,
                                     patient_call=True),
                        retry, plan_every, config.patient_calls.max_calls)
