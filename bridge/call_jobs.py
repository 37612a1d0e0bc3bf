"""Each kind of claimed attempt's steps in its own store: what a `Record` becomes there, how
the lease is renewed, and what shutdown does to it (a consultation is handed over, a call to a
patient given back). The runner (bridge/call_runner.py) drives both alike through `Job`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Protocol

from bridge.outbound import Record, RecordKind
from bridge.patient_call import PatientCallAttempt
from clinic.call_kinds import Leg, far_half
from db.consultations import CUT_CAUSE, DOWN_CAUSE, Claim, ConsultationStore
from db.leases import LeasedClaim
from db.patient_calls import STOPPED_CAUSE, PatientCallClaim, PatientCallStore

log = logging.getLogger(__name__)


class Job(Protocol):
    """One claimed attempt as the runner stores it: consultation or patient call."""

    name: str

    @property
    def claim(self) -> LeasedClaim: ...
    def earlier_channels(self) -> set[str]: ...
    async def write(self, record: Record) -> None: ...
    async def renew(self) -> None: ...
    async def hand_over(self) -> bool: ...
    async def given_back(self) -> None: ...


class ConsultationJob:
    """A consultation attempt's steps in the ConsultationStore."""

    def __init__(self, store: ConsultationStore, claim: Claim, missed_grace: dt.timedelta
                 ) -> None:
        self.store, self.claim = store, claim
        self.missed_grace = missed_grace
        """A call given back later than this after its time is missed, not dialled."""
        self.name = f"consultation {claim.ident}"

    def earlier_channels(self) -> set[str]:
        """Channels earlier attempts may have left up (after an AMI fault or a crash)."""
        earlier = {self.claim.kind.channel_id(self.claim.ident, n, leg)
                   for n in range(1, self.claim.attempt) for leg in Leg}
        return earlier | {far_half(c) for c in earlier}

    async def write(self, record: Record) -> None:
        store, claim = self.store, self.claim
        if record.kind is RecordKind.LEG_ANSWERED:
            assert record.leg is not None
            await store.leg_answered(claim, record.leg, record.at)
        elif record.kind is RecordKind.BRIDGED:
            await store.bridged(claim, record.at)
        elif record.kind is RecordKind.COMPLETED:
            await store.completed(claim, record.at, record.talk_seconds, record.cause)
        elif record.kind is RecordKind.RESUMED:
            log.warning("consultation %s attempt %d resumed from Asterisk's channels after %s s "
                        "unseen", claim.ident, claim.attempt, record.unseen_seconds)
            await store.resumed(claim, record.unseen_seconds or 0)
        elif record.kind is RecordKind.GIVEN_BACK:
            late = record.at - claim.consultation.due_at > self.missed_grace
            log.warning("consultation %s attempt %d taken over with no leg left in Asterisk: "
                        "%s", claim.ident, claim.attempt,
                        "missed, too late to ring" if late else "given back, due again")
            if late:
                await store.attempt_failed(claim, DOWN_CAUSE, {}, None, record.at)
            else:
                await store.abandon(claim)
        elif record.kind is RecordKind.CUT:
            log.warning("consultation %s attempt %d cut after %s s (%s); %s",
                        claim.ident, claim.attempt, record.talk_seconds, record.cause,
                        "ringing both again" if record.retry_at else "no time left")
            await store.cut(claim, record.at, record.talk_seconds or 0, record.retry_at,
                            record.cause or CUT_CAUSE)
        else:
            log.info("consultation %s attempt %d failed (%s); next try %s",
                     claim.ident, claim.attempt, record.cause, record.retry_at)
            await store.attempt_failed(claim, record.cause or "failed", record.leg_causes,
                                       record.retry_at, record.at)

    async def renew(self) -> None:
        self.claim = await self.store.renew(self.claim)

    async def hand_over(self) -> bool:
        """On shutdown (a deploy, a restart) nothing is hung up: the lease ends now, so the
        next nobat takes the attempt over at once from Asterisk's channels (a bridged call
        Asterisk ends on time in any case)."""
        await self.store.hand_over(self.claim)
        return True

    async def given_back(self) -> None:
        await self.store.abandon(self.claim)


class PatientCallJob:
    """A patient call attempt's steps in the PatientCallStore."""

    def __init__(self, store: PatientCallStore, claim: PatientCallClaim, call: PatientCallAttempt
                 ) -> None:
        self.store, self.claim, self.call = store, claim, call
        self.name = f"{claim.call.purpose} call {claim.ident}"

    def earlier_channels(self) -> set[str]:
        """None: a patient call is never rung again while an earlier attempt may be up."""
        return set()

    async def write(self, record: Record) -> None:
        store, claim = self.store, self.claim
        if record.kind is RecordKind.LEG_ANSWERED:
            await store.answered(claim, record.at)
        elif record.kind is RecordKind.COMPLETED:
            await store.finished(claim, record.cause)
        else:
            log.info("%s attempt %d not answered (%s); next try %s", self.name,
                     claim.attempt, record.cause, record.retry_at)
            await store.attempt_failed(claim, record.cause or "failed", record.retry_at)

    async def renew(self) -> None:
        self.claim = await self.store.renew(self.claim)

    async def hand_over(self) -> bool:
        """On shutdown the call is hung up and given back: its flow runs in this nobat."""
        return False

    async def given_back(self) -> None:
        """Answered: it is over (never rung again); not answered: due again at once."""
        if self.call.answered:
            await self.store.finished(self.claim, STOPPED_CAUSE)
        else:
            await self.store.abandon(self.claim)

