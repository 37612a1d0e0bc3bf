"""One call to a patient (a reminder, an absence, a survey) as a state machine without I/O.

The patient's phone is originated into [nobat-patient-call] (asterisk/extensions.conf), whose
AGI runs the call's flow on nobat's FastAGI server: the flow, not this machine, talks to the
patient and writes what they chose. This machine only rings, records the answer, retries a
call nobody answered (by the clinic's call hours) and records the end. It speaks the same
effects as `ConsultationCall`, so one dialer runs both under one cap.

    call = PatientCallAttempt(claim, plan, retry)
    effects = call.start()                 # the Originate
    effects = call.on_event(event, now)    # OriginateResponse, Hangup
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.ami_protocol import Action, Event
from bridge.live_channels import Live
from bridge.outbound import (
    FAILURE_BY_CAUSE,
    CallPlan,
    Done,
    Effect,
    PlanFactory,
    Record,
    RecordKind,
    SendAction,
    Wake,
    hangup,
    originate_failure,
)
from clinic.call_kinds import far_half
from db.patient_calls import CallPlanning, PatientCallClaim, PatientCallStore
from protocol.call_token import TOKEN_VARIABLE

PATIENT_CALL_CONTEXT = "nobat-patient-call"
LONGEST_CALL = dt.timedelta(minutes=15)
"""An answered call still up this long is hung up: no flow takes that long."""
TOO_LONG_CAUSE = "still up after 15 minutes; hung up"

class Phase(enum.Enum):
    """Where the attempt stands: ringing, talking (answered: the flow runs), or over."""

    DIALLING = "dialling"
    TALKING = "talking"
    OVER = "over"


RetryRule = Callable[[PatientCallClaim, dt.datetime], dt.datetime | None]
"""When to ring again after an attempt nobody answered (None: give up)."""


@dataclass(frozen=True)
class PatientCalls:
    """Reminders, absence calls and surveys: what to plan, how to ring, when to retry."""

    store: PatientCallStore
    planning: CallPlanning
    plan_for: PlanFactory
    """How each claimed call is rung: as its own practice."""
    retry: RetryRule
    plan_every: float = 60.0
    """Seconds between looks for calls to plan (bookings made, closures recorded)."""
    max_calls: int = 20
    """Patient calls at once, within the dialer's cap: the rest stays for consultations."""


