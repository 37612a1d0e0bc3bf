"""What callers ask most besides booking: where the clinic is and when a doctor works."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from clinic.calendar import Weekday
from ivr import speech
from ivr.actions.booking import Draft, Step, run_steps
from ivr.call import Call
from ivr.outcome import Outcome


async def address(call: Call, params: Mapping[str, Any]) -> Outcome:
    """Say the clinic's address."""
    await call.say(["address-intro", "clinic/address"])
    return Outcome.DONE


def minute_words(minute: int, lang: str) -> list[str]:
    """Say a time of day given in minutes: 16 → "shānzdah", 16:30 → "shānzdah-o si"."""
    hours, minutes = divmod(minute, 60)
    return speech.number(hours, lang, joined=bool(minutes)) + (
        speech.number(minutes, lang) if minutes else [])


def hours_words(spans: Iterable[tuple[Weekday, int, int]], lang: str) -> list[str]:
    """Group days with the same hours: "Saturday and Monday, from 16 to 20; Wednesday, ..."."""
    groups: dict[tuple[int, int], list[Weekday]] = {}
    for weekday, start, end in sorted(spans):
        days = groups.setdefault((start, end), [])
        if weekday not in days:
            days.append(weekday)
    words: list[str] = []
    for (start, end), days in groups.items():
        for index, day in enumerate(days):
            if index:
                words.append("and")
            words.append(f"day/{day.name.lower()}")
        words += ["hours/from", *minute_words(start, lang), "hours/to", *minute_words(end, lang)]
    return words


async def hours(call: Call, params: Mapping[str, Any]) -> Outcome:
    """Choose a doctor (or take the one in params) and say their weekly hours."""

    async def finish(call: Call, draft: Draft) -> Outcome:
        assert draft.doctor is not None
        rules = await call.services.booking.weekly_hours(draft.doctor.id)
        spans = [(r.weekday, r.start_minute, r.end_minute) for r in rules]
        await call.say(["hours-of", f"doctor/{draft.doctor.key}",
                        *hours_words(spans, call.language)])
        return Outcome.DONE

    return await run_steps(call, Draft(specialty=params.get("specialty")),
                           (Step.SPECIALTY, Step.DOCTOR), finish)
