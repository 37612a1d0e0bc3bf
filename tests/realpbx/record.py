"""Record the project's own Asterisk captures (tests/captures/) with the real-PBX tier.

    NOBAT_ASTERISK=/path/to/sbin/asterisk .venv/bin/python -m tests.realpbx.record [OUT_DIR]

Each scenario starts a real Asterisk with the tier's `RealAsterisk`: its layout and nobat's
manager.conf, with a `ctrl` user added that reads every event class, but the scratch dialplan
and module list below instead of nobat's, so a recording does not change when they do. It
drives Asterisk through logging proxies in the same asyncio loop (tests/realpbx/capture.py):
AMI as client -> proxy -> Asterisk, FastAGI as Asterisk -> proxy on 127.0.0.1:4573 (the port
the scratch dialplan names) -> the scripted FastAGI server here. tests/captures/README.md
describes the files and each case; the conformance tests (tests/test_agi_protocol.py,
test_ami_protocol.py, test_fake_agi_caller.py, test_fake_ami.py) read them through
tests/captures.py. Scenarios f and g need PJSIP in the build and SIPp (Debian's sip-tester)
for the phones, run by the SIP tier's tests/sippbx/sipp.py with the scenarios beside this
file (record_phone.xml, record_caller.xml). Nothing here runs in `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bridge.ami_protocol import Action, Event, Fields
from ivr.agi_protocol import Command, ConnectionClosed, Reply
from ivr.agi_session import READ_OUTCOME
from tests.fakepbx.script import Caller, HangUp, Press, Wait
from tests.realpbx.asterisk import ENV_KEEP, AmiLink, RealAsterisk, find_asterisk
from tests.realpbx.capture import CaptureLog, LoggingProxy
from tests.realpbx.dialplan import caller_id, caller_steps, dial_string, extension
from tests.realpbx.fastagi import AgiLink
from tests.realpbx.loopback import LoopbackServer
from tests.sippbx.sipp import Sipp, free_udp_port

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE.parent / "captures"
CTRL_USER, CTRL_SECRET = "ctrl", "ctrlsecret"
"""A scratch manager user of the recorder's Asterisk only (read=all, as the captures need)."""
AGI_PORT = 4573
"""The FastAGI port the scratch dialplan names; the logging proxy listens on it."""
CLOSED_PORT = 4599
"""A port where nothing listens (case a3)."""
CLINIC = '"Clinic" <15550001000>'
SETTLE_SECONDS = 0.8
"""Quiet time after a case's last channel is gone, so no event spills into the next case."""
CASE_SECONDS = 60.0

# ---- the scratch dialplan ------------------------------------------------------------------
SCRATCH_GLOBALS = {"CLINIC_CID": "15550001000", "DIALTIMEOUT": "30", "DIALOPTS": "",
                   "TALK": "10"}
"""Defaults an Originate Variable overrides per call (channel variables win over globals)."""

CALLERS = {
    "caller": Caller("15551230001", (Wait(3), Press("1"), Wait(2), Press("42#"), Wait(2),
                                     Press("7"), Wait(16), HangUp()), name="Pat Test"),
    "caller2": Caller("15551230002", (Wait(2), Press("9"), Wait(1.5), HangUp()),
                      name="Pat Two"),
    "caller3": Caller("15551230003", (Wait(20), HangUp()), name="Pat Three"),
    "reader": Caller("15551230004", (Wait(3), Press("5"), Wait(4.5), Press("#"), Wait(3),
                                     HangUp()), name="Pat Four"),
}


def _sees(party: str) -> str:
    """The phone tells AMI what caller id it was shown, so a leak is visible in the capture."""
    return (f"UserEvent(FakePhone,Party: {party},SeesCallerID: ${{CALLERID(all)}},"
            "Chan: ${CHANNEL})")


PHONES = {
    "doctor": [_sees("doctor"), "Ringing()", "Wait(2)", "Answer()", "Wait(${TALK})",
               "Hangup(16)"],
    "doctor-busy": ["Busy(10)"],
    "doctor-congestion": ["Congestion(10)"],
    "doctor-noanswer": ["Ringing()", "Wait(120)"],
    "doctor-via": ["Dial(Local/doctor@fake-phones,30)"],
    "patient": [_sees("patient"), 'Set(CALLERID(all)="Patient Private" <15557770001>)',
                "Ringing()", "Wait(1.5)", "Answer()", "Wait(4)", "Hangup(16)"],
    "patient-busy": ["Busy(10)"],
    "patient-congestion": ["Congestion(10)"],
    "patient-noanswer": ["Ringing()", "Wait(120)"],
    "patient-reject": ["Hangup(21)"],
    "patient-talks": [_sees("patient"), "Ringing()", "Wait(1.5)", "Answer()",
                      "Playback(hello-world&hello-world)", "Wait(2)", "Hangup(16)"],
}

