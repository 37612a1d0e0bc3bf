"""Moving and cancelling: the caller's own bookings, found by caller id or number plus code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from db.booking import AppointmentView, Booked, Cancelled, Refusal, Refused
from ivr.actions.booking import (
    RETRY,
    Draft,
    Step,
    confirm,
    pick_day,
    pick_time,
    read_back,
    run_steps,
    settle,
    when,
)
from ivr.actions.identify import ask_mobile
from ivr.call import Call
from ivr.menu import Escape, Option, choose

CODE_DIGITS = 6


async def find_bookings(call: Call) -> list[AppointmentView] | Escape:
    """Bookings of the caller id's number; otherwise ask for mobile number and booking code."""
    if call.patient_phone is not None:
        found = await call.services.booking.upcoming(call.patient_phone)
        if found:
            return found
        await call.say(["no-appointments"])
    phone = await ask_mobile(call)
    if isinstance(phone, Escape):
        return phone
    for attempt in range(RETRY.tries):
        entry = await call.read_digits(["enter-code"], max_digits=CODE_DIGITS, digit_wait=6.0)
        if entry.back:
            return Escape.BACK
        booking = await call.services.booking.find_by_code(phone, entry.digits)
        if booking is not None:
            call.patient_phone = phone
            return [booking]
        if attempt < RETRY.tries - 1:
            await call.say(["code-not-found"])
    return Escape.FAILED


async def my_appointments(call: Call, params: Mapping[str, Any]) -> str:
    """List the caller's bookings; for the one chosen: 1 cancels, 2 moves it."""
    bookings = await find_bookings(call)
    if isinstance(bookings, Escape):
        return "back" if bookings is Escape.BACK else "office"
    options = [Option(("with-doctor", f"doctor/{b.doctor.key}", *when(call, b.start)), b)
               for b in bookings[:6]]
    chosen = await choose(call, ["choose-appointment"], options, RETRY)
    if isinstance(chosen, Escape):
        return "back" if chosen is Escape.BACK else "office"
    assert isinstance(chosen, AppointmentView)
    what = await choose(call, read_back(call, chosen.doctor, chosen.start, chosen.kind),
                        [Option(("cancel-it",), "cancel"), Option(("move-it",), "move")], RETRY)
    if what == "cancel":
        return await cancel(call, chosen)
    if what == "move":
        return await move(call, chosen)
    return "back" if what is Escape.BACK else "office"


async def cancel(call: Call, booking: AppointmentView) -> str:
    """Cancel after a confirming key; a refusal (too late) is explained."""
    assert call.patient_phone is not None
    answer = await confirm(call, ["confirm-cancel"])
    if isinstance(answer, Escape) or not answer:
        await call.say(["not-changed"])
        return "done"
    result = await call.services.booking.cancel(booking.id, call.patient_phone)
    call.events.append(f"cancel:{type(result).__name__}")
    if isinstance(result, Cancelled):
        await call.say(["cancelled"])
    else:
        await call.say([_refusal_prompt(result)])
    return "done"


async def move(call: Call, booking: AppointmentView) -> str:
    """Choose a new day and time with the same doctor; the old slot is kept until then."""
    phone = call.patient_phone
    assert phone is not None
    if booking.start - call.now() < call.services.booking.policy.change_cutoff:
        await call.say(["past-cutoff"])
        return "done"
    steps: list[tuple[str, Step]] = [("day", pick_day), ("time", pick_time)]
    draft = Draft(doctor=booking.doctor, kind=booking.kind)

    async def finish(call: Call, draft: Draft) -> str | int:
        assert draft.slot is not None
        if booking.kind not in draft.slot.kinds:
            await call.say(["booking-refused"])
            return 1
        answer = await confirm(call, read_back(call, booking.doctor, draft.slot.start,
                                               booking.kind))
        if isinstance(answer, Escape) or not answer:
            return "office" if answer is Escape.OFFICE or answer is Escape.FAILED else 1
        result = await call.services.booking.reschedule(booking.id, phone, draft.slot.start)
        call.events.append(f"reschedule:{type(result).__name__}")
        if isinstance(result, Refused) and result.reason is Refusal.PAST_CUTOFF:
            await call.say(["past-cutoff"])
            return "done"
        if isinstance(result, Booked):
            await call.say(["rescheduled"])
        return await settle(call, result, draft, 1)

    return await run_steps(call, draft, steps, finish)


def _refusal_prompt(result: Refused) -> str:
    return "past-cutoff" if result.reason is Refusal.PAST_CUTOFF else "not-changed"

