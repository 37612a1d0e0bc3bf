"""The SIP tier's clinic: a real Asterisk on nobat's shipped pjsip.conf, SIPp phones around it,
and a real `nobat serve` on a SQLite store.

Addresses: Asterisk on 127.0.0.1, the carrier on 127.0.0.2 (nobat's trunk identifies it by
that address, as its `identify` says), the office phone on 127.0.0.3. Callers come from the
carrier's address, so Asterisk takes them as the trunk's, as a real carrier delivers them.

`clinic_line()` brings everything up in the order a clinic would: the phones, Asterisk
(RealAsterisk of the real-PBX tier, with nobat's files changed only where a test must:
addresses, ports, passwords, [globals]), the office phone's registration, then nobat,
whose config.toml is the shipped one with the test's ports, the prompts built for this
tier's clinic (tests/sippbx/clinic.toml) and the few keys a scenario changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bridge.ami_protocol import Event
from clinic.schedule import Slot
from db.booking import BookingService
from db.engine import Database
from tests.fakepbx.agi_caller import DIALPLAN_SECRET
from tests.realpbx.asterisk import SHIPPED, AmiLink, RealAsterisk, free_port
from tests.sippbx.rtp import key_steps
from tests.sippbx.sipp import HERE, WAIT_SECONDS, SipMessage, Sipp, free_udp_port
from tests.support.consultations import book_due, first_phone_slot
from tests.support.server import ROOT, ServerProcess, demo_copy, demo_store, edit_config

ASTERISK_IP = "127.0.0.1"
CARRIER_IP = "127.0.0.2"
OFFICE_IP = "127.0.0.3"
CLINIC = HERE / "clinic.toml"
DID = "02188776655"
"""The clinic's number as the carrier delivers it (pjsip.conf's contact_user)."""
CLINIC_NUMBER = "+982188776655"
CLINIC_NAME = "Nobat Clinic"
"""The identity nobat gives every leg it dials: clinic.toml's phone and name_en."""
CALLER_SLOTS = 12
PHONE_SLOTS = 4
"""Key-press steps caller.xml and phones.xml can play in one call."""
CALLER_SILENCE_S = 120.0
PHONE_SILENCE_S = 300.0
"""How long a phone stays silent after a step: longer than any wait for the next one."""
LATE_MS = 8000
"""How long a number ending in 180 rings before it answers."""
STEP_SECONDS = 60.0
"""Longest wait for the prompt of a caller's next step (a booking code said, then the offer
to repeat it, runs about 20 s)."""
_PLAYING = re.compile(r"<(?P<channel>[^>]+)> Playing '(?P<file>[^']+)'")


def pjsip_conf(folder: Path, port: int, carrier: str, trunk_password: str,
               office_password: str) -> str:
    """nobat's pjsip.conf with this machine's addresses and ports, and the passwords."""
    path = folder / "pjsip.conf"
    shutil.copy(SHIPPED / "pjsip.conf", path)
    edit_config(path,
                ("bind=0.0.0.0:5060", f"bind={ASTERISK_IP}:{port}"),
                ("server_uri=sip:sip.carrier.example", f"server_uri=sip:{carrier}"),
                (f"client_uri=sip:{DID}@sip.carrier.example", f"client_uri=sip:{DID}@{carrier}"),
                ("contact=sip:sip.carrier.example", f"contact=sip:{carrier}"),
                ("from_domain=sip.carrier.example", f"from_domain={CARRIER_IP}"),
                ("match=sip.carrier.example", f"match={CARRIER_IP}"),
                ("; password=<the carrier account's password>", f"password={trunk_password}"),
                ("; password=<a long password for the office phone>",
                 f"password={office_password}"))
    return path.read_text(encoding="utf-8")


def rtp_conf() -> str:
    """A small RTP port range of Asterisk's own, within Asterisk's usual 10000-20000 and so
    below the kernel's ephemeral ports, where SIPp's own ports come from."""
    start = random.randrange(10000, 20000, 100)
    return f"[general]\nrtpstart={start}\nrtpend={start + 98}\n"


def prompt_key(path: str) -> str:
    """A played file as nobat's prompt name: '/tmp/../prompts/fa/main-menu.slin' ->
    'fa/main-menu' (Asterisk names the file with the format it chose to play)."""
    return re.sub(r"\.\w+$", "", path.rsplit("/prompts/", 1)[-1])


def in_order(heard: Sequence[str], expected: Sequence[str]) -> bool:
    """Whether `expected` was heard in this order (other prompts may come between)."""
    rest = iter(heard)
    return all(any(prompt == wanted for prompt in rest) for wanted in expected)