CONTEXTS = {
    "ivr-entry": [
        ("s", ["NoOp(IVR entry on ${CHANNEL} uid=${UNIQUEID} cid=${CALLERID(all)})",
               f"AGI(agi://127.0.0.1:{AGI_PORT}/ivr?clinic=1,first arg,${{CALLERID(num)}},x=y)",
               "UserEvent(IvrDone,AgiStatus: ${AGISTATUS})", "Hangup()"]),
        ("ivr2", ["NoOp(IVR2 entry on ${CHANNEL})",
                  f"AGI(agi://127.0.0.1:{AGI_PORT}/ivr2?clinic=2)",
                  "UserEvent(IvrDone,AgiStatus: ${AGISTATUS})", "Hangup()"]),
        ("ivr-down", [f"AGI(agi://127.0.0.1:{CLOSED_PORT}/nobody)",
                      "UserEvent(IvrDone,AgiStatus: ${AGISTATUS})", "Hangup()"]),
        ("ivr3", [f"AGI(agi://127.0.0.1:{AGI_PORT}/ivr3?clinic=3)",
                  "UserEvent(IvrDone,AgiStatus: ${AGISTATUS},Choice: ${IVR_CHOICE})",
                  "Hangup()"]),
        ("read", [f"AGI(agi://127.0.0.1:{AGI_PORT}/read?clinic=5)",
                  "UserEvent(IvrDone,AgiStatus: ${AGISTATUS})", "Hangup()"]),
        ("h", ["NoOp(ivr-entry h-exten HANGUPCAUSE=${HANGUPCAUSE} AGISTATUS=${AGISTATUS})"]),
    ],
    "clinic-bridge": [
        ("s", ["NoOp(doctor answered on ${CHANNEL} - dialing patient ${PATIENT})",
               f"Set(CALLERID(all)={CLINIC})",
               "Dial(Local/${PATIENT}@fake-phones,${DIALTIMEOUT},${DIALOPTS})",
               "UserEvent(BridgeResult,DialStatus: ${DIALSTATUS},HangupCause: ${HANGUPCAUSE},"
               "DialedTime: ${DIALEDTIME},AnsweredTime: ${ANSWEREDTIME})",
               "Hangup()"]),
    ],
    "consult-hold": [
        ("s", ["NoOp(leg ${LEG} answered on ${CHANNEL})",
               "UserEvent(LegReady,Leg: ${LEG},Chan: ${CHANNEL})", "Playback(beep)", "Wait(40)",
               "UserEvent(LegAfterBridge,Leg: ${LEG},Chan: ${CHANNEL})", "Hangup()"]),
    ],
    "sim-hold": [("s", ["NoOp(leg on ${CHANNEL} answered)", "Answer()", "Wait(30)",
                        "Hangup()"])],
    "from-sip": [("s", ["Hangup()"])],
    "sip-ivr": [
        ("_X.", ["NoOp(SIP call to ${EXTEN} from ${CALLERID(all)}, state ${CHANNEL(state)})",
                 f"AGI(agi://127.0.0.1:{AGI_PORT}/sip-ivr?clinic=4)",
                 "UserEvent(IvrDone,AgiStatus: ${AGISTATUS})", "Hangup()"]),
    ],
    "fake-phones": [
        *((exten, ["NoOp(caller phone ${CHANNEL} sees ${CALLERID(all)})", *caller_steps(c)]
           if exten == "caller" else caller_steps(c)) for exten, c in CALLERS.items()),
        *PHONES.items(),
    ],
}


def scratch_dialplan() -> str:
    """The recorder's own contexts, laid out with the tier's extension() helper."""
    lines = ["; The capture recorder's scratch contexts (tests/realpbx/record.py)."]
    for context, extensions in CONTEXTS.items():
        lines += ["", f"[{context}]"]
        for exten, steps in extensions:
            lines += extension(exten, steps)
    return "\n".join(lines) + "\n"


CAPTURE_MODULES = (
    "res_timing_timerfd.so", "res_speech.so", "res_agi.so", "res_clioriginate.so",
    "pbx_config.so", "bridge_simple.so", "bridge_builtin_features.so",
    "bridge_builtin_interval_features.so", "bridge_holding.so", "codec_ulaw.so",
    "codec_alaw.so", "codec_gsm.so", "format_wav.so", "format_gsm.so", "format_pcm.so",
    "format_sln.so", "app_dial.so", "app_playback.so", "app_read.so", "app_senddtmf.so",
    "app_echo.so", "app_stack.so", "app_verbose.so", "app_userevent.so", "app_exec.so",
    "func_callerid.so", "func_channel.so", "func_strings.so", "func_logic.so", "func_cut.so",
    "func_math.so", "func_global.so", "func_hangupcause.so", "func_timeout.so", "func_env.so",
    "func_db.so", "func_rand.so",
)
"""The modules the replaced captures loaded: the build tests/realpbx/README.md describes
(nobat's own list lacks func_channel, and case a2 reads CHANNEL(state))."""
PJSIP_MODULES = (
    "res_sorcery_config.so", "res_sorcery_memory.so", "res_sorcery_astdb.so",
    "res_pjproject.so", "res_pjsip.so", "res_pjsip_session.so", "res_pjsip_pubsub.so",
    "chan_pjsip.so",
    "res_rtp_asterisk.so", "res_pjsip_sdp_rtp.so", "res_pjsip_caller_id.so",
    "res_pjsip_endpoint_identifier_user.so",
)


@dataclass(frozen=True)
class SipEndpoint:
    """A PJSIP endpoint of the recorder's Asterisk: a SIPp phone it dials, or a caller."""

    name: str
    context: str
    callerid: str | None = None
    contact_port: int | None = None

    def render(self) -> str:
        """Its endpoint (and aor, when Asterisk dials it) sections."""
        lines = []
        if self.contact_port is not None:
            lines += [f"[{self.name}]", "type=aor",
                      f"contact=sip:{self.name}@127.0.0.1:{self.contact_port}", ""]
        lines += [f"[{self.name}]", "type=endpoint", "transport=transport-udp",
                  f"context={self.context}", "disallow=all", "allow=ulaw",
                  "dtmf_mode=rfc4733", "direct_media=no", "trust_id_inbound=yes",
                  "send_pai=yes", "send_rpid=yes",
                  "media_address=127.0.0.1", "bind_rtp_to_media_address=yes"]
        if self.contact_port is not None:
            lines.append(f"aors={self.name}")
        if self.callerid is not None:
            lines.append(f"callerid={self.callerid}")
        return "\n".join(lines) + "\n"


def pjsip_conf(port: int, endpoints: Iterable[SipEndpoint]) -> str:
    """A loopback UDP transport and the scenario's endpoints."""
    head = ("[transport-udp]\ntype=transport\nprotocol=udp\n"
            f"bind=127.0.0.1:{port}\n")
    return "\n".join([head, *(e.render() for e in endpoints)])


