"""The shared number: a caller keys the doctor's code from the practice's card, hears the doctor
and the practice named back, and goes on in that practice's line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ivr.actions.booking import RETRY, confirm
from ivr.call import Call
from ivr.menu import Escape
from ivr.outcome import Outcome
from ivr.prompts import own_key

CODE_DIGITS = 6
"""A card code is 2 to 6 digits; '#' ends a shorter one."""
CHOSEN = "practice"
"""The call value that says a practice was chosen here, for the practice's flow to branch on."""


async def choose_practice(call: Call, params: Mapping[str, Any]) -> Outcome:
    """Ask for a doctor's code until one is confirmed; a wrong code is said to be wrong, not
    guessed at, and nothing about any practice is said before a code matches."""
    for _ in range(RETRY.tries):
        entry = await call.read_digits(["enter-doctor-code"], max_digits=CODE_DIGITS,
                                       digit_wait=RETRY.timeout)
        if entry.back:
            return Outcome.BACK
        choice = call.services.doctor_codes.get(entry.digits)
        if choice is None:
            await call.say(["doctor-code-unknown" if entry.digits else "no-input"])
            continue
        answer = await confirm(call, [
            "doctor-chosen", own_key(choice.practice, f"doctor/{choice.doctor}"),
            "at-practice", own_key(choice.practice, "clinic/name")])
        if isinstance(answer, Escape):
            return Outcome.of(answer)
        if answer:
            await call.enter(choice.services)
            call.values[CHOSEN] = choice.practice
            return Outcome.DONE
    return Outcome.HANGUP
