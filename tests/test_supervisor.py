"""The supervisor of nobat serve's parts: a part that fails is logged, restarted and reported."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import pytest

from nobat.supervisor import FAILING_AFTER, Backoff, Supervisor
from web.status import PartView

FAST = Backoff(first=0.01, most=0.04)


async def until(check: object, seconds: float = 5.0) -> None:
    """Wait for `check()` to hold."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.005)


def view(supervisor: Supervisor, name: str) -> PartView:
    [found] = [part for part in supervisor.views() if part.name == name]
    return found


async def test_a_part_that_raises_is_logged_with_its_cause_and_runs_again(
        caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    go_on = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise ConnectionRefusedError("store down")
        await go_on.wait()
        await asyncio.Event().wait()

    supervisor = Supervisor(backoff=FAST)
    with caplog.at_level(logging.ERROR, logger="nobat.supervisor"):
        supervisor.add("worker", flaky)
        await until(lambda: len(runs) == 2)
    part = view(supervisor, "worker")
    assert (part.state, part.restarts, part.last_error) == (
        "running", 1, "ConnectionRefusedError: store down")
    assert "worker failed (1 in a row)" in caplog.text and "store down" in caplog.text
    assert "Traceback" in caplog.text
    await supervisor.close()
    assert view(supervisor, "worker").state == "stopped"


async def test_a_part_that_keeps_failing_is_reported_failing_and_still_restarted() -> None:
    runs = 0

    async def broken() -> None:
        nonlocal runs
        runs += 1
        raise ValueError(f"bad row {runs}")

    supervisor = Supervisor(backoff=Backoff(first=0.01, most=0.5))
    supervisor.add("broken", broken)
    await until(lambda: runs >= FAILING_AFTER)
    await until(lambda: view(supervisor, "broken").state == "failing")
    part = view(supervisor, "broken")
    assert part.last_error == f"ValueError: bad row {runs}"
    assert part.restarts == runs - 1
    await until(lambda: runs > FAILING_AFTER)  # still tried again, after a longer wait
    await supervisor.close()


async def test_a_part_that_returns_has_stopped_by_itself_and_runs_again() -> None:
    runs = 0

    async def quits() -> None:
        nonlocal runs
        runs += 1
        if runs > 1:
            await asyncio.Event().wait()

    supervisor = Supervisor(backoff=FAST)
    supervisor.add("quitter", quits)
    await until(lambda: runs == 2)
    assert view(supervisor, "quitter").last_error == "RuntimeError: it stopped by itself"
    await supervisor.close()


async def test_a_running_part_that_says_its_work_fails_shows_failing_since_then() -> None:
    since = dt.datetime(2026, 12, 3, 6, 0, tzinfo=dt.UTC)
    trouble: tuple[dt.datetime, str] | None = None

    async def forever() -> None:
        await asyncio.Event().wait()

    supervisor = Supervisor(backoff=FAST)
    supervisor.add("dialer", forever, lambda: trouble)
    await asyncio.sleep(0)
    assert view(supervisor, "dialer").running
    trouble = (since, "OperationalError: unable to open database file")
    part = view(supervisor, "dialer")
    assert (part.state, part.since, part.last_error) == (
        "failing", since, "OperationalError: unable to open database file")
    await supervisor.close()


def test_the_backoff_doubles_up_to_its_most() -> None:
    backoff = Backoff(first=1.0, most=60.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 6, 7, 20)] == [1, 2, 4, 32, 60, 60]

