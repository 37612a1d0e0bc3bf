"""A simulated clinic day, short: the benchmark's whole day (calls, consultations, faults)
compressed into under a minute on each backend; every invariant must hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.clinic_day import FAULTS, DayPlan, report, run_day


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_short_day_with_every_fault_keeps_every_invariant(
        backend: str, tmp_path: Path) -> None:
    run = await run_day(DayPlan(backend, wall_minutes=0.75, calls=70, consultations=10))

    assert [name for name, _, _ in run.faults] == [name for name, _ in FAULTS]
    assert len(run.invariants) >= 8
    assert [(name, bad) for name, bad, _ in run.invariants if bad] == []
    checked = dict((name, n) for name, _, n in run.invariants)
    assert checked["legs originated other than exactly once per attempt"] >= 2 * 10
    assert checked["bookings heard confirmed but not stored"] > 0  # callers did book
    written = report([run], tmp_path)
    assert "| double bookings | 0 |" in written.read_text()
    assert (tmp_path / "day.png").stat().st_size > 10_000
