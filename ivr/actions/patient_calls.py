"""What reminder, absence and survey flows do with the booking a call is about.

Each writes the patient's choice to the call's row as soon as it is made, so a hang-up a
second later loses nothing; moving and cancelling go through the IVR's own paths (the
booking service's rules, read-back and confirming key), never around them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from db.booking import AppointmentView, Booked, Refused
from ivr.actions.appointments import Change, cancel, move
from ivr.actions.booking import RETRY, confirm, when
from ivr.call import Call, CallAbout
from ivr.menu import Escape, ask
from ivr.outcome import Outcome

log = logging.getLogger(__name__)


def _about(call: Call, action: str) -> CallAbout | None:
    if call.about is None:
        log.warning("action %s runs only on calls nobat makes to a patient; skipped", action)
    return call.about


async def _chose(call: Call, about: CallAbout, outcome: str) -> None:
    store = call.services.patient_calls
    assert store is not None
    await store.chose(about.call.id, outcome)


async def read_appointment(call: Call, params: Mapping[str, Any]) -> Outcome:
    """Say which booking this call is about: doctor, date and time."""
    about = _about(call, "read_appointment")
    if about is not None:
        booking = about.booking
        await call.say(["with-doctor", f"doctor/{booking.doctor.key}",
                        *when(call, booking.start)])
    return Outcome.DONE


async def confirm_appointment(call: Call, params: Mapping[str, Any]) -> Outcome:
    """The patient confirms they will come."""
    about = _about(call, "confirm_appointment")
    if about is not None:
        await _chose(call, about, "confirmed")
        await call.say(["reminder/confirmed"])
    return Outcome.DONE


async def reschedule_appointment(call: Call, params: Mapping[str, Any]) -> Outcome:
    """The IVR's reschedule path for this booking (same doctor: day, time, confirm)."""
    return await _through_ivr(call, "reschedule_appointment", move, "rescheduled")


async def cancel_appointment(call: Call, params: Mapping[str, Any]) -> Outcome:
    """The IVR's cancel path for this booking (asks for a confirming key)."""
    return await _through_ivr(call, "cancel_appointment", cancel, "cancelled")


async def _through_ivr(call: Call, action: str,
                       path: Callable[[Call, AppointmentView], Awaitable[Change]],
                       outcome: str) -> Outcome:
    """Run one of the IVR's own paths on the booking; record `outcome` if it changed it."""
    about = _about(call, action)
    if about is None:
        return Outcome.DONE
    change = await path(call, about.booking)
    if change.changed:
        await _chose(call, about, outcome)
    return change.outcome


async def opt_out(call: Call, params: Mapping[str, Any]) -> Outcome:
    """No more reminder or survey calls to this patient's number."""
    about = _about(call, "opt_out")
    if about is not None:
        store = call.services.patient_calls
        assert store is not None
        await store.opt_out(about.call.id)
        await call.say(["reminder/opted-out"])
    return Outcome.DONE


async def move_to_nearest(call: Call, params: Mapping[str, Any]) -> Outcome:
    """Offer the doctor's free slot nearest the lost one; moved only on the confirming key.
    Outcome "none" when the doctor has no free slot left; "back" when the patient says no."""
    about = _about(call, "move_to_nearest")
    if about is None:
        return Outcome.DONE
    booking, service = about.booking, call.services.booking
    for _ in range(RETRY.tries):
        slots = [s for s in await service.nearest_free(booking.doctor.id, booking.start)
                 if booking.kind in s.kinds]
        if not slots:
            await call.say(["absence/no-free-time"])
            return Outcome.NO_FREE_TIME
        slot = min(slots, key=lambda s: (abs(s.start - booking.start), s.start))
        answer = await confirm(call, ["absence/nearest", *when(call, slot.start)])
        if isinstance(answer, Escape):
            return Outcome.of(answer)
        if not answer:
            return Outcome.BACK
        assert call.patient_phone is not None
        result = await service.reschedule(booking.id, call.patient_phone, slot.start)
        if isinstance(result, Booked):
            await _chose(call, about, "moved")
            await call.say(["rescheduled"])
            return Outcome.DONE
        if isinstance(result, Refused):
            await call.say(["past-cutoff"])
            return Outcome.DONE
        await call.say(["slot-taken"])
    return Outcome.OFFICE


async def _rate(call: Call, question: str, prompt: str, keys: str) -> Outcome:
    """Ask one survey question and store the answer at once."""
    about = _about(call, f"survey {question}")
    if about is None:
        return Outcome.DONE
    answer = await ask(call, [prompt], [prompt], set(keys), RETRY)
    if answer is Escape.FAILED:
        return Outcome.DONE  # no answer to this one: the next question still counts
    if isinstance(answer, Escape):
        return Outcome.of(answer)
    surveys = call.services.surveys
    assert surveys is not None
    value: int | bool = answer == "1" if question == "book_again" else int(answer)
    await surveys.answer(about.booking.id, question, value)
    await _chose(call, about, "answered")
    return Outcome.DONE


async def rate_audio(call: Call, params: Mapping[str, Any]) -> Outcome:
    """1 to 5 for how the call sounded."""
    return await _rate(call, "audio", "survey/audio", "12345")


async def rate_doctor(call: Call, params: Mapping[str, Any]) -> Outcome:
    """1 to 5 for the doctor."""
    return await _rate(call, "doctor", "survey/doctor", "12345")


async def would_book_again(call: Call, params: Mapping[str, Any]) -> Outcome:
    """1 yes, 2 no: would they book a phone consultation again."""
    return await _rate(call, "book_again", "survey/again", "12")
