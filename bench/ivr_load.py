"""IVR load: N callers at once booking through FastAGI, beside two floors in the same run.

Run: python -m bench.ivr_load [--callers 1 100 1000]

For each N it starts `nobat serve` (SQLite in a temporary folder, the demo clinic) and has N
fake-PBX callers book at once over loopback; then the same N calls against a bare FastAGI
handler that sends as many commands and does nothing else, and against classic AGI with one
process per call. It prints calls/s, the server's per-command turnaround (from a reply leaving
the fake PBX to the next command arriving) p50/p99, the server's memory, and the ratios. It
also times `nobat-agi` from process start to its first command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from clinic.clinic_file import read_clinic
from db.clinic_sync import load_clinic
from db.engine import Database
from db.schema import upgrade
from tests.fakepbx.agi_caller import FakeChannel, call_environment, converse, place_call
from tests.fakepbx.script import Caller, Hear, Wait
from tests.support.ivr import SECONDS_PER_CHARACTER
from tests.support.server import ServerProcess, demo_copy

CLASSIC_AT_ONCE = 50
"""Classic AGI runs at most this many processes at once, as a PBX box would tolerate."""


@dataclass
class Run:
    """One side of the comparison."""

    name: str
    calls: int
    seconds: float
    commands: int
    turnaround: list[float]
    rss_mb: float | None

    @property
    def rate(self) -> float:
        """Calls completed per second."""
        return self.calls / self.seconds

    def line(self) -> str:
        """One row of the table."""
        p50, p99 = percentiles(self.turnaround)
        rss = f"{self.rss_mb:8.1f}" if self.rss_mb is not None else "       -"
        return (f"{self.name:<30} {self.calls:>6} {self.rate:>9.1f} "
                f"{self.commands / max(self.calls, 1):>9.1f} {p50:>8.2f} {p99:>8.2f} {rss}")


def percentiles(values: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    if not values:
        return 0.0, 0.0
    ordered = sorted(values)
    return (statistics.median(ordered) * 1000,
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000)


def booking_caller(n: int) -> Caller:
    """Caller n books: callers spread over specialties, days and times, and some collide."""
    return Caller.dialling(
        f"0912{n:07d}", Hear("main-menu"), "1", Hear("choose-specialty"), str(n % 5 + 1),
        Hear("choose-day"), str(n // 5 % 3 + 1), Hear("choose-time"), str(n // 15 % 5 + 1),
        Hear("confirm-keys"), "1", Hear("anything-else"), "9")


def seconds_of(path: str) -> float:
    """Prompt lengths from their path, so every run hears the same virtual call."""
    return max(0.5, len(path) * SECONDS_PER_CHARACTER)


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def many(count: int, at_once: int, call: Callable[[int], Awaitable[int]]
               ) -> tuple[float, int]:
    """Run `count` calls, `at_once` at a time; the wall time and the commands they saw."""
    gate = asyncio.Semaphore(at_once)

    async def one(n: int) -> int:
        async with gate:
            return await call(n)

    began = time.perf_counter()
    commands = await asyncio.gather(*(one(n) for n in range(count)))
    return time.perf_counter() - began, sum(commands)


async def nobat_run(callers: int, folder: Path) -> Run:
    """The real thing: nobat serve, its flows, its store."""
    server = await ServerProcess(demo_copy(folder, max_calls=callers + 10)).start()
    turnaround: list[float] = []

    async def call(n: int) -> int:
        transcript = await place_call("127.0.0.1", server.fastagi_port, booking_caller(n),
                                      prompt_seconds=seconds_of, turnaround=turnaround,
                                      stall_seconds=120, strict=False)
        return len(transcript.exchanges)

    try:
        seconds, commands = await many(callers, callers, call)
        memory = rss_mb(server.process.pid) if server.process else None
    finally:
        await server.stop()
    return Run("nobat FastAGI (booking calls)", callers, seconds, commands, turnaround, memory)


async def bare_fastagi_run(callers: int, per_call: int) -> Run:
    """The floor: a FastAGI handler sending as many commands, no flow, no store."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bare_agi", "fastagi", str(per_call),
        stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    port = int(await process.stdout.readline())
    turnaround: list[float] = []
    silent = Caller(None, (Wait(10_000),))

    async def call(n: int) -> int:
        transcript = await place_call("127.0.0.1", port, silent, turnaround=turnaround,
                                      prompt_seconds=lambda _: 1.0, strict=False)
        return len(transcript.exchanges)

    try:
        seconds, commands = await many(callers, callers, call)
        memory = rss_mb(process.pid)
    finally:
        process.terminate()
        await process.wait()
    return Run("bare FastAGI floor", callers, seconds, commands, turnaround, memory)


