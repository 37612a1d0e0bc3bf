"""Who is calling: the caller id when it is a valid number, else the mobile number they key in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clinic import phones
from ivr.call import Call
from ivr.conditions import caller_number
from ivr.menu import Escape
from ivr.outcome import Outcome

MOBILE_DIGITS = 11
"""One more may be keyed, so the '#' the prompt asks for ends the entry instead of spilling."""
TRIES = 3


async def identify(call: Call, params: Mapping[str, Any]) -> Outcome:
    """Take the number from the caller id, without a word and without asking the store: a
    greeting that differed for patients would tell anyone who forges a number who they are."""
    call.patient_phone = caller_number(call.session.info.caller_id)
    return Outcome.DONE


async def ask_mobile(call: Call, digit_wait: float = 6.0, first: str = "enter-mobile"
                     ) -> str | Escape:
    """Ask for an 11-digit mobile number (`first` prompt, then "enter-mobile"), checked, with
    retries; '*' goes back."""
    for attempt in range(TRIES):
        entry = await call.read_digits([first if attempt == 0 else "enter-mobile"],
                                       max_digits=MOBILE_DIGITS + 1, digit_wait=digit_wait)
        if entry.back:
            return Escape.BACK
        try:
            return phones.normalize(entry.digits, mobile_only=True)
        except phones.InvalidPhone:
            if attempt < TRIES - 1:
                await call.say(["no-input"] if not entry.digits else ["mobile-invalid"])
    return Escape.FAILED


async def caller_phone(call: Call) -> str | Escape:
    """The number this call acts for, asking once if the caller id did not give one."""
    if call.patient_phone is None:
        answer = await ask_mobile(call)
        if isinstance(answer, Escape):
            return answer
        call.patient_phone = answer
    return call.patient_phone
