"""The dialer under nobat serve's supervisor: a store that is down when it starts, and a round
that fails for a reason nobody planned for, are logged and reported, and what is due still
rings once they pass."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.dialer import PlanFactory
from bridge.outbound import CallPlan
from db.consultations import Claim
from db.engine import Database
from db.schema import upgrade
from nobat.supervisor import Backoff, Supervisor
from tests.support.consultations import attempts
from tests.support.dialer_line import line
from tests.support.postgres import PostgresServer
from tests.test_dialer import START, book, doctor, patient, settled
from web.status import PartView

INSTANCE = "nobat-1"


def part(supervisor: Supervisor) -> PartView:
    [found] = [view for view in supervisor.views() if view.name == INSTANCE]
    return found


async def test_a_dialer_whose_store_is_down_at_start_rings_what_is_due_when_it_is_back(
        caplog: pytest.LogCaptureFixture) -> None:
    server = PostgresServer().start()
    database = Database.from_url(await server.create_database())
    supervisor = Supervisor(backoff=Backoff(first=0.2, most=1.0))
    try:
        await upgrade(database)
        [ident] = await book(database, 1)
        server.pause()
        with caplog.at_level(logging.ERROR, logger="nobat.supervisor"):
            async with line(database, [doctor(1), patient(1)], START,
                            supervisor=supervisor) as pbx_line:
                async with asyncio.timeout(30):
                    while True:  # failed twice, and seen between a failure and its restart
                        down = part(supervisor)
                        if down.restarts >= 2 and down.state != "running":
                            break
                        await asyncio.sleep(0.01)
                assert down.state in ("restarting", "failing") and down.last_error
                assert pbx_line.originates() == {}
                server.resume()
                await pbx_line.until(settled(database, [ident], "completed"), seconds=60)
                assert part(supervisor).state == "running"
                assert sorted(pbx_line.originates().values()) == [1, 1]
        assert f"{INSTANCE} failed" in caplog.text and down.last_error in caplog.text
        [attempt] = await attempts(database, ident)
        assert attempt.outcome == "completed"
    finally:
        await database.close()
        server.stop()


async def test_a_round_that_fails_unexpectedly_is_logged_reported_and_the_next_one_runs(
        database: Database, caplog: pytest.LogCaptureFixture) -> None:
    idents = await book(database, 2)
    supervisor = Supervisor(backoff=Backoff(first=0.2, most=1.0))
    seen_trouble: list[str] = []

    def route_fails_once(plan: CallPlan) -> PlanFactory:
        failed: set[int] = set()

        def plan_for(claim: Claim) -> CallPlan:
            if claim.ident not in failed:
                failed.add(claim.ident)
                raise LookupError(f"no route for consultation {claim.ident}")
            return plan

        return plan_for

    with caplog.at_level(logging.ERROR, logger="bridge.dialer"):
        async with line(database, [doctor(1), patient(1), doctor(2), patient(2)], START,
                        supervisor=supervisor, plans=route_fails_once) as pbx_line:

            async def trouble_seen() -> bool:
                view = part(supervisor)
                if view.state == "failing" and view.last_error:
                    seen_trouble.append(view.last_error)
                return bool(seen_trouble)

            await pbx_line.until(trouble_seen, seconds=10)
            await pbx_line.until(settled(database, idents, "completed"), seconds=60)
            assert part(supervisor) == PartView(INSTANCE, "running", part(supervisor).since,
                                                None, 0)
    assert seen_trouble[0].startswith("LookupError: no route for consultation")
    assert "a round of the dialer failed" in caplog.text and "Traceback" in caplog.text
    for ident in idents:
        assert [a.outcome for a in await attempts(database, ident)][-1] == "completed"
