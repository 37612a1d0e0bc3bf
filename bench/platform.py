"""Platform mode at scale: many practices on one line, against one practice, in the same run.

Run: python -m bench.platform [--practices 200] [--callers 1000] [--rush-practices 20]
     [--rush-callers 1000] [--consultations 1000] [--reminders 4000] [--moments 3]
     [--cap 100] [--share 10] [--instances 2] [--pace 1.0] [--ramp 10] [--profile FILE]

On a throwaway PostgreSQL server it runs the same measurements twice, each on a fresh
database: once on one practice (the single-clinic floor the target is relative to) and once
on `--practices` practices. The practices are clinic files it writes into a temporary folder
(`[server] clinic_file` names the folder; `nobat clinic load DIR` loads them first): each
its own key, names, phone, one DID in `numbers`, and the demo clinic's five doctors (five
specialties) with card codes of their own, open round the clock in 15-minute slots, booked
up to 28 days ahead (`[booking] horizon_days = 28` in the bench's config copy). Then:

- the line: `--instances` `nobat serve` processes on that database, their FastAGI ports
  taking turns, and `--callers` fake-PBX callers at once (virtual time, as bench.ivr_load),
  caller n dialling the DID of practice n mod P and booking as bench.ivr_load's callers do,
  their choices spread within their practice (on one practice they collide as in
  bench.ivr_load). It prints nobat's per-command turnaround p50/p99 (from a reply leaving the
  fake PBX to the next command arriving), stalls (a turnaround over 1 s), commands a call,
  bookings heard confirmed and bookings/s, and that every booking is at the caller's own
  practice. In virtual time this is a saturation test: every caller wants its next command
  the moment the last one is answered;
- the line at one DID (the platform only): the one practice's line again, its callers and
  their choices, now all dialling one practice of the platform, so both sides do the same
  work (on one practice most callers collide and hear the nearest times; spread over the
  platform every caller books) and the ratio is what serving many practices costs;
- the paced line: as many callers again, now people on the phone: they arrive over
  `--ramp` seconds and each prompt or wait for a key takes about `--pace` seconds of real
  time (bench.ivr_load's paced run), so all are on the line at once as 1,000 callers are;
  the same figures but bookings/s, which the arrivals set;
- the midnight rush: `--rush-callers` callers of `--rush-practices` practices (spread over
  their DIDs) all booking the first offered slot of the first specialty at once, one try
  each, as bench.booking_rush but through the line: the booking action's time (nobat's
  turnaround after the confirming key: the write, then the code or "slot taken"), tries/s,
  bookings, and the double bookings in the store afterwards (must be 0);
- the dispatch lag: `--consultations` phone consultations spread over every practice's
  doctors, all due at one moment, and `--instances` dialers (each in its own process, as
  `nobat serve` builds one: cap `--cap` channels, each practice's share `--share` percent of
  it on the platform, none on one practice) against the fake Asterisk in its own process
  (bench.dialer's); the lines' bookings cancelled once counted, just before that moment
  `--reminders` bookings for tomorrow, spread over every practice, are written, so the
  dialers' planner (every round here, not every minute) plans their reminders beside the
  round that claims, the same reminders on both sides. It prints the lag
  (a consultation's first Originate reaching the fake PBX minus its due time) p50/p99 of the
  first consultations the caps let start at once, and the time of one idle plan over all
  practices. Quiet hours cover the run, so reminders are planned, not rung. The moment is
  measured `--moments` times on each side (its calls and bookings cancelled between), and
  the moment of the median p99 is the one printed, with every moment's p99 beside it: the
  lag of one moment is bimodal (whether a plan's longest stretch falls on the due time).

Last, each nobat's resident memory and CPU over each line and the rush, and the time to load
the clinic folder, to start, and to load the folder again with one practice's file added.
Every figure is printed beside the one practice's, with the ratio (platform / one practice;
for bookings/s and tries/s one practice / platform, so that over 1 is worse everywhere).
Then the issue's target (within 1.5x), each figure with whether it holds: first where both
sides do alike work (the paced line's p99: its 1,000 callers on the line at once, and on one
practice as on the platform every caller books; the line at one DID's p99 and bookings/s;
the dispatch lag p99), then the line over the DIDs in virtual time, which is not alike work:
there every caller of the platform books while most of one practice's collide and take
cheaper turns (menus again, the nearest times), so its p99 is a saturated queue of more
work; it is printed against the target all the same.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from sqlalchemy import insert, select, update

from bench.booking_rush import double_bookings
from bench.clinic_day.callers import action_seconds
from bench.dialer import PLAN, POLL, SPEED, TALK, serve_pbx
from bench.ivr_load import (
    RAMP_S,
    STALL_S,
    booking_caller,
    cpu_seconds,
    many,
    paced,
    percentiles,
    round_the_clock_clinic,
    rss_mb,
    seconds_of,
    spying,
)
from bench.patient_calls import timed
from bridge.ami_client import AmiClient
from bridge.dialer import Dialer, Tuning, dial_and_plan
from clinic.schedule import TEHRAN
from db.consultations import ConsultationStore, RetryPolicy
from db.engine import Database, utc_now
from db.models import Appointment, CallAttempt, Clinic, Consultation, Doctor, Patient, PatientCall
from nobat.bridge_wiring import call_planning, patient_calls
from nobat.config import load_config
from tests.fakepbx.agi_caller import place_call
from tests.fakepbx.script import Caller, HangUp, Hear, Wait
from tests.support.clinics import second_practice
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess, demo_copy, edit_config

DUE_IN = 6.0
"""Seconds from writing the consultations to their due time: the dialers start meanwhile
and set their timers from the store."""
REMINDERS_BEFORE = 0.3
"""Seconds before the due time the reminders' bookings are written."""
MINUTE = dt.timedelta(minutes=1)
TARGET = 1.5
"""The issue's bound: the platform's figures within this many times one practice's."""
PAGE_TOKEN = "bench-platform-Xq7LmZ2vK9"
"""The status page's token, so no nobat writes one of its own."""


