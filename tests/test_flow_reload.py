"""Editing a flow while calls run: new calls get the edit, calls in progress keep theirs,
and a broken edit is refused while the previous flows keep serving."""

from __future__ import annotations

import asyncio
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from db.engine import Database
from ivr.agi_protocol import Command
from tests.fakepbx.agi_caller import files_played
from tests.fakepbx.script import Caller, Hear
from tests.support.clinics import Clock
from tests.support.ivr import ROOT, IvrRig, ivr_rig
from tests.support.server import ServerProcess, demo_copy
from tests.test_ivr_calls import SATURDAY, at

ADDRESS_KEY = '"3" = "address", "4" = "hours"'
HOURS_KEY = '"3" = "hours", "4" = "address"'
BROKEN_KEY = '"3" = "adress", "4" = "hours"'
ASKS_FOR_3 = Caller.dialling("09121234567", Hear("main-menu"), "3", Hear("anything-else"), "9")


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    folder = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", folder)
    return folder


@pytest.fixture
async def rig(database: Database, flows: Path) -> AsyncIterator[IvrRig]:
    async with ivr_rig(database, Clock(at(SATURDAY, 9)), flows=flows) as started:
        yield started


def edit(flows: Path, old: str, new: str) -> None:
    path = flows / "main.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


async def test_a_call_in_progress_keeps_its_flow_while_new_calls_get_the_edit(
        rig: IvrRig, flows: Path) -> None:
    async def edit_during_the_menu(command: Command) -> None:
        if any(file.endswith("/main-menu") for file in files_played(command)) \
                and HOURS_KEY not in (flows / "main.toml").read_text():
            edit(flows, ADDRESS_KEY, HOURS_KEY)
            assert await rig.line.flows.reload("test edit")

    during = await rig.call(ASKS_FOR_3, before=edit_during_the_menu)
    after = await rig.call(ASKS_FOR_3)
    assert "fa/address-intro" in during.prompts
    assert "fa/choose-specialty" in after.prompts and "fa/address-intro" not in after.prompts


async def test_a_broken_edit_is_refused_and_the_previous_flows_keep_serving(
        rig: IvrRig, flows: Path) -> None:
    before = rig.line.flows.current().version
    edit(flows, ADDRESS_KEY, BROKEN_KEY)
    assert not await rig.line.flows.reload("test edit")
    assert rig.line.flows.current().version == before
    error = rig.line.flows.last_error or ""
    assert f"{flows / 'main.toml'}:" in error and "no node 'adress' in this flow" in error
    heard = await rig.call(ASKS_FOR_3)
    assert "fa/address-intro" in heard.prompts
    edit(flows, BROKEN_KEY, HOURS_KEY)
    assert await rig.line.flows.reload("fixed")
    assert rig.line.flows.last_error is None


async def test_nobat_serve_reloads_on_sighup_and_on_a_saved_file(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    shutil.copytree(ROOT / "flows", tmp_path / "flows")
    text = config.read_text().replace(f'flows = "{ROOT / "flows"}"', 'flows = "flows"')
    config.write_text(text.replace("watch_seconds = 2", "watch_seconds = 0.2"))
    server = await ServerProcess(config).start()
    try:
        edit(tmp_path / "flows", ADDRESS_KEY, BROKEN_KEY)
        await wait_for_log(server, "flows not reloaded (file changed)")
        assert any("no node 'adress'" in line for line in server.log)
        edit(tmp_path / "flows", BROKEN_KEY, HOURS_KEY)
        await wait_for_log(server, "flows loaded (file changed)")
        edit(tmp_path / "flows", HOURS_KEY, ADDRESS_KEY)
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        await wait_for_log(server, "flows loaded (")
    finally:
        assert await server.stop() == 0


async def wait_for_log(server: ServerProcess, text: str, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.05)):
        if any(text in line for line in server.log):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nobat never logged {text!r}:\n" + "\n".join(server.log))


COLLECTING = """[flow]
start = "ask"

[nodes.ask]
kind = "collect"
prompt = "enter-code"
into = "code"
min_digits = 6
max_digits = 6
next = "check"

[nodes.check]
kind = "branch"
when = { "value code = 123456" = "address" }
otherwise = "goodbye"

[nodes.address]
kind = "action"
action = "address"
next = "goodbye"

[nodes.office]
kind = "action"
action = "office"
next = "goodbye"

[nodes.goodbye]
kind = "hangup"
prompt = "goodbye"
"""


async def test_a_collected_number_steers_the_flow(database: Database, tmp_path: Path) -> None:
    (tmp_path / "main.toml").write_text(COLLECTING, encoding="utf-8")
    async with ivr_rig(database, Clock(at(SATURDAY, 9)), flows=tmp_path) as rig:
        right = await rig.call(Caller.dialling("09121234567", Hear("enter-code"), "12",
                                               Hear("invalid"), Hear("enter-code"), "123456"))
        wrong = await rig.call(Caller.dialling("09121234567", Hear("enter-code"), "654321"))
    assert right.prompts == ["fa/enter-code", "fa/invalid", "fa/enter-code", "fa/address-intro",
                             "fa/clinic/address", "fa/goodbye"]
    assert wrong.prompts == ["fa/enter-code", "fa/goodbye"]
