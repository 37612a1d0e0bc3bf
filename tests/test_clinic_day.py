"""A simulated clinic day, short: the benchmark's whole day (calls, consultations, faults)
compressed into 45 seconds of calls on each backend (then the consultations' retries
settle), and on PostgreSQL once more with three practices on the line; every invariant must
be checked and hold, consultations must really be bridged, and every kind of caller must
get what they called for."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.clinic_day.day import FAULTS, run_day
from bench.clinic_day.records import DayPlan
from bench.clinic_day.report import print_run, report

INVARIANTS = (
    "double bookings",
    "bookings heard confirmed but not stored",
    "IVR bookings stored but never confirmed to a caller",
    "IVR bookings at a practice other than the one dialled",
    "consultation legs not showing their own practice's number and name",
    "legs originated other than exactly once per attempt",
    "due consultations never tried, without a cause that explains it",
    "consultations whose attempt rows differ from their attempt counter",
    "consultations not completed or missed with a cause",
    "completed consultations with no bridged attempt",
    "connected calls missing from the call log (outside the kill)",
    "IVR sessions still open at nobat",
    "memory of the first nobat (served the peak) over 10% above its warmed-up size",
    "memory of the restarted nobat over 10% above its warmed-up size",
    "inbound calls that could not reach nobat (outside the restart)",
)
"""Written out here, not imported, so an invariant the bench stops checking fails the test."""
CALLER_KINDS = {"book", "move", "cancel", "hours", "address", "hang_up", "wrong_keys"}
CONSULTATIONS = 10


@pytest.mark.parametrize(("backend", "practices"),
                         [("sqlite", 1), ("postgresql", 1), ("postgresql", 3)])
async def test_a_short_day_with_every_fault_keeps_every_invariant(
        backend: str, practices: int, tmp_path: Path) -> None:
    run = await run_day(DayPlan(backend, wall_minutes=0.75, calls=70,
                                consultations=CONSULTATIONS, practices=practices))
    print_run(run)  # shown when the test fails: every invariant with its figures

    assert [name for name, _, _ in run.faults] == [name for name, _ in FAULTS]
    checked = {i.name: i for i in run.invariants}
    assert sorted(checked) == sorted(INVARIANTS)
    assert [(i.name, i.violations, i.note) for i in run.invariants if i.violations] == []
    assert all(i.checked > 0 for i in run.invariants), run.invariants
    assert checked["legs originated other than exactly once per attempt"].checked >= 2 * 10
    assert checked["bookings heard confirmed but not stored"].checked > 0  # callers did book
    assert checked["IVR bookings at a practice other than the one dialled"].checked > 0
    legs = checked["consultation legs not showing their own practice's number and name"]
    assert (legs.checked >= 2 * 10, legs.note) == (True, f"legs of {practices} practice(s)")
    assert len({c.dialled for c in run.calls if c.codes()}) == practices  # booked at each
    assert sum(run.consultations.values()) == CONSULTATIONS
    assert run.consultations["completed"] >= CONSULTATIONS / 2, run.consultations
    assert {c.kind for c in run.calls if c.reached()} == CALLER_KINDS
    written = report([run], tmp_path).read_text()
    assert "| double bookings | 0 |" in written
    assert "booking action p50 / p99 ms" in written and "offered load" in written
    assert (tmp_path / "day.png").stat().st_size > 10_000
