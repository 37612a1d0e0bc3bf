"""The IVR on a real FastAGI socket, against a real store, with a clock the test sets."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from clinic.clinic_file import read_clinic
from db.clinic_sync import load_clinic
from db.engine import Database
from ivr.agi_protocol import Command
from ivr.fastagi import FastAgiServer, Limits
from ivr.inbound import InboundLine
from ivr.prompts import PromptLibrary
from nobat.config import Config, load_config
from nobat.ivr_wiring import build_line, fastagi_server
from tests.fakepbx.agi_caller import DIALPLAN_SECRET, CallTranscript, place_call
from tests.fakepbx.script import Caller
from tests.support.clinics import Clock

ROOT = Path(__file__).resolve().parents[2]
SECONDS_PER_CHARACTER = 0.06


@dataclass
class HeardCall:
    """A finished call: the prompt names the caller heard (language/name) and the transcript."""

    prompts: list[str]
    transcript: CallTranscript


class IvrRig:
    """nobat's inbound line behind a FastAGI listener on 127.0.0.1, as `nobat serve` wires it."""

    def __init__(self, config: Config, line: InboundLine, server: FastAgiServer, port: int
                 ) -> None:
        self.config = config
        self.line = line
        self.server = server
        self.port = port

    @property
    def prompts(self) -> PromptLibrary:
        """Every prompt the line may play (each practice's own under its own key)."""
        return self.line.flows.current().prompts

    def seconds(self, path: str) -> float | None:
        """How long a prompt plays: from its text, so tests need no audio; None if unknown."""
        found = self.prompts.key_of(path)
        text = found and self.prompts.text(*found)
        return None if not text else max(0.5, len(text) * SECONDS_PER_CHARACTER)

    async def call(self, caller: Caller, args: tuple[str, ...] = (),
                   before: Callable[[Command], Awaitable[None]] | None = None,
                   answered: bool = False) -> HeardCall:
        """Place one call and return what the caller heard; `answered` if the dialplan
        answered before AGI() (by default it rings, as without Answer())."""
        transcript = await place_call("127.0.0.1", self.port, caller, args=args,
                                      prompt_seconds=self.seconds, before=before,
                                      answered=answered)
        names = []
        for path in transcript.prompts:
            found = self.prompts.key_of(path)
            names.append(f"{found[0]}/{found[1]}" if found else path)
        return HeardCall(names, transcript)


@asynccontextmanager
async def ivr_rig(database: Database, clock: Clock, limits: Limits | None = None,
                  flows: Path | None = None, practices: Sequence[Path] = (),
                  edit: Callable[[Database], Awaitable[None]] | None = None
                  ) -> AsyncIterator[IvrRig]:
    """Load the demo clinic (and the clinic files `practices` after it), `edit` the store as
    by hand, and serve the shipped flows (or `flows`) on an ephemeral port."""
    config = load_config(ROOT / "config.toml", env={"NOBAT_FASTAGI_SECRET": DIALPLAN_SECRET})
    if flows is not None:
        config = dataclasses.replace(config, ivr=dataclasses.replace(config.ivr, flows=flows))
    for file in (ROOT / "clinic.toml", *practices):
        await load_clinic(database, read_clinic(file), clock)
    if edit is not None:
        await edit(database)
    line = await build_line(config, database, clock)
    server = fastagi_server(config, line)
    if limits is not None:
        server.limits = limits
    port = await server.start("127.0.0.1", 0)
    try:
        yield IvrRig(config, line, server, port)
    finally:
        await server.close()
