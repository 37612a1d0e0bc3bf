"""A lost AMI link never cuts off parties who answered (issue 19): nobat's AMI link is cut
by a proxy just after it rings the doctor and the patient, both answer and hear who calls
while nobat sees nothing, and once the link is back nobat goes on from Asterisk's live
channels: it bridges them, and the call ends at the booked time, rung once each."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import inspect

from clinic.call_kinds import Leg
from db.models import CallAttempt, Consultation
from tests.sippbx.pbx import ClinicLine, clinic_line, in_order
from tests.sippbx.sipp import SipMessage
from tests.sippbx.test_sip_consultations import (
    EDITS,
    PhoneLeg,
    dialogue,
    from_asterisk,
    invites,
    until,
    wait_all_ended,
)
from tests.support.consultations import attempts

pytestmark = pytest.mark.asyncio(loop_scope="module")

DOCTOR_KEY = "dr-karimi"
DOCTOR_PHONE = "+989121002180"
PATIENT_PHONE = "+989351110180"
"""Both numbers end in 180: each phone rings LATE_MS before it answers."""
LATE_MS = 4000
TALK = dt.timedelta(seconds=80)
"""From due to the booked end (no grace): time to answer, be announced, wait out the cut
and be bridged, then more than the minute's warning before the end."""
CUT_AFTER_S = 0.5
"""How long after both Originates the link is cut."""
CUT_FOR_S = 4.5
"""How long it stays cut: both phones answer (LATE_MS) and hear their announcements while
nobat sees nothing."""
BYE_WINDOW_S = (-1.0, 6.0)
"""When Asterisk's BYE may come, from the booked end: Bridge() plays the time-up prompt at
the end (about 4.2 s in this tier's voice), then hangs up."""


def local(at: dt.datetime) -> dt.datetime:
    """A time as this machine's local naive time (SIPp's traces and nobat's log use it)."""
    return at.astimezone().replace(tzinfo=None) if at.tzinfo else at


@dataclass
class AmiProxy:
    """A TCP proxy between nobat and Asterisk's AMI that the test can cut and restore."""

    target: int
    port: int = 0
    cut_now: bool = False
    notes: list[tuple[dt.datetime, str]] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def note(self, what: str) -> None:
        """Keep what the proxy did, and when, for the timeline."""
        self.notes.append((dt.datetime.now(), what))

    async def start(self) -> None:
        """Listen on a free local port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        """Close both sides of every connection; new ones are dropped until `restore`."""
        self.cut_now = True
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        self.note("proxy: AMI link cut")

    def restore(self) -> None:
        """Pass new connections on to Asterisk again."""
        self.cut_now = False
        self.note("proxy: AMI link restored")

    async def close(self) -> None:
        """Stop listening and close every connection."""
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        """One client connection: dropped while cut, else piped both ways to Asterisk."""
        if self.cut_now:
            self.note("proxy: dropped a connection while cut")
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        self.note("proxy: connection passed on to Asterisk")
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction until it ends, then close its far side."""
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


@asynccontextmanager
async def ami_proxy(target: int) -> AsyncIterator[AmiProxy]:
    """An AmiProxy to Asterisk's AMI port `target`, listening while the block runs."""
    proxy = AmiProxy(target)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


def through(line: ClinicLine, proxy: AmiProxy) -> None:
    """Point nobat's config.toml's [ami] port at the proxy."""
    text = line.config.read_text(encoding="utf-8")
    old = f"port = {line.asterisk.port}\n"
    assert text.count(old) == 1, text
    line.config.write_text(text.replace(old, f"port = {proxy.port}\n"), encoding="utf-8")


@dataclass
class Blip:
    """A consultation whose AMI link was cut while both phones were answering."""

    consultation: Consultation
    attempts: list[CallAttempt]
    legs: dict[Leg, PhoneLeg]
    booked_end: dt.datetime
    cut_at: dt.datetime
    restored_at: dt.datetime
    nobat_log: list[str]
    timeline: list[tuple[dt.datetime, str]]


