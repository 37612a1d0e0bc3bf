"""The actions a flow may name, with their parameters: the flow checker and engine share it."""

from __future__ import annotations

from ivr.actions.appointments import LISTING, my_appointments
from ivr.actions.booking import book
from ivr.actions.identify import identify
from ivr.actions.info import address, hours
from ivr.actions.office import office
from ivr.actions.patient_calls import (
    cancel_appointment,
    confirm_appointment,
    move_to_nearest,
    opt_out,
    rate_audio,
    rate_doctor,
    read_appointment,
    reschedule_appointment,
    would_book_again,
)
from ivr.actions.practice import choose_by_specialty, choose_practice
from ivr.engine import ActionSpec
from ivr.outcome import Outcome

ACTIONS: dict[str, ActionSpec] = {
    "identify": ActionSpec(identify),
    "book": ActionSpec(book, params={"specialty": str}, asks=True),
    "my_appointments": ActionSpec(my_appointments, params={"listing": LISTING}, asks=True),
    "address": ActionSpec(address),
    "hours": ActionSpec(hours, params={"specialty": str}, asks=True),
    "office": ActionSpec(office),
    "choose_practice": ActionSpec(choose_practice, asks=True),
    "choose_by_specialty": ActionSpec(choose_by_specialty, asks=True),
    "read_appointment": ActionSpec(read_appointment),
    "confirm_appointment": ActionSpec(confirm_appointment),
    "reschedule_appointment": ActionSpec(reschedule_appointment, asks=True),
    "cancel_appointment": ActionSpec(cancel_appointment, asks=True),
    "opt_out": ActionSpec(opt_out),
    "move_to_nearest": ActionSpec(move_to_nearest, outcomes=(Outcome.NO_FREE_TIME,), asks=True),
    "rate_audio": ActionSpec(rate_audio, asks=True),
    "rate_doctor": ActionSpec(rate_doctor, asks=True),
    "would_book_again": ActionSpec(would_book_again, asks=True),
}
