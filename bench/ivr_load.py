"""IVR load: N callers at once booking through FastAGI, beside two floors in the same run.

Run: python -m bench.ivr_load [--callers 1 100 1000]

For each N it starts `nobat serve` (SQLite in a temporary folder, the demo clinic open round
the clock) and has N fake-PBX callers book at once over loopback; then the same N calls
against a bare FastAGI handler that sends as many commands and does nothing else, and
against classic AGI with one process per call. It prints calls/s, the server's per-command
turnaround (from a reply leaving the fake PBX to the next command arriving) p50/p99, the
server's memory, and the ratios. It also times `nobat-agi` from process start to its first command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from clinic.clinic_file import read_clinic
from db.clinic_sync import load_clinic
from db.engine import Database
from db.schema import upgrade
from ivr.agi_protocol import Command
from tests.fakepbx.agi_caller import FakeChannel, call_environment, converse, place_call
from tests.fakepbx.script import Caller, Hear, Wait
from tests.support.ivr import SECONDS_PER_CHARACTER
from tests.support.server import ROOT, ServerProcess, demo_copy

CLASSIC_AT_ONCE = 50
"""Classic AGI runs at most this many processes at once, as a PBX box would tolerate."""

PLAYING = frozenset({"STREAM FILE", "GET DATA", "WAIT FOR DIGIT", "CONTROL STREAM FILE",
                     "GET OPTION"})
"""Commands that take the caller's time on a real line: a prompt plays, a key is awaited."""

RAMP_S = 10.0
"""The paced run's callers arrive over this long (100 a second for 1,000: three times the
midnight rush's busiest ten minutes in bench/clinic_day), then all are on the line at once."""

STALL_S = 1.0
"""A command the server took longer than this to send is a stall: a caller hears silence."""

ROUND_THE_CLOCK = """[[doctors.hours]]
days = ["saturday", "sunday", "monday", "tuesday", "wednesday", "thursday", "friday"]
from = "00:00"
to = "24:00"
slot_minutes = 15
kinds = ["in_person", "phone"]

"""
"""Every doctor's hours in the bench's clinic: any day, any hour, the same menus."""


@dataclass
class Run:
    """One side of the comparison."""

    name: str
    calls: int
    seconds: float
    commands: int
    turnaround: list[float]
    rss_mb: float | None
    cpu_s: float | None = None
    """The server process's CPU time (user + system) over the calls; None for classic AGI."""
    booked: int | None = None
    """Appointments the store holds after the calls; None for the floors, which store none."""

    @property
    def rate(self) -> float:
        """Calls completed per second."""
        return self.calls / self.seconds

    def line(self) -> str:
        """One row of the table."""
        p50, p99 = percentiles(self.turnaround)
        rss = f"{self.rss_mb:8.1f}" if self.rss_mb is not None else "       -"
        cpu = f"{self.cpu_ms_per_call:9.2f}" if self.cpu_ms_per_call is not None else "        -"
        stalls = sum(1 for t in self.turnaround if t > STALL_S)
        booked = "-" if self.booked is None else str(self.booked)
        return (f"{self.name:<30} {self.calls:>6} {self.rate:>9.1f} "
                f"{self.commands / max(self.calls, 1):>9.1f} {p50:>8.2f} {p99:>8.2f} "
                f"{stalls:>6} {cpu} {rss} {booked:>6}")

    @property
    def cpu_ms_per_call(self) -> float | None:
        """The server's CPU milliseconds per call."""
        return None if self.cpu_s is None else self.cpu_s * 1000 / max(self.calls, 1)


