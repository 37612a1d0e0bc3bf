"""What one simulated day measures and checks: the plan, each call, each rule, the run."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field

DAY_SECONDS = 24 * 3600


GOALS = {"book": "your-code", "move": "rescheduled", "cancel": "cancelled",
         "hours": "hours-of", "address": "address-intro", "wrong_keys": "invalid"}
"""The prompt that shows a caller of each kind got what they called for; a hang_up caller's
goal is to have hung up themselves."""


KINDS = (*GOALS, "hang_up")


@dataclass(frozen=True)
class DayPlan:
    """How big and how fast the day is."""

    backend: str = "sqlite"
    wall_minutes: float = 10.0
    calls: int = 3000
    consultations: int = 150
    seed: int = 1405
    faults: bool = True
    practices: int = 1
    """Practices in the store (platform mode, a clinic folder): each caller dials one's
    number, and the consultations are spread over every practice's doctors."""


@dataclass
class CallResult:
    """One inbound call as the caller lived it."""

    at: float
    """The simulated second of the day the call started."""
    kind: str
    caller: str
    prompts: list[str]
    turnaround: list[float]
    seconds: float
    error: str | None = None
    began: float = 0.0
    ended: float = 0.0
    """Monotonic wall-clock start and end, to tell calls cut by a restart."""
    ended_by: str | None = None
    action_seconds: float | None = None
    """nobat's turnaround for the command after the confirming key, if the call had one."""
    dialled: str | None = None
    """The practice number the caller dialled (None: the one practice's line)."""

    @property
    def hour(self) -> int:
        """The simulated hour the call started in."""
        return int(self.at // 3600)

    def heard(self, name: str) -> bool:
        """Whether the caller heard the prompt `name` (in any language)."""
        return any(p.endswith("/" + name) for p in self.prompts)

    def reached(self) -> bool:
        """Whether the caller got what their kind of call is for."""
        if self.kind == "hang_up":
            return self.ended_by == "caller"
        return self.heard(GOALS[self.kind])

    def codes(self) -> list[str]:
        """Booking codes read out to the caller after "your-code"."""
        found = []
        for index, prompt in enumerate(self.prompts):
            if prompt.endswith("/your-code"):
                digits = [re.search(r"/num/(\d)$", p) for p in self.prompts[index + 1:index + 7]]
                if all(digits):
                    found.append("".join(d.group(1) for d in digits if d))
        return found


@dataclass(frozen=True)
class Invariant:
    """One rule the day must keep: how often it broke, of how many things it looked at."""

    name: str
    violations: int
    checked: int
    note: str = ""
    """Why it broke, or the figures it compared."""


@dataclass(frozen=True)
class MemorySample:
    """nobat's resident memory at one moment of the simulated day."""

    hour: float
    mb: float
    process: int
    """1 for the first nobat, 2 for the one started after the kill."""
    before_kill: bool = False


@dataclass(frozen=True)
class Outage:
    """nobat down, from the kill until its successor listened: monotonic and UTC."""

    began: float
    ended: float
    began_at: dt.datetime
    ended_at: dt.datetime


@dataclass(frozen=True)
class ConsultationRow:
    """What the store says about one of the day's consultations at the end."""

    id: int
    state: str
    cause: str | None
    attempts: int
    due_at: dt.datetime
    updated_at: dt.datetime
    ends_at: dt.datetime


@dataclass(frozen=True)
class AttemptRow:
    """One CallAttempt row: whose, its two legs, and whether it was bridged."""

    consultation_id: int
    legs: tuple[str, str]
    bridged: bool


@dataclass
class DayRun:
    """Everything measured, for the invariants and the report."""

    plan: DayPlan
    calls: list[CallResult] = field(default_factory=list)
    faults: list[tuple[str, float, str]] = field(default_factory=list)
    """(fault, simulated hour, what happened)."""
    rss: list[MemorySample] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    consultations: Counter[str] = field(default_factory=Counter)
    """The day's consultations by final state."""
    invariants: list[Invariant] = field(default_factory=list)
    wall_seconds: float = 0.0
    late_start: float = 0.0
    """Wall seconds the day had already run when nobat first listened (0: on time)."""
