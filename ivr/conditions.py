"""Conditions a flow may branch on, written by staff as short phrases ("caller_known")."""

from __future__ import annotations

from collections.abc import Callable

from clinic import phones
from clinic.calendar import Weekday
from ivr.call import Call

Test = Callable[[Call], bool]


def _weekday_is(name: str) -> Test:
    day = Weekday.parse(name)
    return lambda call: Weekday.of(call.now().astimezone(call.services.clinic.tz).date()) is day


def _dialled_is(number: str) -> Test:
    wanted = number.strip()
    return lambda call: (call.session.info.dialled or "").strip() == wanted


def _value_is(spec: str) -> Test:
    key, sep, value = spec.partition("=")
    if not sep:
        return lambda call: bool(call.values.get(key.strip()))
    return lambda call: call.values.get(key.strip()) == value.strip()


def _option_is(spec: str) -> Test:
    key, _, value = spec.partition("=")
    return lambda call: call.session.info.options.get(key.strip()) == value.strip()


FLAGS: dict[str, Test] = {
    "caller_known": lambda call: call.patient_phone is not None,
    "office_open": lambda call: call.services.office.open_at(call.now(), call.services.clinic.tz),
    "holiday": lambda call: call.closed_today,
    "caller_id_withheld": lambda call: not call.session.info.caller_id,
}
COMPARISONS: dict[str, Callable[[str], Test]] = {
    "language": lambda value: lambda call: call.language == value.strip(),
    "weekday": _weekday_is,
    "dialled": _dialled_is,
    "option": _option_is,
    "value": _value_is,
}


def parse_condition(text: str) -> Test:
    """Turn "caller_known", "language = en", "weekday = friday", "option lang = en" into a test.

    Raises ValueError naming what is allowed, for the flow checker.
    """
    phrase = text.strip()
    if phrase.startswith("not "):
        inner = parse_condition(phrase[4:])
        return lambda call: not inner(call)
    if phrase in FLAGS:
        return FLAGS[phrase]
    name, sep, value = phrase.partition("=")
    head, _, rest = name.strip().partition(" ")
    if head in COMPARISONS and (sep or rest):
        if head in ("option", "value"):
            return COMPARISONS[head](f"{rest}={value}" if sep else rest)
        return COMPARISONS[head](value)
    raise ValueError(f"unknown condition {text!r}; expected one of {', '.join(FLAGS)}, "
                     "language = fa|en, weekday = <day>, dialled = <number>, "
                     "option <name> = <value>, value <name> [= <digits>], or not <condition>")


def caller_number(raw: str | None) -> str | None:
    """The caller's number in E.164 if the caller id is a valid Iranian number, else None."""
    if not raw:
        return None
    try:
        return phones.normalize(raw)
    except phones.InvalidPhone:
        return None
