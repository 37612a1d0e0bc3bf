"""What a booking call costs `nobat serve` in CPU next to what the same call costs Asterisk."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

import db
from bench.ivr_load import cpu_seconds, spying
from bridge.ami_protocol import Event
from clinic.schedule import TEHRAN, Slot
from db.booking import BookingPolicy, BookingService, DoctorView
from db.engine import Database
from db.models import Appointment, InboundCall, Patient
from ivr import speech
from ivr.actions.booking import PAGE
from tests.fakepbx.script import BETWEEN_DIGITS_SECONDS, Caller, CallerAction, Press, Wait
from tests.realpbx.asterisk import AmiLink, RealAsterisk, find_asterisk, free_port
from tests.realpbx.dialplan import FakePhones, originate_caller
from tests.sippbx.pbx import AsteriskLog, build_prompts, nobat_config
from tests.support.server import ServerProcess, demo_store

LANG = "fa"
ARRIVALS_PER_S = 20.0
"""Callers arrive at this rate (N/20 s of ramp), then all are on the line at once."""
IDLE_S = 5.0
"""Both processes are sampled idle this long first: the background cost, for comparison."""
KEY_CARRY_S = BETWEEN_DIGITS_SECONDS
"""SendDTMF returns this long after its tone ended; the next menu starts at the tone's end."""
INTO_WAIT_S = 1.0
"""A key lands this long after a menu's prompts ended, inside nobat's 5 s WAIT FOR DIGIT and
clear of the gap between the last STREAM FILE and it (a key between commands is dropped)."""
WELCOME_SHARE = 0.5
"""The welcome menu waits only 2 s for a key: its key cuts choose-language half way."""
SKIP_PAGE_S = 1.5
"""A caller after a later time keys 9 this far into a page of times (during choose-time)."""
REPEAT_CODE_WAIT_S = 4.0
"""nobat's wait for "1" after offering to repeat the booking code (announce_code)."""
AFTER_CODE_S = 2.0
"""The last key, 9 at "anything else?", lands this long after that prompt ended."""
CODE_DIGITS = 6
SPARE_SLOTS = 8
"""A (doctor, day) is used only if it has this many free slots beyond the callers sent to it."""
DEADLINE_MARGIN_S = 90.0
HEARD_SHOWN = 30
"""Prompts shown of a call that did not book (its last ones), for the first three such."""
_LOCAL = re.compile(r"^Local/(?P<exten>[\w-]+)@fake-phones-[0-9a-f]+;(?P<half>[12])$")


class PromptSeconds:
    """How long nobat's built prompts play, from their WAV files."""

    def __init__(self, prompts: Path) -> None:
        self.folder = prompts / LANG
        self._known: dict[str, float] = {}

    def __call__(self, keys: Iterable[str]) -> float:
        total = 0.0
        for key in keys:
            if key not in self._known:
                with wave.open(str(self.folder / f"{key}.wav")) as audio:
                    self._known[key] = audio.getnframes() / audio.getframerate()
            total += self._known[key]
        return total


def menu(intro: str, options: Sequence[Sequence[str]], more: bool = False) -> list[str]:
    """The prompts of a menu as ivr.menu.choose plays them ("for X, press N", "9" for more)."""
    spoken = [intro]
    for number, option in enumerate(options, start=1):
        spoken += ["menu/for", *option, f"menu/press-{number}"]
    return spoken + (["more-times", "menu/press-9"] if more else [])


@dataclass
class Offer:
    """What the clinic offers when the run starts: specialties, days and free times."""

    specialties: list[str]
    doctors: dict[str, DoctorView]
    days: dict[int, list[dt.date]]
    slots: dict[tuple[int, dt.date], list[Slot]]


async def read_offer(store: Database) -> Offer:
    """Ask the store what a caller will be offered, as the booking dialogue does."""
    service = BookingService(store)
    doctors = await service.doctors()
    specialties = list(dict.fromkeys(d.specialty for d in doctors))
    by_specialty: dict[str, DoctorView] = {}
    for specialty in specialties:
        [doctor] = await service.doctors(specialty)  # one doctor each: no doctor menu
        by_specialty[specialty] = doctor
    days = {d.id: await service.next_free_days(d.id, limit=PAGE) for d in doctors}
    slots = {(d.id, day): await service.free_slots(d.id, day) for d in doctors
             for day in days[d.id]}
    return Offer(specialties, by_specialty, days, slots)