def logged_at(line: str) -> dt.datetime | None:
    """When nobat logged a text line ('2025-01-01 10:00:00,123 INFO ...'), local time."""
    with contextlib.suppress(ValueError):
        return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return None


def answered_at(leg: PhoneLeg) -> dt.datetime | None:
    """When the phone sent its 200 OK to Asterisk's INVITE."""
    return next((m.at for m in leg.messages if not m.received and m.status == 200
                 and m.cseq_method == "INVITE"), None)


def byes(leg: PhoneLeg) -> list[SipMessage]:
    """The BYEs Asterisk sent the phone."""
    return [m for m in from_asterisk(leg) if m.method == "BYE"]


def timeline(notes: list[tuple[dt.datetime, str]], legs: dict[Leg, PhoneLeg],
             log: list[str], attempt: CallAttempt) -> list[tuple[dt.datetime, str]]:
    """Every moment worth quoting, in order: SIP, the proxy, nobat's log, the store."""
    found = list(notes)
    for leg, state in legs.items():
        for message in invites(state):
            found.append((message.at, f"SIP: INVITE to the {leg}"))
        if (answer := answered_at(state)) is not None:
            found.append((answer, f"SIP: the {leg}'s phone answers (200 OK)"))
        for message in byes(state):
            found.append((message.at, f"SIP: BYE from Asterisk to the {leg}"))
    for text in log:
        if any(key in text for key in ("AMI connected", "AMI link", "AMI at", "resumed",
                                       "Originat", "bridged", "completed")):
            when = logged_at(text)
            if when is not None:
                found.append((when, "nobat: " + text[24:]))
    for name in ("started_at", "doctor_answered_at", "patient_answered_at", "bridged_at",
                 "ended_at"):
        value = getattr(attempt, name)
        if value is not None:
            found.append((local(value), f"store: attempt.{name}"))
    return sorted(found, key=lambda item: item[0])


def printed(events: list[tuple[dt.datetime, str]]) -> str:
    """The timeline as lines: wall clock, seconds since the first moment, what."""
    start = events[0][0]
    return "\n".join(f"{at:%H:%M:%S.%f}"[:-3] + f"  +{(at - start).total_seconds():6.2f} s  "
                     f"{what}" for at, what in events)


async def ami_blip(folder: Path, prompts: Path) -> Blip:
    """Ring both late-answering phones, cut nobat's AMI link just after, restore it, and run
    the consultation to its end."""
    async with clinic_line(folder, prompts, edits=EDITS, late_ms=LATE_MS,
                           start_nobat=False) as line, ami_proxy(line.asterisk.port) as proxy:
        through(line, proxy)
        ident, ends = await line.book_due_now(DOCTOR_KEY, PATIENT_PHONE, TALK)
        await line.start_nobat()
        channels = {}
        for leg in Leg:
            event = await line.ami.wait_event("Newchannel", within=30,
                                              Uniqueid=f"nobat-c{ident}-a1-{leg}")
            channels[leg] = event.fields.get("Channel") or ""
            proxy.note(f"AMI (test's link): Newchannel of the {leg} (nobat's Originate)")
        await asyncio.sleep(CUT_AFTER_S)
        cut_at = dt.datetime.now()
        proxy.cut()
        await asyncio.sleep(CUT_FOR_S)
        restored_at = dt.datetime.now()
        proxy.restore()
        row = await until(line, lambda row, tries: row.state in ("completed", "missed")
                          or bool(tries and tries[-1].state == "failed"), ident,
                          "end of the consultation", within=TALK.total_seconds() + 30)
        tries = await attempts(line.store, ident)
        numbers = {Leg.DOCTOR: DOCTOR_PHONE, Leg.PATIENT: PATIENT_PHONE}
        await wait_all_ended(line, list(numbers.values()))
        legs = {leg: PhoneLeg(number, dialogue(line, number), line.log.played(channels[leg]),
                              channels[leg]) for leg, number in numbers.items()}
        assert line.nobat is not None
        log = list(line.nobat.log)
        for attempt in tries:
            columns = inspect(CallAttempt).columns.keys()
            print(f"attempt row: { {key: getattr(attempt, key) for key in columns} }")
        print(f"consultation row: state={row.state} outcome={row.outcome} cause={row.cause} "
              f"attempts={row.attempts}")
        events = timeline(proxy.notes, legs, log, tries[-1]) if tries else proxy.notes
        events.append((local(ends), "booked end"))
        events.sort(key=lambda item: item[0])
        print("timeline:\n" + printed(events))
        for leg, state in legs.items():
            print(f"{leg} heard: {state.heard}")
        return Blip(row, tries, legs, local(ends), cut_at, restored_at, log, events)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def blip(tmp_path_factory: pytest.TempPathFactory, prompts: Path) -> Blip:
    """The one run (it takes the booked time, over a minute, of real time)."""
    return await ami_blip(tmp_path_factory.mktemp("ami-cut"), prompts)


