"""AMI against a real Asterisk 22: a consultation bridged as nobat's dialer does it.

Both legs are originated at once into nobat's [nobat-consult-hold] (Async, our own
ActionIDs, a ChannelId per leg, the clinic's caller id); once both report NobatLegReady the
doctor leg is redirected into [nobat-consult-bridge], whose Bridge(peer,xL(...)) pulls the
patient in, warns both and ends the call at its limit, unless one side hangs up first.
Asterisk's log shows which prompt played on which line. The fake phones assert their own numbers
when they answer (as a trusting PJSIP trunk does), so a leak would show: no event on a
party's channels may ever carry the other party's number.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import wave
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bridge.ami_protocol import Action, Event, Fields
from bridge.consultation_call import ConsultationCall
from bridge.outbound import CallPlan, SendAction
from db.consultations import Claim, DueConsultation
from tests.fakepbx.script import Answers, Phone
from tests.realpbx.asterisk import SHIPPED, AmiLink, RealAsterisk
from tests.realpbx.dialplan import FakePhones, caller_id, dial_string
from tests.realpbx.test_real_agi import AgiRun, FastAgiServer, send

CLINIC_NUMBER = "15550001000"
CLINIC_NAME = "Clinic"
DOCTOR = Phone("doctor", "15559990001", Answers(after=2.0), name="Dr Doctor")
PATIENT = Phone("patient", "15557770002", Answers(after=1.5, talk=6.0), name="Patient")
WARN_MS = 2000
PROMPTS = ("starting-doctor", "starting-patient", "ending-soon", "time-up")
PLAYING = re.compile(r"<Local/(?P<chan>\w+)@[^>]+> Playing '[^']*/(?P<file>[a-z-]+)\.\w+'")
IDENTITY_FIELDS = ("ConnectedLineNum", "ConnectedLineName", "CallerIDNum", "CallerIDName")


def originate_leg(phone: Phone, consultation: str, leg: str, sounds: Path,
                  survey: str = "off") -> Action:
    """The Originate nobat's dialer sends for one leg."""
    channel_id = f"{consultation}-{leg}"
    peer = (("Variable", f"NOBAT_PEER={consultation}-patient,NOBAT_WARN_MS={WARN_MS}"),
            ("Variable", f"NOBAT_SURVEY={survey}"))
    return Action("Originate", Fields((
        ("Channel", dial_string(phone.exten)),
        ("Context", "nobat-consult-hold"),
        ("Exten", "s"),
        ("Priority", "1"),
        ("CallerID", caller_id(CLINIC_NUMBER, CLINIC_NAME) or ""),
        ("Timeout", "30000"),
        ("ChannelId", channel_id),
        ("OtherChannelId", f"{channel_id}-2"),
        ("Variable", f"LEG={leg},CONSULTATION={consultation}"),
        ("Variable", f"NOBAT_CLINIC_NUMBER={CLINIC_NUMBER},NOBAT_CLINIC_NAME={CLINIC_NAME}"),
        ("Variable", f"NOBAT_ANNOUNCE={sounds}/starting-{leg},NOBAT_SOUNDS={sounds}"),
        *(peer if leg == "doctor" else ()),
        ("Async", "true"),
    )), f"{consultation}-orig-{leg}")


def consult_sounds(folder: Path) -> Path:
    """Short prompt files where NOBAT_SOUNDS points, so Asterisk's log shows what played."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in PROMPTS:
        with wave.open(str(folder / f"{name}.wav"), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(8000)
            out.writeframes(b"\x00\x10" * 4000)  # half a second
    return folder


@dataclass
class Consultation:
    """What one bridged consultation showed on AMI and in Asterisk's log."""

    events: list[Event]
    channels: dict[str, str]  # leg -> the ;1 channel name
    redirect_response: str
    show_channels: list[Event]
    played: list[tuple[str, str]]  # (channel, prompt) in the order Asterisk played them


