"""Random callers who press anything and hang up anywhere never break a call or the store."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from db.engine import Database
from db.models import Appointment, InboundCall
from db.schema import upgrade
from tests.fakepbx.script import Caller, CallerAction, HangUp, Hear, Press, Wait
from tests.support.clinics import Clock
from tests.support.ivr import ivr_rig
from tests.test_ivr_calls import SATURDAY, at

PROMPTS_TO_WAIT_FOR = ["main-menu", "choose-specialty", "choose-day", "choose-time",
                       "confirm-keys", "enter-mobile", "enter-code", "code-other-mobile",
                       "anything-else"]
actions = st.one_of(
    st.text("0123456789*#", min_size=1, max_size=3).map(Press),
    st.floats(0, 8).map(Wait),
    st.sampled_from(PROMPTS_TO_WAIT_FOR).map(Hear),
    st.just(Press("1")),
)
callers = st.builds(
    lambda number, steps: Caller(number, (*steps, HangUp())),
    st.sampled_from(["09121234567", None, "12345"]),
    st.lists(actions, max_size=25),
)


class Failures(logging.Handler):
    """Collects what nobat logged as an error while the call ran."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def one_call(caller: Caller, folder: Path) -> None:
    database = Database.from_url(f"sqlite+aiosqlite:///{folder / 'p.db'}")
    await upgrade(database)
    failures = Failures()
    logging.getLogger("ivr").addHandler(failures)
    try:
        async with ivr_rig(database, Clock(at(SATURDAY, 9))) as rig:
            heard = await rig.call(caller)
            for _ in range(100):
                if not rig.line.calls and not rig.server.calls:
                    break
                await asyncio.sleep(0.01)
            assert rig.line.calls == {} and rig.server.calls == set()
        assert [r.getMessage() for r in failures.records] == []
        async with database.reading() as session:
            booked = await session.scalar(select(func.count()).select_from(Appointment))
            open_calls = await session.scalar(select(func.count()).where(
                InboundCall.ended_at.is_(None)))
        # One code per booking, however often the caller had it repeated (1 after it).
        prompts = heard.prompts
        announced = sum(1 for i, name in enumerate(prompts) if name == "fa/your-code"
                        and (i == 0 or prompts[i - 1] != "fa/repeat-code"))
        assert booked == announced
        assert open_calls == 0
    finally:
        logging.getLogger("ivr").removeHandler(failures)
        await database.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(callers)
@example(Caller("09121234567", (*map(Press, "111111"), Press("0"), Press("1"), HangUp())))
def test_any_keys_and_a_hang_up_anywhere_leave_no_half_done_booking(caller: Caller) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(one_call(caller, Path(folder)))


def test_a_hang_up_at_every_step_of_a_booking(tmp_path: Path) -> None:
    """The booking dialogue, cut short after each of its steps in turn."""
    script: list[CallerAction] = [Hear("main-menu"), Press("1"), Hear("choose-specialty"),
                                  Press("1"), Hear("choose-day"), Press("1"),
                                  Hear("choose-time"), Press("2"), Hear("confirm-keys"),
                                  Press("1"), Hear("your-code"), Wait(2)]
    for cut in range(len(script) + 1):
        folder = tmp_path / str(cut)
        folder.mkdir()
        asyncio.run(one_call(Caller("09121234567", (*script[:cut], HangUp())), folder))