async def classic_call(command: list[str], caller: Caller, turnaround: list[float],
                       env: dict[str, str] | None = None) -> tuple[int, float]:
    """One classic AGI process: its command count and the time from its start to its first
    command (the environment goes in as soon as the process exists, as Asterisk writes it)."""
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})})
    assert process.stdin is not None and process.stdout is not None
    spawned = time.perf_counter() - began
    channel = FakeChannel(caller, call_environment(caller, "nobat-agi"), seconds_of)
    seen: list[float] = []
    await converse(channel, process.stdout, process.stdin, 120, None, seen)
    process.stdin.close()
    await process.wait()
    turnaround.extend(seen[1:])
    return len(channel.transcript.exchanges), spawned + (seen[0] if seen else 0.0)


async def classic_run(callers: int, per_call: int) -> Run:
    """The other floor: classic AGI, one Python process per call."""
    turnaround: list[float] = []
    silent = Caller(None, (Wait(10_000),))

    async def call(n: int) -> int:
        commands, _ = await classic_call(
            [sys.executable, "-m", "bench.bare_agi", "classic", str(per_call)], silent,
            turnaround)
        return commands

    seconds, commands = await many(callers, min(callers, CLASSIC_AT_ONCE), call)
    return Run(f"classic AGI floor (<= {CLASSIC_AT_ONCE} procs)", callers, seconds, commands,
               turnaround, None)


async def nobat_agi_first_command(folder: Path, samples: int) -> list[float]:
    """Time from starting `nobat-agi` to its first command reaching the PBX."""
    database = Database.from_url(f"sqlite+aiosqlite:///{folder / 'nobat.db'}")
    await upgrade(database)
    await load_clinic(database, read_clinic(folder / "clinic.toml"))
    await database.close()
    firsts = []
    for n in range(samples):
        _, first = await classic_call(
            [str(Path(sys.executable).with_name("nobat-agi"))],
            Caller.dialling(f"0912{n:07d}", Hear("main-menu"), "9"), [],
            {"NOBAT_CONFIG": str(folder / "config.toml")})
        firsts.append(first)
    return firsts


async def main(sizes: list[int]) -> None:
    """Run every size and print one table each."""
    header = (f"{'':<30} {'calls':>6} {'calls/s':>9} {'cmds/call':>9} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'RSS MB':>8}")
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            nobat = await nobat_run(size, Path(tmp))
            per_call = max(1, round(nobat.commands / nobat.calls))
            bare = await bare_fastagi_run(size, per_call)
            classic = await classic_run(size, per_call)
            print(f"\n{size} callers at once (turnaround = server time per command)")
            print(header)
            for run in (nobat, bare, classic):
                print(run.line())
            n50, _ = percentiles(nobat.turnaround)
            b50, _ = percentiles(bare.turnaround)
            print(f"ratios: nobat/bare turnaround p50 {n50 / max(b50, 1e-9):.1f}x; "
                  f"calls/s nobat/bare {nobat.rate / bare.rate:.2f}x, "
                  f"nobat/classic {nobat.rate / classic.rate:.1f}x")
            if size == sizes[0]:
                firsts = await nobat_agi_first_command(Path(tmp), 20)
                f50, f99 = percentiles(firsts)
                print(f"nobat-agi: first command {f50:.0f} ms after process start (p50), "
                      f"{f99:.0f} ms (p99), 20 starts")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 100, 1000])
    asyncio.run(main(parser.parse_args().callers))
