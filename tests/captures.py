"""Real Asterisk 22 bytes for protocol tests, so codecs and fakes are checked against the PBX.

The project's own recordings live in tests/captures/ (tests/captures/README.md says how each
was made; tests/realpbx/record.py makes them again), so a plain clone tests itself.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol

CAPTURES_ENV = "NOBAT_CAPTURES"
TO_ASTERISK = ">>>"
FROM_ASTERISK = "<<<"

Chunker = Callable[[list[bytes]], list[bytes]]


def captures_dir() -> Path:
    """tests/captures/, or $NOBAT_CAPTURES; their absence is an error, since skipping would
    hide regressions."""
    default = Path(__file__).resolve().parent / "captures"
    path = Path(os.environ.get(CAPTURES_ENV) or default)
    if not path.is_dir() or not any(path.glob("*.jsonl")):
        raise FileNotFoundError(
            f"no Asterisk captures (*.jsonl) in {path}; set {CAPTURES_ENV} to their folder"
        )
    return path


@dataclass(frozen=True)
class Read:
    """One TCP read as the proxy saw it; empty data marks that side's end of file."""

    direction: str
    data: bytes


@dataclass(frozen=True)
class CapturedConnection:
    """Every read of one AMI or AGI connection, both directions, in time order."""

    capture: str
    link: str
    conn: int
    reads: tuple[Read, ...]

    @property
    def name(self) -> str:
        """A test id such as "a_ivr_agi-agi1"."""
        return f"{self.capture}-{self.link}{self.conn}"

    def chunks(self, direction: str) -> list[bytes]:
        """The non-empty reads of one direction, as they came off the socket."""
        return [read.data for read in self.reads if read.direction == direction and read.data]

    def stream(self, direction: str) -> bytes:
        """Everything one side sent, as a single byte string."""
        return b"".join(self.chunks(direction))

    def turns(self) -> list[tuple[str, list[bytes]]]:
        """Consecutive reads of one direction grouped, so replays can re-chunk each turn."""
        turns: list[tuple[str, list[bytes]]] = []
        for read in self.reads:
            if turns and turns[-1][0] == read.direction and read.data and turns[-1][1][-1]:
                turns[-1][1].append(read.data)
            else:
                turns.append((read.direction, [read.data]))
        return turns


@cache
def connections(link: str) -> tuple[CapturedConnection, ...]:
    """All captured connections of one link ("ami" or "agi"), across every capture file."""
    found = []
    for path in sorted(captures_dir().glob("*.jsonl")):
        reads: dict[int, list[Read]] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("link") != link:
                continue
            direction = _direction(record)
            if direction is not None:
                data = record.get("data", "").encode("latin-1")
                reads.setdefault(record["conn"], []).append(Read(direction, data))
        found += [
            CapturedConnection(path.stem, link, conn, tuple(items))
            for conn, items in sorted(reads.items())
        ]
    return tuple(found)


def connection(capture: str, link: str, conn: int) -> CapturedConnection:
    """One connection by capture file stem and number, e.g. ("c_ami_errors", "ami", 1)."""
    for candidate in connections(link):
        if (candidate.capture, candidate.conn) == (capture, conn):
            return candidate
    raise LookupError(f"no {link} connection {conn} in {capture}")


def _direction(record: dict[str, Any]) -> str | None:
    """Map a record to the side that sent it; EOF notes become empty reads of that side."""
    if record["dir"] in (TO_ASTERISK, FROM_ASTERISK):
        return record["dir"]
    note = record.get("note", "")
    if note.startswith("EOF from controller"):
        return TO_ASTERISK
    if note.startswith("EOF from asterisk"):
        return FROM_ASTERISK
    return None


class Codec(Protocol):
    """The sans-I/O surface both protocol modules offer."""

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> Any: ...

    def send(self, event: Any) -> bytes: ...


@dataclass(frozen=True)
class Replay:
    """What a replay saw: events parsed per direction, and the bytes re-sent from them."""

    events: dict[str, list[Any]]
    resent: dict[str, bytes]


def replay(
    conn: CapturedConnection,
    controller: Codec,
    asterisk: Codec,
    chunker: Chunker,
    need_data: object,
) -> Replay:
    """Run both ends' codecs in lock-step: each parses the other's bytes and re-sends them."""
    events: dict[str, list[Any]] = {TO_ASTERISK: [], FROM_ASTERISK: []}
    resent = {TO_ASTERISK: bytearray(), FROM_ASTERISK: bytearray()}
    for direction, chunks in conn.turns():
        receiver, sender = asterisk, controller
        if direction == FROM_ASTERISK:
            receiver, sender = controller, asterisk
        for chunk in chunker(chunks) if chunks[-1] else [b""]:
            receiver.receive_data(chunk)
            for event in _drain(receiver, need_data, at_eof=not chunk):
                events[direction].append(event)
                if chunk:
                    resent[direction] += sender.send(event)
    return Replay(events, {key: bytes(value) for key, value in resent.items()})


def _drain(codec: Codec, need_data: object, at_eof: bool) -> Iterable[Any]:
    """Yield events until the codec needs data; at EOF, only the ConnectionClosed it reports."""
    while (event := codec.next_event()) is not need_data:
        yield event
        if at_eof:
            return


def as_read(chunks: list[bytes]) -> list[bytes]:
    """Feed bytes exactly as the TCP reads came."""
    return chunks


def bytewise(chunks: list[bytes]) -> list[bytes]:
    """Feed one byte at a time, the harshest framing test."""
    data = b"".join(chunks)
    return [data[i : i + 1] for i in range(len(data))]


def rechunk(rng: random.Random) -> Chunker:
    """Feed each turn cut at random points, to show framing never depends on read sizes."""

    def chunker(chunks: list[bytes]) -> list[bytes]:
        data = b"".join(chunks)
        count = rng.randint(0, min(len(data) - 1, 64))
        cuts = [0, *sorted(rng.sample(range(1, len(data)), count)), len(data)]
        return [data[start:end] for start, end in pairwise(cuts)]

    return chunker
