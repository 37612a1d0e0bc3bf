"""Booking by phone: specialty, doctor, day, time, kind, read back, confirm, code."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clinic.schedule import Slot, VisitKind
from db.booking import Booked, BookingResult, DoctorView, Refused, SlotTaken
from ivr import speech
from ivr.actions.identify import caller_phone
from ivr.call import Call
from ivr.flow import Retry
from ivr.menu import PAGE, Escape, Option, ask, choose, choose_paged
from ivr.outcome import Outcome

RETRY = Retry()
CODE_REPEATS = 3


class Step(enum.Enum):
    """The booking dialogue's questions in the order they come, then its finish (read back and
    write, or say the hours); an action asks some of them, and goes back to one by name."""

    SPECIALTY = 1
    DOCTOR = 2
    DAY = 3
    TIME = 4
    KIND = 5
    FINISH = 6


@dataclass
class Draft:
    """The booking being put together; a step left empty is asked, one filled by rule is skipped."""

    specialty: str | None = None
    doctor: DoctorView | None = None
    day: dt.date | None = None
    slot: Slot | None = None
    kind: VisitKind | None = None
    automatic: set[Step] = field(default_factory=set)


Finish = Callable[[Call, Draft], Awaitable[Outcome | Step]]
"""An action's last step: the outcome that ends it, or the step to go back to."""


def when(call: Call, moment: dt.datetime) -> list[str]:
    """Say a slot's date and time in the caller's language."""
    tz = call.services.clinic.tz
    return speech.date(moment.astimezone(tz).date(), call.language) + speech.clock(
        moment, call.language, tz)


def read_back(call: Call, doctor: DoctorView, start: dt.datetime, kind: VisitKind) -> list[str]:
    """The whole booking in one sentence, before anything is written."""
    return ["with-doctor", f"doctor/{doctor.key}", *when(call, start), f"kind/{kind.value}"]


async def pick_specialty(call: Call, draft: Draft) -> Escape | None:
    """Ask which specialty, unless the flow fixed it or only one is offered."""
    doctors = await call.services.booking.doctors()
    specialties = list(dict.fromkeys(d.specialty for d in doctors))
    if draft.specialty in specialties or len(specialties) == 1:
        draft.specialty = draft.specialty or specialties[0]
        draft.automatic.add(Step.SPECIALTY)
        return None
    options = [Option((f"specialty/{s}",), s) for s in specialties]
    answer = await choose(call, ["choose-specialty"], options, RETRY)
    if isinstance(answer, Escape):
        return answer
    draft.specialty = str(answer)
    return None


async def pick_doctor(call: Call, draft: Draft) -> Escape | None:
    """Ask which doctor of the specialty, unless there is only one."""
    doctors = await call.services.booking.doctors(draft.specialty)
    if len(doctors) == 1:
        draft.doctor = doctors[0]
        draft.automatic.add(Step.DOCTOR)
        return None
    answer = await choose(call, ["choose-doctor"],
                          [Option((f"doctor/{d.key}",), d) for d in doctors], RETRY)
    if isinstance(answer, Escape):
        return answer
    assert isinstance(answer, DoctorView)
    draft.doctor = answer
    return None


async def pick_day(call: Call, draft: Draft) -> Escape | None:
    """Offer the next days that still have a free slot."""
    assert draft.doctor is not None
    days = await call.services.booking.next_free_days(draft.doctor.id, limit=PAGE)
    if not days:
        await call.say(["no-free-days"])
        return Escape.BACK
    options = [Option(tuple(speech.date(day, call.language)), day) for day in days]
    answer = await choose(call, ["choose-day"], options, RETRY)
    if isinstance(answer, Escape):
        return answer
    assert isinstance(answer, dt.date)
    draft.day = answer
    return None


async def pick_time(call: Call, draft: Draft) -> Escape | None:
    """Offer free times of the day, a few at a time, "9" for more."""
    assert draft.doctor is not None and draft.day is not None
    slots = await call.services.booking.free_slots(draft.doctor.id, draft.day)
    if not slots:
        await call.say(["no-free-times"])
        return Escape.BACK
    answer = await choose_paged(
        call, ["choose-time"], slots,
        lambda slot: speech.clock(slot.start, call.language, call.services.clinic.tz), RETRY,
        ["more-times"])
    if isinstance(answer, Escape):
        return answer
    draft.slot = answer
    return None


