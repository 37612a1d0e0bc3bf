"""`nobat-agi`, one process per call as AGI(nobat-agi) runs it: same flows, same store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from db.engine import Database
from db.models import Appointment, InboundCall
from ivr.agi_protocol import AGI_VERBS, AgiEnvironment, Command
from tests.fakepbx.agi_caller import (
    DIALPLAN_SECRET,
    CallTranscript,
    FakeChannel,
    call_environment,
    converse,
)
from tests.fakepbx.script import Caller, HangUp, Hear
from tests.support.ivr import SECONDS_PER_CHARACTER
from tests.support.postgres import free_port
from tests.support.server import ROOT, demo_copy, demo_store, edit_config
from tests.test_ivr_calls import BOOK_SATURDAY_1620


def classic_environment(caller: Caller) -> AgiEnvironment:
    """What Asterisk writes to a classic AGI program: no agi_network lines."""
    env = call_environment(caller, "nobat-agi")
    return AgiEnvironment({k: v for k, v in env.variables.items()
                           if not k.startswith("agi_network")} | {"agi_request": "nobat-agi"})


@dataclass
class Wire:
    """Every byte nobat-agi wrote: stdout is its AGI channel to Asterisk, stderr its log."""

    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytes = b""


async def relay(source: asyncio.StreamReader, sink: asyncio.StreamReader, kept: bytearray) -> None:
    """Pass what nobat-agi writes on to the fake PBX, keeping a copy to check byte by byte."""
    while data := await source.read(65536):
        kept += data
        sink.feed_data(data)
    sink.feed_eof()


async def run_classic(caller: Caller, config: Path, wire: Wire | None = None,
                      as_user: Sequence[str] = ()) -> CallTranscript:
    """Run nobat-agi for one call; `as_user` is a command that runs it as another user."""
    wire = wire if wire is not None else Wire()
    process = await asyncio.create_subprocess_exec(
        *as_user, sys.executable, "-c",
        "from nobat.agi_entry import main; raise SystemExit(main())",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "NOBAT_CONFIG": str(config)})
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    commands = asyncio.StreamReader()
    relaying = asyncio.create_task(relay(process.stdout, commands, wire.stdout))
    logged = asyncio.create_task(process.stderr.read())
    def sighup() -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGHUP)

    channel = FakeChannel(caller, classic_environment(caller),
                          lambda path: max(0.5, len(path) * SECONDS_PER_CHARACTER),
                          sighup=sighup)
    await converse(channel, commands, process.stdin, stall_seconds=30)
    process.stdin.close()
    assert await asyncio.wait_for(process.wait(), 30) == 0
    await relaying
    wire.stderr = await logged
    channel.transcript.assert_clean()
    return channel.transcript


def book_saturday() -> Caller:
    """A caller who books the demo's Saturday 16:20 and says goodbye."""
    return Caller.dialling("09121234567", Hear("welcome"), "1", *BOOK_SATURDAY_1620[:-2],
                           Hear("anything-else"), "9")


