"""CallSession on a terminal: prompts print as their words, typed lines are the keypad.

Staff try flows with it (`nobat try`), so what they see is what a caller hears. The protocol:
each line typed is a run of keys ("1", "42#", "09121234567#"); a line typed ahead cuts the
next prompt short, as a key pressed during a prompt does; an empty line is silence (the
wait times out at once, nobody waits for real seconds); "q" or "h", or the end of input,
hangs up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import NoReturn, TextIO

from ivr.prompts import PromptLibrary
from ivr.session import ALL_KEYS, CallerHungUp, CallInfo, CallSession

HANG_UP_LINES = frozenset({"q", "h"})
MARKER = "keys> "


class TerminalSession(CallSession):
    """Prints each prompt as `[lang/name] words`; reads keys a line at a time."""

    def __init__(self, prompts: PromptLibrary, info: CallInfo, keys: asyncio.StreamReader,
                 out: TextIO, *, echo: bool = False) -> None:
        """`echo` writes each line taken back out, for input that is not a terminal's."""
        self.prompts = prompts
        self.info = info
        self.keys_in = keys
        self.out = out
        self.echo = echo
        self.heard: list[str] = []
        self._lines: deque[str | None] = deque()
        self._keys: deque[str] = deque()
        self._reading: asyncio.Future[bytes] | None = None

    async def play(self, prompts: Sequence[str], keys: str = ALL_KEYS) -> str | None:
        for path in prompts:
            await self._poll()
            typed = self._lines[0] if self._lines else None
            if not self._keys and typed is not None and typed.strip():
                self._lines.popleft()
                self._take(typed)
            if self._keys and self._keys[0] in keys:
                return self._keys.popleft()
            self._say(path)
        return None

    async def wait_digit(self, seconds: float) -> str | None:
        while not self._keys:
            await self._poll()
            if not self._lines:
                if not self.echo:
                    self._write(MARKER)
                self._lines.append(await self._read_line())
                if self._lines[-1] is None and not self.echo:
                    self._write("\n")
            line = self._lines.popleft()
            if line is None:
                self._caller_hangs_up()
            if not self._take(line):
                return None
        return self._keys.popleft()

    async def transfer(self, destination: str) -> None:
        self._write(f"→ transferred to {destination}\n")

    async def hang_up(self) -> None:
        self._write("— call ended\n")

    async def begin(self, call_id: int) -> None:
        """No dialplan waits on a terminal."""

    async def finish(self) -> None:
        """No dialplan waits on a terminal."""

    def close(self) -> None:
        """Stop waiting for a line nobody will use now that the call is over."""
        if self._reading is not None:
            self._reading.cancel()

    def _say(self, path: str) -> None:
        found = self.prompts.key_of(path)
        if found is None:
            self._write(f"[{path}]\n")
            return
        name = "/".join(found)
        self.heard.append(name)
        text = self.prompts.text(*found)
        self._write(f"[{name}] {text}\n" if text else f"[{name}]\n")

    def _caller_hangs_up(self) -> NoReturn:
        self._write("— caller hung up\n")
        raise CallerHungUp()

    def _take(self, line: str) -> bool:
        """Queue a line's keys; False for an empty line (silence); hangs up on "q" or "h"."""
        if self.echo:
            self._write(f"{MARKER}{line}\n")
        if line.strip().lower() in HANG_UP_LINES:
            self._caller_hangs_up()
        self._keys.extend(c for c in line if c in ALL_KEYS)
        ignored = "".join(c for c in line if c not in ALL_KEYS and not c.isspace())
        if ignored:
            self._write(f"(ignored {ignored!r}: keys are 0-9 * #, Enter alone is silence, "
                        "q hangs up)\n")
        return bool(line.strip())

    async def _poll(self) -> None:
        """Take in the lines typed so far, without waiting for more (type-ahead)."""
        while not self._lines or self._lines[-1] is not None:
            if self._reading is None:
                self._reading = asyncio.ensure_future(self.keys_in.readline())
            await asyncio.sleep(0)
            if not self._reading.done():
                return
            self._lines.append(await self._read_line())

    async def _read_line(self) -> str | None:
        """The next line typed, waiting for it; None at the end of input."""
        if self._reading is None:
            self._reading = asyncio.ensure_future(self.keys_in.readline())
        raw, self._reading = await self._reading, None
        return raw.decode(errors="replace").rstrip("\r\n") if raw else None

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