async def pick_kind(call: Call, draft: Draft) -> Escape | None:
    """Ask in person or by phone, where the slot offers both."""
    assert draft.slot is not None
    kinds = sorted(draft.slot.kinds)
    if len(kinds) == 1:
        draft.kind = kinds[0]
        draft.automatic.add(Step.KIND)
        return None
    answer = await choose(call, ["choose-kind"],
                          [Option((f"kind/{k.value}",), k) for k in kinds], RETRY)
    if isinstance(answer, Escape):
        return answer
    assert isinstance(answer, VisitKind)
    draft.kind = answer
    return None


ASKS: dict[Step, Callable[[Call, Draft], Awaitable[Escape | None]]] = {
    Step.SPECIALTY: pick_specialty, Step.DOCTOR: pick_doctor, Step.DAY: pick_day,
    Step.TIME: pick_time, Step.KIND: pick_kind}


async def run_steps(call: Call, draft: Draft, steps: Sequence[Step], finish: Finish) -> Outcome:
    """Ask the steps, then finish; '*' goes back to the last step the caller answered, or out
    of the action. A step to go back to that the action does not ask resumes at the next."""
    index = 0
    while True:
        if index >= len(steps):
            result = await finish(call, draft)
            if isinstance(result, Outcome):
                return result
            index = next((i for i, step in enumerate(steps) if step.value >= result.value),
                         len(steps))
            continue
        escape = await ASKS[steps[index]](call, draft)
        if escape is None:
            index += 1
            continue
        if escape is not Escape.BACK:
            return Outcome.of(escape)
        index -= 1
        while index >= 0 and steps[index] in draft.automatic:
            draft.automatic.discard(steps[index])
            index -= 1
        if index < 0:
            return Outcome.BACK


async def confirm(call: Call, prompts: list[str]) -> bool | Escape:
    """Read back and ask: 1 confirms, 2 changes; nothing is written without the key."""
    answer = await ask(call, [*prompts, "confirm-keys"], ["confirm-keys"], {"1", "2"}, RETRY)
    return answer if isinstance(answer, Escape) else answer == "1"


async def announce_code(call: Call, code: str) -> None:
    """Say the booking code digit by digit, and again while the caller presses 1."""
    await call.say(["your-code", *speech.digits(code, call.language)])
    for _ in range(CODE_REPEATS):
        answer = await ask(call, ["repeat-code"], ["repeat-code"], {"1"},
                           Retry(timeout=4.0, tries=1, invalid=(), no_input=()))
        if answer != "1":
            return
        await call.say(["your-code", *speech.digits(code, call.language)])


async def confirm_slot(call: Call, doctor: DoctorView, start: dt.datetime, kind: VisitKind
                       ) -> Outcome | Step | None:
    """Read the booking back and ask: None when confirmed; 2 or '*' asks the time again."""
    answer = await confirm(call, read_back(call, doctor, start, kind))
    if answer is True:
        return None
    return Step.TIME if answer is False or answer is Escape.BACK else Outcome.of(answer)


async def settle(call: Call, result: BookingResult, draft: Draft) -> Outcome | Step:
    """Tell the caller how the write went; a lost slot offers the nearest free ones."""
    if isinstance(result, Booked):
        await announce_code(call, result.appointment.code)
        return Outcome.DONE
    if isinstance(result, Refused):
        await call.say(["booking-refused"])
        return Step.TIME
    assert isinstance(result, SlotTaken)
    await call.say(["slot-taken"])
    if not result.alternatives:
        return Step.DAY
    options = [Option(tuple(when(call, s.start)), s) for s in result.alternatives]
    answer = await choose(call, ["nearest-slots"], options, RETRY)
    if isinstance(answer, Escape):
        return Step.TIME if answer is Escape.BACK else Outcome.of(answer)
    assert isinstance(answer, Slot)
    draft.slot, draft.day = answer, answer.start.astimezone(call.services.clinic.tz).date()
    if draft.kind not in answer.kinds:
        draft.kind = None
        return Step.KIND
    return Step.FINISH


async def book(call: Call, params: Mapping[str, Any]) -> Outcome:
    """The booking dialogue; `specialty` in params narrows it to one specialty."""
    phone = await caller_phone(call)
    if isinstance(phone, Escape):
        return Outcome.of(phone)
    steps = (Step.SPECIALTY, Step.DOCTOR, Step.DAY, Step.TIME, Step.KIND)

    async def finish(call: Call, draft: Draft) -> Outcome | Step:
        assert draft.doctor and draft.slot and draft.kind
        unconfirmed = await confirm_slot(call, draft.doctor, draft.slot.start, draft.kind)
        if unconfirmed is not None:
            return unconfirmed
        result = await call.services.booking.book(phone, draft.doctor.id, draft.slot.start,
                                                  draft.kind, language=call.language)
        return await settle(call, result, draft)

    return await run_steps(call, Draft(specialty=params.get("specialty")), steps, finish)