@dataclass
class RecordingAsterisk(RealAsterisk):
    """The tier's Asterisk (its layout, start, stop and nobat's manager.conf) with the
    recorder's scratch dialplan, a `ctrl` manager user, its own module list, and optionally
    PJSIP endpoints; its layout survives a restart (cases c6, c7)."""

    sip_endpoints: tuple[SipEndpoint, ...] = ()
    sip_port: int = field(default_factory=lambda: free_udp_port("127.0.0.1"))

    def extensions_conf(self) -> str:
        """Only the scratch dialplan: a recording should not change with nobat's own."""
        extra = "".join(f"{name}={value}\n" for name, value in SCRATCH_GLOBALS.items())
        return f"[general]\nstatic=yes\nwriteprotect=yes\n\n[globals]\n{extra}\n" + (
            scratch_dialplan())

    def modules_conf(self) -> str:
        """The captures' own module list (not nobat's, which changes), plus PJSIP's for SIP
        phones: a recording should not depend on what nobat requires today."""
        wanted = [*CAPTURE_MODULES, *(PJSIP_MODULES if self.sip_endpoints else ())]
        return "\n".join(["[modules]", "autoload = no",
                          *(f"require = {name}" for name in wanted)]) + "\n"

    def layout(self) -> Path:
        """Lay the configuration out once; a restart reuses it."""
        conf = self.base / "etc" / "asterisk.conf"
        if conf.is_file():
            return conf
        conf = super().layout()
        with (conf.parent / "manager.conf").open("a", encoding="utf-8") as manager:
            manager.write(f"\n[{CTRL_USER}]\nsecret={CTRL_SECRET}\nread=all\nwrite=all\n")
        if self.sip_endpoints:
            (conf.parent / "pjsip.conf").write_text(
                pjsip_conf(self.sip_port, self.sip_endpoints), encoding="utf-8")
        return conf

    async def cli(self, command: str) -> str:
        """Run one CLI command through Asterisk's control socket (asterisk -rx)."""
        process = await asyncio.create_subprocess_exec(
            str(self.binary), "-C", str(self.layout()), "-rx", command,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(process.communicate(), 15)
        return out.decode(errors="replace")


# ---- the controller side of AMI -----------------------------------------------------------
class Controller:
    """An AMI client talking through the proxy: the tier's AmiLink, plus channel bookkeeping."""

    def __init__(self, link: AmiLink) -> None:
        self.link = link

    @classmethod
    async def login(cls, port: int, action_id: str, *, user: str = CTRL_USER,
                    secret: str = CTRL_SECRET) -> Controller:
        """Connect through the proxy and log in with the given ActionID."""
        controller = cls(await AmiLink.open(port))
        response = await controller.link.send(
            Action("Login", Fields.of(Username=user, Secret=secret), action_id))
        if response.status != "Success":
            raise RuntimeError(f"login refused: {response}")
        return controller

    def live(self) -> set[str]:
        """Channels that have a Newchannel event and no Hangup event yet."""
        alive: set[str] = set()
        for event in self.link.events():
            name = event.fields.get("Channel")
            if event.name == "Newchannel" and name:
                alive.add(name)
            elif event.name == "Hangup" and name:
                alive.discard(name)
        return alive

    async def settle(self, within: float = CASE_SECONDS) -> None:
        """Wait until every channel of the case is gone, then a little longer."""
        await self.link.wait_until(lambda: not self.live(), within=within,
                                   what="the end of every channel")
        await asyncio.sleep(SETTLE_SECONDS)

    async def event(self, name: str, within: float = CASE_SECONDS, **fields: str) -> Event:
        """Wait for an event (any so far) by name and fields."""
        return await self.link.wait_event(name, within=within, **fields)

    async def originated(self, action_id: str) -> Event:
        """The OriginateResponse of one Async Originate."""
        return await self.event("OriginateResponse", ActionID=action_id)

    async def logoff(self, action_id: str) -> None:
        """Log off, wait for Asterisk to close, then close our side."""
        await self.link.send(Action("Logoff", action_id=action_id))
        await self.link.wait_until(lambda: self.link.closed, what="Asterisk closing AMI")
        await self.link.close()


def originate(action_id: str, channel: str, *pairs: tuple[str, str],
              async_: bool = True) -> Action:
    """An Originate with the fields in the order given (Variable lines may repeat)."""
    fields = [("Channel", channel), *pairs, *((("Async", "true"),) if async_ else ())]
    return Action("Originate", Fields(tuple(fields)), action_id)


def into(context: str, exten: str = "s") -> tuple[tuple[str, str], ...]:
    """The Context/Exten/Priority fields of an Originate."""
    return (("Context", context), ("Exten", exten), ("Priority", "1"))


# ---- the FastAGI side: a scripted server --------------------------------------------------
@dataclass(frozen=True)
class Pause:
    """The controller thinks for a while before its next command."""

    seconds: float


@dataclass(frozen=True)
class AwaitHangup:
    """Wait for Asterisk's HANGUP line before going on."""


Step = Command | Pause | AwaitHangup


def commands(*items: str | Pause | AwaitHangup) -> list[Step]:
    """Command lines as sent on the wire (checked to round-trip through nobat's codec)."""
    steps: list[Step] = []
    for item in items:
        if isinstance(item, str):
            command = Command.parse(item)
            if command.encode() != f"{item}\n".encode():
                raise ValueError(f"{item!r} would not go out as written")
            steps.append(command)
        else:
            steps.append(item)
    return steps


OUTCOME = f"GET FULL VARIABLE {READ_OUTCOME}"
"""How nobat reads what a Read() got (ivr/agi_session.py)."""
FASTAGI_SCRIPTS: dict[str, list[Step]] = {
    "ivr": commands(
        "ANSWER", "GET VARIABLE PATIENT_ID", "GET VARIABLE NO_SUCH_VARIABLE",
        "GET FULL VARIABLE ${CALLERID(num)}|${CHANNEL}|${EXTEN}",
        'SET VARIABLE IVR_STAGE "menu one"', "GET VARIABLE IVR_STAGE",
        'STREAM FILE demo-congrats "0123456789*#"', "GET DATA beep 6000 4",
        "WAIT FOR DIGIT 6000", 'SAY DIGITS 123 ""', 'SAY NUMBER 42 ""',
        'SAY DATE 1700000000 ""', "EXEC Playback beep", "SET VARIABLE IVR_CHOICE 42",
        "GET DATA beep 2000 3", 'STREAM FILE no-such-prompt ""', "NO SUCH COMMAND", "GET DATA",
        "CHANNEL STATUS", 'STREAM FILE demo-instruct ""', AwaitHangup(), Pause(1.5),
        "GET VARIABLE IVR_CHOICE", 'STREAM FILE beep ""', "CHANNEL STATUS",
        "SET VARIABLE AFTER_HANGUP yes", "HANGUP"),
    "ivr2": commands("ANSWER", "GET DATA vm-enter-num-to-call 10000 4", AwaitHangup(),
                     Pause(1.0), "WAIT FOR DIGIT 1000", "GET VARIABLE CHANNEL(state)"),
    "ivr3": commands("ANSWER", 'STREAM FILE beep ""', "SET VARIABLE IVR_CHOICE 3"),
    # h1: Read() plays an '&' list and waits, as nobat's menus use it: a key during the
    # second file; a timeout; a missing first file skipped; a missing last file (ERROR); "#"
    # read as a key (option t: no terminator); a hang-up inside Read.
    "read": commands(
        "ANSWER", "EXEC Read NOBAT_KEY,beep&demo-congrats&beep,1,t,1,2", OUTCOME,
        "EXEC Read NOBAT_KEY,beep&beep,1,t,1,1", OUTCOME,
        "EXEC Read NOBAT_KEY,no-such-prompt&beep,1,t,1,0.001", OUTCOME,
        "EXEC Read NOBAT_KEY,beep&no-such-prompt,1,t,1,1", OUTCOME,
        "EXEC Read NOBAT_KEY,demo-instruct,1,t,1,5", OUTCOME,
        "EXEC Read NOBAT_KEY,demo-congrats,1,t,1,5", AwaitHangup(), OUTCOME),
    "sip-ivr": commands("CHANNEL STATUS", "GET VARIABLE CHANNEL(state)", 'STREAM FILE beep ""',
                        "ANSWER", "CHANNEL STATUS", "GET VARIABLE CHANNEL(state)",
                        'STREAM FILE beep ""', "HANGUP"),
}


class ScriptedFastAgi(LoopbackServer):
    """The controller's end of FastAGI: the script named by the AGI path, step by step."""

    def __init__(self, scripts: dict[str, list[Step]]) -> None:
        self.scripts = scripts
        self.finished: asyncio.Queue[str] = asyncio.Queue()

    async def session(self, within: float = CASE_SECONDS) -> str:
        """The script name of the next session that ended."""
        return await asyncio.wait_for(self.finished.get(), within)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        agi = AgiLink(reader, writer, CASE_SECONDS)
        env = await agi.environment()
        for step in self.scripts[env.script]:
            if isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, AwaitHangup):
                while not agi.hung_up:
                    await agi.next_event()
            else:
                await agi.send(step)
                while not isinstance(event := await agi.next_event(), Reply):
                    if isinstance(event, ConnectionClosed):
                        raise RuntimeError(f"Asterisk closed FastAGI during {step}")
        await agi.finish()  # the controller is done; Asterisk says HANGUP and closes
        writer.close()
        self.finished.put_nowait(env.script)