async def test_both_answered_while_nobat_was_blind(blip: Blip) -> None:
    """The scenario did what it says: both phones answered inside the cut."""
    for leg, state in blip.legs.items():
        answer = answered_at(state)
        assert answer is not None, f"the {leg} never answered"
        assert blip.cut_at < answer < blip.restored_at, (leg, answer, blip.cut_at,
                                                         blip.restored_at)
    lost = [text for text in blip.nobat_log if "AMI link" in text and "lost" in text]
    connected = [text for text in blip.nobat_log if "AMI connected" in text]
    assert lost and len(connected) >= 2, blip.nobat_log[-60:]


async def test_the_attempt_goes_on_and_completes_at_the_booked_end(blip: Blip) -> None:
    """Completed in one attempt, bridged, noted as resumed after time unseen."""
    assert blip.consultation.state == "completed", blip.consultation
    [attempt] = blip.attempts
    assert attempt.bridged_at is not None
    assert local(attempt.bridged_at) > blip.restored_at - dt.timedelta(seconds=1)
    assert attempt.resumes >= 1 and attempt.unseen_seconds >= 1, (attempt.resumes,
                                                                  attempt.unseen_seconds)


async def test_neither_party_is_rung_again_nor_hung_up_before_the_end(blip: Blip) -> None:
    """One INVITE each; the only BYE is Asterisk's at the booked end."""
    [attempt] = blip.attempts
    assert attempt.bridged_at is not None
    bridged = local(attempt.bridged_at)
    for leg, state in blip.legs.items():
        assert len(invites(state)) == 1, f"the {leg} was rung again"
        sent = byes(state)
        assert sent, f"the {leg} got no BYE"
        assert sent[0].at > bridged, (leg, sent[0].at, bridged)
        early, late = BYE_WINDOW_S
        after_end = (sent[0].at - blip.booked_end).total_seconds()
        assert early <= after_end <= late, (leg, sent[0].at, blip.booked_end)
        assert not any(m.method == "BYE" for m in state.messages if not m.received), (
            f"the {leg}'s phone hung up itself")


async def test_both_heard_who_calls_then_the_end(blip: Blip) -> None:
    """Announced once each, then warned and told the time is up in the bridge."""
    heard = {leg: blip.legs[leg].heard for leg in Leg}
    assert in_order(heard[Leg.PATIENT], ["fa/consult/patient-intro", f"fa/doctor/{DOCTOR_KEY}",
                                         "fa/consult/ending-soon",
                                         "fa/consult/time-up"]), heard[Leg.PATIENT]
    assert in_order(heard[Leg.DOCTOR], ["fa/consult/doctor-intro", "fa/consult/ending-soon",
                                        "fa/consult/time-up"]), heard[Leg.DOCTOR]
    assert heard[Leg.DOCTOR].count("fa/consult/doctor-intro") == 1, heard[Leg.DOCTOR]
