"""Record AMI and FastAGI bytes as they cross a logging TCP proxy, in tests/captures' format.

The recorder (tests/realpbx/record.py) puts a `LoggingProxy` between each controller and a
real Asterisk, in the same asyncio loop as the scenario, so every TCP read is kept with the
loop's clock: AMI runs client -> proxy -> Asterisk, FastAGI runs Asterisk -> proxy -> the
recorder's FastAGI server. `CaptureLog` writes what was seen as `<stem>.jsonl` (one record per
read, the format tests/captures.py reads) and `<stem>.txt` (a transcript, one protocol line
per output line).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.realpbx.loopback import LoopbackServer

TO_ASTERISK = ">>>"
FROM_ASTERISK = "<<<"
NOTE = "---"
MARK = "###"
_LINES = re.compile(r"[^\n]*\n|[^\n]+")
"""Protocol lines: AMI's end in CR LF and AGI's in LF, so a line ends only at LF."""
_ESCAPES = str.maketrans({"\\": "\\\\", "\r": "\\r", "\n": "\\n", "\t": "\\t"})


@dataclass
class CaptureLog:
    """Every read, connection note and scenario marker of one capture file, in order."""

    scenario: str
    asterisk: str
    records: list[dict[str, Any]] = field(default_factory=list)
    connections: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._start = asyncio.get_running_loop().time()
        wall = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.records.append({"dir": MARK, "t": 0.0, "note": "capture start",
                             "wall_clock_utc": wall, "scenario": self.scenario,
                             "asterisk": self.asterisk})

    def _now(self) -> float:
        return round(asyncio.get_running_loop().time() - self._start, 4)

    def mark(self, note: str, *links: str) -> None:
        """A scenario marker; `links` limits it to those links' files (all when empty)."""
        record: dict[str, Any] = {"t": self._now(), "dir": MARK, "note": note}
        if links:
            record["links"] = list(links)
        self.records.append(record)

    def new_connection(self, link: str) -> int:
        """Number the next connection of a link, from 1 in each capture."""
        self.connections[link] = self.connections.get(link, 0) + 1
        return self.connections[link]

    def note(self, link: str, conn: int, note: str) -> None:
        """Connection bookkeeping: open, EOF from one side, close."""
        self.records.append({"t": self._now(), "link": link, "conn": conn, "dir": NOTE,
                             "note": note})

    def read(self, link: str, conn: int, direction: str, data: bytes) -> None:
        """One TCP read, kept as latin-1 so the exact bytes come back."""
        self.records.append({"t": self._now(), "link": link, "conn": conn, "dir": direction,
                             "len": len(data), "data": data.decode("latin-1")})

    def selected(self, link: str | None) -> list[dict[str, Any]]:
        """The records of one link (markers meant for it included), or all of them."""
        chosen = []
        for record in self.records:
            if link is not None and record["dir"] == MARK:
                if link not in record.get("links", [link]):
                    continue
            elif link is not None and record.get("link") != link:
                continue
            chosen.append({k: v for k, v in record.items() if k != "links"})
        return chosen

    def write(self, folder: Path, stem: str, link: str | None = None) -> list[Path]:
        """Write <stem>.jsonl and <stem>.txt for one link (or every link)."""
        records = self.selected(link)
        jsonl = folder / f"{stem}.jsonl"
        jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                         encoding="utf-8")
        txt = folder / f"{stem}.txt"
        txt.write_text("".join(line + "\n" for line in transcript(records)), encoding="utf-8")
        return [jsonl, txt]


def transcript(records: Iterable[dict[str, Any]]) -> Iterable[str]:
    """The records as lines: direction, time, [link#conn], then one protocol line each."""
    for record in records:
        head = f"{record['dir']} {record['t']:9.4f}"
        if record["dir"] == MARK:
            yield f"{head}  {record['note']}"
            continue
        head += f" [{record['link']}#{record['conn']}]"
        if record["dir"] == NOTE:
            yield f"{head} {record['note']}"
            continue
        for line in _LINES.findall(record["data"]):
            yield f"{head} {line.translate(_ESCAPES)}"


@dataclass
class LoggingProxy(LoopbackServer):
    """A TCP proxy on 127.0.0.1 that logs each read of each direction before passing it on.

    `asterisk_dials` says who connects: False for AMI (the controller dials the proxy, the
    proxy dials Asterisk), True for FastAGI (Asterisk dials the proxy, the proxy dials the
    controller's FastAGI server).
    """

    log: CaptureLog
    link: str
    target_port: int
    asterisk_dials: bool
    port: int = 0
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def idle(self, within: float = 10.0) -> None:
        """Wait until every proxied connection has closed on both sides."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=within)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1",
                                                                         self.target_port)
        except OSError:
            writer.close()  # the caller sees the refusal as an immediate close
            return
        conn = self.log.new_connection(self.link)
        peer = "{}:{}".format(*writer.get_extra_info("peername")[:2])
        target = "{}:{}".format(*target_writer.get_extra_info("peername")[:2])
        if self.asterisk_dials:
            sides = {"asterisk": (reader, writer), "controller": (target_reader, target_writer)}
            opened = f"open asterisk {peer} -> proxy:{self.port} -> controller {target}"
        else:
            sides = {"controller": (reader, writer), "asterisk": (target_reader, target_writer)}
            opened = f"open controller {peer} -> proxy:{self.port} -> asterisk {target}"
        self.log.note(self.link, conn, opened)
        await asyncio.gather(
            self._pump(conn, "controller", sides["controller"][0], sides["asterisk"][1]),
            self._pump(conn, "asterisk", sides["asterisk"][0], sides["controller"][1]))
        for _, side_writer in sides.values():
            side_writer.close()
            with contextlib.suppress(OSError):
                await side_writer.wait_closed()
        self.log.note(self.link, conn, "closed both sides")

    async def _pump(self, conn: int, source: str, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        direction = TO_ASTERISK if source == "controller" else FROM_ASTERISK
        while True:
            try:
                data = await reader.read(65536)
            except OSError as exc:
                self.log.note(self.link, conn, f"EOF from {source} ({exc.__class__.__name__})")
                break
            if not data:
                self.log.note(self.link, conn, f"EOF from {source} (it closed its side)")
                break
            self.log.read(self.link, conn, direction, data)
            with contextlib.suppress(OSError):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
