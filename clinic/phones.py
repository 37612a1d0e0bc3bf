"""Iranian phone numbers: one stored form (E.164), one spoken/keyed form, one masked form."""

from __future__ import annotations

import re

import phonenumbers

_REGION = "IR"
_DIGITS_IN_TEXT = re.compile(r"(?<![\w+])(?:(?:\+|00)?\d{10,14}|0\d{3}[ -]\d{3}[ -]\d{4})(?!\w)")


class InvalidPhone(ValueError):
    """A number that is not a valid Iranian phone number, with the reason to show the user."""


def normalize(raw: str, *, mobile_only: bool = False) -> str:
    """Return the E.164 form (+989121234567) of 0912..., +98912..., 0098912... or 912...."""
    text = (raw or "").strip()
    if not text:
        raise InvalidPhone("no number given")
    compact = re.sub(r"[\s\-().]", "", text)
    if not re.fullmatch(r"\+?\d+", compact):
        raise InvalidPhone(f"{raw!r} is not a phone number: only digits, + and spaces may appear")
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    try:
        parsed = phonenumbers.parse(compact, _REGION)
    except phonenumbers.NumberParseException:
        raise InvalidPhone(f"{raw!r} is not a valid Iranian number") from None
    if parsed.country_code != 98:
        raise InvalidPhone(f"{raw!r} is not an Iranian number (+98)")
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhone(f"{raw!r} is not a valid Iranian number")
    if mobile_only and phonenumbers.number_type(parsed) != phonenumbers.PhoneNumberType.MOBILE:
        raise InvalidPhone(f"{raw!r} is not a mobile number (09xx xxx xxxx)")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def national(e164: str) -> str:
    """Return the 11-digit form a caller keys in and a secretary reads (09121234567)."""
    if e164.startswith("+98"):
        return "0" + e164[3:]
    return e164


MASK_STARS = "*" * 7
"""Always seven stars, whatever the number's length, so a mask does not tell the length."""


def mask(number: str) -> str:
    """Show at most the last four digits (*******4567): phone numbers here are health data,
    and an Iranian mobile's first four digits only name the operator, so showing them
    would leave a guesser only three digits to find."""
    digits = re.sub(r"\D", "", number)
    return MASK_STARS + (digits[-4:] if len(digits) >= 8 else "")


def mask_in_text(text: str) -> str:
    """Mask every phone-like run of digits in free text, for log lines."""
    return _DIGITS_IN_TEXT.sub(lambda m: mask(m.group(0)), text)


def parse_dial_template(text: str) -> str:
    """Accept a dial string nobat rings a number through, such as
    "PJSIP/{national}@clinic-trunk": it must name the number ({national} or {number})."""
    if "{number}" not in text and "{national}" not in text:
        raise ValueError(f"expected a dial string with {{national}} or {{number}}, such as "
                         f"\"PJSIP/{{national}}@clinic-trunk\", got {text!r}")
    return text