def percentiles(values: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    if not values:
        return 0.0, 0.0
    ordered = sorted(values)
    return (statistics.median(ordered) * 1000,
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000)


def booking_caller(n: int, dialled: str | None = None, pick: int | None = None) -> Caller:
    """Caller n books in person: callers spread over specialties, days and times, and some
    collide (every slot of round_the_clock_clinic() offers both kinds, so the kind is asked).
    `dialled` is the number they call (a practice's DID); their choices follow `pick`
    (by default n), so callers of many practices can spread within each one."""
    k = n if pick is None else pick
    return Caller.dialling(
        f"0912{n:07d}", Hear("main-menu"), "1", Hear("choose-specialty"), str(k % 5 + 1),
        Hear("choose-day"), str(k // 5 % 3 + 1), Hear("choose-time"), str(k // 15 % 5 + 1),
        Hear("choose-kind"), "1", Hear("confirm-keys"), "1", Hear("anything-else"), "9",
        dialled=dialled)


def round_the_clock_clinic() -> str:
    """The demo clinic open round the clock every day with no closures, so the days and times
    a booking caller is offered, and so the commands a call takes, do not follow the hour or
    the weekday the bench runs at (the demo's own hours gave 24 commands a call at one hour
    and 44 at another)."""
    tables = re.split(r"(?m)^(?=\[)", (ROOT / "clinic.toml").read_text(encoding="utf-8"))
    kept = []
    for table in tables:
        if table.startswith(("[[doctors.hours]]", "[[closures]]")):
            continue
        kept.append(table)
        if table.startswith("[[doctors]]"):
            kept.append(ROUND_THE_CLOCK)
    return "".join(kept).replace('weekend = ["friday"]', "weekend = []")


def seconds_of(path: str) -> float:
    """Prompt lengths from their path, so every run hears the same virtual call."""
    return max(0.5, len(path) * SECONDS_PER_CHARACTER)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def many(count: int, at_once: int, call: Callable[[int], Awaitable[int]],
               ramp: float = 0.0) -> tuple[float, int]:
    """Run `count` calls, `at_once` at a time, the n-th arriving n/count of `ramp` seconds
    after the first; the wall time and the commands they saw."""
    gate = asyncio.Semaphore(at_once)

    async def one(n: int) -> int:
        await asyncio.sleep(ramp * n / count)
        async with gate:
            return await call(n)

    began = time.perf_counter()
    commands = await asyncio.gather(*(one(n) for n in range(count)))
    return time.perf_counter() - began, sum(commands)


def paced(seconds: float) -> Callable[[Command], Awaitable[None]] | None:
    """A prompt or a wait for a key takes about `seconds` of real time (half to one and a half
    times, as prompts differ) before its reply, so that N callers are N people listening at
    once rather than N scripts in lockstep (None: every call runs in virtual time)."""
    if not seconds:
        return None
    lengths = random.Random(17)

    async def listen(command: Command) -> None:
        if command.verb in PLAYING:
            await asyncio.sleep(seconds * lengths.uniform(0.5, 1.5))

    return listen


@contextlib.asynccontextmanager
async def spying(pid: int, profile: Path | None) -> AsyncIterator[None]:
    """py-spy (on PATH) records process `pid` into `profile` (raw stacks) while inside."""
    if profile is None:
        yield
        return
    spy = await asyncio.create_subprocess_exec(
        "py-spy", "record", "--pid", str(pid), "--format", "raw", "--output", str(profile),
        "--rate", "200", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        await spy.wait()


async def nobat_run(callers: int, folder: Path, profile: Path | None = None,
                    pace: float = 0.0, ramp: float = 0.0) -> Run:
    """The real thing: nobat serve, its flows, its store; py-spy records it into `profile`."""
    server = await ServerProcess(demo_copy(folder, clinic=round_the_clock_clinic(),
                                            max_calls=callers + 10)).start()
    assert server.process is not None
    pid = server.process.pid
    turnaround: list[float] = []

    async def call(n: int) -> int:
        transcript = await place_call("127.0.0.1", server.fastagi_port, booking_caller(n),
                                      prompt_seconds=seconds_of, turnaround=turnaround,
                                      before=paced(pace),
                                      stall_seconds=120, strict=False)
        return len(transcript.exchanges)

    try:
        async with spying(pid, profile):
            cpu_before = cpu_seconds(pid)
            seconds, commands = await many(callers, callers, call, ramp)
            cpu, memory = cpu_seconds(pid) - cpu_before, rss_mb(pid)
    finally:
        await server.stop()
    with sqlite3.connect(folder / "nobat.db") as store:
        (booked,), = store.execute("SELECT count(*) FROM appointment WHERE status = 'booked'")
    return Run("nobat FastAGI (booking calls)", callers, seconds, commands, turnaround, memory,
               cpu, booked)


async def bare_fastagi_run(callers: int, per_call: int, pace: float = 0.0, ramp: float = 0.0
                           ) -> Run:
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
                                      before=paced(pace),
                                      prompt_seconds=lambda _: 1.0, strict=False)
        return len(transcript.exchanges)

    try:
        cpu_before = cpu_seconds(process.pid)
        seconds, commands = await many(callers, callers, call, ramp)
        cpu, memory = cpu_seconds(process.pid) - cpu_before, rss_mb(process.pid)
    finally:
        process.terminate()
        await process.wait()
    return Run("bare FastAGI floor", callers, seconds, commands, turnaround, memory, cpu)


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


HEADER = (f"{'':<30} {'calls':>6} {'calls/s':>9} {'cmds/call':>9} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'stalls':>6} {'CPU ms/call':>9} {'RSS MB':>8} {'booked':>6}")


async def main(sizes: list[int], paced_callers: int, pace: float, profile: Path | None
               ) -> None:
    """Run every size and print one table each, then the paced run."""
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            spied = None if profile is None else profile.with_suffix(f".{size}.txt")
            nobat = await nobat_run(size, Path(tmp), spied)
            per_call = max(1, round(nobat.commands / nobat.calls))
            bare = await bare_fastagi_run(size, per_call)
            classic = await classic_run(size, per_call)
            print(f"\n{size} callers at once, prompts in virtual time "
                  "(turnaround = server time per command)")
            print(HEADER)
            for run in (nobat, bare, classic):
                print(run.line())
            n50, _ = percentiles(nobat.turnaround)
            b50, _ = percentiles(bare.turnaround)
            print(f"ratios: nobat/bare turnaround p50 {n50 / max(b50, 1e-9):.1f}x; "
                  f"calls/s nobat/bare {nobat.rate / bare.rate:.2f}x, "
                  f"nobat/classic {nobat.rate / classic.rate:.1f}x; CPU per call nobat/bare "
                  f"{(nobat.cpu_s or 0) / max(bare.cpu_s or 0, 1e-9):.1f}x")
            if spied is not None:
                print(f"py-spy profile of nobat serve (raw stacks): {spied}")
            if size == sizes[0]:
                firsts = await nobat_agi_first_command(Path(tmp), 20)
                f50, f99 = percentiles(firsts)
                print(f"nobat-agi: first command {f50:.0f} ms after process start (p50), "
                      f"{f99:.0f} ms (p99), 20 starts")
    if paced_callers:
        with tempfile.TemporaryDirectory() as tmp:
            spied = None if profile is None else profile.with_suffix(".paced.txt")
            nobat = await nobat_run(paced_callers, Path(tmp), spied, pace=pace, ramp=RAMP_S)
            bare = await bare_fastagi_run(paced_callers, round(nobat.commands / nobat.calls),
                                          pace=pace, ramp=RAMP_S)
        print(f"\n{paced_callers} callers arriving over {RAMP_S:g} s and then at once, each "
              f"prompt and key wait about {pace:g} s of real time")
        print(HEADER)
        for run in (nobat, bare):
            print(run.line())
        _, n99 = percentiles(nobat.turnaround)
        _, b99 = percentiles(bare.turnaround)
        print(f"ratios: nobat/bare turnaround p99 {n99 / max(b99, 1e-9):.1f}x; CPU per call "
              f"nobat/bare {(nobat.cpu_s or 0) / max(bare.cpu_s or 0, 1e-9):.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, nargs="*", default=[1, 100, 1000])
    parser.add_argument("--paced", type=int, default=1000, metavar="N",
                        help="callers of the paced run (0: none)")
    parser.add_argument("--pace", type=float, default=1.0, metavar="SECONDS",
                        help="real time each prompt or key wait takes in the paced run")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="record nobat serve with py-spy (on PATH) into FILE.<callers>.txt")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.callers, arguments.paced, arguments.pace, arguments.profile))
