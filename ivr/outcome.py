"""How an action ends, by the names flow files give its `outcomes`: the engine steers by these."""

from __future__ import annotations

import enum

from ivr.menu import Escape


class Outcome(enum.StrEnum):
    """An action's end; a flow's `outcomes` table names it, else `next`, back or the office."""

    DONE = "done"
    BACK = "back"
    OFFICE = "office"
    HANGUP = "hangup"
    NO_FREE_TIME = "none"
    """move_to_nearest: the doctor has no free time left to offer."""

    @classmethod
    def of(cls, escape: Escape) -> Outcome:
        """Leaving an action by a menu escape: '*' goes back, anything else to the office."""
        return cls.BACK if escape is Escape.BACK else cls.OFFICE


SHARED = (Outcome.DONE, Outcome.BACK, Outcome.OFFICE, Outcome.HANGUP)
"""The outcomes every action may end in, whatever its own."""