async def first_slot_after(service: BookingService, doctor_id: int, after: dt.datetime
                           ) -> Slot:
    """The doctor's first free slot starting after `after` (a booking a test makes itself)."""
    for day in await service.next_free_days(doctor_id, limit=3):
        for slot in await service.free_slots(doctor_id, day):
            if slot.start > after:
                return slot
    raise AssertionError(f"no free slot after {after}")


@dataclass
class AsteriskLog:
    """Asterisk's messages.log (verbose 3), read as it grows: what each channel played."""

    path: Path

    def lines(self) -> list[str]:
        """The log's lines so far (none before Asterisk wrote any)."""
        if not self.path.is_file():
            return []
        return self.path.read_text(encoding="utf-8", errors="replace").splitlines()

    def played(self, channel: str | None = None) -> list[str]:
        """The prompts played to a channel (to all channels: None), as nobat names them."""
        found = []
        for line in self.lines():
            match = _PLAYING.search(line)
            if match and (channel is None or match.group("channel") == channel):
                found.append(prompt_key(match.group("file")))
        return found

    async def wait_played(self, channel: str, prompt: str, after: int = 0,
                          within: float = WAIT_SECONDS) -> int:
        """Wait until `channel` starts playing `prompt` later than its first `after`
        prompts; return how many it had played up to and including that one."""
        deadline = time.monotonic() + within
        while True:
            heard = self.played(channel)
            if prompt in heard[after:]:
                return heard.index(prompt, after) + 1
            if time.monotonic() > deadline:
                raise AssertionError(f"{channel} did not play {prompt} within {within} s; "
                                     f"after {heard[:after]} it played {heard[after:]}")
            await asyncio.sleep(0.05)


@dataclass
class Call:
    """A call a caller SIPp places to the clinic's number, and what its owner does on it."""

    phone: Sipp
    line: ClinicLine
    steps: Sequence[tuple[str, str]]
    """(prompt, keys): when the prompt starts playing, the caller keys these in."""
    call_id: str
    channel: str = ""
    _heard: int = 0

    async def answered(self, within: float = WAIT_SECONDS) -> SipMessage:
        """The 200 OK to the caller's INVITE: the call is answered, with the SDP of its audio."""
        return await self.phone.wait_for(
            lambda m: m.received and m.status == 200 and m.cseq_method == "INVITE",
            "200 OK to the INVITE", within)

    async def follow(self, within: float = STEP_SECONDS) -> None:
        """Key in each step when its prompt starts (a person listening, then pressing)."""
        for prompt, _keys in self.steps:
            self._heard = await self.line.log.wait_played(self.channel, prompt, self._heard,
                                                          within)
            self.phone.press(self.call_id)

    async def ended_by_clinic(self, within: float = WAIT_SECONDS) -> SipMessage:
        """The BYE Asterisk sends when nobat ends the call; the caller answers it and leaves."""
        bye = await self.phone.wait_for(lambda m: m.received and m.method == "BYE",
                                        "BYE from Asterisk", within)
        assert await self.phone.wait_ended(within) == 0, self.phone.report()
        return bye

    async def hang_up(self, within: float = WAIT_SECONDS) -> None:
        """The caller hangs up (BYE), and Asterisk confirms it."""
        self.phone.notify(self.call_id)
        assert await self.phone.wait_ended(within) == 0, self.phone.report()

    def heard(self) -> list[str]:
        """Every prompt Asterisk played to this call, in order."""
        return self.line.log.played(self.channel)