def did(practice: int) -> str:
    """Practice n's number (DID), national form as a dialplan passes it."""
    return f"0{21 + practice // 10_000:02d}{5500_0000 + practice:08d}"


def practice_file(practice: int) -> str:
    """Practice n's clinic file: the demo's doctors open round the clock, its own key,
    names, number (its only DID) and card codes (n+1 then the doctor's 01-05)."""
    number = did(practice)
    return second_practice(f"practice-{practice:03d}", f"{number[:3]} {number[3:7]} "
                           f"{number[7:]}", str(practice + 1),
                           (f"مطب شماره {practice}", f"Practice {practice}"),
                           round_the_clock_clinic())


def write_practice(clinics: Path, practice: int) -> None:
    """Practice n's clinic file into the clinic folder."""
    (clinics / f"practice-{practice:03d}.toml").write_text(practice_file(practice),
                                                            encoding="utf-8")


def config_for(folder: Path, url: str, callers: int, share: int) -> Path:
    """The demo config copied into `folder`, serving the clinic folder from `url`, booking
    28 days ahead, with quiet hours over the run (reminders just after them)."""
    config = demo_copy(folder, max_calls=callers + 10)
    hour = dt.datetime.now(TEHRAN).hour
    edit_config(config, ('clinic_file = "clinic.toml"', 'clinic_file = "clinics"'),
                ('url = "sqlite+aiosqlite:///nobat.db"', f'url = "{url}"'),
                ("horizon_days = 14", "horizon_days = 28"),
                ('quiet_hours = "21:00-08:00"',
                 f'quiet_hours = "{(hour - 1) % 24:02d}:00-{(hour + 2) % 24:02d}:00"'),
                ('reminder_at = "18:00"', f'reminder_at = "{(hour + 3) % 24:02d}:00"'),
                ("practice_share_percent = 100", f"practice_share_percent = {share}"))
    return config


@dataclass
class Side:
    """What one run (one practice, or the platform) measured."""

    practices: int
    load_s: float = 0.0
    add_s: float = 0.0
    """`nobat clinic load` of the folder with one practice's file added, the rest loaded."""
    start_s: float = 0.0
    line: Figures | None = None
    one_did: Figures | None = None
    """The platform only: the one practice's line (its callers, its collisions) at the DID of
    one practice of the platform, so the work is alike and what differs is the platform."""
    paced: Figures | None = None
    rush: Figures | None = None
    lag: tuple[float, float] = (0.0, 0.0)
    """The dispatch lag p50/p99 of the moment whose p99 is the median of the moments'."""
    lags: list[float] = field(default_factory=list)
    """Each dispatch moment's p99, in order."""
    lag_count: int = 0
    plan_ms: float = 0.0
    doubles: int = 0
    line_bookings: int = 0
    """Bookings of the lines' callers in the store."""
    wrong_practice: int = 0
    servers: list[float] = field(default_factory=list)
    """Each nobat's RSS MB at the end."""


