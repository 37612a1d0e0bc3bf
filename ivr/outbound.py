"""Calls nobat made to a patient, once answered: the flow named by the call's purpose.

Asterisk runs AGI(agi://host/patient-call) on the patient's answered leg; the channel's
Uniqueid is the ChannelId the dialer gave it, and the request brings back the call token the
dialer put on the channel (protocol/call_token.py), since a ChannelId alone is guessable. The
call is looked up only while that very attempt is being dialled. A stray, forged or replayed
request is hung up unheard.
"""

from __future__ import annotations

import logging

from db.patient_calls import PatientCallStore
from ivr.call import Call, CallAbout
from ivr.inbound import InboundLine
from ivr.session import CallSession
from protocol.call_token import TOKEN_ARGUMENT, token_matches

log = logging.getLogger(__name__)


class PatientCallLine:
    """Runs reminder, absence and survey flows on the inbound line's engine and flows."""

    def __init__(self, line: InboundLine, store: PatientCallStore, secret: str) -> None:
        """`secret` signs the call tokens (the FastAGI secret)."""
        self.line = line
        self.store = store
        self.secret = secret

    async def answer(self, session: CallSession) -> Call | None:
        """Run the call's flow in the patient's language; not written to the inbound log
        (the patient_call row is its record)."""
        channel_id = session.info.unique_id
        if not token_matches(self.secret, channel_id,
                             session.info.options.get(TOKEN_ARGUMENT, "")):
            log.warning("AGI patient-call for channel %r without its call token: hung up "
                        "unheard", channel_id)
            await session.hang_up()
            return None
        snapshot = self.line.flows.current()
        due = await self.store.live(channel_id)
        services = None if due is None else snapshot.routes.of_doctor(due.doctor_id)
        booking = None if due is None or services is None else \
            await services.booking.appointment(due.appointment_id)
        if due is None or services is None or booking is None:
            log.warning("AGI patient-call for channel %s: no call of nobat's is ringing it; "
                        "hung up", channel_id)
            await session.hang_up()
            return None
        if str(due.purpose) not in snapshot.flows_for(services.practice):
            log.error("no flow %s.toml in the flows folder: %s call %d hung up unheard",
                      due.purpose, due.purpose, due.id)
            await session.hang_up()
            return None
        await self.store.flow_started(due.id)
        call = self.line.new_call(session, services)
        call.language = due.patient_language
        call.patient_phone = due.patient_phone
        call.about = CallAbout(due, booking)
        return await self.line.run(call, snapshot.flows_for, str(due.purpose), logged=False)
