"""`nobat try`: one call in the terminal, on the line `nobat serve` runs, against the real store."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from clinic.staff_toml import StaffFileError
from db.practices import practices
from ivr.call import CallEnd
from ivr.inbound import ENTRY_FLOW
from ivr.session import CallerHungUp, CallInfo
from ivr.terminal_session import TerminalSession
from nobat.config import Config
from nobat.ivr_wiring import build_line
from nobat.serve import open_database

EXIT_USAGE = 2
"""As `nobat` answers a broken file or a wrong argument."""
HELP = ("type keys, then Enter: 1, 42#, 09121234567#; Enter alone is silence; "
        "q hangs up")
SPOKEN_DIGIT = re.compile(r"[a-z]+/num/\d")
"""How a code is said: digit by digit (ivr.speech.digits)."""


def stdin_reader() -> asyncio.StreamReader:
    """stdin as a StreamReader fed by a thread, so a terminal, a pipe and a file all work.

    asyncio's pipe transport refuses files and would make a terminal shared with stdout
    non-blocking; a raw os.read holds no lock a daemon thread could keep at exit.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    fd = sys.stdin.fileno()

    def pump() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the call is over
            while chunk := _read_some(fd):
                loop.call_soon_threadsafe(reader.feed_data, chunk)
            loop.call_soon_threadsafe(reader.feed_eof)

    threading.Thread(target=pump, name="nobat-try-stdin", daemon=True).start()
    return reader


def _read_some(fd: int) -> bytes:
    """What was typed so far; b"" at the end of input, or when the terminal is gone (EIO)."""
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""


def heard_codes(heard: Sequence[str]) -> list[str]:
    """The booking codes said to the caller (the digits after "your-code"), for the summary."""
    codes = []
    for index, name in enumerate(heard):
        if name.endswith("/your-code"):
            said = itertools.takewhile(SPOKEN_DIGIT.fullmatch, heard[index + 1:])
            codes.append("".join(spoken[-1] for spoken in said))
    return [code for code in dict.fromkeys(codes) if code]


async def try_flow(config: Config, flow: str | None, caller: str | None, lang: str | None,
                   stdin: asyncio.StreamReader, stdout: TextIO, *, echo: bool = False,
                   dialled: str | None = None) -> int:
    """Answer one call from the terminal, so staff try exactly what callers will get."""
    database = await open_database(config)
    try:
        if not await practices(database):
            print(f"nobat: {config.database.safe_url} holds no clinic yet; load one first: "
                  "nobat clinic load clinic.toml (nobat serve loads it too)", file=sys.stderr)
            return 1
        try:
            line = await build_line(config, database)
        except StaffFileError as exc:
            print(f"nobat: the flows have problems:\n{exc}", file=sys.stderr)
            return EXIT_USAGE
        line.logging_calls = False
        name = flow or ENTRY_FLOW
        snapshot = line.flows.current()
        if name not in snapshot.flows:
            print(f"nobat: no flow {name!r} in {config.ivr.flows}; there are: "
                  f"{', '.join(sorted(snapshot.flows))}", file=sys.stderr)
            return EXIT_USAGE
        options = {"flow": name, **({"lang": lang} if lang else {})}
        info = CallInfo(caller_id=caller, dialled=dialled, channel="terminal",
                        unique_id=f"try-{os.getpid()}", entry="try", options=options)
        session = TerminalSession(snapshot.prompts, info, stdin, stdout, echo=echo)
        stdout.write(f"nobat try: flow {name}, caller {caller or 'withheld'}, "
                     f"store {config.database.safe_url} (bookings made here are real)\n"
                     f"{HELP}\n")
        try:
            outcome = (await line.answer(session)).outcome
        except CallerHungUp:
            outcome = CallEnd.HUNG_UP
        finally:
            session.close()
        stdout.write(f"call outcome: {outcome}\n")
        for code in heard_codes(session.heard):
            stdout.write(f"booking code heard: {code}\n")
        stdout.flush()
        return 0
    finally:
        await database.close()