def spread(offer: Offer, callers: int, today: dt.date) -> list[tuple[str, dt.date]]:
    """The (specialty, day) pairs callers are spread over: days after today (today's first
    times fall inside the booking notice while callers listen) with free slots to spare."""
    pairs = [(s, day) for s in offer.specialties for day in offer.days[offer.doctors[s].id]
             if day > today]
    while pairs:
        need = math.ceil(callers / len(pairs)) + SPARE_SLOTS
        kept = [(s, day) for s, day in pairs
                if len(offer.slots[(offer.doctors[s].id, day)]) >= need]
        if kept == pairs:
            return pairs
        pairs = kept
    raise RuntimeError(f"the clinic has too few free slots for {callers} bookings")


@dataclass(frozen=True)
class Booking:
    """One caller's script: the keys, each after a wait timed on nobat's real prompts."""

    caller: Caller
    pages: int
    seconds: float


def booking_script(n: int, offer: Offer, pairs: Sequence[tuple[str, dt.date]],
                   seconds: PromptSeconds) -> Booking:
    """Caller n books the (n // len(pairs))-th free time of its (specialty, day): callers of
    one pair arrive in that order, so each one's time is later than any earlier one's and no
    two ask for the same slot, however the lists shrink as others book."""
    specialty, day = pairs[n % len(pairs)]
    index = n // len(pairs)
    doctor = offer.doctors[specialty]
    days = offer.days[doctor.id]
    slots = offer.slots[(doctor.id, day)]
    slot, page = slots[index], index // PAGE
    shown = slots[page * PAGE:(page + 1) * PAGE]
    kinds = sorted(slot.kinds)
    steps = [
        (seconds(["welcome"]) + WELCOME_SHARE * seconds(["choose-language"]), "1"),
        (seconds(["main-menu"]) + INTO_WAIT_S, "1"),
        (seconds(menu("choose-specialty", [[f"specialty/{s}"] for s in offer.specialties]))
         + INTO_WAIT_S, str(offer.specialties.index(specialty) + 1)),
        (seconds(menu("choose-day", [speech.date(d, LANG) for d in days])) + INTO_WAIT_S,
         str(days.index(day) + 1)),
        *[(SKIP_PAGE_S, "9")] * page,
        (seconds(menu("choose-time", [speech.clock(s.start, LANG, TEHRAN) for s in shown],
                      more=(page + 1) * PAGE < len(slots))) + INTO_WAIT_S,
         str(index % PAGE + 1)),
    ]
    if len(kinds) > 1:
        steps.append((seconds(menu("choose-kind", [[f"kind/{k.value}"] for k in kinds]))
                      + INTO_WAIT_S, "1"))
    read_back = ["with-doctor", f"doctor/{doctor.key}", *speech.date(day, LANG),
                 *speech.clock(slot.start, LANG, TEHRAN), f"kind/{kinds[0].value}",
                 "confirm-keys"]
    steps.append((seconds(read_back) + INTO_WAIT_S, "1"))
    digit = statistics.mean(seconds([f"num/{d}"]) for d in range(10))
    steps.append((seconds(["your-code", "repeat-code"]) + CODE_DIGITS * digit
                  + REPEAT_CODE_WAIT_S + seconds(["anything-else"]) + AFTER_CODE_S, "9"))
    actions: list[CallerAction] = []
    for step, (delay, key) in enumerate(steps):
        actions += [Wait(round(delay - (KEY_CARRY_S if step else 0.0), 2)), Press(key)]
    # No HangUp: the caller stays on the line until nobat says goodbye and hangs up.
    return Booking(Caller(f"0912{n:07d}", tuple(actions)), page,
                   sum(delay for delay, _ in steps) + seconds(["goodbye"]))


@dataclass
class Calls:
    """What AMI showed of the callers' calls: each caller's line (;1), and when it ended."""

    channels: dict[str, str] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    causes: Counter[str] = field(default_factory=Counter)
    refused: list[str] = field(default_factory=list)
    _read: int = 0

    def update(self, link: AmiLink) -> None:
        """Take the messages that came since the last look."""
        new = link.received[self._read:]
        self._read += len(new)
        for received in new:
            event = received.message
            if not isinstance(event, Event):
                continue
            if event.name == "OriginateResponse" and event.fields.get("Response") != "Success":
                self.refused.append(event.fields.get("Channel") or "?")
                continue
            match = _LOCAL.match(event.fields.get("Channel") or "")
            if match is None or match.group("half") != "1":
                continue
            exten = match.group("exten")
            self.channels.setdefault(exten, match.group(0))
            if event.name == "Hangup":
                self.ended[exten] = received.at
                self.causes[event.fields.get("Cause-txt") or "?"] += 1


