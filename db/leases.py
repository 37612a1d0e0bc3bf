"""Claims on outbound calls held through a lease: the conditions every claim and step share.

A consultation and a patient call are each dialled only by the instance whose conditional
UPDATE won it; each later step is written only while that claim still holds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar

from sqlalchemy import ColumnElement, and_, bindparam, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.call_kinds import CallKind, Leg
from db.engine import Clock, Database, utc_now
from db.lifecycles import (
    LIVE_CONSULTATION,
    LIVE_PATIENT_CALL,
    WAITING,
    ConsultationState,
    Lifecycle,
)
from db.models import Appointment, Clinic, Consultation, Doctor, PatientCall

ABANDON_CAUSE = "abandoned when nobat stopped"
GIVEN_BACK = {"cause": ABANDON_CAUSE, "claimed_by": None, "lease_until": None}
"""A claim given back on shutdown: due again at once, for this or another instance."""


def due_again(retry_at: dt.datetime, cause: str) -> dict[str, Any]:
    """An attempt failed: the row is due again at `retry_at`, free for any instance, and
    says why."""
    return {"due_at": retry_at, "cause": cause, "claimed_by": None, "lease_until": None}


class ClaimLost(RuntimeError):
    """A step was refused: another claim took over, or the state no longer allows it."""

    def __init__(self, message: str, taken_over: bool = False) -> None:
        super().__init__(message)
        self.taken_over = taken_over
        """Another instance runs this same attempt now: its legs are that instance's."""


Leased = type[Consultation] | type[PatientCall]
PracticeRoom = Callable[[int, int | None], int]
"""How many more calls a practice may start now, by its clinic id and its own cap
(max_channels): within its share of the line's cap and its own."""


@dataclass
class Trunked:
    """The calls about to be claimed whose practice has a trunk of its own (max_channels),
    and those of them the trunk refused."""

    clinics: dict[int, int] = field(default_factory=dict)
    """Each such call's practice (clinic id), by the call's id."""
    refused: set[int] = field(default_factory=set)
    """The calls the trunk could not carry, counted over every instance's calls."""


@dataclass(frozen=True)
class CallingPractice:
    """The clinic a call is made for (its doctor's), as the store held it when the call was
    claimed: in platform mode each call shows its own practice's number and name."""

    id: int
    phone: str
    name: str
    """Its English name, or its name when it has none: what a caller id can carry."""
    folder: str = ""
    """Where its own prompts (its doctors' names) are: its key when the store holds several
    practices, "" when it is the only one (ivr/prompts.py own_key)."""
    dial: str | None = None
    """Its own dial string (its trunk); None: the line's."""
    rules: str | None = None
    """Its own rules for calling patients, as the store keeps them (PracticeCallRules.text)."""


_EVERY_CLINIC = Clinic.__table__.alias("every_clinic")
_SEVERAL = select(func.count(_EVERY_CLINIC.c.id)).scalar_subquery() > 1


def practice_columns() -> dict[str, ColumnElement[Any]]:
    """The columns a due call's record names its practice by (its select joins Doctor and
    Clinic): read with the row, so a clinic loaded or changed since start is used at once."""
    return {"clinic_id": Doctor.clinic_id, "clinic_phone": Clinic.phone,
            "clinic_name": func.coalesce(func.nullif(Clinic.name_en, ""), Clinic.name),
            "clinic_folder": case((_SEVERAL, Clinic.key), else_=""), "clinic_dial": Clinic.dial,
            "clinic_call_times": Clinic.call_times}


@dataclass(frozen=True, kw_only=True)
class LeasedClaim:
    """The right of one instance to dial one attempt of one row, until its lease runs out;
    each kind of claim adds the row it holds."""

    kind: ClassVar[CallKind]
    attempt: int
    instance: str
    lease: dt.timedelta
    lease_until: dt.datetime
    taken_over: bool = False
    """This claim took over an attempt in progress whose instance stopped: same attempt,
    nothing dialled; it goes on from what Asterisk's channels say."""
    seen_until: dt.datetime | None = None
    """For a takeover: when the stopped instance last wrote the attempt (a step or a lease
    renewal), so last saw it."""

    @property
    def ident(self) -> int:
        """The claimed row's id, for logs and lookups."""
        raise NotImplementedError

    @property
    def practice(self) -> CallingPractice:
        """The clinic the call is made for: whose number and name its phones show."""
        raise NotImplementedError

    def channel_id(self, leg: Leg | None = None) -> str:
        """The ChannelId this attempt gives to `leg` (a patient call's one leg has none)."""
        return self.kind.channel_id(self.ident, self.attempt, leg)

    def renewed(self, now: dt.datetime) -> Self:
        """The same claim with its lease counted again from `now`."""
        return dataclasses.replace(self, lease_until=now + self.lease)


L = TypeVar("L", bound=LeasedClaim)


