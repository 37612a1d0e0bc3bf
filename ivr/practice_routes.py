"""Which practice a call reaches: by the number dialled, by a doctor's card code on the shared
number, or, for a call nobat made, by its doctor; never a practice it was not meant for."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from clinic import phones
from db.unreadable import Unreadable
from ivr.call import Services
from ivr.prompts import PromptLibrary

log = logging.getLogger(__name__)
SHARED_FLOW = "shared"
"""The flow of a number no practice owns, when several share the line: it asks which."""


@dataclass(frozen=True)
class Routes:
    """The practices the line serves, each with its own services, under one load of them."""

    prompts: PromptLibrary
    """Every practice's prompts, the set the flows are checked against."""
    practices: Mapping[str, Services]
    """Each practice's services (its booking service and its own words), by practice key."""
    numbers: Mapping[str, str]
    """The practice key each dialled number (E.164) reaches."""
    doctors: Mapping[int, str]
    """The practice key of each active doctor, by doctor id."""
    shared: Services
    """The shared number's services: every practice's prompts and doctors' codes, and the
    line's own office (config.toml's), no practice's."""
    unreadable: tuple[Unreadable, ...] = ()
    """Practices whose rows cannot be read (edited by hand): off the line, their numbers
    reaching the shared menu, until their rows are put right."""

    @property
    def platform(self) -> bool:
        """Several practices share the line, so a call must be routed to one."""
        return len(self.practices) > 1

    @property
    def first(self) -> Services:
        """The first practice's services: on a line of one practice, every call's."""
        return next(iter(self.practices.values()))

    def line(self, dialled: str | None) -> Services | None:
        """The practice a dialled number reaches; None for the shared menu. With one practice
        every number reaches it, as before there were several."""
        if not self.platform:
            return self.first
        key = self.numbers.get(_e164(dialled))
        if key is None:
            log.info("dialled %s reaches no practice: the shared menu",
                     phones.mask(dialled) if dialled else "nothing")
            return None
        return self.practices[key]

    def of_doctor(self, doctor_id: int) -> Services | None:
        """The services of the practice a doctor works at (for calls nobat made about one of
        their bookings); None for a doctor no practice lists now."""
        if not self.platform:
            return self.first
        key = self.doctors.get(doctor_id)
        return None if key is None else self.practices[key]


def _e164(dialled: str | None) -> str:
    """A dialled number as stored numbers are (E.164); "" for what is not a phone number
    (an extension, "s")."""
    try:
        return phones.normalize(dialled or "")
    except phones.InvalidPhone:
        return ""