@dataclass
class PatientCallAttempt:
    """The decisions of one attempt to ring a patient."""

    claim: PatientCallClaim
    plan: CallPlan
    retry: RetryRule
    channel: str | None = None
    answered_at: dt.datetime | None = None
    gone: bool = False
    far_cause: int | None = None
    requested_cause: int | None = None
    """A HangupRequest's cause: on a SIP trunk the only early word of why it failed."""
    phase: Phase = Phase.DIALLING
    channel_id: str = field(init=False)
    """The ChannelId of the patient's one channel."""
    far_id: str = field(init=False)
    """The ChannelId of its far (phone) half."""

    def __post_init__(self) -> None:
        self.channel_id = self.claim.channel_id()
        self.far_id = far_half(self.channel_id)

    @property
    def answered(self) -> bool:
        """The patient picked up (the flow ran or runs)."""
        return self.answered_at is not None

    @property
    def over(self) -> bool:
        """True once the result is recorded."""
        return self.phase is Phase.OVER

    def start(self) -> list[Effect]:
        """Ring the patient; Asterisk runs the flow once they answer."""
        plan, due = self.plan, self.claim.call
        variables = {"NOBAT_CALL": str(due.id), "NOBAT_PURPOSE": str(due.purpose),
                     "NOBAT_LANGUAGE": due.patient_language,
                     "NOBAT_CLINIC_NUMBER": plan.clinic_number,
                     "NOBAT_CLINIC_NAME": plan.clinic_name,
                     TOKEN_VARIABLE: plan.call_token(self.channel_id)}
        return [SendAction(plan.originate(due.patient_phone, PATIENT_CALL_CONTEXT,
                                          self.channel_id, variables))]

    def resume(self, live: Live | None, now: dt.datetime, since: dt.datetime
               ) -> list[Effect]:
        """Patient calls are never taken over: one answered when its instance stopped is
        closed by the store, not resumed."""
        raise AssertionError("a patient call is never resumed")

    @property
    def channel_ids(self) -> frozenset[str]:
        """The ChannelId of the patient's channel, as Asterisk lists it."""
        return frozenset({self.channel_id})

    def on_event(self, evt: Event, now: dt.datetime) -> list[Effect]:
        """Advance on one AMI event of this call."""
        if self.over:
            return []
        ident = self.channel_id
        if evt.name == "OriginateResponse" and evt.action_id == ident:
            if evt.fields.get("Response") == "Success":
                self.channel = self.channel or evt.fields.get("Channel")
                return self._answered(now)
            self.gone = True
            reason = int(evt.fields.get("Reason") or 0)
            known = self.far_cause if self.far_cause is not None else self.requested_cause
            return self._fail(originate_failure(reason, known), now)
        uniqueid = evt.fields.get("Uniqueid")
        if uniqueid == ident and self.channel is None:
            self.channel = evt.fields.get("Channel")
        if evt.name == "HangupRequest" and uniqueid == ident and int(evt.fields.get("Cause") or 0):
            self.requested_cause = int(evt.fields.get("Cause") or 0)
        if evt.name != "Hangup":
            return []
        cause = int(evt.fields.get("Cause") or 0)
        if uniqueid == self.far_id:
            self.far_cause = cause
        elif uniqueid == ident:
            self.gone = True
            if self.answered:
                return self._finish(None, now)
            # Not answered as far as nobat saw (an OriginateResponse can be lost with the
            # AMI link): failed by the phone's cause; the store knows better if the flow
            # ran, and then records the call as done instead (PatientCallStore).
            known = self.far_cause if self.far_cause is not None else cause
            return self._fail(FAILURE_BY_CAUSE.get(known, "hung_up"), now)
        return []

    def on_time(self, now: dt.datetime) -> list[Effect]:
        """An answered call still up after LONGEST_CALL is hung up."""
        if self.answered_at is None or self.over or now < self.answered_at + LONGEST_CALL:
            return []
        return [*self._hang_up(), *self._finish(TOO_LONG_CAUSE, now)]

    def on_refused(self, action: Action, message: str, now: dt.datetime) -> list[Effect]:
        """Asterisk refused the Originate: the attempt failed (a refused Hangup is moot, and
        so is any refusal once the patient answered)."""
        if self.phase is not Phase.DIALLING or action.name != "Originate":
            return []
        self.gone = True
        return self._fail(f"refused ({message})", now)

    def on_resync(self, live: Live | None, now: dt.datetime, since: dt.datetime,
                  restarted: bool = False) -> list[Effect]:
        """After the AMI link came back: a channel still up goes on, and one answered while
        nobat was not looking is recorded answered (its flow runs over FastAGI; it is never
        rung again); a gone one ended unseen (answered: finished; not answered: failed and
        retried). An answered call is not rung again when Asterisk restarted: the patient
        heard it; the flow records what they chose as it goes."""
        if self.over:
            return []
        found = (live or {}).get(self.channel_id)
        if found is not None:
            self.channel = found.channel
            return self._answered(now) if found.up else []
        self.gone = True
        if self.answered:
            return self._finish("ended while the AMI link was down", now)
        return self._fail("ami_link_lost", now)

    def release(self, live: Live | None = None) -> list[Effect]:
        """Hang up the call if it is up and stop at once (shutdown, or the claim was lost);
        `live` names it if its events have not come yet."""
        found = (live or {}).get(self.channel_id)
        self.channel = self.channel or (found.channel if found else None)
        effects = self._hang_up()
        self.phase = Phase.OVER
        return [*effects, Done("released")]

    def _answered(self, now: dt.datetime) -> list[Effect]:
        if self.answered:
            return []
        self.answered_at, self.phase = now, Phase.TALKING
        return [Record(RecordKind.LEG_ANSWERED, now),
                Wake(now + LONGEST_CALL)]

    def _fail(self, why: str, now: dt.datetime) -> list[Effect]:
        self.phase = Phase.OVER
        retry_at = self.retry(self.claim, now)
        return [Record(RecordKind.ATTEMPT_FAILED, now, cause=why, retry_at=retry_at),
                *self._hang_up(), Done("failed")]

    def _finish(self, cause: str | None, now: dt.datetime) -> list[Effect]:
        self.phase = Phase.OVER
        return [Record(RecordKind.COMPLETED, now, cause=cause), Done("completed")]

    def _hang_up(self) -> list[Effect]:
        if self.channel is None or self.gone:
            return []
        self.gone = True
        return [SendAction(hangup(self.channel))]