async def run_consultation(pbx: RealAsterisk, limit_ms: int = 60_000,
                           consultation: str = "c1", survey: str = "off") -> Consultation:
    """Both legs at once; when both are ready the doctor leg goes to [nobat-consult-bridge]
    for `limit_ms`; then wait until both legs are gone."""
    ami = await pbx.connect()
    sounds = consult_sounds(pbx.base / "consult-sounds")
    ami.send_nowait(originate_leg(DOCTOR, consultation, "doctor", sounds, survey))
    ami.send_nowait(originate_leg(PATIENT, consultation, "patient", sounds, survey))
    for leg in ("doctor", "patient"):
        queued = await ami.response(f"{consultation}-orig-{leg}")
        assert queued.status == "Success" and queued.message == "Originate successfully queued"
    channels = {}
    for leg in ("doctor", "patient"):
        answered = await ami.wait_event("OriginateResponse", within=20,
                                        ActionID=f"{consultation}-orig-{leg}")
        assert answered.fields["Response"] == "Success" and answered.fields["Reason"] == "4"
        assert answered.fields["Uniqueid"] == f"{consultation}-{leg}"
        channels[leg] = answered.fields["Channel"]
        await ami.wait_event("UserEvent", within=20, UserEvent="NobatLegReady", Leg=leg,
                             Consultation=consultation)
    redirected = await ami.send(Action("Redirect", Fields.of(
        Channel=channels["doctor"], Context="nobat-consult-bridge", Exten=str(limit_ms),
        Priority="1")))
    for leg in ("doctor", "patient"):
        await ami.wait_event("BridgeEnter", Uniqueid=f"{consultation}-{leg}")
    _, shown = await ami.list_action(Action("CoreShowChannels", action_id="c-show"))
    for leg in ("patient", "doctor"):
        await ami.wait_event("Hangup", within=30, Uniqueid=f"{consultation}-{leg}")
    await asyncio.sleep(0.3)
    played = [(m["chan"], m["file"]) for m in PLAYING.finditer(pbx.read_log(tail=400))]
    return Consultation(ami.events(), channels, f"{redirected.status}: {redirected.message}",
                        shown, played)


def leaks(events: Iterable[Event]) -> list[str]:
    """Every identity field that shows one party the other party's number or name."""
    other = {DOCTOR.exten: PATIENT, PATIENT.exten: DOCTOR}
    found = []
    for event in events:
        channel = event.fields.get("Channel") or ""
        match = re.match(r"Local/(\w+)@fake-phones", channel)
        if not match or match.group(1) not in other:
            continue
        party = other[match.group(1)]
        for key in IDENTITY_FIELDS:
            value = event.fields.get(key)
            if value in (party.number, party.name):
                found.append(f"{event.name} on {channel}: {key}={value}")
    return found


def connected_lines(events: Iterable[Event]) -> list[tuple[str, str, str]]:
    return [(e.fields["Channel"], e.fields["ConnectedLineNum"], e.fields["ConnectedLineName"])
            for e in events if e.name == "NewConnectedLine"]


def channel_shapes(events: Iterable[Event]) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """Per channel ("doctor;1", "patient;2", ...): each event's name and field names, in order.

    This is what a fake PBX must reproduce. OriginateResponse is left out: the captures show
    it before or after the leg's next events from run to run (correlate by ActionID).
    """
    shapes: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for event in events:
        match = re.match(r"Local/(\w+)@fake-phones-[0-9a-f]{8}(;[12])",
                         event.fields.get("Channel") or "")
        if match and event.name != "OriginateResponse":
            fields = tuple(key for key, _ in event.fields)
            shapes.setdefault(match.group(1) + match.group(2), []).append((event.name, fields))
    return shapes


# Comparing with the fake PBX (tests/fakepbx/ami_server.py) is one call once it runs nobat's
# [nobat-consult-hold] (UserEvents NobatLegReady/NobatLegDone, the masking); today it runs
# the captures' [consult-hold] (UserEvent LegReady). Then, in the first test below:
#     fake = await run_consultation(await login_to(FakeAsterisk(users=..., phones=[...])))
#     assert channel_shapes(fake.events) == channel_shapes(result.events)


