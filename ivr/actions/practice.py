"""The shared number: a caller keys the doctor's code from the practice's card (or picks a
specialty and a doctor across the practices), hears the doctor and the practice named, and goes
on in that practice's line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ivr.actions.booking import RETRY, confirm
from ivr.call import Call, DoctorChoice
from ivr.menu import Escape, choose_paged
from ivr.outcome import Outcome
from ivr.prompts import own_key

CODE_DIGITS = 6
"""A card code is 2 to 6 digits; '#' ends a shorter one."""
CODES_A_CALL = 6
"""Wrong doctors' codes one call may key (going back to the menu does not buy more)."""
CHOSEN = "practice"
"""The call value that says a practice was chosen here, for the practice's flow to branch on."""


async def choose_practice(call: Call, params: Mapping[str, Any]) -> Outcome:
    """Ask for a doctor's code until one is confirmed; a wrong code is said to be wrong, not
    guessed at, and nothing about any practice is said before a code matches."""
    for _ in range(RETRY.tries):
        if call.doctor_codes_tried >= CODES_A_CALL:
            break
        entry = await call.read_digits(["enter-doctor-code"], max_digits=CODE_DIGITS,
                                       digit_wait=RETRY.timeout)
        if entry.back:
            return Outcome.BACK
        choice = call.services.doctor_codes.get(entry.digits)
        if choice is None:
            call.doctor_codes_tried += bool(entry.digits)
            await call.say(["doctor-code-unknown" if entry.digits else "no-input"])
            continue
        answer = await confirm(call, ["doctor-chosen", *_named(choice)])
        if isinstance(answer, Escape):
            return Outcome.of(answer)
        if answer:
            return await _go_on(call, choice)
    return Outcome.HANGUP


async def choose_by_specialty(call: Call, params: Mapping[str, Any]) -> Outcome:
    """Pick a specialty, then one of its doctors across the practices, each named with their
    practice; each a page at a time ("9" for more)."""
    doctors = call.services.platform_doctors
    specialties = list(dict.fromkeys(choice.specialty for choice in doctors))
    picked = await choose_paged(call, ["choose-specialty"], specialties,
                                lambda specialty: [f"specialty/{specialty}"], RETRY,
                                ["more-specialties"])
    if isinstance(picked, Escape):
        return Outcome.of(picked)
    answer = await choose_paged(call, ["choose-doctor"],
                                [choice for choice in doctors if choice.specialty == picked],
                                _named, RETRY, ["more-doctors"])
    if isinstance(answer, Escape):
        return Outcome.of(answer)
    return await _go_on(call, answer)


def _named(choice: DoctorChoice) -> list[str]:
    """A doctor and their practice, as the shared number says them."""
    return [own_key(choice.practice, f"doctor/{choice.doctor}"), "at-practice",
            own_key(choice.practice, "clinic/name")]


async def _go_on(call: Call, choice: DoctorChoice) -> Outcome:
    """Go on in the chosen doctor's practice, its language kept."""
    await call.enter(choice.services)
    call.values[CHOSEN] = choice.practice
    return Outcome.DONE
