"""The rules a clinic day must keep, each counted against what it looked at."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from bench.clinic_day.records import (
    AttemptRow,
    CallResult,
    ConsultationRow,
    DayRun,
    Invariant,
    MemorySample,
    Outage,
)
from clinic.phones import InvalidPhone, normalize
from db.consultations import DOWN_CAUSE, LATE_CAUSE
from tests.fakepbx.ami_server import FakeAsterisk
from tests.fakepbx.channels import parse_callerid

WARM_UP_HOURS = 1.25
"""A nobat's warmed-up size is its first hourly sample this long after it started: 2 h for
the first one (after the midnight rush), 19 h for the one restarted at 17.5 h."""


MEMORY_GROWTH = 1.10
"""More growth than this from the warmed-up size to a process's last sample is a leak."""


MEMORY_CHECKS = ("memory of the first nobat (served the peak) over 10% above its warmed-up size",
                 "memory of the restarted nobat over 10% above its warmed-up size")
"""The memory invariants' names, by process: the first nobat, then the one restarted."""


def unlogged_invariant(calls: list[CallResult], logged: Sequence[str | None],
                       outages: list[Outage]) -> Invariant:
    """Connected calls the call log lacks, by caller, less those of the caller that the kill
    cut short (a call in progress at SIGKILL never reaches the log)."""
    connected = [c for c in calls if not c.error]
    missing = Counter(normalize(c.caller) for c in connected) - Counter(logged)
    excused = Counter(normalize(c.caller) for c in connected if cut_by_restart(c, outages))
    unexcused = {caller: n - excused[caller] for caller, n in missing.items()
                 if n > excused[caller]}
    hours = sorted(c.at / 3600 for c in connected if normalize(c.caller) in unexcused)
    note = (f"{min(missing.total(), excused.total())} cut by the kill" if missing
            else "every connected call logged")
    return Invariant("connected calls missing from the call log (outside the kill)",
                     sum(unexcused.values()), len(connected),
                     "; ".join([note, *(f"{h:.2f} h" for h in hours[:6])]))


def legs_invariant(attempts: list[AttemptRow], pbx: FakeAsterisk) -> Invariant:
    """Each attempt's two ChannelIds reached Asterisk in exactly one Originate each."""
    originates = Counter(a.fields.get("ChannelId") for s in pbx.sessions for a in s.actions
                         if a.name == "Originate")
    legs = [leg for attempt in attempts for leg in attempt.legs]
    bad = [leg for leg in legs if originates[leg] != 1]
    return Invariant("legs originated other than exactly once per attempt", len(bad), len(legs),
                     "; ".join(f"{leg}: {originates[leg]}" for leg in bad[:3]))


def caller_id_invariant(attempts: list[AttemptRow], pbx: FakeAsterisk,
                        practice_of: dict[int, tuple[str, str]]) -> Invariant:
    """Both legs of each attempt show the number and name of the consultation's own
    practice, the only ones its doctor and patient may see."""
    shown = {a.fields.get("ChannelId"): parse_callerid(a.fields.get("CallerID"))
             for s in pbx.sessions for a in s.actions if a.name == "Originate"}
    legs = [(leg, practice_of[attempt.consultation_id]) for attempt in attempts
            if attempt.consultation_id in practice_of for leg in attempt.legs]
    bad = [(leg, shown.get(leg)) for leg, (number, name) in legs
           if _shown(shown.get(leg)) != (number, name)]
    return Invariant("consultation legs not showing their own practice's number and name",
                     len(bad), len(legs), "; ".join(f"{leg}: {seen}" for leg, seen in bad[:3])
                     or f"legs of {len({number for _, number in legs})} practice(s)")


def _shown(callerid: tuple[str, str] | None) -> tuple[str | None, str | None]:
    """A caller id's number as E.164 (None where it is none) and its name."""
    if callerid is None:
        return None, None
    number, name = callerid
    try:
        return normalize(number), name
    except InvalidPhone:
        return None, name