@dataclass
class Figures:
    """One burst of callers through the line."""

    calls: int
    seconds: float
    commands: int
    turnaround: list[float]
    booked: int
    action: list[float]
    cpu: list[float] = field(default_factory=list)
    """Each nobat's CPU seconds over the burst."""

    @property
    def stalls(self) -> int:
        """Commands the server took over STALL_S to send."""
        return sum(1 for t in self.turnaround if t > STALL_S)


async def burst(ports: Sequence[int], pids: Sequence[int], callers: Sequence[Caller],
                pace: float = 0.0, ramp: float = 0.0) -> Figures:
    """All `callers` at once (arriving over `ramp` seconds, each prompt taking about `pace`
    seconds of real time; none: virtual time), caller n on the n-th port in turn; with the
    CPU each nobat (`pids`) spent meanwhile."""
    turnaround: list[float] = []
    booked = 0
    action: list[float] = []

    async def call(n: int) -> int:
        nonlocal booked
        mine: list[float] = []
        transcript = await place_call("127.0.0.1", ports[n % len(ports)], callers[n],
                                      prompt_seconds=seconds_of, turnaround=mine,
                                      before=paced(pace), stall_seconds=120, strict=False)
        turnaround.extend(mine)
        booked += any(p.endswith("/your-code") for p in transcript.prompts)
        if (seconds := action_seconds(transcript, mine)) is not None:
            action.append(seconds)
        return len(transcript.exchanges)

    before = [cpu_seconds(pid) for pid in pids]
    seconds, commands = await many(len(callers), len(callers), call, ramp)
    cpu = [cpu_seconds(pid) - spent for pid, spent in zip(pids, before, strict=True)]
    return Figures(len(callers), seconds, commands, turnaround, booked, action, cpu)