# ---- scenarios ------------------------------------------------------------------------------
@dataclass
class Recording:
    """Where the files go, and the Asterisk to run."""

    out: Path
    binary: Path
    version: str = ""

    def log(self, scenario: str) -> CaptureLog:
        """A new capture file's log; its clock starts now."""
        return CaptureLog(scenario, self.version)

    def asterisk(self, sip_endpoints: tuple[SipEndpoint, ...] = ()) -> RecordingAsterisk:
        """A not yet started Asterisk for one scenario."""
        return RecordingAsterisk(binary=self.binary, sip_endpoints=sip_endpoints)


def shown(exten: str) -> tuple[str, str]:
    """The CallerID field that presents one of the scripted callers."""
    caller = CALLERS[exten]
    return ("CallerID", caller_id(caller.number, caller.name) or "")


async def record_a(rec: Recording) -> None:
    """a_ivr: callers originated into [ivr-entry], whose AGI() reaches the scripted server."""
    await _refused(CLOSED_PORT)
    await _record_ivr(rec, "a_ivr", _record_a)


async def record_h(rec: Recording) -> None:
    """h_read: Read() over FastAGI, a menu's prompts and wait in one command."""
    await _record_ivr(rec, "h_read", _record_h)


async def _record_ivr(rec: Recording, name: str,
                      cases: Callable[[CaptureLog, int, ScriptedFastAgi], Awaitable[None]]
                      ) -> None:
    """Capture both links while `cases` call into [ivr-entry] through the AMI proxy."""
    async with rec.asterisk() as pbx, ScriptedFastAgi(FASTAGI_SCRIPTS) as agi:
        log = rec.log(name)  # its clock starts once Asterisk is up
        async with LoggingProxy(log, "agi", agi.port, asterisk_dials=True, port=AGI_PORT), \
                LoggingProxy(log, "ami", pbx.port, asterisk_dials=False) as ami:
            await cases(log, ami.port, agi)
    log.write(rec.out, f"{name}_agi", "agi")
    log.write(rec.out, f"{name}_ami", "ami")


async def _record_h(log: CaptureLog, port: int, agi: ScriptedFastAgi) -> None:
    """Case h1 on one AMI connection."""
    ctrl = await Controller.login(port, "read-1")
    log.mark("h1: Originate Local/reader@fake-phones -> ivr-entry,read,1 (AGI read?clinic=5)",
             "ami")
    log.mark("h1: Read() session (script read)", "agi")
    await ctrl.link.send(originate("h1-originate", dial_string("reader"),
                                   *into("ivr-entry", "read"), shown("reader")))
    assert await agi.session() == "read"
    await ctrl.originated("h1-originate")
    await ctrl.settle()
    log.mark("logoff", "ami")
    await ctrl.logoff("read-2")