def phones(reasserts_after: float | None = None) -> FakePhones:
    fake = FakePhones(reasserts_after=reasserts_after)
    fake.add_phone(DOCTOR)
    fake.add_phone(PATIENT)
    return fake


async def test_consultation_is_bridged_and_both_numbers_stay_masked(
    asterisk_binary: Path,
) -> None:
    async with RealAsterisk(phones=phones(), binary=asterisk_binary) as pbx:
        result = await run_consultation(pbx)
    for line in connected_lines(result.events):
        print("NewConnectedLine", line)
    print(result.redirect_response, result.played)
    assert leaks(result.events) == []
    assert leaks(result.show_channels) == []
    # Every connected line a leg's phone is given is the clinic's.
    given = {(num, name) for chan, num, name in connected_lines(result.events)
             if chan.endswith(";1")}
    assert given == {(CLINIC_NUMBER, CLINIC_NAME)}
    # The survivor left the bridge, fell through the hold and ended itself.
    done = [e for e in result.events if e.name == "UserEvent"
            and e.fields.get("UserEvent") == "NobatLegDone"]
    assert [(e.fields["Leg"], e.fields["Bridged"]) for e in done] == [("doctor", "yes")]
    names = [e.name for e in result.events]
    assert names.count("BridgeEnter") == 2 and names.count("BridgeLeave") == 2
    assert "BridgeDestroy" in names
    shapes = channel_shapes(result.events)
    print("\n".join(f"{chan}: {[name for name, _ in seq]}" for chan, seq in shapes.items()))
    assert set(shapes) == {"doctor;1", "doctor;2", "patient;1", "patient;2"}


async def test_the_bridge_warns_both_parties_and_ends_at_the_booked_time(
    asterisk_binary: Path,
) -> None:
    talking = FakePhones()
    talking.add_phone(Phone("doctor", DOCTOR.number, Answers(after=1.0), name="Dr Doctor"))
    talking.add_phone(Phone("patient", PATIENT.number, Answers(after=0.5), name="Patient"))
    async with RealAsterisk(phones=talking, binary=asterisk_binary) as pbx:
        result = await run_consultation(pbx, limit_ms=5000)
    print(result.played)
    # Each party heard its announcement on answering, then, in the bridge, the warning
    # 2 s before the limit and the time-up prompt at it; then Asterisk ended both legs.
    assert sorted(result.played[:2]) == [("doctor", "starting-doctor"),
                                         ("patient", "starting-patient")]
    assert sorted(result.played[2:4]) == [("doctor", "ending-soon"), ("patient", "ending-soon")]
    assert sorted(result.played[4:]) == [("doctor", "time-up"), ("patient", "time-up")]
    hangups = {e.fields["Uniqueid"]: e.fields["Cause"] for e in result.events
               if e.name == "Hangup"}
    assert hangups["c1-doctor"] == hangups["c1-patient"] == "16"
    done = [e.fields for e in result.events if e.fields.get("UserEvent") == "NobatLegDone"]
    assert [(d["Leg"], d["Bridged"]) for d in done] == [("doctor", "yes")]
    entered = [e.fields["Uniqueid"] for e in result.events if e.name == "BridgeEnter"]
    assert sorted(entered) == ["c1-doctor", "c1-patient"]  # the pulled-in leg keeps its id


async def test_with_the_in_call_survey_the_patient_stays_for_it_when_the_doctor_leaves(
    asterisk_binary: Path,
) -> None:
    run, result = await surveyed_consultation(asterisk_binary, doctor_talks=4.0)
    check_survey(run, result, doctor_done=False)  # the doctor's line is gone: no dialplan


async def test_with_the_in_call_survey_the_patient_stays_for_it_when_the_time_is_up(
    asterisk_binary: Path,
) -> None:
    run, result = await surveyed_consultation(asterisk_binary, limit_ms=5000)
    assert sorted(result.played[4:6]) == [("doctor", "time-up"), ("patient", "time-up")]
    check_survey(run, result, doctor_done=True)  # Bridge() returned on the doctor leg


