"""`nobat serve` as a real process, watched through its log lines."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from pathlib import Path

from clinic.clinic_file import read_clinic
from db.clinic_sync import load_clinic
from db.engine import Database
from db.schema import upgrade
from nobat.clinic_loading import load_clinics
from tests.fakepbx.agi_caller import DIALPLAN_SECRET

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"status page listening on http://([\d.]+):(\d+)/")
FASTAGI = re.compile(r"FastAGI listening on [\d.]+:(\d+)")


class ServerProcess:
    """Starts `nobat serve`, waits until it listens, and keeps everything it logged."""

    def __init__(self, config: Path, env: dict[str, str] | None = None,
                 json_logs: bool = False) -> None:
        self.config = config
        self.json_logs = json_logs
        """The config logs JSON lines, which come on stdout (text comes on stderr)."""
        self.env = {**os.environ, **(env or {})}
        self.log: list[str] = []
        self.base_url = ""
        self.fastagi_port = 0
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, wait_s: float = 30.0) -> ServerProcess:
        """Start the server and return once the status page listens."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nobat", "-c", str(self.config), "serve",
            stderr=asyncio.subprocess.DEVNULL if self.json_logs else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE if self.json_logs else asyncio.subprocess.DEVNULL,
            env=self.env)
        listening = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(listening))
        host, port = await asyncio.wait_for(listening, wait_s)
        self.base_url = f"http://{host}:{port}"
        return self

    async def _read(self, listening: asyncio.Future[tuple[str, str]]) -> None:
        assert self.process is not None
        stream = self.process.stdout if self.json_logs else self.process.stderr
        assert stream is not None
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            self.log.append(line)
            if fastagi := FASTAGI.search(line):
                self.fastagi_port = int(fastagi.group(1))
            match = LISTENING.search(line)
            if match and not listening.done():
                listening.set_result((match.group(1), match.group(2)))
        if not listening.done():
            listening.set_exception(RuntimeError("nobat serve exited:\n" + "\n".join(self.log)))

    async def stop(self, wait_s: float = 15.0) -> int:
        """Send SIGTERM and return the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), wait_s)
        if self._reader is not None:
            await self._reader
        return code


def demo_copy(folder: Path, port: int = 0, clinic: str | None = None,
              max_calls: int | None = None) -> Path:
    """The shipped config and clinic copied into `folder` (free ports, the repo's flows and
    prompts), so a test or benchmark owns the store and files beside them."""
    shutil.copy(ROOT / "clinic.toml", folder / "clinic.toml")
    if clinic is not None:
        (folder / "clinic.toml").write_text(clinic, encoding="utf-8")
    text = (ROOT / "config.toml").read_text().replace("port = 8080", f"port = {port}")
    text = text.replace("port = 4573", "port = 0")
    fastagi_secret = 'secret = ""\n# Peers'  # [fastagi]'s, not [ami]'s
    assert fastagi_secret in text, "config.toml: no empty [fastagi] secret to set"
    text = text.replace(fastagi_secret, f'secret = "{DIALPLAN_SECRET}"\n# Peers')
    if max_calls is not None:
        text = text.replace("max_calls = 200", f"max_calls = {max_calls}")
    for name in ("flows", "prompts"):
        text = text.replace(f'{name} = "{name}"', f'{name} = "{ROOT / name}"')
    (folder / "config.toml").write_text(text)
    return folder / "config.toml"


def edit_config(config: Path, *edits: tuple[str, str]) -> None:
    """Change a copied config.toml by exact text: each `(old, new)` must match, so a key
    renamed in the shipped file fails here instead of being left as shipped."""
    text = config.read_text()
    for old, new in edits:
        if old not in text:
            raise AssertionError(f"{config}: no {old!r} to change")
        text = text.replace(old, new)
    config.write_text(text)


def dial_fake_pbx(config: Path, ami_port: int, *edits: tuple[str, str]) -> None:
    """Point a demo copy's AMI at the fake PBX and ring its phones by extension."""
    edit_config(config, ("port = 5038", f"port = {ami_port}"),
                ('dial = "PJSIP/{national}@clinic-trunk"',
                 'dial = "Local/{national}@fake-phones/n"'),
                *edits)


async def demo_store(folder: Path, practices: Path | None = None) -> Database:
    """The SQLite store beside a demo copy, migrated, with its clinic loaded; or, given a
    folder of `practices`, each of them, as `nobat clinic load` loads a platform's."""
    database = Database.from_url(f"sqlite+aiosqlite:///{folder / 'nobat.db'}")
    await upgrade(database)
    if practices is None:
        await load_clinic(database, read_clinic(folder / "clinic.toml"))
        return database
    refused = [load for load in await load_clinics(database, practices) if load.failure]
    assert not refused, f"{practices}: {refused}"
    return database