class LeasedStore(Generic[L]):
    """Writes the steps of claimed attempts of one kind, each only while its claim holds and
    its lifecycle allows the step from the row's state."""

    model: ClassVar[Leased]
    lifecycle: ClassVar[Lifecycle[Any, Any]]
    keep: ClassVar[enum.StrEnum]
    """The step that keeps an attempt in progress as it is (its lease renewed)."""
    claim_step: ClassVar[enum.StrEnum]
    """The step that starts a new attempt."""
    may_take_over: ClassVar[bool]
    """Whether another instance may take an attempt over as it is (same attempt number)."""

    def __init__(self, database: Database, clock: Clock = utc_now) -> None:
        self.db = database
        self.clock = clock

    async def due_times(self, after: dt.datetime, until: dt.datetime) -> list[dt.datetime]:
        """The distinct moments waiting rows fall due in (after, until]: the dialer's timers."""
        model = self.model
        rows = await self.db.rows(
            select(model.due_at)
            .where(model.state.in_(WAITING), model.due_at > after, model.due_at <= until)
            .distinct()
            .order_by(model.due_at), None)
        return [row[0] for row in rows]

    async def renew(self, claim: L) -> L:
        """Extend the lease of an attempt in progress, so no other instance takes it over."""
        renewed = claim.renewed(self.clock())
        await self._write_held(claim, self.keep, {"lease_until": renewed.lease_until})
        return renewed

    def _claimable(self, now: dt.datetime) -> ColumnElement[bool]:
        """Rows a new attempt may be claimed on now: due, in a state the lifecycle lets it
        leave by a claim."""
        model = self.model
        return and_(claimable(model, now), model.state.in_(self.lifecycle.leaves(self.claim_step)))

    def _claimed(self, instance: str, lease: dt.timedelta, now: dt.datetime
                 ) -> dict[str, Any]:
        """What a claim writes: the new attempt, this instance's, under a lease from now."""
        return {**self.lifecycle.writes(self.claim_step), "claimed_by": instance,
                "lease_until": now + lease, "attempts": self.model.attempts + 1,
                "updated_at": now}

    @property
    def live_states(self) -> tuple[str, ...]:
        """The states an attempt in progress is in."""
        return self.lifecycle.leaves(self.keep)

    async def _write_held(self, claim: L, step: enum.StrEnum, values: dict[str, Any],
                          then: Callable[[AsyncSession, dt.datetime], Awaitable[None]] | None = None
                          ) -> None:
        """Write `step` in one transaction, only while `claim` holds and the lifecycle allows
        the step from the row's state; `then` writes what goes with it (other rows) in the
        same transaction."""
        allowed = self.lifecycle.leaves(step)
        values = {**self.lifecycle.writes(step), **values}

        async def run() -> None:
            async with self.db.writing() as session:
                now = self.clock()
                model = self.model
                held = await session.execute(
                    update(model)
                    .where(model.id == claim.ident, model.claimed_by == claim.instance,
                           model.attempts == claim.attempt, model.state.in_(allowed))
                    .values(updated_at=now, **values)
                    .execution_options(synchronize_session=False))
                if held.rowcount != 1:
                    raise await self._lost(session, claim, allowed)
                if then is not None:
                    await then(session, now)

        await self.db.retry_locked(run)

    async def _lost(self, session: AsyncSession, claim: L, allowed: tuple[str, ...]
                    ) -> ClaimLost:
        """Say what the row holds now, so a refused step is easy to understand in the log;
        another instance holding this same attempt took it over."""
        model = self.model
        row = (await session.execute(
            select(model.state, model.claimed_by, model.attempts)
            .where(model.id == claim.ident))).one_or_none()
        now = "gone" if row is None else f"{row[0]}, claimed by {row[1]!r} at attempt {row[2]}"
        taken_over = (self.may_take_over and row is not None and row[0] in self.live_states
                      and row[1] != claim.instance and row[2] == claim.attempt)
        return ClaimLost(f"{model.__tablename__.replace('_', ' ')} {claim.ident} attempt "
                         f"{claim.attempt} of {claim.instance!r} may not leave "
                         f"{'/'.join(allowed)}: it is {now}", taken_over)

    async def _claim_oldest(self, due: Callable[[dt.datetime], ColumnElement[bool]],
                            claim: Callable[[list[int], Trunked], Awaitable[list[L]]],
                            limit: int, running: Iterable[int], room: PracticeRoom | None
                            ) -> list[L]:
        """Claim up to `limit` rows that are `due`, oldest first, by `claim` (conditional
        UPDATEs over the candidates, in one transaction): rows another instance wins are
        skipped, and `running` (what this instance has in hand) are never tried. With `room`,
        no practice gets more than its room: the oldest of the others' come next; a practice
        whose own trunk refuses a call (full with every instance's calls) gets no more this
        round. The look for candidates, every few seconds on an idle line, is a plain read
        (db/reads.py)."""
        model = self.model
        claims: list[L] = []
        tried = set(running)
        left: dict[int, int] = {}  # calls each practice may still start, as counted so far
        while len(claims) < limit:
            full = [clinic for clinic, calls in left.items() if calls <= 0]
            rows = await self.db.rows(
                select(model.id, Doctor.clinic_id, Clinic.max_channels)
                .join(Appointment, model.appointment_id == Appointment.id)
                .join(Doctor, Appointment.doctor_id == Doctor.id)
                .join(Clinic, Doctor.clinic_id == Clinic.id)
                .where(due(self.clock()), model.id.not_in(tried), Doctor.clinic_id.not_in(full))
                .order_by(model.due_at, model.id)
                .limit(limit - len(claims)), None)
            if not rows:
                break
            tried.update(row.id for row in rows)
            picked: dict[int, int] = {}
            trunked = Trunked()
            for row in rows:
                if room is not None:
                    left.setdefault(row.clinic_id, room(row.clinic_id, row.max_channels))
                    if left[row.clinic_id] <= 0:
                        continue
                    left[row.clinic_id] -= 1
                picked[row.id] = row.clinic_id
                if row.max_channels is not None:
                    trunked.clinics[row.id] = row.clinic_id
            won = await claim(list(picked), trunked)
            for lost in set(picked) - {taken.ident for taken in won} if room else ():
                # not claimed (won elsewhere, or closed): its place is free again, but a
                # practice whose trunk refused a call is full
                refused = lost in trunked.refused
                left[picked[lost]] = 0 if refused else left[picked[lost]] + 1
            claims += won
        return claims