def consultation_invariants(rows: list[ConsultationRow], attempts: list[AttemptRow],
                            outages: list[Outage]) -> list[Invariant]:
    """Every due consultation was tried (or its cause says why it could not be), each attempt
    is on record, and it ended completed (bridged) or missed with a cause."""
    tried = Counter(attempt.consultation_id for attempt in attempts)
    bridged = {attempt.consultation_id for attempt in attempts if attempt.bridged}
    never = [r for r in rows if not tried[r.id] and not untried_explained(r, outages)]
    miscounted = [r for r in rows if tried[r.id] != r.attempts]
    unsettled = [r for r in rows
                 if not (r.state == "completed" or (r.state == "missed" and r.cause))]
    unbridged = [r for r in rows if r.state == "completed" and r.id not in bridged]
    return [
        _rule("due consultations never tried, without a cause that explains it", never, rows,
              lambda r: f"{r.state}, cause {r.cause!r}"),
        _rule("consultations whose attempt rows differ from their attempt counter", miscounted,
              rows, lambda r: f"{tried[r.id]} rows, counter {r.attempts}"),
        _rule("consultations not completed or missed with a cause", unsettled, rows,
              lambda r: f"{r.state}, cause {r.cause!r}"),
        _rule("completed consultations with no bridged attempt", unbridged, rows,
              lambda r: f"{tried[r.id]} attempts, none bridged")]


def _rule(name: str, bad: list[ConsultationRow], rows: list[ConsultationRow],
          why: Callable[[ConsultationRow], str]) -> Invariant:
    """An invariant over the consultations, naming the first few that broke it."""
    return Invariant(name, len(bad), len(rows), "; ".join(f"#{r.id} {why(r)}" for r in bad[:3]))


def untried_explained(row: ConsultationRow, outages: list[Outage]) -> bool:
    """An untried consultation is fine only if missed with a cause the run's facts bear out:
    due while nobat was down, or its booked time over before it could be dialled."""
    if row.state != "missed":
        return False
    if row.cause == DOWN_CAUSE:
        return any(o.began_at <= row.due_at <= o.ended_at for o in outages)
    return row.cause == LATE_CAUSE and row.ends_at <= row.updated_at


def memory_invariants(run: DayRun) -> list[Invariant]:
    """The first nobat from its warm-up to just before the kill (to the end without faults),
    and the restarted one from its warm-up to the end."""
    restart = next((hour for name, hour, _ in run.faults if name == "nobat_restart"), None)
    checks = [memory_check(run.rss, 1, 0.0, killed=restart is not None)]
    if run.plan.faults and restart is None:
        checks.append(Invariant(MEMORY_CHECKS[1], 1, 0, "nobat was never restarted"))
    elif restart is not None:
        checks.append(memory_check(run.rss, 2, restart, killed=False))
    return checks


def memory_check(samples: list[MemorySample], process: int, started: float,
                 killed: bool) -> Invariant:
    """One process's warmed-up size against its last sample; a missing sample is a failure
    that says which, never a silent pass."""
    name = MEMORY_CHECKS[process - 1]
    own = sorted((s for s in samples if s.process == process), key=lambda s: s.hour)
    warm = next((s for s in own if s.hour >= started + WARM_UP_HOURS), None)
    if warm is None:
        return Invariant(name, 1, 0, f"no sample {WARM_UP_HOURS:g} h after it started at "
                                     f"{started:.2f} h ({len(own)} samples in all)")
    last = own[-1]
    if last is warm:
        return Invariant(name, 1, 0, f"no sample after the warmed-up one ({warm.hour:.2f} h)")
    if killed and not last.before_kill:
        return Invariant(name, 1, 0, f"no sample just before the kill (last {last.hour:.2f} h)")
    if not killed and last.hour < 24:
        return Invariant(name, 1, 0, f"no sample at the end of the day (last {last.hour:.2f} h)")
    when = "just before the kill" if killed else "at the end"
    note = (f"{warm.mb:.0f} MB at {warm.hour:.2f} h, {last.mb:.0f} MB at {last.hour:.2f} h "
            f"({when})")
    return Invariant(name, int(last.mb > warm.mb * MEMORY_GROWTH), 1, note)


def unreached_invariant(run: DayRun) -> Invariant:
    """Every inbound call reached nobat, except those that began or ran while it was down."""
    errors = [c for c in run.calls if c.error]
    failed = [c for c in errors if not cut_by_restart(c, run.outages)]
    cut = len(errors) - len(failed)
    return Invariant("inbound calls that could not reach nobat (outside the restart)",
                     len(failed), len(run.calls), "; ".join(
                         [f"{cut} cut by the restart",
                          *(f"{c.at / 3600:.2f} h {c.error}" for c in failed[:3])]))


def cut_by_restart(call: CallResult, outages: list[Outage]) -> bool:
    """Whether the call began, or was still going, while nobat was down."""
    return any(call.began <= o.ended and call.ended >= o.began for o in outages)