def line_callers(first: int, count: int, practices: int) -> list[Caller]:
    """Callers first.. of the line: caller n dials practice n mod `practices` and picks as
    bench.ivr_load's caller n // `practices` does, so on the platform a practice's callers
    spread over its slots, and a later burst's callers over slots the earlier left free."""
    return [booking_caller(n, did(n % practices), n // practices)
            for n in range(first, first + count)]


def one_did_callers(count: int, practices: int) -> list[Caller]:
    """The one practice's line (caller k picking as its caller k does) at practice 0's DID of
    the platform; numbered as callers of practice 0, after the two lines' callers."""
    return [booking_caller((2 * count + k) * practices, did(0), k) for k in range(count)]


def rush_caller(n: int, practice: int) -> Caller:
    """A midnight caller: the first specialty, day and time, confirmed; then hangs up."""
    return Caller.dialling(f"0915{n:07d}", Hear("main-menu"), "1", Hear("choose-specialty"),
                           "1", Hear("choose-day"), "1", Hear("choose-time"), "1",
                           Hear("choose-kind"), "1", Hear("confirm-keys"), "1", Wait(8),
                           HangUp(), dialled=did(practice))


async def misplaced(database: Database, keys: Sequence[str]) -> tuple[int, int]:
    """The bookings of line callers (0912...) in the store, and how many of them are not at
    the practice the caller dialled."""
    async with database.reading() as session:
        rows = (await session.execute(
            select(Patient.phone, Clinic.key).join(Appointment, Appointment.patient_id
                                                   == Patient.id)
            .join(Doctor, Appointment.doctor_id == Doctor.id)
            .join(Clinic, Doctor.clinic_id == Clinic.id)
            .where(Appointment.status != "cancelled", Patient.phone.like("+98912%")))).all()
    return len(rows), sum(1 for phone, key in rows if key != keys[int(phone[-7:]) % len(keys)])


async def doctors_of(database: Database) -> list[int]:
    """Every doctor's id, in practice order."""
    async with database.reading() as session:
        return list((await session.scalars(select(Doctor.id).order_by(Doctor.id))).all())


async def cancel_all(database: Database) -> None:
    """Cancel the lines' and the rush's bookings once counted: the platform's lines book
    several times what one practice's do, and the dispatch moment would plan their reminders
    too, so each side plans its own 4,000 alike; then vacuum, so that PostgreSQL's own
    clean-up of those rows does not fall in the measured moment on one side only."""
    async with database.writing() as session:
        await session.execute(update(Appointment).where(Appointment.status == "booked")
                              .values(status="cancelled"))
    async with database.engine.connect() as conn:  # nor autovacuum in the measured moment
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("VACUUM ANALYZE")


async def book_many(database: Database, doctors: list[int], count: int, prefix: str,
                    first: dt.datetime, kind: str) -> list[int]:
    """Write `count` bookings straight into the store, spread over `doctors` (booking n with
    doctor n mod D, a minute after its previous one, from `first`, which is off the slot
    grid so no caller's booking is in the way), each with a patient of its own; their ids."""
    if not count:
        return []
    now = utc_now()
    async with database.writing() as session:
        patients = (await session.execute(insert(Patient).returning(Patient.id), [dict(
            phone=f"+98{prefix}{n:07d}", language="fa", created_at=now)
            for n in range(count)])).scalars().all()
        rows = []
        for n, patient in enumerate(patients):
            start = first + MINUTE * (n // len(doctors))
            rows.append(dict(doctor_id=doctors[n % len(doctors)], patient_id=patient,
                             start_at=start, end_at=start + 10 * MINUTE, kind=kind,
                             status="booked", code=f"{prefix[-2:]}{n:06d}", created_via="ivr",
                             created_at=now, updated_at=now))
        return list((await session.execute(insert(Appointment).returning(Appointment.id),
                                           rows)).scalars().all())


def run_dialer(url: str, ami_port: int, config: Path, cap: int, share: int, name: str,
               pipe: Connection) -> None:
    """In a child process, one nobat instance's dialer (consultations and calls to patients,
    the planner every round) until told to stop."""

    async def serve() -> None:
        database = Database.from_url(url)
        ami = AmiClient("127.0.0.1", ami_port, "ctrl", "ctrlsecret", action_timeout=5.0,
                        backoff=(0.01, 0.05), ping_interval=None)
        await ami.start()
        await ami.wait_ready(10.0)
        loaded = load_config(config, env={})
        dialer = Dialer(ConsultationStore(database), ami, lambda _: PLAN, name, RetryPolicy(),
                        Tuning(cap, poll=POLL, practice_share=share / 100),
                        patient_calls=patient_calls(loaded, database, PLAN,
                                                    call_planning(loaded, TEHRAN),
                                                    plan_every=0.0))
        running = asyncio.create_task(dial_and_plan(dialer))
        pipe.send("ready")
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await dialer.close()
        await ami.close()
        await database.close()
        pipe.send("stopped")

    asyncio.run(serve())


async def dispatch(url: str, config: Path, options: argparse.Namespace, share: int,
                   moment: int) -> tuple[list[float], float]:
    """Consultations of every practice due at one moment (the `moment`-th, its patients'
    numbers and codes its own) while the dialers plan reminders for every practice; the lags
    of the first ones the caps let start, and then the ms of one idle plan over all
    practices by a planner of its own."""
    spawn = multiprocessing.get_context("spawn")
    database = Database.from_url(url)
    doctors = await doctors_of(database)
    pbx, theirs = multiprocessing.Pipe()
    child = spawn.Process(target=serve_pbx, args=(SPEED, TALK, theirs))
    child.start()
    dialers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    try:
        port = await asyncio.to_thread(pbx.recv)
        due = utc_now() + dt.timedelta(seconds=DUE_IN)
        ids = await book_many(database, doctors, options.consultations, f"90{1 + moment}", due,
                              "phone")
        async with database.writing() as session:
            await session.execute(insert(Consultation), [dict(
                appointment_id=ident, due_at=due, state="scheduled", attempts=0,
                updated_at=utc_now()) for ident in ids])
        for n in range(options.instances):
            ours, theirs = multiprocessing.Pipe()
            process = spawn.Process(target=run_dialer, args=(
                url, port, config, options.cap, share, f"bench-{n}", theirs))
            process.start()
            dialers.append((process, ours))
        for _, ours in dialers:
            await asyncio.to_thread(ours.recv)
        await asyncio.sleep(max(0.0, (due - utc_now()).total_seconds() - REMINDERS_BEFORE))
        tomorrow = dt.datetime.combine(dt.datetime.now(TEHRAN).date() + dt.timedelta(days=1),
                                       dt.time(8, 0, 13), TEHRAN).astimezone(dt.UTC)
        await book_many(database, doctors, options.reminders, f"93{5 + moment}", tomorrow,
                        "in_person")
        first = options.instances * options.cap // 2
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # a doctor answered: their Originates went out
            async with database.reading() as session:
                tried = len((await session.scalars(select(CallAttempt.id).join(Consultation).where(
                    Consultation.appointment_id.in_(ids),
                    CallAttempt.doctor_answered_at.is_not(None)).limit(first))).all())
            if tried >= min(first, options.consultations):
                break
            await asyncio.sleep(0.1)
    finally:
        for _, ours in dialers:
            ours.send("stop")
        for process, ours in dialers:
            await asyncio.to_thread(ours.recv)
            process.join(10)
        pbx.send("stop")
        _, stamps = await asyncio.to_thread(pbx.recv)
        child.join(10)
    loaded = load_config(config, env={})
    desk = patient_calls(loaded, database, PLAN, call_planning(loaded, TEHRAN))
    seconds, _ = await timed(desk.store.plan(desk.planning))
    async with database.writing() as session:  # the next moment starts with none live
        await session.execute(update(Consultation).where(
            Consultation.appointment_id.in_(ids)).values(state="cancelled"))
        await session.execute(update(PatientCall).where(
            PatientCall.state == "scheduled").values(state="cancelled"))
    await cancel_all(database)
    await database.close()
    return sorted((at - due).total_seconds() for at in stamps.values())[:first], seconds * 1000


async def dispatches(side: Side, url: str, config: Path, options: argparse.Namespace,
                     share: int) -> None:
    """`--moments` dispatch moments: the median one's lag and idle plan, each one's p99."""
    moments = [await dispatch(url, config, options, share, n) for n in range(options.moments)]
    side.lags = [percentiles(lags)[1] for lags, _ in moments]
    lags, side.plan_ms = sorted(moments, key=lambda m: percentiles(m[0])[1])[len(moments) // 2]
    side.lag, side.lag_count = percentiles(lags), len(lags)


async def one_side(server: PostgresServer, practices: int, share: int,
                   options: argparse.Namespace) -> Side:
    """Every measurement on a fresh database of `practices` practices."""
    side = Side(practices)
    url = await server.create_database()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "clinics").mkdir()
        for n in range(practices):
            write_practice(folder / "clinics", n)
        config = config_for(folder, url, max(options.callers, options.rush_callers), share)
        side.load_s = await clinic_load(config, folder / "clinics")
        began = time.perf_counter()
        servers = [await ServerProcess(config, env={"NOBAT_WEB_TOKEN": PAGE_TOKEN}).start(120)
                   for _ in range(options.instances)]
        side.start_s = (time.perf_counter() - began) / len(servers)
        pids = [s.process.pid for s in servers if s.process is not None]
        ports = [s.fastagi_port for s in servers]
        keys = [f"practice-{n:03d}" for n in range(practices)]
        database = Database.from_url(url)
        try:
            spied = options.profile and options.profile.with_suffix(f".{practices}.txt")
            async with spying(pids[0], spied or None):
                side.line = await burst(ports, pids,
                                        line_callers(0, options.callers, practices))
                if options.pace:
                    side.paced = await burst(
                        ports, pids, line_callers(options.callers, options.callers, practices),
                        options.pace, options.ramp)
                if practices > 1:
                    side.one_did = await burst(ports, pids,
                                               one_did_callers(options.callers, practices))
                rushing = min(options.rush_practices, practices)
                side.rush = await burst(ports, pids, [rush_caller(n, n % rushing)
                                                      for n in range(options.rush_callers)])
            side.servers = [rss_mb(pid) for pid in pids]
        finally:
            for running in servers:
                await running.stop(60)
        side.line_bookings, side.wrong_practice = await misplaced(database, keys)
        side.doubles = await double_bookings(database)
        await cancel_all(database)
        await database.close()
        if options.consultations:
            await dispatches(side, url, config, options, share)
        write_practice(folder / "clinics", practices)
        side.add_s = await clinic_load(config, folder / "clinics")
    return side


async def clinic_load(config: Path, folder: Path) -> float:
    """Seconds `nobat clinic load` takes over the folder."""
    began = time.perf_counter()
    loader = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nobat", "-c", str(config), "clinic", "load", str(folder),
        stdout=asyncio.subprocess.DEVNULL)
    if await loader.wait() != 0:
        raise RuntimeError("nobat clinic load failed")
    return time.perf_counter() - began


def ratio(floor: float, platform: float) -> str:
    """platform / floor, or '-' when the floor is 0."""
    return f"{platform / floor:.2f}x" if floor else "-"


def table(one: Side, many_: Side, options: argparse.Namespace) -> list[str]:
    """The printed table: each figure on one practice, on the platform, and the ratio."""
    rows: list[tuple[str, str, str, str]] = []

    def row(name: str, floor: float, platform: float, fmt: str = "{:.1f}",
            inverse: bool = False) -> None:
        shown = ratio(platform, floor) if inverse else ratio(floor, platform)
        rows.append((name, fmt.format(floor), fmt.format(platform), shown))

    bursts = [("line", one.line, many_.line), ("line at one DID", one.line, many_.one_did),
              ("paced line", one.paced, many_.paced), ("rush", one.rush, many_.rush)]
    for label, a, b in bursts:
        if a is None or b is None:
            continue
        a50, a99 = percentiles(a.turnaround)
        b50, b99 = percentiles(b.turnaround)
        row(f"{label}: callers", a.calls, b.calls, "{:.0f}")
        row(f"{label}: commands a call", a.commands / a.calls, b.commands / b.calls)
        row(f"{label}: turnaround p50 ms", a50, b50, "{:.2f}")
        row(f"{label}: turnaround p99 ms", a99, b99)
        row(f"{label}: stalls (> 1 s)", a.stalls, b.stalls, "{:.0f}")
        row(f"{label}: booked", a.booked, b.booked, "{:.0f}")
        if label == "line":
            row("line: bookings/s", a.booked / a.seconds, b.booked / b.seconds, inverse=True)
        elif label == "rush":
            row("rush: tries/s", a.calls / a.seconds, b.calls / b.seconds, inverse=True)
            p = [percentiles(x.action) for x in (a, b)]
            row("rush: booking action p50 ms", p[0][0], p[1][0])
            row("rush: booking action p99 ms", p[0][1], p[1][1])
    for label, a, b in bursts[:3]:
        if a is not None and b is not None:
            row(f"{label}: nobat CPU ms a command", *(
                sum(burst.cpu) * 1000 / max(burst.commands, 1) for burst in (a, b)), "{:.3f}")
    row("double bookings", one.doubles, many_.doubles, "{:.0f}")
    row("line bookings at another practice", one.wrong_practice, many_.wrong_practice,
        "{:.0f}")
    if options.consultations:
        row(f"dispatch lag p50 ms, first {many_.lag_count}", one.lag[0], many_.lag[0], "{:.0f}")
        row(f"dispatch lag p99 ms, first {many_.lag_count}", one.lag[1], many_.lag[1], "{:.0f}")
        for n, (a, b) in enumerate(zip(one.lags, many_.lags, strict=True)):
            row(f"dispatch lag p99 ms, moment {n + 1}", a, b, "{:.0f}")
        row("idle plan, all practices, ms", one.plan_ms, many_.plan_ms, "{:.0f}")
    row("clinic folder load s", one.load_s, many_.load_s, "{:.2f}")
    row("clinic load, a practice added, s", one.add_s, many_.add_s, "{:.2f}")
    row("nobat serve start s", one.start_s, many_.start_s, "{:.2f}")
    for n, (a, b) in enumerate(zip(one.servers, many_.servers, strict=True)):
        row(f"nobat {n + 1}: RSS MB", a, b)
        for label, x, y in bursts:
            if x is not None and y is not None:
                row(f"nobat {n + 1}: CPU s, {label}", x.cpu[n], y.cpu[n], "{:.2f}")
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':<{width}} {'1 practice':>12} {f'{many_.practices} practices':>14} "
             f"{'ratio':>7}"]
    lines += [f"{n:<{width}} {a:>12} {b:>14} {r:>7}" for n, a, b, r in rows]
    return lines + target(one, many_, options)