async def _record_a(log: CaptureLog, port: int, agi: ScriptedFastAgi) -> None:
    """Cases a1-a4 on one AMI connection."""
    ctrl = await Controller.login(port, "ivr-1")

    async def call(case: str, exten: str, where: str, script: str | None,
                   *more: tuple[str, str]) -> None:
        action = originate(f"{case}-originate", dial_string(exten), *into("ivr-entry", where),
                           *more)
        await ctrl.link.send(action)
        if script is not None:
            assert await agi.session() == script
        await ctrl.originated(f"{case}-originate")
        await ctrl.settle()

    log.mark("a1: Originate Local/caller@fake-phones -> ivr-entry,s,1 (AGI ivr?clinic=1)",
             "ami")
    log.mark("a1: main IVR session (script ivr)", "agi")
    await call("a1", "caller", "s", "ivr", shown("caller"), ("Timeout", "30000"),
               ("Variable", "PATIENT_ID=777"))
    log.mark("a2: Originate Local/caller2@fake-phones -> ivr-entry,ivr2,1 (AGI ivr2?clinic=2)",
             "ami")
    log.mark("a2: IVR session (script ivr2), caller hangs up inside GET DATA", "agi")
    await call("a2", "caller2", "ivr2", "ivr2", shown("caller2"), ("Timeout", "30000"))
    log.mark(f"a3: Originate Local/caller2@fake-phones -> ivr-entry,ivr-down,1 (AGI to "
             f"closed port {CLOSED_PORT})", "ami")
    await call("a3", "caller2", "ivr-down", None)
    log.mark("a4: Originate Local/caller3@fake-phones -> ivr-entry,ivr3,1 (AGI ivr3, server "
             "closes, dialplan continues)", "ami")
    log.mark("a4: IVR session (script ivr3), server ends the session while the channel is "
             "up", "agi")
    await call("a4", "caller3", "ivr3", "ivr3", shown("caller3"))
    log.mark("logoff", "ami")
    await ctrl.logoff("ivr-2")


def bridge_call(case: str, appt: int, doctor: str, *variables: str, timeout: str = "30000",
                async_: bool = True, channel_id: bool = False) -> Action:
    """A doctor leg originated into [clinic-bridge], which then dials the patient."""
    ids = ((("ChannelId", f"appt-{appt}-doctor"), ("OtherChannelId", f"appt-{appt}-doctor-2"))
           if channel_id else ())
    return originate(f"{case}-appt-{appt}", dial_string(doctor), *into("clinic-bridge"),
                     ("CallerID", CLINIC), ("Timeout", timeout),
                     *(("Variable", v) for v in variables), *ids, async_=async_)


async def record_b(rec: Recording, pbx: RecordingAsterisk) -> None:
    """b_bridge: one doctor leg originated, [clinic-bridge] dials the patient; every outcome."""
    log = rec.log("b_bridge")
    async with LoggingProxy(log, "ami", pbx.port, asterisk_dials=False) as ami:
        ctrl = await Controller.login(ami.port, "sched-1")

        async def case(note: str, action: Action, during: Callable[[], Awaitable[None]] | None
                       = None) -> None:
            log.mark(note)
            response = await ctrl.link.send(action, within=CASE_SECONDS)
            if during is not None:
                await during()
            if action.fields.get("Async") == "true":
                await ctrl.originated(action.action_id or "")
            elif response.status != "Success":
                print(f"  {action.action_id}: {response.message}", file=sys.stderr)
            await ctrl.settle()

        async def listings() -> None:
            await ctrl.event("BridgeEnter", BridgeNumChannels="2")
            await asyncio.sleep(0.5)
            await ctrl.link.list_action(Action("CoreShowChannels", action_id="sched-2"))
            await ctrl.link.list_action(Action("BridgeList", action_id="sched-3"))

        async def hang_up_while_ringing() -> None:
            doctor = (await ctrl.originated("b12-appt-1014")).fields["Channel"]
            await asyncio.sleep(2.0)  # the patient rings on
            await ctrl.link.send(Action("Hangup", Fields.of(Channel=doctor, Cause="16"),
                                        "sched-4"))
            await ctrl.link.send(Action("Hangup", Fields.of(
                Channel="Local/doesnotexist@fake-phones-deadbeef;1"), "sched-5"))

        await case("b1: doctor answers, then Dial(Local/patient) from clinic-bridge; patient "
                   "answers; patient hangs up after 4 s",
                   bridge_call("b1", 1001, "doctor", "PATIENT=patient", channel_id=True),
                   listings)
        await case("b1i: as b1 but Dial option I (ignore connected line updates)",
                   bridge_call("b1i", 1002, "doctor", "PATIENT=patient", "DIALOPTS=I"))
        await case("b2: patient leg Busy()",
                   bridge_call("b2", 1003, "doctor", "PATIENT=patient-busy"))
        await case("b3: patient leg rings, never answers; Dial timeout 6 s",
                   bridge_call("b3", 1004, "doctor", "PATIENT=patient-noanswer",
                               "DIALTIMEOUT=6"))
        await case("b4: patient leg Congestion()",
                   bridge_call("b4", 1005, "doctor", "PATIENT=patient-congestion"))
        await case("b5: patient leg rejects: Hangup(21) before answer",
                   bridge_call("b5", 1006, "doctor", "PATIENT=patient-reject"))
        await case("b6: Originate Application=Dial Data=Local/patient@fake-phones,30",
                   originate("b6-appt-1007", dial_string("doctor"), ("Application", "Dial"),
                             ("Data", "Local/patient@fake-phones,30"), ("CallerID", CLINIC),
                             ("Timeout", "30000")))
        await case("b7: doctor leg Busy()",
                   bridge_call("b7", 1008, "doctor-busy", "PATIENT=patient"))
        await case("b8: doctor leg rings, never answers; Originate Timeout=5000",
                   bridge_call("b8", 1009, "doctor-noanswer", "PATIENT=patient",
                               timeout="5000"))
        await case("b9: doctor leg Congestion()",
                   bridge_call("b9", 1010, "doctor-congestion", "PATIENT=patient"))
        await case("b10: doctor leg: no such extension (Local/nobody@fake-phones)",
                   bridge_call("b10", 1011, "nobody", "PATIENT=patient"))
        await case("b11: synchronous Originate (no Async) to a busy doctor",
                   bridge_call("b11", 1012, "doctor-busy", "PATIENT=patient", async_=False))
        await case("b11ok: synchronous Originate (no Async) that succeeds",
                   bridge_call("b11ok", 1013, "doctor", "PATIENT=patient", async_=False))
        await case("b12: controller hangs up the doctor leg while patient rings (AMI Hangup)",
                   bridge_call("b12", 1014, "doctor", "PATIENT=patient-noanswer",
                               "DIALTIMEOUT=30"), hang_up_while_ringing)
        await case("b13: doctor hangs up first (doctor TALK=2 s after answering; bridge starts "
                   "~1.5 s after)", bridge_call("b13", 1015, "doctor", "PATIENT=patient",
                                                "TALK=2"))
        await case("b14: doctor via extra Local hop (doctor-via -> Dial(Local/doctor)): Local "
                   "optimization events",
                   bridge_call("b14", 1016, "doctor-via", "PATIENT=patient"))
        await case("b15: as b14 but the patient plays audio after answering (patient-talks): "
                   "Local optimization",
                   bridge_call("b15", 1017, "doctor-via", "PATIENT=patient-talks"))
        log.mark("logoff")
        await ctrl.logoff("sched-6")
    log.write(rec.out, "b_bridge_ami")


