"""The consultation dialer under load: a thousand calls due at once, and a big restore at start.

Run: python -m bench.dialer [--calls 1000] [--cap 100] [--restore 100000] [--speed 0.5]
     [--talk 10] [--sqlite-only] [--give-up 150]

For SQLite (a temporary file) and PostgreSQL (a throwaway server it starts), it bulk-inserts
`--calls` phone consultations (one doctor and one patient each) all due 3 s ahead, then
starts a Dialer as nobat serve does (poll 5 s, so the timer it sets at start is what rings
them on time; cap `--cap` channels, two per consultation) against the fake Asterisk (in a
child process), whose phones answer within 0.25 s, hear the announcement (1 s per prompt
file: the patient's is three) and talk 5 s from answering (speed 0.5, 10 s scripted). It
prints the dispatch lag (the first Originate of a consultation reaching the fake PBX, minus its
due_at) p50/p99 for the consultations the cap lets start at once and for all of them, how many
completed or failed, and the seconds from due_at until every one has ended (drained; ">N" when
`--give-up` N ran out first; a failed try waits the default 2 min retry spacing, so no retry
falls in the run). Then, on a fresh store, it bulk-inserts `--restore` future consultations
and times what a dialer does at start, `sweep_missed` then setting its timers from the store
(one per distinct due time within the next day), with the growth of the process's resident
memory (VmRSS): once with the consultations on 5-minute slots of 1,000 doctors (they share
due times), once with each due at a moment of its own, half a second apart (a timer each:
APScheduler's worst case); all fall within the day.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import multiprocessing
import re
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from sqlalchemy import func, insert, select

from bridge.ami_client import AmiClient
from bridge.ami_protocol import Action
from bridge.dialer import Dialer, Tuning, dial_and_plan
from bridge.outbound import CallPlan
from db.consultations import ConsultationStore, RetryPolicy
from db.engine import Database, utc_now
from db.models import Appointment, Clinic, Consultation, Doctor, Patient
from db.schema import upgrade
from tests.fakepbx.ami_server import FakeAsterisk, Session
from tests.fakepbx.script import Answers, Phone
from tests.support.postgres import PostgresServer

SPEED = 0.5
"""Real seconds per scripted second at the fake PBX: the 10 s talk lasts 5 s."""
POLL = 5.0
"""nobat serve's default: the timers, not the poll, dispatch on time."""
SLOT = dt.timedelta(minutes=5)
HALF_SECOND = dt.timedelta(seconds=0.5)
DOCTORS = 1000
CHUNK = 5000
TALK = 10.0
"""Scripted seconds the patient talks, counted from answering: it must outlast the
announcement (3 s) and the dialer's delay to the bridge under load, or the try fails."""
PLAN = CallPlan("Local/{exten}@fake-phones/n", "02188776655", "Clinic", ring_seconds=30,
                grace=dt.timedelta(minutes=2),
                address=lambda number: {"exten": "doctor" if number.startswith("+98912")
                                        else "patient"})


class StampingAsterisk(FakeAsterisk):
    """The fake PBX, noting when each consultation's first Originate arrived (wall clock)."""

    def __init__(self, speed: float, talk: float) -> None:
        phones = [Phone("doctor", "+989121000001", Answers(0.3), "Dr"),
                  Phone("patient", "+989351110001", Answers(0.5, talk=talk), "Patient")]
        super().__init__(phones=phones, speed=speed)
        self.first_originate: dict[int, dt.datetime] = {}
        self.originates = 0

    async def _stamped_originate(self, session: Session, action: Action) -> None:
        ident = int((action.fields.get("ChannelId") or "").split("-")[1][1:])
        self.first_originate.setdefault(ident, utc_now())
        self.originates += 1
        await FakeAsterisk._originate(self, session, action)

    _handlers = {**FakeAsterisk._handlers, "originate": _stamped_originate}  # noqa: RUF012


def serve_pbx(speed: float, talk: float, pipe: Connection) -> None:
    """In a child process, so the fake PBX's own work does not slow the dialer's event loop:
    run the fake, send its port, and on any message send back (originates, first stamps)."""

    async def serve() -> None:
        async with StampingAsterisk(speed, talk) as pbx:
            pipe.send(pbx.port)
            await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
            pipe.send((pbx.originates, pbx.first_originate))

    asyncio.run(serve())