@dataclass
class Run:
    """One measured run: N callers booking through nobat on a real Asterisk."""

    callers: int
    ended: int
    outcomes: Counter[str]
    booked: int
    wall_s: float
    asterisk_cpu_s: float
    nobat_cpu_s: float
    idle_ms_per_s: tuple[float, float]
    bench_cpu_s: float
    pages: float
    heard: Counter[str]
    failures: list[str]

    def row(self) -> str:
        """One line of the table."""
        per_call = max(self.ended, 1)
        return (f"{self.callers:>5} {self.ended:>6} {self.outcomes.get('completed', 0):>9} "
                f"{self.booked:>6} {self.wall_s:>7.1f} {self.asterisk_cpu_s:>8.2f} "
                f"{self.asterisk_cpu_s * 1000 / per_call:>8.1f} {self.nobat_cpu_s:>8.2f} "
                f"{self.nobat_cpu_s * 1000 / per_call:>8.1f} "
                f"{100 * self.nobat_cpu_s / max(self.asterisk_cpu_s, 1e-9):>7.1f}%")


HEADER = (f"{'N':>5} {'ended':>6} {'completed':>9} {'booked':>6} {'wall s':>7} "
          f"{'Ast CPU':>8} {'Ast ms':>8} {'nobat':>8} {'nobat ms':>8} {'nobat/Ast':>8}")


async def run_callers(callers: int, prompts: Path, folder: Path,
                      profile: Path | None = None) -> Run:
    """Bring up Asterisk and nobat, send `callers` booking calls, and measure both; py-spy
    records nobat serve into `profile` meanwhile."""
    phones = FakePhones()
    fastagi_port, fastagi_secret = free_port(), secrets.token_hex(20)
    asterisk = RealAsterisk(phones=phones, globals={
        "NOBAT_FASTAGI": f"127.0.0.1:{fastagi_port}", "NOBAT_FASTAGI_SECRET": fastagi_secret})
    # Reminders off: a run at 18:00-21:00 Tehran time would have nobat dial reminders of
    # tomorrow's bookings through a trunk that is not there, which is not the calls measured.
    config = nobat_config(folder, prompts, asterisk.port, fastagi_port, fastagi_secret,
                          [("max_calls = 200", f"max_calls = {callers + 50}"),
                           ("reminders = true", "reminders = false")])
    store = await demo_store(folder)
    try:
        offer = await read_offer(store)
    finally:
        await store.close()
    now = dt.datetime.now(dt.UTC)
    pairs = spread(offer, callers, now.astimezone(TEHRAN).date())
    seconds = PromptSeconds(prompts)
    scripts = [booking_script(n, offer, pairs, seconds) for n in range(callers)]
    lasts = now + BookingPolicy().min_notice + dt.timedelta(
        seconds=callers / ARRIVALS_PER_S + max(script.seconds for script in scripts))
    if any(max(s.start for s in offer.slots[(d.id, days[0])]) < lasts
           for d in offer.doctors.values() if (days := offer.days[d.id])):
        print("      ! a doctor's first day offered may run out of times during the run: "
              "the day keys would then shift (run it again later)", flush=True)
    extens = [phones.add_caller(script.caller) for script in scripts]
    server: ServerProcess | None = None
    try:
        await asterisk.start()
        server = await ServerProcess(config, env={
            "NOBAT_AMI_SECRET": asterisk.secret or ""}).start()
        assert server.process is not None
        deadline = time.monotonic() + 30
        while not any("AMI connected" in line for line in server.log):
            if time.monotonic() > deadline:
                raise RuntimeError("nobat did not log in to AMI\n" + "\n".join(server.log))
            await asyncio.sleep(0.05)
        link = await asterisk.connect()
        pids = asterisk.pid, server.process.pid
        idle = [cpu_seconds(pid) for pid in pids]
        await asyncio.sleep(IDLE_S)
        idle_ms = [(cpu_seconds(pid) - was) * 1000 / IDLE_S
                   for pid, was in zip(pids, idle, strict=True)]
        calls = Calls()
        async with spying(server.process.pid, profile):
            bench_before = cpu_seconds(os.getpid())
            before = [cpu_seconds(pid) for pid in pids]
            began = time.monotonic()
            for n, (script, exten) in enumerate(zip(scripts, extens, strict=True)):
                await asyncio.sleep(max(0.0, began + n / ARRIVALS_PER_S - time.monotonic()))
                link.send_nowait(originate_caller(script.caller, exten, action_id=f"call{n}"))
            longest = max(script.seconds for script in scripts)
            give_up = began + callers / ARRIVALS_PER_S + longest + DEADLINE_MARGIN_S
            while (len(calls.ended) + len(calls.refused) < callers
                   and time.monotonic() < give_up):
                calls.update(link)
                await asyncio.sleep(0.1)
            after = [cpu_seconds(pid) for pid in pids]
            wall = time.monotonic() - began
            bench_cpu = cpu_seconds(os.getpid()) - bench_before
        calls.update(link)
        log = AsteriskLog(asterisk.base / "log" / "messages.log")
        heard = Counter(log.played())
        booked_numbers, outcomes = await _stored(folder)
        failures = []
        for n, (script, exten) in enumerate(zip(scripts, extens, strict=True)):
            number = script.caller.number or ""
            if "+98" + number[1:] in booked_numbers:
                continue
            channel = calls.channels.get(exten, "")
            state = "ended" if exten in calls.ended else "still up at the deadline"
            if not channel:
                state = "never reached the IVR"
            played = log.played(channel) if channel and len(failures) < 3 else []
            failures.append(f"caller {n} ({number}, {exten}) {state}, no booking"
                            + (f"; last heard {played[-HEARD_SHOWN:]}" if played else ""))
        if calls.refused:
            failures.append(f"{len(calls.refused)} originates failed: {calls.refused[:5]}")
        errors = [line for line in server.log if " ERROR " in line or "Traceback" in line]
        if errors:
            failures.append(f"nobat logged {len(errors)} errors, first: {errors[0]}")
        return Run(callers, len(calls.ended), outcomes, len(booked_numbers), wall,
                   after[0] - before[0], after[1] - before[1],
                   (idle_ms[0], idle_ms[1]), bench_cpu,
                   statistics.mean(script.pages for script in scripts), heard, failures)
    except BaseException:
        if server is not None:
            print("\n".join(server.log[-60:]), file=sys.stderr)
        print(asterisk.read_log(60), file=sys.stderr)
        raise
    finally:
        if server is not None and server.process is not None:
            await server.stop()
        await asterisk.stop()


