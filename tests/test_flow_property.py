"""Random flows that pass the checker never crash the engine, whatever the caller presses."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from clinic.staff_toml import StaffFileError
from db.engine import Database
from db.schema import upgrade
from ivr.actions.registry import ACTIONS
from ivr.flow_check import load_flows
from ivr.prompts import PromptLibrary
from tests.fakepbx.script import Caller, HangUp, Press, Wait
from tests.support.clinics import Clock
from tests.support.ivr import ROOT, ivr_rig
from tests.test_ivr_calls import SATURDAY, at
from tests.test_ivr_property import Failures

PROMPTS = PromptLibrary.load(ROOT / "prompts" / "manifest.toml", "/p")
NAMES = ["a", "b", "c", "d", "e", "f"]
SAYABLE = ["welcome", "main-menu", "invalid", "goodbye", "anything-else"]


@st.composite
def flows(draw: st.DrawFn) -> str:
    """A flow file of random nodes wired to each other at random."""
    ids = NAMES[:draw(st.integers(2, len(NAMES)))]
    target = st.sampled_from([*ids, "office"])
    lines = ["[flow]", f'start = "{ids[0]}"', ""]
    for node in ids:
        kind = draw(st.sampled_from(["menu", "play", "branch", "language", "action", "hangup"]))
        lines.append(f"[nodes.{node}]")
        lines.append(f'kind = "{kind}"')
        if kind == "menu":
            keys = draw(st.dictionaries(st.sampled_from(list("123456789#")), target, min_size=1,
                                        max_size=4))
            lines.append(f'prompt = "{draw(st.sampled_from(SAYABLE))}"')
            lines.append("keys = { " + ", ".join(f'"{k}" = "{v}"' for k, v in keys.items())
                         + " }")
            lines.append(f"tries = {draw(st.integers(1, 3))}")
        elif kind == "play":
            lines += [f'prompt = "{draw(st.sampled_from(SAYABLE))}"', f'next = "{draw(target)}"']
        elif kind == "branch":
            condition = draw(st.sampled_from(["caller_known", "language = en", "office_open",
                                              "not holiday", "weekday = saturday"]))
            lines += [f'when = {{ "{condition}" = "{draw(target)}" }}',
                      f'otherwise = "{draw(target)}"']
        elif kind == "language":
            lines += [f'language = "{draw(st.sampled_from(["fa", "en"]))}"',
                      f'next = "{draw(target)}"']
        elif kind == "action":
            action = draw(st.sampled_from(["address", "identify", "hours", "book"]))
            lines += [f'action = "{action}"', f'next = "{draw(target)}"']
        else:
            lines.append('prompt = "goodbye"')
        lines.append("")
    lines += ["[nodes.office]", 'kind = "action"', 'action = "office"',
              f'next = "{ids[0]}"', ""]
    return "\n".join(lines)


keys = st.lists(st.one_of(st.text("0123456789*#", min_size=1, max_size=2).map(Press),
                          st.floats(0, 10).map(Wait)), max_size=15)


async def run(text: str, actions: list[Press | Wait], folder: Path) -> None:
    database = Database.from_url(f"sqlite+aiosqlite:///{folder / 'f.db'}")
    await upgrade(database)
    failures = Failures()
    logging.getLogger("ivr").addHandler(failures)
    try:
        async with ivr_rig(database, Clock(at(SATURDAY, 9)), flows=folder) as rig:
            heard = await rig.call(Caller("09121234567", (*actions, HangUp())))
            assert heard.transcript.failures == []
            assert rig.line.calls == {}
        assert [r.getMessage() for r in failures.records] == []
    finally:
        logging.getLogger("ivr").removeHandler(failures)
        await database.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.filter_too_much])
@given(flows(), keys)
def test_random_valid_flows_never_crash_the_engine(text: str, actions: list[Press | Wait]
                                                    ) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "main.toml").write_text(text, encoding="utf-8")
        try:
            load_flows(Path(folder), ACTIONS, PROMPTS)
        except StaffFileError:
            assume(False)
        asyncio.run(run(text, actions, Path(folder)))
