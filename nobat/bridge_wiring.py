"""Builds the consultation dialer from configuration: AMI client, call plan, store, dialer."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Mapping

from bridge.ami_client import AmiClient
from bridge.consultation_call import CallPlan
from bridge.dialer import Dialer
from clinic.phones import national
from db.booking import BookingService
from db.consultations import ConsultationStore, RetryPolicy
from db.engine import Database
from ivr.prompts import PromptLibrary
from nobat.config import Config

log = logging.getLogger("nobat")


def phone_fields(number: str) -> Mapping[str, str]:
    """What a dial string may name: {number} (E.164) and {national} (09…)."""
    return {"number": number, "national": national(number)}


async def build_dialer(config: Config, database: Database) -> Dialer | None:
    """The dialer, or None when no AMI secret is set (consultations are then not dialled)."""
    ami_config = config.ami
    if not ami_config.secret:
        log.warning("no AMI secret set (ami.secret or NOBAT_AMI_SECRET): phone consultations "
                    "will not be dialled")
        return None
    profile = await BookingService(database, config.booking).clinic_profile()
    if profile is None:
        log.warning("no clinic loaded: phone consultations will not be dialled")
        return None
    calls = config.consultations
    plan = CallPlan(calls.dial, profile.phone, profile.name_en or profile.name,
                    ring_seconds=calls.ring_seconds,
                    grace=dt.timedelta(minutes=calls.grace_minutes),
                    warn_before=dt.timedelta(minutes=calls.warn_minutes),
                    address=phone_fields,
                    prompt_file=PromptLibrary({}, config.ivr.asterisk_prompts).file)
    ami = AmiClient(ami_config.host, ami_config.port, ami_config.username,
                    ami_config.secret.reveal(), action_timeout=ami_config.action_timeout)
    return Dialer(ConsultationStore(database), ami, lambda claim: plan,
                  f"{socket.gethostname()}-{os.getpid()}", calls.max_calls,
                  RetryPolicy(calls.attempts, dt.timedelta(minutes=calls.retry_minutes)),
                  poll=calls.poll_seconds)