def hold_leg(case: str, leg: str, exten: str) -> Action:
    """One consultation leg originated into [consult-hold], as nobat's dialer does."""
    return originate(f"{case}-orig-{leg}", dial_string(exten), *into("consult-hold"),
                     ("CallerID", CLINIC), ("Timeout", "30000"),
                     ("ChannelId", f"{case}-{leg}"), ("OtherChannelId", f"{case}-{leg}-2"),
                     ("Variable", f"LEG={leg}"))


async def record_e(rec: Recording, pbx: RecordingAsterisk) -> None:
    """e_simultaneous: both legs originated at once into [consult-hold], then Action: Bridge."""
    log = rec.log("e_simultaneous")
    async with LoggingProxy(log, "ami", pbx.port, asterisk_dials=False) as ami:
        ctrl = await Controller.login(ami.port, "e-login")

        async def both(case: str, doctor: str, patient: str) -> None:
            ctrl.link.send_nowait(hold_leg(case, "doctor", doctor))
            ctrl.link.send_nowait(hold_leg(case, "patient", patient))
            for leg in ("doctor", "patient"):
                await ctrl.link.response(f"{case}-orig-{leg}")

        def legs_ready(leg: str) -> list[Event]:
            return [e for e in ctrl.link.events("UserEvent")
                    if e.fields.get("UserEvent") == "LegReady" and e.fields.get("Leg") == leg]

        async def ready(leg: str, count: int = 1) -> str:
            """The ;1 channel of the count-th leg of this name to reach the holding context."""
            await ctrl.link.wait_until(lambda: len(legs_ready(leg)) >= count,
                                       within=CASE_SECONDS, what=f"LegReady {leg}")
            return legs_ready(leg)[count - 1].fields["Chan"]

        log.mark("e1: both answer (doctor after 2 s, patient after 1.5 s), Bridge action; patient "
                 "hangs up after 4 s")
        await both("e1", "doctor", "patient")
        doctor, patient = await ready("doctor"), await ready("patient")
        bridged = await ctrl.link.send(Action("Bridge", Fields.of(
            [("Channel1", doctor), ("Channel2", patient), ("Tone", "no")]), "e1-bridge"))
        assert bridged.status == "Success", bridged
        await asyncio.sleep(1.0)
        await ctrl.link.list_action(Action("CoreShowChannels", action_id="e1-csc"))
        await ctrl.settle()

        async def one_fails(case: str, note: str, doctor: str, patient: str,
                            survivor: str) -> None:
            """The other leg fails; `survivor` answered and waits until the controller hangs
            it up."""
            log.mark(note)
            await both(case, doctor, patient)
            channel = await ready(survivor, 2)
            failed = "patient" if survivor == "doctor" else "doctor"
            await ctrl.originated(f"{case}-orig-{failed}")
            await ctrl.link.send(Action("Hangup", Fields.of(Channel=channel, Cause="16"),
                                        f"{case}-hangup-survivor"))
            await ctrl.settle()

        await one_fails("e2", "e2: patient busy; doctor answered and waits; controller hangs "
                        "the doctor leg up", "doctor", "patient-busy", "doctor")
        await one_fails("e3", "e3: doctor leg congestion; patient answered and waits; "
                        "controller hangs the patient leg up", "doctor-congestion", "patient",
                        "patient")
        await ctrl.logoff("e-logoff")
    log.write(rec.out, "e_simultaneous")


async def record_b_and_e(rec: Recording) -> None:
    """b and e share one Asterisk, as the captures they replace did."""
    async with rec.asterisk() as pbx:
        await record_b(rec, pbx)
        await record_e(rec, pbx)


