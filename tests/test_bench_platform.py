"""bench.platform runs, small: three practices on one line, two nobat on one PostgreSQL."""

from __future__ import annotations

from bench.platform import TARGET, arguments, one_side, table
from tests.support.postgres import PostgresServer


async def test_every_caller_books_at_the_practice_they_dialled_and_nothing_twice(
        postgres: PostgresServer) -> None:
    options = arguments(["--practices", "3", "--callers", "10", "--rush-practices", "2",
                         "--rush-callers", "10", "--consultations", "6", "--reminders", "30",
                         "--moments", "2", "--cap", "20", "--share", "50", "--pace", "0.02",
                         "--ramp", "0.5"])
    side = await one_side(postgres, 3, options.share, options)
    assert side.line is not None and side.paced is not None and side.rush is not None
    assert side.one_did is not None
    assert side.line.booked == side.paced.booked == side.one_did.booked == 10
    assert side.line_bookings == 30  # the later callers took slots the first ones left
    assert side.wrong_practice == 0
    assert side.rush.booked >= 2  # the first slot of each rushed practice
    assert side.doubles == 0
    assert side.lag_count == 6  # every consultation due was dialled, at each moment
    assert len(side.lags) == 2 and side.lag[1] in side.lags
    assert len(side.servers) == 2
    printed = table(side, side, options)
    verdicts = printed[printed.index(f"the target: within {TARGET}x of one practice; "
                                     "alike work") + 1:]
    # each figure against itself, but the lines at one DID against the line's
    assert verdicts[0].startswith("10 callers at once over the DIDs (paced)")
    assert verdicts[0].split()[-2:] == verdicts[3].split()[-2:] == ["1.00x", "holds"]
    assert [line.split(":")[0] for line in verdicts[1:3]] == ["saturated at one DID"] * 2
    assert verdicts[4] == ("not alike work: 10 of the platform's callers book, 10 of one "
                           "practice's, whose others collide and take cheaper turns")
    assert verdicts[5].startswith("saturated over the DIDs: turnaround p99 ms")
    assert verdicts[5].split()[-2:] == ["1.00x", "holds"]
    rows = {line.split("  ")[0]: line.split()[-1] for line in printed[1:printed.index("")]}
    assert rows["paced line: booked"] == "1.00x"
    assert {"paced line: turnaround p99 ms", "paced line: nobat CPU ms a command",
            "line at one DID: turnaround p99 ms", "line at one DID: nobat CPU ms a command",
            "nobat 2: CPU s, paced line", "nobat 2: CPU s, rush"} <= rows.keys()