def target(one: Side, many_: Side, options: argparse.Namespace) -> list[str]:
    """The issue's figures against its 1.5x: first where both sides do alike work, then the
    line over the DIDs in virtual time, which is not alike work, with why; each says whether
    it holds."""
    alike: list[tuple[str, float, float, bool]] = []
    if one.paced is not None and many_.paced is not None:
        alike.append((f"{one.paced.calls} callers at once over the DIDs (paced): "
                      "turnaround p99 ms", percentiles(one.paced.turnaround)[1],
                      percentiles(many_.paced.turnaround)[1], False))
    if one.line is not None and many_.one_did is not None:
        alike.append(("saturated at one DID: turnaround p99 ms",
                      percentiles(one.line.turnaround)[1],
                      percentiles(many_.one_did.turnaround)[1], False))
        alike.append(("saturated at one DID: bookings/s", one.line.booked / one.line.seconds,
                      many_.one_did.booked / many_.one_did.seconds, True))
    if options.consultations:
        alike.append((f"dispatch lag p99 ms, first {many_.lag_count} of "
                       f"{options.consultations} (median of {len(one.lags)} moments)",
                       one.lag[1], many_.lag[1], False))
    unlike: list[tuple[str, float, float, bool]] = []
    if one.line is not None and many_.line is not None:
        unlike.append(("saturated over the DIDs: turnaround p99 ms",
                       percentiles(one.line.turnaround)[1],
                       percentiles(many_.line.turnaround)[1], False))
    rows = alike + unlike
    if not rows:
        return []
    width = max(len(r[0]) for r in rows)

    def verdict(name: str, floor: float, platform: float, inverse: bool) -> str:
        shown = platform / floor if not inverse else floor / platform
        return (f"{name:<{width}} {floor:>9.1f} {platform:>9.1f} {shown:>6.2f}x "
                f"{'holds' if shown <= TARGET else 'OVER'}")

    lines = ["", f"the target: within {TARGET}x of one practice; alike work"]
    lines += [verdict(*row) for row in alike]
    if unlike and one.line is not None and many_.line is not None:
        lines.append(f"not alike work: {many_.line.booked} of the platform's callers book, "
                     f"{one.line.booked} of one practice's, whose others collide and take "
                     "cheaper turns")
        lines += [verdict(*row) for row in unlike]
    return lines


