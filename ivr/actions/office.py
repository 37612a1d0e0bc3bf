"""Reaching a person: transfer to the office in its hours, otherwise say when it answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ivr.actions.info import hours_words
from ivr.call import Call, CallEnd
from ivr.outcome import Outcome


async def office(call: Call, params: Mapping[str, Any]) -> Outcome:
    """Transfer within office hours (the flow ends); outside them, the hours and back."""
    services = call.services
    if services.office.open_at(call.now(), services.clinic.tz):
        await call.say(["transferring"])
        await call.session.transfer(services.office.endpoint)
        call.outcome = CallEnd.OFFICE
        return Outcome.HANGUP
    spans = [(day, start, end) for day, (start, end) in services.office.hours.items()]
    await call.say(["office-closed", *hours_words(spans, call.language)])
    return Outcome.DONE