async def populate(database: Database, count: int, first_start: dt.datetime,
                   due_at: Callable[[int, dt.datetime], dt.datetime]) -> None:
    """Bulk-insert a clinic, DOCTORS doctors and `count` phone appointments, each with its
    own patient and consultation; appointment n is with doctor n % DOCTORS at the (n //
    DOCTORS)-th slot from `first_start`, due at `due_at(n, its start)`."""
    now = utc_now()
    async with database.writing() as session:
        await session.execute(insert(Clinic), [dict(
            id=1, key="bench", name="درمانگاه", name_en="Bench Clinic", phone="+982188776655")])
        await session.execute(insert(Doctor), [dict(
            id=d + 1, clinic_id=1, key=f"dr-{d}", name=f"دکتر {d}", name_en=f"Dr. {d}",
            specialty="general_practice", phone=f"+98912{d:07d}", languages="fa", active=True)
            for d in range(DOCTORS)])
        for first in range(0, count, CHUNK):
            numbers = range(first, min(count, first + CHUNK))
            starts = {n: first_start + SLOT * (n // DOCTORS) for n in numbers}
            await session.execute(insert(Patient), [dict(
                id=n + 1, phone=f"+98935{n:07d}", language="fa", created_at=now)
                for n in numbers])
            await session.execute(insert(Appointment), [dict(
                id=n + 1, doctor_id=n % DOCTORS + 1, patient_id=n + 1, start_at=starts[n],
                end_at=starts[n] + SLOT, kind="phone", status="booked", code=f"{n:08d}",
                created_via="ivr", created_at=now, updated_at=now) for n in numbers])
            await session.execute(insert(Consultation), [dict(
                id=n + 1, appointment_id=n + 1, due_at=due_at(n, starts[n]), state="scheduled",
                attempts=0, updated_at=now) for n in numbers])


def percentiles(values: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    if not values:
        return float("nan"), float("nan")
    ordered = sorted(values)
    return (statistics.median(ordered) * 1000,
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000)


@dataclass
class RushResult:
    """What the thousand-at-once run measured."""

    first: tuple[float, float]
    every: tuple[float, float]
    drained: float
    completed: int
    dialled: int
    attempts: int
    failed: int
    causes: Counter[str]


async def states(database: Database) -> dict[str, int]:
    """How many consultations are in each state."""
    async with database.reading() as session:
        rows = (await session.execute(select(Consultation.state, func.count())
                                      .group_by(Consultation.state))).all()
    return {state: count for state, count in rows}


async def rush(url: str, calls: int, cap: int, speed: float, talk: float, give_up: float
               ) -> RushResult:
    """Dial `calls` consultations due at one instant, with `cap` at once; measure the lags."""
    database = Database.from_url(url)
    await upgrade(database)
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(target=serve_pbx,
                                                         args=(speed, talk, theirs))
    child.start()
    try:
        port = await asyncio.to_thread(ours.recv)
        ami = AmiClient("127.0.0.1", port, "ctrl", "ctrlsecret", action_timeout=5.0,
                        backoff=(0.01, 0.05), ping_interval=None)
        await ami.start()
        await ami.wait_ready(5.0)
        due = utc_now() + dt.timedelta(seconds=3)  # the dialer's timer is set when they fall due
        await populate(database, calls, due, lambda n, start: due)
        dialer = Dialer(ConsultationStore(database), ami, lambda _: PLAN, "bench",
                        RetryPolicy(), Tuning(cap, poll=POLL))
        running = asyncio.create_task(dial_and_plan(dialer))
        try:
            await asyncio.sleep(max(0.0, (due - utc_now()).total_seconds()))
            deadline = time.monotonic() + give_up
            while time.monotonic() < deadline:
                if running.done():
                    running.result()
                counts = await states(database)
                if counts.get("completed", 0) + counts.get("retry_wait", 0) + counts.get(
                        "missed", 0) >= calls:
                    break
                await asyncio.sleep(0.05)
            drained = (utc_now() - due).total_seconds()
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await dialer.close()
            await ami.close()
        ours.send("stop")
        originates, first_originate = await asyncio.to_thread(ours.recv)
    finally:
        child.join(10)
        if child.is_alive():
            child.terminate()
    counts = await states(database)
    async with database.reading() as session:
        causes = Counter(re.sub(r"Local/[^\s)]+", "<leg>", cause) for cause in (
            await session.scalars(select(Consultation.cause).where(
                Consultation.state != "completed", Consultation.cause.is_not(None)))).all())
    await database.close()
    order = sorted(first_originate.values())
    lags = [(at - due).total_seconds() for at in order]
    return RushResult(percentiles(lags[:cap // 2]), percentiles(lags), drained,
                      counts.get("completed", 0), len(lags), originates // 2,
                      counts.get("retry_wait", 0) + counts.get("missed", 0), causes)


def rss_mb() -> float:
    """This process's resident memory, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class RestoreResult:
    """What restoring the future consultations at start cost."""

    sweep: float
    timers: float
    set: int
    rss: float


async def restore(url: str, count: int, own_moment: bool) -> RestoreResult:
    """Insert `count` future consultations, then sweep and set the timers as a dialer does
    at start; with `own_moment`, each falls due half a second after the one before."""
    database = Database.from_url(url)
    await upgrade(database)
    now = utc_now()
    first = now + dt.timedelta(minutes=10)
    await populate(database, count, first, (lambda n, start: first + n * HALF_SECOND)
                   if own_moment else (lambda n, start: start))
    ami = AmiClient("127.0.0.1", 1, "bench", "unused")  # never started: no call is made
    dialer = Dialer(ConsultationStore(database), ami, lambda _: PLAN, "bench", RetryPolicy(),
                    Tuning(cap=200))
    async with database.reading() as session:  # a warm pool, as a running dialer would have
        await session.execute(select(1))
    gc.collect()
    before = rss_mb()
    began = time.perf_counter()
    missed = await dialer.store.sweep_missed(utc_now(), dt.timedelta(minutes=5))
    swept = time.perf_counter()
    dialer.timers.start()
    timers = await dialer.planning.set_timers()
    done = time.perf_counter()
    grown = rss_mb() - before
    assert not missed
    dialer.timers.close()
    await database.close()
    return RestoreResult(swept - began, done - swept, timers, grown)


async def one_backend(name: str, fresh: Callable[[], Awaitable[str]],
                      options: argparse.Namespace) -> str:
    """Both measurements on one backend, each on a fresh database, as rows of the table."""
    run = await rush(await fresh(), options.calls, options.cap, options.speed, options.talk,
                     options.give_up)
    causes = "; ".join(f"{n} x {cause}" for cause, n in run.causes.most_common(3))
    drain = f"{run.drained:.1f}" if run.completed + run.failed >= options.calls else (
        f">{options.give_up:.0f}")
    rows = [f"{name:<10} {run.dialled:>6} {run.attempts:>6} {run.completed:>6} {run.failed:>6} "
            f"{run.first[0]:>8.0f} {run.first[1]:>8.0f} {run.every[0]:>8.0f} "
            f"{run.every[1]:>8.0f} {drain:>8}"]
    if causes:
        rows.append(f"{'':<10} failures: {causes}")
    for spread, own_moment in (("on slots", False), ("own times", True)):
        back = await restore(await fresh(), options.restore, own_moment)
        rows.append(f"{'':<10} restore {options.restore} {spread}: sweep {back.sweep:.3f} s, "
                    f"{back.set} timers set in {back.timers:.3f} s, +{back.rss:.1f} MB RSS")
    return "\n".join(rows)


async def main(options: argparse.Namespace) -> None:
    """Run on SQLite, then PostgreSQL, and print one table."""
    print(f"dialer: {options.calls} consultations due at once, cap {options.cap} channels "
          f"({options.cap // 2} consultations), poll {POLL} s, PBX speed {options.speed}, talk "
          f"{options.talk} s; then restoring {options.restore} future consultations at start")
    print(f"{'backend':<10} {'dialed':>6} {'tries':>6} {'done':>6} {'failed':>6} "
          f"{'p50 cap':>8} {'p99 cap':>8} {'p50 all':>8} {'p99 all':>8} {'drain s':>8}")
    print(f"{'':<10} {'':>6} {'':>6} {'':>6} {'':>6} {'lag ms':>8} {'lag ms':>8} "
          f"{'lag ms':>8} {'lag ms':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        files = iter(range(10))

        async def sqlite_file() -> str:
            return f"sqlite+aiosqlite:///{Path(tmp) / f'bench{next(files)}.db'}"

        print(await one_backend("sqlite", sqlite_file, options), flush=True)
    if options.sqlite_only:
        return
    server = PostgresServer().start()
    try:
        print(await one_backend("postgresql", server.create_database, options))
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--cap", type=int, default=100)
    parser.add_argument("--restore", type=int, default=100_000)
    parser.add_argument("--speed", type=float, default=SPEED,
                        help="real seconds per scripted second at the fake PBX")
    parser.add_argument("--talk", type=float, default=TALK,
                        help="scripted seconds the patient talks after answering")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--give-up", type=float, default=150.0,
                        help="stop waiting for the calls to drain after this many seconds")
    asyncio.run(main(parser.parse_args()))
