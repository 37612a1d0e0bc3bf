"""One consultation call as a state machine without I/O, after h11: AMI events in, effects out.

`ConsultationCall` decides what happens to one claimed attempt: both legs are originated at
once into [nobat-consult-hold] (asterisk/extensions.conf), where each hears who is calling;
once BOTH raised NobatLegReady the doctor leg is redirected into [nobat-consult-bridge],
whose Bridge() warns both before the booked end and ends the call at the booked end plus
grace. nobat ends the call when either party leaves, and when a leg fails the waiting party
is sent to [nobat-consult-end] to hear why before it is released. It returns effects
(`SendAction`, `Record`, `Wake`, `Done`) that the dialer carries out in order, so every
state change is written before the next action goes to Asterisk.
Time comes in as an argument, never from a clock, so each step is a plain function call.

    call = ConsultationCall(claim, plan, retry)
    effects = call.start()                 # two Originates and a Wake for the booked end
    effects = call.resume(live, now, since)  # or: take over an attempt whose instance stopped
    effects = call.on_event(event, now)    # OriginateResponse, UserEvent, BridgeEnter, Hangup
    effects = call.on_time(now)            # when a Wake is due
    effects = call.on_refused(action, message, now)   # Asterisk answered an action with Error
    effects = call.on_resync(live, now, since)        # the AMI link came back (or did not)
    effects = call.release(live_channels)  # shutdown, or another instance owns the claim
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

from bridge.ami_protocol import Action, Event, Fields
from bridge.live_channels import UP, Live
from bridge.outbound import (
    FAILURE_BY_CAUSE,
    FAILURE_BY_REASON,
    CallPlan,
    Done,
    Effect,
    Record,
    RecordKind,
    SendAction,
    Wake,
    hangup,
    originate_failure,
)
from clinic.call_kinds import Leg, far_half
from db.consultations import (
    CUT,
    CUT_CAUSE,
    LINE_CUT_CAUSE,
    UNSEEN_CAUSE,
    Claim,
    RetryPolicy,
)
from protocol.call_token import TOKEN_VARIABLE

HOLDING_CONTEXT = "nobat-consult-hold"
BRIDGE_CONTEXT = "nobat-consult-bridge"
"""Its extension is the number of milliseconds the bridged call may last."""
END_CONTEXT = "nobat-consult-end"
"""Its extension names the prompt (in NOBAT_SOUNDS) that tells a waiting party why it ends."""
PROMPTS = ("consult/patient-intro", "consult/is-starting", "consult/doctor-intro",
           "consult/ending-soon", "consult/time-up", "consult/reconnecting",
           *(f"consult/{who}-{what}{last}" for who, what in (
               ("doctor", "unavailable"), ("patient", "unavailable"), ("call", "failed"))
             for last in ("", "-final")))
"""Every prompt a consultation plays (besides the doctor's name), for the manifest's check."""
LINE_FAILURE_CAUSES = frozenset({27, 34, 38, 41, 42, 47})
"""Hang-up causes of a bridged leg that say the network failed, not the party (Q.850:
destination out of order, no circuit, network out of order, temporary failure, switching
equipment congestion, resource unavailable): the call is cut, and rung again."""
RECONNECT_AT_LEAST = dt.timedelta(minutes=1)
"""A call Asterisk lost is rung again only if at least this much of its time is left."""
BACKSTOP = dt.timedelta(seconds=30)
"""How long after the booked end plus grace nobat itself ends a call Asterisk did not end."""
READY_EVENT = "NobatLegReady"
SHUTDOWN_SOFT_CAUSE = "4"
"""SoftHangupRequest's Cause when Asterisk shuts down or restarts (AST_SOFTHANGUP_SHUTDOWN):
it hangs up every channel before its Shutdown event, so a bridged leg's Hangup after this
was not a party's."""
GONE_UNSEEN = "gone_unseen"
"""Why an attempt failed when a leg ended while nobat saw none of its events."""

TELL_GRACE = dt.timedelta(seconds=2)
"""How long a leg still ringing when its attempt fails may yet turn out answered, and then be
told why, before it is hung up: AMI reports an answer well after the phone's 200 OK (on the
SIP tier a doctor's answer came after the patient's 486 was reported, 3 ms after it in SIP)."""
class Phase(enum.Enum):
    """Where the attempt stands; events that make no sense in a phase are ignored."""

    DIALLING = "dialling"
    BRIDGING = "bridging"
    BRIDGED = "bridged"
    ENDING = "ending"
    """Recorded as over; waiting until every leg is gone, hanging up any that shows up."""
    DONE = "done"


class LegProgress(enum.IntEnum):
    """How far a leg got, in order: each step implies the ones before it."""

    RINGING = 0
    ANSWERED = 1
    READY = 2
    """Heard who calls and waits for the bridge (NobatLegReady)."""
    ENTERED = 3
    """In the bridge with the other party."""


class LegEnd(enum.IntEnum):
    """Whether a leg is still to be ended, in order: GONE supersedes RELEASED."""

    UP = 0
    RELEASED = 1
    """nobat hung it up already, or Asterisk is ending it anyway (its party left)."""
    GONE = 2
    """Its ;1 half hung up, or its Originate failed: nothing of it is left to end."""


@dataclass
class _LegState:
    """What nobat knows about one leg: its channel, how far it got, whether it is still up,
    and its hang-up causes."""

    leg: Leg
    channel_id: str
    number: str
    far_id: str = field(init=False)
    """The ChannelId of its far (phone) half."""
    channel: str | None = None
    progress: LegProgress = LegProgress.RINGING
    end: LegEnd = LegEnd.UP
    cause: int | None = None
    far_cause: int | None = None
    requested_cause: int | None = None
    """The cause of a HangupRequest for the leg: on a SIP trunk, the only early word of why."""
    unexplained: bool = False
    """Its Originate failed with Reason 0 and no cause yet: the Hangup that names the cause
    (17 for a busy phone on a SIP trunk) is on its way; failed "unreachable" without it."""
    tell: str | None = None
    """Why the attempt failed, for a leg that was still ringing then: if it shows up
    answered within TELL_GRACE it hears this ([nobat-consult-end]); else it is hung up."""

    def __post_init__(self) -> None:
        self.far_id = far_half(self.channel_id)

    def reach(self, progress: LegProgress) -> None:
        """The leg got at least this far (a leg never goes back)."""
        self.progress = max(self.progress, progress)

    def ends(self, end: LegEnd) -> None:
        """The leg is released, or gone (a gone leg stays gone)."""
        self.end = max(self.end, end)

    @property
    def answered(self) -> bool:
        """Its party picked up."""
        return self.progress >= LegProgress.ANSWERED

    @property
    def ready(self) -> bool:
        """Its party waits for the bridge, or is in it."""
        return self.progress >= LegProgress.READY

    @property
    def entered(self) -> bool:
        """It is in the bridge."""
        return self.progress is LegProgress.ENTERED

    @property
    def released(self) -> bool:
        """Nothing more for nobat to hang up: released already, or gone."""
        return self.end >= LegEnd.RELEASED

    @property
    def gone(self) -> bool:
        """Nothing of it is left in Asterisk."""
        return self.end is LegEnd.GONE

    @property
    def recorded_cause(self) -> int | None:
        """The far (;2) half's cause when known: the ;1 half often just says 0 (capture b);
        else what the leg's own Hangup or HangupRequest said."""
        for cause in (self.far_cause, self.cause, self.requested_cause):
            if cause is not None:
                return cause
        return None


@dataclass
class ConsultationCall:
    """The decisions of one attempt, fed by events and time, answered with effects."""

    claim: Claim
    plan: CallPlan
    retry: RetryPolicy | None = None
    """Whether a failed attempt is tried again; None: never."""
    phase: Phase = Phase.DIALLING
    bridged_at: dt.datetime | None = None
    outcome: str = ""
    give_up_at: dt.datetime | None = None
    """While ending: when to stop waiting for legs that never reported."""
    shutting_down: bool = False
    """Asterisk flagged this call's channels for its shutdown: their hang-ups are a cut."""
    redirected_at: dt.datetime | None = None
    """When the doctor leg was sent to Bridge(): a bridge found after missed events formed
    then."""
    legs: dict[Leg, _LegState] = field(init=False)

    def __post_init__(self) -> None:
        booked = self.claim.consultation
        numbers = {Leg.DOCTOR: booked.doctor_phone, Leg.PATIENT: booked.patient_phone}
        self.legs = {leg: _LegState(leg, self.claim.channel_id(leg), numbers[leg])
                     for leg in Leg}

    @property
    def ends_at(self) -> dt.datetime:
        """When nobat ends the call: the booked end plus the plan's grace."""
        return self.claim.consultation.ends_at + self.plan.grace

    @property
    def over(self) -> bool:
        """True once the attempt's result is recorded (legs may still be going away)."""
        return self.phase in (Phase.ENDING, Phase.DONE)

    @property
    def channel_ids(self) -> frozenset[str]:
        """The ChannelIds of this attempt's legs, as Asterisk lists them."""
        return frozenset(state.channel_id for state in self.legs.values())

    def start(self) -> list[Effect]:
        """Both Originates at once (each leg rings on its own), and a Wake for the end."""
        return [*(SendAction(self._originate(state)) for state in self.legs.values()),
                Wake(self.ends_at)]

    def resume(self, live: Live | None, now: dt.datetime, since: dt.datetime
               ) -> list[Effect]:
        """Take over an attempt whose instance stopped (its events since `since` unseen).
        Bridged: with both legs still up it goes on (Asterisk ends it at the booked time);
        with a leg gone it ended unseen, so the rest is released and no talk time is
        guessed. Not bridged: each leg's state is read from Asterisk and the attempt goes on
        from there; with no leg left and none answered it is given back, due again."""
        if self.claim.bridged_at is None:
            if live is not None and not any(
                    state.channel_id in live for state in self.legs.values()):
                if self.claim.answered_before:  # a party answered and left unseen
                    return self._fail(None, GONE_UNSEEN, now)
                self.phase, self.outcome = Phase.DONE, "given back"
                return [Record(RecordKind.GIVEN_BACK, now), Done(self.outcome)]
            return [Wake(self.ends_at), *self.on_resync(live, now, since)]
        self.phase, self.bridged_at = Phase.BRIDGED, self.claim.bridged_at
        for state in self.legs.values():
            state.reach(LegProgress.ENTERED)
        effects: list[Effect] = [Wake(self.ends_at)]
        if live is None:
            return effects  # not known yet: the Wake and the next resync decide
        for state in self.legs.values():
            if state.channel_id not in live:
                state.ends(LegEnd.GONE)
            found = live.get(state.channel_id)
            state.channel = found.channel if found else state.channel
        if any(state.gone for state in self.legs.values()):
            return self._end("completed", Record(RecordKind.COMPLETED, now, cause=UNSEEN_CAUSE),
                             None, now)
        return [*effects, _resumed(now, since)]

    def on_event(self, evt: Event, now: dt.datetime) -> list[Effect]:
        """Advance on one AMI event; events of other calls give no effects."""
        if self.phase is Phase.DONE:
            return []
        if evt.name == "OriginateResponse":
            return self._originated(evt, now)
        found = self._owner(evt.fields.get("Uniqueid"))
        if found is None:
            return []
        state, far = found
        if not far and state.channel is None:
            state.channel = evt.fields.get("Channel")
        if evt.name == "HangupRequest" and not far and int(evt.fields.get("Cause") or 0):
            state.requested_cause = int(evt.fields.get("Cause") or 0)
        if evt.name == "SoftHangupRequest" and evt.fields.get("Cause") == SHUTDOWN_SOFT_CAUSE:
            self.shutting_down = True
        if self.phase is Phase.ENDING:
            if evt.name == "Hangup" and not far:
                state.ends(LegEnd.GONE)
            answered = evt.name == "Newstate" and not far and \
                evt.fields.get("ChannelState") == UP
            return [*(self._tell_late(state) if answered else []), *self._settle()]
        if evt.name == "Newstate" and not far and evt.fields.get("ChannelState") == UP:
            return self._answered(state, now)  # the earliest word: before OriginateResponse
        if evt.name == "UserEvent" and self._is_ready_event(evt, state):
            return self._ready(state, evt, now)
        if evt.name == "BridgeEnter" and not far:
            return self._entered(state, now)
        if evt.name == "Hangup":
            return self._hung_up(state, far, int(evt.fields.get("Cause") or 0), now)
        return []

    def on_time(self, now: dt.datetime) -> list[Effect]:
        """At the booked end plus grace, give up an attempt not yet bridged; a bridged call
        Asterisk ends itself (Bridge's L()), so nobat ends it only if it is still up a
        BACKSTOP later. While ending, stop waiting for legs that never reported."""
        if self.phase is Phase.ENDING:
            if any(state.tell for state in self.legs.values()):
                for state in self.legs.values():  # the grace is over: hang them up
                    state.tell = None
                return self._settle()
            if self.give_up_at is not None and now < self.give_up_at:
                return []
            for state in self.legs.values():
                state.ends(LegEnd.GONE)
            return self._settle()
        unexplained = next((s for s in self.legs.values() if s.unexplained), None)
        if unexplained is not None and self.phase is not Phase.DONE:
            return self._fail(unexplained, FAILURE_BY_REASON[0], now)
        if self.phase is Phase.DONE or now < self.ends_at:
            return []
        if self.phase is not Phase.BRIDGED:
            return self._fail(None, "time_up", now)
        if now < self.ends_at + BACKSTOP:
            return [Wake(self.ends_at + BACKSTOP)]
        return self._complete(None, now)

    def on_refused(self, action: Action, message: str, now: dt.datetime) -> list[Effect]:
        """Asterisk answered an action with Error: a refused Originate or Bridge ends the
        attempt; a refused Hangup means the channel was already gone."""
        if self.over or action.name == "Hangup":
            return []
        failed = next((s for s in self.legs.values() if s.channel_id == action.action_id), None)
        if failed is not None:
            failed.ends(LegEnd.GONE)
        return self._fail(failed, f"refused ({message})", now)

    def on_resync(self, live: Live | None, now: dt.datetime, since: dt.datetime,
                  restarted: bool = False) -> list[Effect]:
        """Events since `since` were missed (the AMI link was lost; `live` is what Asterisk
        has now, None if it cannot say). An attempt not yet bridged goes on from its legs'
        state in Asterisk (`_rebuild`); it fails only when Asterisk cannot say or a leg is
        gone. A bridged call goes on while both legs exist; if Asterisk restarted
        meanwhile (`restarted`), one it lost was cut at `since`, not ended by a party, and is
        rung again for the time left."""
        if self.phase is Phase.DONE:
            return []
        for state in self.legs.values():
            found = (live or {}).get(state.channel_id)
            if found is None:
                state.ends(LegEnd.GONE)
            state.channel = found.channel if found else state.channel
        if self.phase is Phase.ENDING:
            return self._settle()
        if live is None:
            return self._fail(None, "ami_link_lost", now)
        if self.phase is not Phase.BRIDGED:
            if restarted:
                return self._fail(None, "asterisk_restarted", now)
            return self._rebuild(live, now, since)
        if any(state.gone for state in self.legs.values()):
            return self._cut(since, now) if restarted else self._complete(None, now)
        return [_resumed(now, since)]

    def release(self, live: Live | None = None) -> list[Effect]:
        """Hang up whatever is still up and stop at once (shutdown, or the claim was lost);
        `live` names legs whose events have not come yet."""
        self.outcome = self.outcome or "released"
        for state in self.legs.values():
            found = (live or {}).get(state.channel_id)
            state.channel = state.channel or (found.channel if found else None)
            state.tell = None
        effects = self._release_legs()
        for state in self.legs.values():
            state.ends(LegEnd.GONE)
        return [*effects, *self._settle()]

    # -- steps -------------------------------------------------------------------------

    def _rebuild(self, live: Live, now: dt.datetime, since: dt.datetime) -> list[Effect]:
        """Go on with an unbridged attempt from what Asterisk says of each leg, as if no
        event had been missed: a leg still ringing is waited for (Asterisk's Originate
        Timeout counts from the Originate), one that answered is recorded, one that waits
        (NOBAT_LEG_READY) is ready; both waiting are bridged, both in one bridge are
        bridged; a leg that is gone ends the attempt, and a party who answered hears why."""
        effects: list[Effect] = [_resumed(now, since)]
        doctor, patient = self.legs[Leg.DOCTOR], self.legs[Leg.PATIENT]
        for state in self.legs.values():
            found = live.get(state.channel_id)
            if found is None:
                continue
            if found.up:
                effects += self._answered(state, now)
                state.reach(LegProgress.ANSWERED)
            if found.ready or found.bridge_id:
                state.reach(LegProgress.READY)
        gone = next((state for state in self.legs.values() if state.gone), None)
        if gone is not None:
            return [*effects, *self._fail(gone, GONE_UNSEEN, now)]
        found_doctor, found_patient = live[doctor.channel_id], live[patient.channel_id]
        if found_doctor.bridge_id and found_doctor.bridge_id == found_patient.bridge_id:
            doctor.reach(LegProgress.ENTERED)
            patient.reach(LegProgress.ENTERED)
            self.phase, self.bridged_at = Phase.BRIDGED, self.redirected_at or now
            return [*effects, Record(RecordKind.BRIDGED, self.bridged_at)]
        if found_doctor.context == BRIDGE_CONTEXT and self.phase is Phase.DIALLING:
            self.phase, self.redirected_at = Phase.BRIDGING, now  # sent by an instance gone
        if now >= self.ends_at:  # found after the booked time (plus grace): over
            return [*effects, *self._fail(None, "time_up", now)]
        waiting = found_doctor.context == HOLDING_CONTEXT and not found_doctor.bridge_id
        if doctor.ready and patient.ready and waiting:  # also a Redirect lost with the link
            effects += self._bridge_both(now)
        return effects

    def _sound(self, key: str) -> str:
        """A prompt in the patient's language (the doctor hears the same language)."""
        return self.plan.prompt_file(self.claim.consultation.patient_language, key)

    def _originate(self, state: _LegState) -> Action:
        plan, booked = self.plan, self.claim.consultation
        announce = (["consult/reconnecting"] if (booked.cause or "").startswith(CUT)
                    else ["consult/patient-intro", f"doctor/{booked.doctor_key}",
                          "consult/is-starting"] if state.leg is Leg.PATIENT
                    else ["consult/doctor-intro"])
        variables = {"LEG": str(state.leg), "CONSULTATION": str(self.claim.ident),
                     "NOBAT_CLINIC_NUMBER": plan.clinic_number,
                     "NOBAT_CLINIC_NAME": plan.clinic_name,
                     "NOBAT_ANNOUNCE": "&".join(self._sound(key) for key in announce),
                     "NOBAT_SOUNDS": self._sound("consult")}
        if state.leg is Leg.PATIENT:  # its in-call survey runs over FastAGI
            variables[TOKEN_VARIABLE] = plan.call_token(state.channel_id)
        if state.leg is Leg.DOCTOR:
            warn = plan.grace + plan.warn_before if plan.warn_before else dt.timedelta(0)
            variables |= {"NOBAT_PEER": self.claim.channel_id(Leg.PATIENT),
                          "NOBAT_WARN_MS": str(_ms(warn)),
                          "NOBAT_SURVEY": "in-call" if plan.survey_in_call else "off"}
        return plan.originate(state.number, HOLDING_CONTEXT, state.channel_id, variables)

    def _owner(self, uniqueid: str | None) -> tuple[_LegState, bool] | None:
        """The leg a channel belongs to, and whether it is the far (;2, phone) half."""
        for state in self.legs.values():
            if uniqueid == state.channel_id:
                return state, False
            if uniqueid == state.far_id:
                return state, True
        return None

    def _is_ready_event(self, evt: Event, state: _LegState) -> bool:
        fields = evt.fields
        return (fields.get("UserEvent") == READY_EVENT and fields.get("Leg") == state.leg
                and fields.get("Consultation") == str(self.claim.ident))

    def _originated(self, evt: Event, now: dt.datetime) -> list[Effect]:
        state = next((s for s in self.legs.values() if s.channel_id == evt.action_id), None)
        if state is None:
            return []
        if evt.fields.get("Response") == "Success":
            state.channel = state.channel or evt.fields.get("Channel")
            if self.phase is Phase.ENDING:
                return [*self._tell_late(state), *self._settle()]
            return self._answered(state, now)
        state.ends(LegEnd.GONE)
        if self.phase is Phase.ENDING:
            return self._settle()
        reason = int(evt.fields.get("Reason") or 0)
        if reason == 0 and state.recorded_cause is None and state.channel is not None:
            state.unexplained = True  # its Hangup says why, within TELL_GRACE
            return [Wake(now + TELL_GRACE)]
        return self._fail(state, originate_failure(reason, state.recorded_cause), now)

    def _answered(self, state: _LegState, now: dt.datetime) -> list[Effect]:
        """Record the answer time once, from whichever comes first: the leg's Newstate Up,
        OriginateResponse or NobatLegReady (their order is not fixed). A party who answered
        is told why if the attempt fails, never just cut off."""
        if state.answered or self.phase is not Phase.DIALLING:
            return []
        state.reach(LegProgress.ANSWERED)
        return [Record(RecordKind.LEG_ANSWERED, now, leg=state.leg)]

    def _ready(self, state: _LegState, evt: Event, now: dt.datetime) -> list[Effect]:
        """A party heard the announcement and waits; with both waiting, the doctor leg runs
        Bridge() for the time left (asterisk/extensions.conf, [nobat-consult-bridge])."""
        if state.ready or self.phase is not Phase.DIALLING:
            return []
        effects = self._answered(state, now)  # before READY, which implies answered
        state.reach(LegProgress.READY)
        state.channel = evt.fields.get("Chan") or state.channel
        if self.legs[Leg.DOCTOR].ready and self.legs[Leg.PATIENT].ready:
            effects += self._bridge_both(now)
        return effects

    def _bridge_both(self, now: dt.datetime) -> list[Effect]:
        """Both wait: send the doctor leg to Bridge() for the time left."""
        self.phase, self.redirected_at = Phase.BRIDGING, now
        limit = max(_ms(self.ends_at - now), 1000)
        return [SendAction(_redirect(self.legs[Leg.DOCTOR].channel or "", BRIDGE_CONTEXT,
                                     str(limit)))]

    def _entered(self, state: _LegState, now: dt.datetime) -> list[Effect]:
        state.reach(LegProgress.ENTERED)
        if self.phase is not Phase.BRIDGING or not all(s.entered for s in self.legs.values()):
            return []
        self.phase, self.bridged_at = Phase.BRIDGED, now
        return [Record(RecordKind.BRIDGED, now)]

    def _hung_up(self, state: _LegState, far: bool, cause: int, now: dt.datetime
                 ) -> list[Effect]:
        if far:
            state.far_cause = cause
        else:
            state.cause = cause
            state.ends(LegEnd.GONE)
        if self.phase is Phase.BRIDGED:
            if self.shutting_down:
                return self._cut(now, now)
            if state.recorded_cause in LINE_FAILURE_CAUSES:
                return self._cut(now, now, LINE_CUT_CAUSE)
            return self._complete(state, now)
        if state.ready:
            return self._fail(state, "hung_up", now)
        if far:
            return []  # not answered: OriginateResponse or the ;1 Hangup says why
        return self._fail(state, FAILURE_BY_CAUSE.get(state.recorded_cause or 0, "hung_up"), now)

    def _fail(self, state: _LegState | None, why: str, now: dt.datetime) -> list[Effect]:
        """End an unbridged attempt: record why and when to try again, tell a party who
        answered why it ends (waiting, or still hearing who calls; the dialplan then hangs
        up), release the other legs."""
        retry_at = None if self.retry is None else self.retry.next_at(self.claim, now)
        record = Record(RecordKind.ATTEMPT_FAILED, now,
                        cause=why if state is None else f"{state.leg}: {why}",
                        leg_causes={leg: s.recorded_cause for leg, s in self.legs.items()},
                        retry_at=retry_at)
        told: list[Effect] = []
        reason = ("call-failed" if state is None else f"{state.leg}-unavailable") + (
            "" if retry_at is not None else "-final")
        for waiting in self.legs.values():
            if waiting is state or waiting.released:
                continue
            waiting.tell = reason  # answered (waiting, or still hearing who calls): told now
            told += self._tell_late(waiting) if waiting.ready or waiting.answered else []
        grace = [Wake(now + TELL_GRACE)] if any(s.tell for s in self.legs.values()) else []
        return [*self._end("failed", record, state, now, told), *grace]

    def _tell_late(self, state: _LegState) -> list[Effect]:
        """Send a leg that answered after its attempt failed to hear why, then be hung up."""
        if state.tell is None or state.channel is None or state.released:
            return []
        reason, state.tell = state.tell, None
        state.ends(LegEnd.RELEASED)
        return [SendAction(_redirect(state.channel, END_CONTEXT, reason))]

    def _complete(self, leaving: _LegState | None, now: dt.datetime) -> list[Effect]:
        """End a bridged call: record the talk time, then hang up whoever did not leave
        (Asterisk leaves the survivor up and silent), except a patient whom the doctor left
        when the survey is in-call: Asterisk takes them to it (Bridge's F option)."""
        assert self.bridged_at is not None
        talk = int((now - self.bridged_at).total_seconds())
        record = Record(RecordKind.COMPLETED, now, talk_seconds=talk)
        doctor, patient = self.legs[Leg.DOCTOR], self.legs[Leg.PATIENT]
        if self.plan.survey_in_call and leaving is doctor and not patient.gone:
            patient.ends(LegEnd.GONE)  # in the survey: no longer this call's
        return self._end("completed", record, leaving, now)

    def _cut(self, cut: dt.datetime, now: dt.datetime, why: str = CUT_CAUSE
             ) -> list[Effect]:
        """The PBX or the line lost the bridged call at `cut`: record the talk time until
        then, and ring both again at once while at least RECONNECT_AT_LEAST of the time is
        left."""
        assert self.bridged_at is not None
        talk = max(0, int((cut - self.bridged_at).total_seconds()))
        retry_at = now if self.ends_at - now >= RECONNECT_AT_LEAST else None
        record = Record(RecordKind.CUT, now, cause=why, talk_seconds=talk, retry_at=retry_at)
        return self._end("cut", record, None, now)

    def _end(self, outcome: str, record: Record, leaving: _LegState | None, now: dt.datetime,
             told: list[Effect] | None = None) -> list[Effect]:
        """Record the result first, then end every leg but the one already going (and those
        `told` why), and wait (at most one ring time) for the legs to be gone."""
        self.phase, self.outcome = Phase.ENDING, outcome
        for state in self.legs.values():
            state.unexplained = False
        if leaving is not None:
            leaving.ends(LegEnd.RELEASED)
        self.give_up_at = now + dt.timedelta(seconds=self.plan.ring_seconds)
        wake = Wake(self.give_up_at)
        return [record, *(told or []), *self._release_legs(), wake, *self._settle()]

    def _release_legs(self) -> list[Effect]:
        """Hang up each leg nobat knows a channel of and has not ended yet (but one that may
        still turn out answered within TELL_GRACE, and then hear why)."""
        effects: list[Effect] = []
        for state in self.legs.values():
            if state.channel is not None and not (state.released or state.tell):
                state.ends(LegEnd.RELEASED)
                effects.append(SendAction(hangup(state.channel)))
        return effects

    def _settle(self) -> list[Effect]:
        """While ending: release legs that just showed up; Done once all are gone."""
        effects = self._release_legs()
        if all(state.gone for state in self.legs.values()):
            self.phase = Phase.DONE
            effects.append(Done(self.outcome))
        return effects


def _resumed(now: dt.datetime, since: dt.datetime) -> Record:
    """The note that an attempt went on after its events were missed since `since`."""
    unseen = max(0, int((now - since).total_seconds()))
    return Record(RecordKind.RESUMED, now, unseen_seconds=unseen)


def _ms(span: dt.timedelta) -> int:
    """Milliseconds, as Bridge()'s L() takes them."""
    return int(span.total_seconds() * 1000)


def _redirect(channel: str, context: str, exten: str) -> Action:
    """Send a waiting leg elsewhere in nobat's dialplan (one action: no variable to set first)."""
    return Action("Redirect", Fields.of(Channel=channel, Context=context, Exten=exten,
                                        Priority="1"))