async def surveyed_consultation(binary: Path, doctor_talks: float | None = None,
                                limit_ms: int = 60_000) -> tuple[AgiRun, Consultation]:
    """A consultation with the in-call survey, the doctor hanging up after `doctor_talks`
    (or staying to the limit); a FastAGI server in the test takes the patient's survey."""
    fake = FakePhones()
    fake.add_phone(Phone("doctor", DOCTOR.number, Answers(after=1.0, talk=doctor_talks),
                         "Dr Doctor"))
    fake.add_phone(Phone("patient", PATIENT.number, Answers(after=0.5), name="Patient"))
    async with FastAgiServer([send("STREAM FILE", "beep", "")]) as server:
        pbx = RealAsterisk(phones=fake, binary=binary,
                           globals={"NOBAT_FASTAGI": f"127.0.0.1:{server.port}"})
        async with pbx:
            result = await run_consultation(pbx, limit_ms=limit_ms, survey="in-call")
        return await server.session(), result


def check_survey(run: AgiRun, result: Consultation, doctor_done: bool) -> None:
    """The patient leg, out of the bridge, reached nobat's FastAGI from [nobat-consult-survey]
    under its own ChannelId; the doctor leg ran on in its dialplan if it was still up."""
    env = run.environment
    assert env is not None
    assert (env.script, env.query) == ("patient-call", {"survey": "in-call"})
    assert (env.uniqueid, env.context) == ("c1-patient", "nobat-consult-survey")
    assert [raw.split(" endpos")[0] for _, raw in run.replies()] == ["200 result=0"]
    done = [e.fields for e in result.events if e.fields.get("UserEvent") == "NobatLegDone"]
    assert [(d["Leg"], d["Bridged"]) for d in done] == ([("doctor", "yes")] if doctor_done
                                                         else [])
    hangups = [e.fields["Uniqueid"] for e in result.events if e.name == "Hangup"
               and e.fields["Uniqueid"] in ("c1-doctor", "c1-patient")]
    assert hangups == ["c1-doctor", "c1-patient"]  # the patient outlives the doctor


async def test_identity_asserted_again_in_the_bridge_never_reaches_the_other_phone(
    asterisk_binary: Path,
) -> None:
    # Both phones assert their numbers again 3 s into the call, while bridged (a re-INVITE
    # with P-Asserted-Identity). The bridge forwards that to the other leg, where
    # CONNECTED_LINE_SEND_SUB rewrites it before the phone gets it.
    async with RealAsterisk(phones=phones(reasserts_after=3.0), binary=asterisk_binary) as pbx:
        result = await run_consultation(pbx)
    found = leaks(result.events)
    print("\n".join(found))
    # What reaches a phone: the ;2 half's caller id, and the connected line left on ;1.
    assert [f for f in found if ";2:" in f] == []
    final = {}
    for chan, num, name in connected_lines(result.events):
        final[chan] = (num, name)
    assert {v for c, v in final.items() if c.endswith(";1")} == {(CLINIC_NUMBER, CLINIC_NAME)}
    # On AMI, the ;1 half's connected line shows the forwarded identity while the
    # subroutine rewrites it (Asterisk writes the update into the channel before running
    # the subroutine); nothing else does.
    assert found and all(";1: ConnectedLine" in f for f in found)


MASKING_LINES = (
    " same => n,Set(CONNECTED_LINE_SEND_SUB=nobat-mask-connected-line,s,1)\n",
    " same => n,Set(CALLERID(name)=${NOBAT_CLINIC_NAME})\n",
    " same => n,Set(CALLERID(num)=${NOBAT_CLINIC_NUMBER})\n",
)


