"""Moving and cancelling: a booking the caller proves with its code, never by caller id alone.

A caller id can be forged, on the phone network as on the FastAGI port, so it only says
which number to check a code against; nothing about a booking is said before its code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clinic.phones import mask
from db.booking import AppointmentView, Booked, Cancelled, Refusal, Refused
from ivr import speech
from ivr.actions.booking import (
    RETRY,
    Draft,
    Step,
    confirm,
    confirm_slot,
    read_back,
    run_steps,
    settle,
)
from ivr.actions.identify import ask_mobile, caller_phone
from ivr.call import Call
from ivr.conditions import caller_number
from ivr.engine import Choice
from ivr.menu import Escape, Option, choose
from ivr.outcome import Outcome

log = logging.getLogger(__name__)
CODE_DIGITS = 6
"""The whole booking code, as the caller heard it when booking: its last four digits alone
would let three guesses a call find one booking in about 3,300 calls, the whole code in
about 300,000."""
LISTING = Choice(("off", "count"), default="off", refused={
    "full": "a caller id proves nothing, so reading a number's bookings before the code "
            "would read them to whoever forges that number"})
"""What a caller hears of their number's bookings before keying a code."""


@dataclass(frozen=True)
class Change:
    """How cancelling or moving a booking ended: where the flow goes on, and whether the
    booking was changed (a reminder call records the patient's choice only then)."""

    outcome: Outcome
    changed: bool = False


async def my_appointments(call: Call, params: Mapping[str, Any]) -> Outcome:
    """Take a booking's code, read that booking back; 1 cancels it, 2 moves it.

    `listing` = "count" first says how many bookings the caller id's number has (never for
    a number keyed in, which anyone can type); "off" says nothing.
    """
    if call.code_tries >= RETRY.tries:
        await call.say(["code-tries-used"])
        return Outcome.OFFICE
    if params.get("listing", LISTING.default) == "count":
        await say_count(call)
    booking = await prove_booking(call)
    if isinstance(booking, Escape):
        return Outcome.of(booking)
    what = await choose(call, read_back(call, booking.doctor, booking.start, booking.kind),
                        [Option(("cancel-it",), "cancel"), Option(("move-it",), "move")], RETRY)
    if what == "cancel":
        return (await cancel(call, booking)).outcome
    if what == "move":
        return (await move(call, booking)).outcome
    assert isinstance(what, Escape)
    return Outcome.of(what)


async def say_count(call: Call) -> None:
    """How many upcoming bookings the caller id's number has: no doctor, time or code."""
    number = caller_number(call.session.info.caller_id)
    if number is None:
        return
    count = len(await call.services.booking.upcoming(number))
    await call.say(["appointments-count", *speech.number(count, call.language)] if count
                   else ["no-appointments"])


async def prove_booking(call: Call) -> AppointmentView | Escape:
    """The booking whose code the caller keys in, if it was booked with the caller's number.

    The number is the caller id's, or keyed in when there is none. A code that does not
    match the caller id's number asks once for the mobile number it was booked with (the
    caller may be on another phone); every caller hears that, so it tells nothing. Three
    wrong or empty entries in one call end at the office.
    """
    number = await caller_phone(call)
    if isinstance(number, Escape):
        return number
    may_ask_number = number == caller_number(call.session.info.caller_id)
    while call.code_tries < RETRY.tries:
        entry = await call.read_digits(["enter-code"], max_digits=CODE_DIGITS, digit_wait=6.0)
        if entry.back:
            return Escape.BACK
        booking = None
        if entry.digits:
            booking = await call.services.booking.find_by_code(number, entry.digits)
        if booking is None and entry.digits and may_ask_number:
            may_ask_number = False
            other = await ask_mobile(call, first="code-other-mobile")
            if isinstance(other, Escape):
                return other
            number = other
            booking = await call.services.booking.find_by_code(number, entry.digits)
        if booking is not None:
            return booking
        call.code_tries += 1
        await call.say(["code-not-found"] if entry.digits else ["no-input"])
    log.warning("%d wrong booking codes for %s on one call; no more are taken on it",
                call.code_tries, mask(number))
    return Escape.FAILED


async def cancel(call: Call, booking: AppointmentView) -> Change:
    """Cancel after a confirming key; a refusal (too late) is explained.

    The booking was proven by its code, or is the one nobat rang its number about."""
    answer = await confirm(call, ["confirm-cancel"])
    if isinstance(answer, Escape) or not answer:
        await call.say(["not-changed"])
        return Change(Outcome.DONE)
    result = await call.services.booking.cancel(booking.id, booking.patient_phone)
    if isinstance(result, Cancelled):
        await call.say(["cancelled"])
        return Change(Outcome.DONE, changed=True)
    await call.say([_refusal_prompt(result)])
    return Change(Outcome.DONE)


async def move(call: Call, booking: AppointmentView) -> Change:
    """Choose a new day and time with the same doctor; the old slot is kept until then."""
    phone = booking.patient_phone
    if booking.start - call.now() < call.services.booking.policy.change_cutoff:
        await call.say(["past-cutoff"])
        return Change(Outcome.DONE)
    draft = Draft(doctor=booking.doctor, kind=booking.kind)
    moved = False

    async def finish(call: Call, draft: Draft) -> Outcome | Step:
        nonlocal moved
        assert draft.slot is not None
        if booking.kind not in draft.slot.kinds:
            await call.say(["booking-refused"])
            return Step.TIME
        unconfirmed = await confirm_slot(call, booking.doctor, draft.slot.start, booking.kind)
        if unconfirmed is not None:
            return unconfirmed
        result = await call.services.booking.reschedule(booking.id, phone, draft.slot.start)
        if isinstance(result, Refused) and result.reason is Refusal.PAST_CUTOFF:
            await call.say(["past-cutoff"])
            return Outcome.DONE
        if isinstance(result, Booked):
            moved = True
            await call.say(["rescheduled"])
        return await settle(call, result, draft)

    outcome = await run_steps(call, draft, (Step.DAY, Step.TIME), finish)
    return Change(outcome, changed=moved)


def _refusal_prompt(result: Refused) -> str:
    return "past-cutoff" if result.reason is Refusal.PAST_CUTOFF else "not-changed"