@dataclass
class ClinicLine:
    """Everything of one scenario: Asterisk, the phones, nobat and its store."""

    folder: Path
    asterisk: RealAsterisk
    sip_port: int
    carrier: Sipp
    office: Sipp
    config: Path
    store: Database
    ami: AmiLink
    """The test's own AMI connection, logged in as nobat: it sees what nobat sees."""
    nobat: ServerProcess | None = None
    nobat_runs: list[ServerProcess] = field(default_factory=list)
    callers: list[Sipp] = field(default_factory=list)
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def log(self) -> AsteriskLog:
        """Asterisk's log, where the prompts each channel played are."""
        return AsteriskLog(self.asterisk.base / "log" / "messages.log")

    async def start_nobat(self) -> ServerProcess:
        """Start `nobat serve` on this clinic's config and wait until it is logged in to AMI."""
        server = await ServerProcess(self.config, env={
            "NOBAT_AMI_SECRET": self.asterisk.secret or ""}).start()
        self.nobat = server
        self.nobat_runs.append(server)
        deadline = time.monotonic() + WAIT_SECONDS
        while not any("AMI connected" in line for line in server.log):
            assert time.monotonic() < deadline, "nobat did not log in to AMI\n" + self.logs()
            await asyncio.sleep(0.05)
        return server

    async def kill_nobat(self) -> int:
        """kill -9 the running nobat, as a crash or the OOM killer would; its exit code."""
        assert self.nobat is not None and self.nobat.process is not None
        self.nobat.process.send_signal(signal.SIGKILL)
        code = await self.nobat.process.wait()
        self.nobat = None
        return code

    async def call(self, caller: str | None, steps: Sequence[tuple[str, str]] = (),
                   did: str = DID) -> Call:
        """A caller with number `caller` (None: withheld) dials the clinic (or, on a platform,
        the practice whose number is `did`, as the carrier sends it); `steps` say which keys
        they press when (Call.follow). Returns once Asterisk has the call's channel."""
        name = f"caller{next(self._names)}"
        number = caller or "anonymous"
        identity = (f"P-Asserted-Identity: <sip:{caller}@{CARRIER_IP}>" if caller
                    else "Privacy: id")
        sender = "gateway" if caller else "anonymous"
        pcaps = key_steps(self.folder, name, [keys for _, keys in steps],
                          secrets.randbits(32), CALLER_SILENCE_S, CALLER_SLOTS)
        call_id = f"nobat-{name}@{CARRIER_IP}"
        phone = Sipp("caller.xml", CARRIER_IP, self.folder, name,
                     remote=f"{ASTERISK_IP}:{self.sip_port}",
                     keys={"sender": sender, "identity": identity, **pcaps},
                     options=["-s", did, "-m", "1", "-cid_str", call_id])
        self.callers.append(phone)
        await phone.start()
        channel = await self.ami.wait_event("Newchannel", within=WAIT_SECONDS,
                                            CallerIDNum=number, Exten=did)
        return Call(phone, self, steps, call_id, channel.fields.get("Channel") or "")

    async def channel_of(self, unique_id: str, within: float = WAIT_SECONDS) -> str:
        """The channel name of a channel nobat originated, by its ChannelId (Uniqueid)."""
        event = await self.ami.wait_event("Newchannel", within=within, Uniqueid=unique_id)
        return event.fields.get("Channel") or ""

    def events(self, name: str, **fields: str) -> list[Event]:
        """AMI events seen so far by name, with the given field values."""
        return [e for e in self.ami.events(name)
                if all(e.fields.get(k) == v for k, v in fields.items())]

    async def book_due_now(self, doctor_key: str, patient_phone: str, talk: dt.timedelta,
                           practice: str | None = None) -> tuple[int, dt.datetime]:
        """Book a phone visit with `doctor_key` (of `practice`, on a platform) whose call is
        due now and ends `talk` later; the consultation's id and the booked end."""
        service = BookingService(self.store, practice=practice)
        doctor_id, start = await first_phone_slot(service, doctor_key)
        due = dt.datetime.now(dt.UTC)
        _, ident = await book_due(service, self.store, doctor_id, patient_phone, start, due,
                                  ends_at=due + talk)
        return ident, due + talk

    def logs(self) -> str:
        """What a failing scenario should show: nobat's log, Asterisk's, the phones' surprises."""
        parts = [f"--- nobat run {n} ---\n" + "\n".join(run.log[-80:])
                 for n, run in enumerate(self.nobat_runs, start=1)]
        parts.append(self.asterisk.read_log(150))
        for phone in (self.carrier, self.office, *self.callers):
            if surprises := phone.unexpected():
                parts.append(f"--- SIPp {phone.name}: unexpected ---\n{surprises[-3000:]}")
        return "\n".join(parts)


def tier_copy(folder: Path, practices: Path | None = None, port: int = 0) -> Path:
    """The shipped config.toml for this tier's clinic (clinic.toml here), or for a folder of
    `practices` on one line, which its [server] clinic_file then names."""
    config = demo_copy(folder, port=port, clinic=CLINIC.read_text(encoding="utf-8"))
    if practices is not None:
        edit_config(config, ('clinic_file = "clinic.toml"', f'clinic_file = "{practices}"'))
    return config


def nobat_config(folder: Path, prompts: Path, ami_port: int, fastagi_port: int,
                 fastagi_secret: str, edits: Sequence[tuple[str, str]],
                 practices: Path | None = None) -> Path:
    """The shipped config.toml for this tier's clinic (or `practices`): its ports, the
    FastAGI secret the dialplan passes, the built prompts, `edits`."""
    config = tier_copy(folder, practices, port=free_port())
    edit_config(config, ("port = 5038", f"port = {ami_port}"),
                ("port = 0\n", f"port = {fastagi_port}\n"),
                (f'secret = "{DIALPLAN_SECRET}"', f'secret = "{fastagi_secret}"'),
                (f'prompts = "{ROOT / "prompts"}"', f'prompts = "{prompts}"'),
                *edits)
    return config


_MIGRATIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary())