async def main(options: argparse.Namespace) -> None:
    """One practice, then the platform, on one throwaway PostgreSQL; then the table."""
    print(f"platform: {options.practices} practices x 5 doctors, 28 days of slots, "
          f"{options.instances} nobat on one PostgreSQL; {options.callers} callers over the "
          f"DIDs; the rush: {options.rush_callers} callers of {options.rush_practices} "
          f"practices; {options.consultations} consultations due at once, cap "
          f"{options.cap} a dialer, practice share {options.share}%, {options.reminders} "
          "reminders planned meanwhile", flush=True)
    server = PostgresServer().start()
    try:
        sides = []
        for practices, share in ((1, 100), (options.practices, options.share)):
            began = time.perf_counter()
            sides.append(await one_side(server, practices, share, options))
            print(f"  {practices} practice(s) measured in {time.perf_counter() - began:.0f} s",
                  flush=True)
    finally:
        server.stop()
    for line in table(*sides, options):
        print(line)
    if any(s.doubles or s.wrong_practice for s in sides):
        raise SystemExit("double bookings or bookings at another practice: see above")


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--practices", type=int, default=200)
    parser.add_argument("--callers", type=int, default=1000)
    parser.add_argument("--rush-practices", type=int, default=20)
    parser.add_argument("--rush-callers", type=int, default=1000)
    parser.add_argument("--consultations", type=int, default=1000,
                        help="consultations due at once (0: no dispatch measurement)")
    parser.add_argument("--reminders", type=int, default=4000,
                        help="bookings tomorrow whose reminders are planned at that moment")
    parser.add_argument("--moments", type=int, default=3, choices=range(1, 6),
                        help="dispatch moments measured on each side (the median printed)")
    parser.add_argument("--cap", type=int, default=100, help="channels a dialer")
    parser.add_argument("--share", type=int, default=10,
                        help="practice_share_percent on the platform (one practice: 100)")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--pace", type=float, default=1.0, metavar="SECONDS",
                        help="real time each prompt or key wait takes in the paced line "
                             "(0: no paced line)")
    parser.add_argument("--ramp", type=float, default=RAMP_S, metavar="SECONDS",
                        help="the paced line's callers arrive over this long")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="record the first nobat over the lines and the rush with py-spy "
                             "(on PATH) into FILE.<practices>.txt (raw stacks)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(arguments()))
