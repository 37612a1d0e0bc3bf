"""A practice's row the store holds in a form that cannot be read (edited by hand): what
reading it raises, and how its practice is named, so one practice's row fails only its own."""

from __future__ import annotations

from dataclasses import dataclass

UNREADABLE = (ValueError, KeyError)
"""What reading a practice's stored row raises for nonsense: bad JSON, shape or value
(ValueError), an unknown zone (ZoneInfoNotFoundError, a KeyError)."""


@dataclass(frozen=True)
class Unreadable:
    """A practice left out of what needed its row, until the row is put right."""

    practice: str
    """Its key (the clinic file's name)."""
    reason: str
    """What reading its row raised, in one line."""


class RowUnreadable(ValueError):
    """A practice's row cannot be read: what needs it fails for that practice alone."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the practice's row cannot be read: {reason}")
        self.reason = reason
        """What reading the row raised, in one line."""


def named(unreadable: tuple[Unreadable, ...]) -> str:
    """The practices left out, each with its reason, for a health line."""
    return "; ".join(f"{u.practice} ({u.reason})" for u in unreadable)