def without(*lines: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        for line in lines:
            assert line in text, line
            text = text.replace(line, "")
        return text

    return edit


async def test_without_the_masking_the_real_asterisk_leaks_both_numbers(
    asterisk_binary: Path,
) -> None:
    # The control: take the masking out of nobat's dialplan and the same scenario shows each
    # party the other's number, as capture f showed over PJSIP.
    async with RealAsterisk(phones=phones(), binary=asterisk_binary,
                            edit_extensions=without(*MASKING_LINES)) as pbx:
        result = await run_consultation(pbx)
    found = leaks(result.events)
    print("\n".join(found))
    assert any(DOCTOR.number in f and "Local/patient" in f and ";2:" in f for f in found)
    assert any(PATIENT.number in f and "Local/doctor" in f and ";2:" in f for f in found)


async def test_resetting_the_caller_id_alone_does_not_mask_a_reasserted_identity(
    asterisk_binary: Path,
) -> None:
    # Without CONNECTED_LINE_SEND_SUB, an identity asserted during the bridge reaches the
    # other phone: the subroutine, not the caller-id reset, is what keeps it out.
    async with RealAsterisk(phones=phones(reasserts_after=3.0), binary=asterisk_binary,
                            edit_extensions=without(MASKING_LINES[0])) as pbx:
        result = await run_consultation(pbx)
    found = leaks(result.events)
    print("\n".join(found))
    assert any(DOCTOR.number in f and "Local/patient" in f and ";2:" in f for f in found)


async def test_nobat_manager_user_has_what_the_dialer_needs_and_no_more(
    asterisk_binary: Path,
) -> None:
    fake = FakePhones()
    fake.add_phone(Phone("doctor", "15559990001", Answers(after=0.2)))
    async with RealAsterisk(phones=fake, binary=asterisk_binary) as pbx:
        ami = await pbx.connect()
        sounds = consult_sounds(pbx.base / "consult-sounds")
        ami.send_nowait(originate_leg(fake.phones["doctor"], "p1", "doctor", sounds))
        up = await ami.wait_event("UserEvent", within=10, UserEvent="NobatLegReady")
        chan = up.fields["Chan"]
        allowed = [
            Action("Setvar", Fields.of(Channel=chan, Variable="NOBAT_X", Value="1")),
            Action("Getvar", Fields.of(Channel=chan, Variable="NOBAT_X")),
            Action("Status", Fields.of(Channel=chan)),
            Action("CoreShowChannels"),
            Action("Ping"),
            Action("Redirect", Fields.of(Channel=chan, Context="nobat-consult-hold", Exten="s",
                                         Priority="1")),
        ]
        for action in allowed:
            response = await ami.send(action)
            assert response.status == "Success", (action.name, response)
        got = await ami.send(Action("Getvar", Fields.of(Channel=chan, Variable="NOBAT_X")))
        assert got.fields.get("Value") == "1"
        forbidden = "Originate Access Forbidden: app or data blacklisted"
        denied = [
            (Action("Command", Fields.of(Command="core show channels")), "Permission denied"),
            (Action("Reload"), "Permission denied"),
            (Action("ModuleLoad", Fields.of(Module="app_echo.so", LoadType="load")),
             "Permission denied"),
            (Action("DBPut", Fields.of(Family="x", Key="y", Val="z")), "Permission denied"),
            (Action("Getvar", Fields.of(Channel=chan, Variable="SHELL(id)")), None),
            (Action("Originate", Fields.of(Channel=dial_string("doctor"), Application="System",
                                           Data="id", Async="true")), forbidden),
        ]
        for action, message in denied:
            response = await ami.send(action)
            print(action.name, response)
            assert response.status == "Error", (action.name, response)
            assert message is None or response.message == message, (action.name, response)
        hung = await ami.send(Action("Hangup", Fields.of(Channel=chan, Cause="16")))
        assert (hung.status, hung.message) == ("Success", "Channel Hungup")
        wrong = await AmiLink.open(pbx.port)
        try:
            refused = await wrong.login("nobat", "CHANGE-ME")
            assert (refused.status, refused.message) == ("Error", "Authentication failed")
        finally:
            await wrong.close()


async def test_only_ami_on_loopback_listens(asterisk_binary: Path) -> None:
    """modules.conf loads PJSIP, but with no pjsip.conf (this tier has none) it opens no SIP
    transport: the one listener is AMI on loopback. The only other sockets are the UDP ones
    pjproject's DNS resolver binds to ask the system's nameservers: one per address family,
    on the wildcard address and an ephemeral port, as any DNS client's."""
    async with RealAsterisk(binary=asterisk_binary) as pbx:
        sockets = pbx.listening()
    assert [s for s in sockets if not s.startswith("udp ")] == [f"tcp 127.0.0.1:{pbx.port}"]
    low, high = ephemeral_ports()
    resolver = [s.removeprefix("udp ").rsplit(":", 1) for s in sockets if s.startswith("udp ")]
    assert sorted(host for host, _ in resolver) in ([], ["0.0.0.0", "[::]"]), sockets
    assert all(low <= int(port) <= high for _, port in resolver), sockets


def ephemeral_ports() -> tuple[int, int]:
    """The range the kernel picks a socket's port from when it binds to port 0."""
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


async def test_as_shipped_no_one_logs_in_as_nobat_until_the_admin_sets_a_secret(
    asterisk_binary: Path,
) -> None:
    async with RealAsterisk(binary=asterisk_binary, secret=None) as pbx:
        for guess in ("", "CHANGE-ME", "nobat"):
            link = await AmiLink.open(pbx.port)
            try:
                refused = await link.login("nobat", guess)
                assert (refused.status, refused.message) == ("Error", "Authentication failed")
            finally:
                await link.close()


def test_shipped_manager_conf_has_no_secret_and_stays_on_loopback() -> None:
    text = (SHIPPED / "manager.conf").read_text()
    assert not re.search(r"(?m)^\s*secret\s*=", text)
    assert re.search(r"(?m)^bindaddr=127\.0\.0\.1$", text)
    assert re.search(r"(?m)^permit=127\.0\.0\.1/255\.255\.255\.255$", text)
    assert re.search(r"(?m)^write=call,originate,reporting$", text)


async def test_a_clinic_name_with_quotes_and_a_comma_reaches_the_dialplan_whole(
    asterisk_binary: Path,
) -> None:
    """nobat's own Originate of a doctor leg, for a clinic called `Dr. "Ali", Clinic`:
    Asterisk splits Variable headers at commas and drops quotes unless escaped, and the
    hold context sets the leg's CALLERID(name) from NOBAT_CLINIC_NAME."""
    name = 'Dr. "Ali", Clinic'
    now = dt.datetime.now(dt.UTC)
    booked = DueConsultation(9, 90, now, "dialling", 1, now, now + dt.timedelta(minutes=5),
                             "dr-ali", "دکتر علی", "Dr Ali", DOCTOR.number, PATIENT.number, "fa",
                             1, CLINIC_NUMBER, name)
    claim = Claim(booked, attempt=1, instance="nobat-1", lease=dt.timedelta(minutes=1),
                  lease_until=now + dt.timedelta(minutes=1))
    plan = CallPlan("Local/{exten}@fake-phones", CLINIC_NUMBER, name,
                    address=lambda number: {"exten": {DOCTOR.number: DOCTOR.exten,
                                                      PATIENT.number: PATIENT.exten}[number]})
    [doctor_leg] = [effect.action for effect in ConsultationCall(claim, plan).start()
                    if isinstance(effect, SendAction)
                    and effect.action.fields.get("ChannelId", "").endswith("-doctor")]
    async with RealAsterisk(phones=phones(), binary=asterisk_binary) as pbx:
        ami = await pbx.connect()
        assert (await ami.send(doctor_leg)).status == "Success"
        answered = await ami.wait_event("OriginateResponse", within=20,
                                        ActionID=doctor_leg.action_id or "")
        channel = answered.fields["Channel"]
        await ami.wait_event("UserEvent", within=20, UserEvent="NobatLegReady", Leg="doctor")
        shown = {}
        for variable in ("NOBAT_CLINIC_NAME", "CALLERID(name)", "NOBAT_CLINIC_NUMBER"):
            reply = await ami.send(Action("Getvar", Fields.of(Channel=channel,
                                                               Variable=variable)))
            shown[variable] = reply.fields.get("Value")
        await ami.send(Action("Hangup", Fields.of(Channel=channel, Cause="16")))
    assert shown == {"NOBAT_CLINIC_NAME": name, "CALLERID(name)": name,
                     "NOBAT_CLINIC_NUMBER": CLINIC_NUMBER}