async def _refused(port: int) -> None:
    """Make sure nothing listens where a case needs a refused connection."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    writer.close()
    raise RuntimeError(f"something listens on 127.0.0.1:{port}; case a3 needs it closed")


async def probe(log: CaptureLog, port: int, started: float, *, within: float = 30.0) -> None:
    """Connect straight to AMI (not through the proxy) until the banner comes; note the first
    refusal and the banner with the time since `started`, as a client would see them."""
    loop = asyncio.get_running_loop()
    refused = False
    while loop.time() - started < within:
        at = loop.time() - started
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            if not refused:
                log.mark(f"direct probe to AMI at +{at:.3f}s after trigger: "
                         f"{exc.__class__.__name__}: errno={exc.errno} {exc.strerror}")
                refused = True
            await asyncio.sleep(0.005)
            continue
        try:
            banner = await asyncio.wait_for(reader.readline(), 5)
        finally:
            writer.close()
        if banner:
            log.mark(f"direct probe to AMI at +{at:.3f}s after trigger: connected, banner "
                     f"{banner!r}")
            return
        await asyncio.sleep(0.005)
    raise RuntimeError("AMI did not come back")


async def record_c(rec: Recording) -> None:
    """c_ami_errors: refusals, errors in a session, and the three ways AMI goes away."""
    loop = asyncio.get_running_loop()
    async with rec.asterisk() as pbx:
        log = rec.log("c_ami_errors")
        await _record_c(log, pbx, loop)
    log.write(rec.out, "c_ami_errors")


async def _record_c(log: CaptureLog, pbx: RecordingAsterisk,
                    loop: asyncio.AbstractEventLoop) -> None:
    """Cases c1-c7 on one Asterisk, restarted and killed on the way."""
    async with LoggingProxy(log, "ami", pbx.port, asterisk_dials=False) as ami:

        async def refused_login(note: str, *actions: Action) -> None:
            log.mark(note)
            link = await AmiLink.open(ami.port)
            for action in actions:
                await link.send(action)
            await link.wait_until(lambda: link.closed, what="Asterisk closing AMI")
            await link.close()
            await ami.idle()
            await asyncio.sleep(0.3)

        await refused_login("c1: Ping before Login, then Login with wrong password",
                            Action("Ping", action_id="c1-1"),
                            Action("Login", Fields.of(Username=CTRL_USER, Secret="WRONG"),
                                   "c1-2"))
        await refused_login("c2: Login with unknown username",
                            Action("Login", Fields.of(Username="nosuchuser", Secret="x"),
                                   "c2-1"))

        log.mark("c3: logged in; unknown action, Originate missing Channel, Getvar on missing "
                 "channel, Getvar of a global, Ping, Events off, Ping without ActionID")
        ctrl = await Controller.login(ami.port, "c3-1")
        for action in (Action("NoSuchAction", action_id="c3-2"),
                       Action("Originate", Fields.of(Exten="s"), "c3-3"),
                       Action("Getvar", Fields.of(Channel="Local/none@x-00000000;1",
                                                  Variable="FOO"), "c3-4"),
                       Action("Getvar", Fields.of(Variable="CLINIC_CID"), "c3-5"),
                       Action("Ping", action_id="c3-6"),
                       Action("Events", Fields.of(EventMask="off"), "c3-7"),
                       Action("Ping", action_id="c3-8")):
            await ctrl.link.send(action)
        ctrl.link.send_nowait(Action("Ping"))
        await ctrl.link.response(None)
        await asyncio.sleep(0.3)
        await ctrl.logoff("c3-9")
        await ami.idle()
        await asyncio.sleep(0.3)

        async def goes_away(ctrl: Controller, trigger: Callable[[], Awaitable[None]]) -> float:
            await asyncio.sleep(0.3)
            started = loop.time()
            await trigger()
            await ctrl.link.wait_until(lambda: ctrl.link.closed, what="AMI closing",
                                       within=30)
            await ctrl.link.close()
            await ami.idle()
            return started

        log.mark("c5: logged-in client; 'core restart now' via CLI (asterisk -rx)")
        pid = pbx.pid
        ctrl = await Controller.login(ami.port, "c5-1")

        async def restart_now() -> None:
            await pbx.cli("core restart now")

        started = await goes_away(ctrl, restart_now)
        await probe(log, pbx.port, started)
        again = await Controller.login(ami.port, "c5b-1")  # as soon as AMI is back
        await again.event("FullyBooted")
        await again.logoff("c5b-2")
        await ami.idle()
        alive = pbx.process is not None and pbx.process.returncode is None
        print(f"  c5: pid {pid} still running after core restart: {alive}", file=sys.stderr)
        await asyncio.sleep(0.5)

        log.mark("c6: logged-in client; SIGKILL of the Asterisk PID; then start it again")
        ctrl = await Controller.login(ami.port, "c6-1")

        async def kill() -> None:
            assert pbx.process is not None
            pbx.process.kill()
            await pbx.process.wait()

        await goes_away(ctrl, kill)
        await asyncio.sleep(0.3)
        try:
            await asyncio.open_connection("127.0.0.1", pbx.port)
            log.mark("c6: direct probe to AMI while down: connected (unexpected)")
        except OSError as exc:
            log.mark(f"c6: direct probe to AMI while down: {exc.__class__.__name__}: "
                     f"errno={exc.errno} {exc.strerror}")
        await _start_and_probe(log, pbx)
        again = await Controller.login(ami.port, "c6b-1")
        await again.logoff("c6b-2")
        await ami.idle()
        await asyncio.sleep(0.5)

        log.mark("c7: logged-in client; SIGTERM of the Asterisk PID; then start it again")
        ctrl = await Controller.login(ami.port, "c7-1")

        async def terminate() -> None:
            assert pbx.process is not None
            pbx.process.send_signal(signal.SIGTERM)

        await goes_away(ctrl, terminate)
        assert pbx.process is not None
        await asyncio.wait_for(pbx.process.wait(), 30)
        await asyncio.sleep(1.5)
        await _start_and_probe(log, pbx)


async def _start_and_probe(log: CaptureLog, pbx: RecordingAsterisk) -> None:
    """Start Asterisk again, probing AMI from the moment it is launched."""
    started = asyncio.get_running_loop().time()
    probing = asyncio.create_task(probe(log, pbx.port, started))
    await pbx.start()
    await probing


SIP_DOCTOR = ("doctor", "15559990001", "Dr Doctor")
SIP_PATIENT = ("patient", "15557770002", "Patient")
SIP_CALLER = ("caller", "15551230009", "Pat Sip")
SUMMARY_HEADERS = ("From", "To", "P-Asserted-Identity", "Remote-Party-ID")


def sipp(scenario: str, scratch: Path, who: tuple[str, str, str], *options: str,
         remote: str | None = None) -> Sipp:
    """One call of a recorder's SIPp scenario (beside this file), as `who` (name, number,
    display name); a SIPp left waiting gives up after two minutes."""
    name, number, display = who
    return Sipp(HERE / scenario, "127.0.0.1", scratch, name, remote,
                {"number": number, "display": display, "user": name},
                ("-m", "1", "-timeout", "120s", *options))


def sip_summary(phones: dict[str, Sipp]) -> dict[str, list[dict[str, str]]]:
    """What each SIP phone received: each message's first line and identity headers (the
    dialog tags, random in each run, left out)."""
    summary: dict[str, list[dict[str, str]]] = {}
    for name, phone in phones.items():
        summary[name] = []
        for message in phone.messages():
            if message.received:
                fields = {"received": message.method or message.start_line.split(" ", 1)[1]}
                for key, value in message.headers:
                    if key in SUMMARY_HEADERS:
                        fields[key] = re.sub(r";tag=[^;]*", "", value)
                summary[name].append(fields)
    return summary


async def record_f_and_g(rec: Recording, scratch: Path) -> None:
    """f: two SIPp phones dialled over PJSIP and bridged; g: a SIPp caller reaching FastAGI."""
    doctor, patient = (sipp("record_phone.xml", scratch, who, "-d", "1000")  # rings 1 s
                       for who in (SIP_DOCTOR, SIP_PATIENT))
    endpoints = (
        *(SipEndpoint(name, "from-sip", f'"{display}" <{number}>', phone.port)
          for phone, (name, number, display) in ((doctor, SIP_DOCTOR), (patient, SIP_PATIENT))),
        SipEndpoint("caller", "sip-ivr"),
    )
    pbx = rec.asterisk(sip_endpoints=endpoints)
    caller = sipp("record_caller.xml", scratch, SIP_CALLER, "-s", "02188776655",
                  remote=f"127.0.0.1:{pbx.sip_port}")
    try:
        async with pbx, ScriptedFastAgi(FASTAGI_SCRIPTS) as agi:
            for phone in (doctor, patient):
                await phone.start()
            await asyncio.sleep(0.5)
            flog = rec.log("f_sip_connected_line")
            async with LoggingProxy(flog, "ami", pbx.port, asterisk_dials=False) as ami:
                await _record_f(flog, ami.port, pbx)
            for phone in (doctor, patient):
                await phone.wait_ended(CASE_SECONDS)
            glog = rec.log("g_sip_ivr")
            async with LoggingProxy(glog, "agi", agi.port, asterisk_dials=True, port=AGI_PORT), \
                    LoggingProxy(glog, "ami", pbx.port, asterisk_dials=False) as ami:
                await _record_g(glog, ami.port, agi, caller)
    finally:
        for phone in (doctor, patient, caller):
            await phone.stop()
    flog.write(rec.out, "f_sip_connected_line")
    _write_json(rec.out / "f_sip_connected_line_summary.json",
                {"f1": sip_summary({"doctor": doctor, "patient": patient})})
    glog.write(rec.out, "g_sip_ivr_agi", "agi")
    glog.write(rec.out, "g_sip_ivr_ami", "ami")
    _write_json(rec.out / "g_sip_ivr_summary.json", {"g1": sip_summary({"caller": caller})})


async def _record_f(log: CaptureLog, port: int, pbx: RecordingAsterisk) -> None:
    """f1: the actions go out at once, before the banner, as a hurried controller sends them;
    afterwards both legs are hung up on a connection of nobat's user, not recorded."""
    log.mark("f1: PJSIP/doctor and PJSIP/patient (SIPp phones; endpoints trust_id_inbound=yes; "
             "each phone's 200 OK carries its own PAI/RPID) originated at once into [sim-hold] "
             f"with CallerID {CLINIC}, then Action: Bridge")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    link = AmiLink(reader, writer)
    link.send_nowait(Action("Login", Fields.of(Username=CTRL_USER, Secret=CTRL_SECRET,
                                               Events="call")))
    for number, (name, *_) in enumerate((SIP_DOCTOR, SIP_PATIENT)):
        link.send_nowait(originate(f"o{number}", f"PJSIP/{name}", *into("sim-hold"),
                                   ("CallerID", CLINIC), ("Timeout", "15000")))
    ctrl = Controller(link)
    answered = [await ctrl.originated(action_id) for action_id in ("o0", "o1")]
    if any(e.fields.get("Response") != "Success" for e in answered):
        raise RuntimeError(f"a SIP phone did not answer: {answered}")
    doctor, patient = (e.fields["Channel"] for e in answered)
    await link.send(Action("Bridge", Fields.of(
        [("Channel1", doctor), ("Channel2", patient), ("Tone", "no")]), "b"))
    await asyncio.sleep(6.0)
    await link.close()
    direct = await pbx.connect()
    for channel in (doctor, patient):
        await direct.send(Action("Hangup", Fields.of(Channel=channel)))
    await direct.close()