async def test_a_classic_agi_call_books_on_the_same_store(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    database = await demo_store(tmp_path)
    transcript = await run_classic(book_saturday(), config)
    assert transcript.exchanges[0].command.verb == "ANSWER"
    assert transcript.prompts[0].endswith("/fa/welcome")
    assert transcript.prompts[-1].endswith("/fa/goodbye")
    async with database.reading() as session:
        assert len((await session.scalars(select(Appointment))).all()) == 1
        assert (await session.scalars(select(InboundCall.outcome))).all() == ["completed"]
    await database.close()


async def test_json_logs_never_reach_the_agi_channel(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    text = config.read_text()
    assert 'log_format = "text"' in text
    config.write_text(text.replace('log_format = "text"', 'log_format = "json"'))
    database = await demo_store(tmp_path)
    wire = Wire()
    transcript = await run_classic(book_saturday(), config, wire)
    lines = wire.stdout.decode().splitlines()
    assert lines and all(Command.parse(line).verb in AGI_VERBS for line in lines), lines
    assert len(lines) == len(transcript.exchanges) and not transcript.unknown_commands
    logs = [json.loads(line) for line in wire.stderr.decode().splitlines()]
    assert any(entry["logger"] == "ivr.flow_store" for entry in logs), logs
    assert transcript.prompts[-1].endswith("/fa/goodbye")
    async with database.reading() as session:
        assert len((await session.scalars(select(Appointment))).all()) == 1
        assert (await session.scalars(select(InboundCall.outcome))).all() == ["completed"]
    await database.close()


async def test_a_classic_caller_who_hangs_up_mid_booking_is_logged_and_books_nothing(
        tmp_path: Path) -> None:
    """Asterisk tells a classic AGI process of the hang-up by SIGHUP alone: nobat-agi must
    not die of it, but end the flow as a hang-up and log the call."""
    config = demo_copy(tmp_path)
    database = await demo_store(tmp_path)
    caller = Caller.dialling("09121234567", Hear("welcome"), "1", *BOOK_SATURDAY_1620[:-4],
                             HangUp())
    transcript = await run_classic(caller, config)
    assert transcript.hung_up_by == "caller"  # and the process exited 0 (run_classic)
    assert any(p.endswith("/fa/with-doctor") for p in transcript.prompts)  # the read-back
    async with database.reading() as session:
        assert (await session.scalars(select(Appointment))).all() == []
        assert (await session.scalars(select(InboundCall.outcome))).all() == ["hung_up"]
    await database.close()


ASTERISK_UID = 65534
"""Asterisk's user in the test: nobody, a member of no group of nobat's but the shared one."""
SHARED_GID = 47011
"""The `nobat` group of the deployment guide, which Asterisk's user is added to."""
GUIDE_SECRETS = {"NOBAT_AMI_SECRET": "guide-ami-secret-0042",
                 "NOBAT_FASTAGI_SECRET": DIALPLAN_SECRET}
"""What the guide's secrets.env holds, and nobat.service gets."""


def deploy_as_the_guide_says(base: Path, group: int = SHARED_GID) -> Path:
    """docs/deployment.md's layout, owners and modes in `base`, root standing in for the
    nobat user and `group` for its group: etc/ (root:nobat 0750) with config.toml and
    clinic.toml (0640) and secrets.env (root:root 0600); lib/ (0750) with flows/ and prompts/
    (2750, files 0640) and store/ (2770); the store `nobat db upgrade` and `nobat clinic
    load` make under UMask=0007, the prompts `nobat prompts build` speaks under 0027.
    Returns the config's path, with free ports for the page and FastAGI."""
    base.chmod(0o755)
    etc, lib = base / "etc", base / "lib"
    store = lib / "store"
    for folder, mode in ((etc, 0o750), (lib, 0o750), (store, 0o2770)):
        folder.mkdir()
        os.chown(folder, 0, group)
        folder.chmod(mode)
    for name in ("flows", "prompts"):  # cp -r, chown -R, chmod -R u=rwX,g=rX,o=, g+s
        shutil.copytree(ROOT / name, lib / name)
        for path in (lib / name, *(lib / name).rglob("*")):
            os.chown(path, 0, group)
            path.chmod(0o2750 if path.is_dir() else 0o640)
    config = demo_copy(etc, port=free_port())
    edit_config(config, ('url = "sqlite+aiosqlite:///nobat.db"',
                         f'url = "sqlite+aiosqlite:///{store / "nobat.db"}"'),
                ("port = 0\n", f"port = {free_port()}\n"),
                (f'secret = "{DIALPLAN_SECRET}"', 'secret = ""'),
                *((f'{name} = "{ROOT / name}"', f'{name} = "{lib / name}"')
                  for name in ("flows", "prompts")))
    secrets = etc / "secrets.env"  # install -m 0600 /dev/null, then edited
    secrets.touch(mode=0o600)
    secrets.write_text("".join(f"{name}={value}\n" for name, value in GUIDE_SECRETS.items()))
    for path in (config, etc / "clinic.toml"):
        os.chown(path, 0, group)
        path.chmod(0o640)
    for umask, command in ((0o007, ["db", "upgrade"]),
                           (0o007, ["clinic", "load", str(etc / "clinic.toml")]),
                           (0o027, ["prompts", "build"])):
        made = subprocess.run([sys.executable, "-m", "nobat", "-c", str(config), *command],
                              capture_output=True, text=True, check=False,
                              preexec_fn=lambda umask=umask: os.umask(umask))
        assert made.returncode == 0, made.stderr
    return config


async def test_nobat_agi_as_asterisks_user_books_with_the_guides_file_modes() -> None:
    """Asterisk's user, in nobat's group and nothing more, reads the config and the flows
    and writes the store: the classic AGI fallback works as deployed."""
    base = Path(tempfile.mkdtemp(prefix="nobat-deployed-"))
    try:
        config = await asyncio.to_thread(deploy_as_the_guide_says, base)
        store = base / "lib" / "store" / "nobat.db"
        made = await asyncio.to_thread(store.stat)
        assert (stat.S_IMODE(made.st_mode), made.st_gid) == (0o660, SHARED_GID)
        asterisk = ["setpriv", f"--reuid={ASTERISK_UID}", f"--regid={ASTERISK_UID}",
                    f"--groups={SHARED_GID}", "--"]
        transcript = await run_classic(book_saturday(), config, as_user=asterisk)
        assert transcript.prompts[-1] == str(base / "lib" / "prompts" / "fa" / "goodbye")
        database = Database.from_url(f"sqlite+aiosqlite:///{store}")
        try:
            async with database.reading() as session:
                assert len((await session.scalars(select(Appointment))).all()) == 1
                assert (await session.scalars(select(InboundCall.outcome))).all() == [
                    "completed"]
        finally:
            await database.close()
    finally:
        await asyncio.to_thread(shutil.rmtree, base, ignore_errors=True)