async def _stored(folder: Path) -> tuple[set[str], Counter[str]]:
    """The numbers that hold a booking, and the calls' outcomes, as the store has them."""
    store = Database.from_url(f"sqlite+aiosqlite:///{folder / 'nobat.db'}")
    try:
        async with store.reading() as session:
            numbers = set((await session.scalars(
                select(Patient.phone).join(Appointment, Appointment.patient_id == Patient.id)
                .where(Appointment.status == "booked"))).all())
            outcomes = Counter((await session.scalars(select(InboundCall.outcome))).all())
    finally:
        await store.close()
    return numbers, Counter({str(k): v for k, v in outcomes.items()})


def report(run: Run) -> None:
    """The run's row and what else it showed."""
    print(run.row())
    interesting = ("no-input", "invalid", "slot-taken", "nearest-slots", "booking-refused",
                   "goodbye", "transferring")
    heard = ", ".join(f"{key} {run.heard[f'{LANG}/{key}']}" for key in interesting)
    print(f"      outcomes {dict(run.outcomes)}; prompts heard: {heard}; mean pages of "
          f"times skipped {run.pages:.2f}; idle CPU ms/s Asterisk {run.idle_ms_per_s[0]:.1f}, "
          f"nobat {run.idle_ms_per_s[1]:.1f}; the bench itself {run.bench_cpu_s:.1f} s")
    for line in run.failures[:8]:
        print(f"      ! {line}")
    if len(run.failures) > 8:
        print(f"      ! ... {len(run.failures) - 8} more")


async def measure(sizes: Sequence[int], runs: int, prompts: Path,
                  profile: Path | None) -> None:
    """Each size `runs` times, one fresh Asterisk, nobat and store each."""
    print(HEADER)
    for size in sizes:
        for run in range(runs):
            spied = None if profile is None else profile.with_suffix(f".{size}.{run}.txt")
            with tempfile.TemporaryDirectory(prefix="nobat-real-ivr-") as tmp:
                report(await run_callers(size, prompts, Path(tmp), spied))
            if spied is not None:
                print(f"      py-spy profile of nobat serve (raw stacks): {spied}")


def main() -> None:
    """Parse the command line, build the prompts once, then measure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callers", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--runs", type=int, default=1, help="runs of each size")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="record nobat serve with py-spy (on PATH) into "
                        "FILE.<callers>.<run>.txt")
    arguments = parser.parse_args()
    source = Path(db.__file__).resolve().parents[1]
    print(f"nobat from {source} ({_commit(source)}); Asterisk {find_asterisk()}; "
          f"callers arrive {ARRIVALS_PER_S:g}/s; CPU = utime+stime from /proc, first "
          "originate to last hang-up; ms per call ended", flush=True)
    with tempfile.TemporaryDirectory(prefix="nobat-real-ivr-prompts-") as tmp:
        prompts = build_prompts(Path(tmp))
        asyncio.run(measure(arguments.callers, arguments.runs, prompts, arguments.profile))


def _commit(source: Path) -> str:
    """The checkout's commit, and whether its tree has changes."""
    quiet = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # only look: never touch the index
    head = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False, env=quiet).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain",
                            "--untracked-files=no"], capture_output=True, text=True,
                           check=False, env=quiet).stdout.strip()
    return f"{head or '?'}{' with changes' if dirty else ''}"


if __name__ == "__main__":
    main()