async def _record_g(log: CaptureLog, port: int, agi: ScriptedFastAgi, caller: Sipp) -> None:
    """g1: a SIP caller whose call reaches FastAGI unanswered; the script answers it."""
    ctrl = await Controller.login(port, "g-login")
    log.mark("g1: SIPp caller INVITEs 02188776655 through endpoint caller (trust_id_inbound=yes, "
             "P-Asserted-Identity 15551230009) into [sip-ivr], whose AGI() reaches the script "
             "sip-ivr before anything answered the call")
    await caller.start()
    assert await agi.session() == "sip-ivr"
    await caller.wait_ended(CASE_SECONDS)
    await ctrl.settle()
    log.mark("logoff", "ami")
    await ctrl.logoff("g-logoff")


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


async def asterisk_version(binary: Path) -> str:
    """"22.10.1" from `asterisk -V`."""
    process = await asyncio.create_subprocess_exec(str(binary), "-V",
                                                   stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    return out.decode().strip().removeprefix("Asterisk ")


SCENARIOS = {"a": record_a, "b+e": record_b_and_e, "c": record_c, "h": record_h}


async def record(out: Path, only: list[str], scratch: Path) -> None:
    """Run the chosen scenarios (all by default) and write their files into `out`."""
    rec = Recording(out, find_asterisk())
    rec.version = await asterisk_version(rec.binary)
    for name, scenario in SCENARIOS.items():
        if not only or name in only:
            print(f"recording {name} ...", file=sys.stderr)
            await scenario(rec)
    if not only or "f+g" in only:
        print("recording f+g ...", file=sys.stderr)
        await record_f_and_g(rec, scratch)


def main(argv: list[str] | None = None) -> None:
    """Record into OUT_DIR (tests/captures/ by default)."""
    parser = argparse.ArgumentParser(prog="python -m tests.realpbx.record",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=OUT_DIR)
    parser.add_argument("--only", action="append", default=[],
                        choices=[*SCENARIOS, "f+g"], help="record just these scenarios")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="nobat-record-"))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(record(args.out, args.only, scratch))
    finally:
        if not os.environ.get(ENV_KEEP):
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