_LIVE: tuple[tuple[Leased, tuple[str, ...], CallKind], ...] = (
    (Consultation, LIVE_CONSULTATION, CallKind.CONSULTATION),
    (PatientCall, LIVE_PATIENT_CALL, CallKind.PATIENT_CALL))
"""The rows of calls under way, of both kinds, and what each holds of a trunk."""


async def trunk_caps(session: AsyncSession, trunked: Trunked, ids: Iterable[int]
                     ) -> dict[int, int]:
    """The channels the trunks carry of the practices of those of `ids` that `trunked` names,
    their rows (and no other practice's) locked until the claim commits, so two instances'
    claims count their calls one after the other: each statement of a READ COMMITTED
    transaction (the driver's BEGIN says so) sees what the other committed before the lock
    was granted. On SQLite a write transaction already takes turns. FOR NO KEY UPDATE leaves
    the practice's rows' foreign keys free (the call log's inserts, logins). Taken first in a
    claim, before any call's row."""
    clinics = {trunked.clinics[i] for i in ids if i in trunked.clinics}
    if not clinics:
        return {}
    return dict((await session.execute(
        select(Clinic.id, Clinic.max_channels)
        .where(Clinic.id.in_(clinics), Clinic.max_channels.is_not(None))
        .order_by(Clinic.id).with_for_update(key_share=True))).all())


async def over_trunks(session: AsyncSession, kind: CallKind, ids: Sequence[int],
                      trunked: Trunked, caps: Mapping[int, int]) -> set[int]:
    """Those of `ids` (new attempts of `kind` about to be claimed, oldest first) that their
    practice's own trunk (`caps`, from `trunk_caps`) cannot carry now, counted over the calls
    every instance has under way in the store (through the partial indexes on live states),
    as `Capacity.practice_room` counts one instance's: a patient call leaves room for a
    consultation. The refused are also noted in `trunked`."""
    clinics = sorted(caps)
    if not clinics:
        return set()
    held = dict.fromkeys(clinics, 0)
    for model, states, holds in _LIVE:
        claiming = ids if holds is kind else ()
        for clinic, calls in (await session.execute(
                select(Doctor.clinic_id, func.count(model.id))
                .join(Appointment, model.appointment_id == Appointment.id)
                .join(Doctor, Appointment.doctor_id == Doctor.id)
                .where(Doctor.clinic_id.in_(clinics), model.state.in_(
                           bindparam("live", states, expanding=True, literal_execute=True)),
                       model.id.not_in(claiming))
                .group_by(Doctor.clinic_id))):
            held[clinic] += calls * holds.channels
    spare = CallKind.CONSULTATION.channels if kind is CallKind.PATIENT_CALL else 0
    over = set()
    for ident in ids:
        clinic = trunked.clinics.get(ident)
        if clinic not in caps:
            continue
        if held[clinic] + kind.channels + spare > caps[clinic]:
            over.add(ident)
        else:
            held[clinic] += kind.channels
    trunked.refused |= over
    return over


def lease_expired(model: Leased, now: dt.datetime, *states: str) -> ColumnElement[bool]:
    """In one of `states`, but the instance that claimed it stopped renewing (crashed or
    cut off)."""
    return and_(model.state.in_(states), model.lease_until < now)


def waiting_due(model: Leased, now: dt.datetime) -> ColumnElement[bool]:
    """Waiting for its next attempt, and due."""
    return and_(model.state.in_(WAITING), model.due_at <= now)


def claimable(model: Leased, now: dt.datetime) -> ColumnElement[bool]:
    """Due for a new attempt: waiting and due, or dialling under a lease that ran out."""
    return or_(waiting_due(model, now), lease_expired(model, now, ConsultationState.DIALLING))
