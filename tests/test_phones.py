"""Iranian numbers in every form callers and staff write them normalise to one, or fail clearly."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinic.phones import InvalidPhone, mask, mask_in_text, national, normalize


@pytest.mark.parametrize("raw", ["09121234567", "+989121234567", "00989121234567",
                                 "9121234567", "0912 123 4567", "0912-123-4567"])
def test_every_written_form_of_a_mobile_is_one_number(raw: str) -> None:
    assert normalize(raw) == "+989121234567"


def test_landline_is_accepted_unless_a_mobile_is_required() -> None:
    assert normalize("021 8877 6655") == "+982188776655"
    with pytest.raises(InvalidPhone, match="not a mobile number"):
        normalize("02188776655", mobile_only=True)


@pytest.mark.parametrize(("raw", "message"), [
    ("", "no number given"),
    ("abc", "only digits"),
    ("+15551230001", "not an Iranian number"),
    ("0912123", "not a valid Iranian number"),
    ("09121234567890", "not a valid Iranian number"),
])
def test_bad_numbers_are_rejected_with_a_reason(raw: str, message: str) -> None:
    with pytest.raises(InvalidPhone, match=message):
        normalize(raw)


def test_masking_keeps_only_the_last_four_digits() -> None:
    assert mask("+989121234567") == "*******4567"
    assert national("+989121234567") == "09121234567"
    line = "2026-11-26 00:23:17,010 call from +989121234567 (0912 123 4567), code 123456"
    assert mask_in_text(line) == (
        "2026-11-26 00:23:17,010 call from *******4567 (*******4567), code 123456")


@pytest.mark.parametrize("number", ["+989121234567", "00989121234567", "02188776655",
                                    "+982188776655", "0912123456789", "12345678"])
def test_a_mask_has_the_same_length_whatever_the_number(number: str) -> None:
    """Neither the operator prefix nor the number's length shows."""
    assert mask(number) == "*******" + number[-4:]


def test_a_short_number_shows_no_digit_at_all() -> None:
    assert mask("1234567") == mask("") == "*******"


@given(st.from_regex(r"9[0-9]{9}", fullmatch=True))
def test_normalised_numbers_never_appear_in_masked_text(digits: str) -> None:
    text = f"caller 0{digits} and +98{digits} and 0098{digits}"
    masked = mask_in_text(text)
    shown = f"*******{digits[-4:]}"
    assert masked == f"caller {shown} and {shown} and {shown}"