def _migrating() -> asyncio.Lock:
    """One store migration at a time in an event loop: Alembic keeps its context in a module
    global, so two clinic lines brought up at once must not migrate their stores together."""
    return _MIGRATIONS.setdefault(asyncio.get_running_loop(), asyncio.Lock())


@asynccontextmanager
async def clinic_line(folder: Path, prompts: Path, *, edits: Sequence[tuple[str, str]] = (),
                      phone_steps: Sequence[str] = (), late_ms: int = LATE_MS,
                      start_nobat: bool = True, practices: Path | None = None,
                      shown: tuple[str, str] = (CLINIC_NUMBER, CLINIC_NAME)
                      ) -> AsyncIterator[ClinicLine]:
    """Asterisk, the carrier's and the office's phones and nobat, up and registered.

    `edits` change nobat's config.toml; `phone_steps` are the keys a phone the carrier
    answers presses, one step each time the test says (Sipp.press); a number ending in 180
    rings `late_ms` before it answers. With `start_nobat` False the test starts it.
    `practices`, a folder of clinic files, makes the line a platform's (the prompts must
    be built for them); `shown` is the number and name the dialplan's [globals] give
    (NOBAT_CLINIC_NUMBER, NOBAT_CLINIC_NAME), which nobat's per-call identity overrides.
    """
    trunk_password, office_password = secrets.token_hex(12), secrets.token_hex(12)
    carrier = Sipp("phones.xml", CARRIER_IP, folder, "carrier",
                   keys=key_steps(folder, "carrier", list(phone_steps), secrets.randbits(32),
                                  PHONE_SILENCE_S, PHONE_SLOTS),
                   options=["-d", str(late_ms)])
    office = Sipp("phones.xml", OFFICE_IP, folder, "office",
                  keys=key_steps(folder, "office", [], secrets.randbits(32), PHONE_SILENCE_S,
                                 PHONE_SLOTS))
    sip_port, fastagi_port = free_udp_port(ASTERISK_IP), free_port()
    fastagi_secret = secrets.token_hex(20)
    asterisk = RealAsterisk(
        globals={"NOBAT_FASTAGI": f"127.0.0.1:{fastagi_port}",
                 "NOBAT_FASTAGI_SECRET": fastagi_secret,
                 "NOBAT_CLINIC_NUMBER": shown[0], "NOBAT_CLINIC_NAME": shown[1]},
        configs={"pjsip.conf": pjsip_conf(folder, sip_port, carrier.uri_host,
                                          trunk_password, office_password),
                 "rtp.conf": rtp_conf(), "pjproject.conf": ""})
    config = nobat_config(folder, prompts, asterisk.port, fastagi_port, fastagi_secret, edits,
                          practices)
    async with _migrating():
        store = await demo_store(folder, practices)
    line: ClinicLine | None = None
    try:
        await carrier.start()
        await office.start()
        await asterisk.start()
        register = Sipp("register.xml", OFFICE_IP, folder, "office-register",
                        remote=f"{ASTERISK_IP}:{sip_port}", keys={"contact": office.uri_host},
                        options=["-s", "office", "-au", "office", "-ap", office_password,
                                 "-m", "1"])
        await register.start()
        assert await register.wait_ended() == 0, register.report()
        line = ClinicLine(folder, asterisk, sip_port, carrier, office, config, store,
                          await asterisk.connect())
        if start_nobat:
            await line.start_nobat()
        yield line
    except BaseException:
        if line is not None:
            print(line.logs())
        raise
    finally:
        if line is not None and line.nobat is not None:
            with contextlib.suppress(Exception):
                await line.nobat.stop()
        for phone in (*(line.callers if line else ()), carrier, office):
            await phone.stop()
        await asterisk.stop()
        await store.close()


def build_prompts(folder: Path, practices: Path | None = None, built_from: Path | None = None
                  ) -> Path:
    """nobat's prompts for this tier's clinic (or a folder of `practices`), spoken by `nobat
    prompts build` (espeak-ng, sox) into a folder Asterisk plays from; the `prompts` fixture
    and bench/real_ivr_load.py use them. Starting from a copy of prompts already built
    (`built_from`), only what differs is spoken: a platform's practices' own words."""
    built = folder / "prompts"
    if built_from is not None:
        shutil.copytree(built_from, built)
    else:
        built.mkdir(parents=True)
        shutil.copy(ROOT / "prompts" / "manifest.toml", built / "manifest.toml")
    config = tier_copy(folder, practices)
    edit_config(config, (f'prompts = "{ROOT / "prompts"}"', f'prompts = "{built}"'))

    async def store() -> None:
        await (await demo_store(folder, practices)).close()

    asyncio.run(store())
    result = subprocess.run([sys.executable, "-m", "nobat", "-c", str(config), "prompts",
                             "build"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"nobat prompts build failed:\n{result.stdout}{result.stderr}")
    return built
