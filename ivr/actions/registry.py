"""The actions a flow may name, with their parameters: the flow checker and engine share it."""

from __future__ import annotations

from ivr.actions.appointments import my_appointments
from ivr.actions.booking import book
from ivr.actions.identify import identify
from ivr.actions.info import address, hours
from ivr.actions.office import office
from ivr.engine import ActionSpec

ACTIONS: dict[str, ActionSpec] = {
    "identify": ActionSpec(identify, outcomes=("known",)),
    "book": ActionSpec(book, params={"specialty": str}, asks=True),
    "my_appointments": ActionSpec(my_appointments, asks=True),
    "address": ActionSpec(address),
    "hours": ActionSpec(hours, params={"specialty": str}, asks=True),
    "office": ActionSpec(office),
}
