"""The shipped Asterisk configuration, checked as an administrator would rely on it:
asterisklint finds nothing in any file, and the names nobat's code and config.toml use
(contexts, extensions, channel variables, endpoints, the AMI user) are the ones the files
define, and the other way round."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bridge.ami_protocol import Action, Event, Fields
from bridge.consultation_call import PROMPTS, ConsultationCall
from bridge.live_channels import READY_VARIABLE
from bridge.outbound import CallPlan, Effect, SendAction
from bridge.patient_call import PatientCallAttempt
from clinic.call_kinds import Leg
from clinic.phones import national
from db.consultations import Claim, DueConsultation, RetryPolicy
from db.patient_calls import DuePatientCall, PatientCallClaim, Purpose
from ivr.agi_session import RESULT_VARIABLE, SESSION_VARIABLE, TRANSFER_VARIABLE
from ivr.fastagi_gate import SECRET_ARGUMENT
from nobat.config import load_config
from nobat.ivr_wiring import IVR_ROUTE, PATIENT_CALL_ROUTE
from protocol.call_token import TOKEN_ARGUMENT, TOKEN_VARIABLE
from tests.fakepbx.channels import NOBAT_HOLD_SECONDS

ROOT = Path(__file__).resolve().parents[1]
ASTERISK = ROOT / "asterisk"
ASTERISK_SETS = frozenset({"CHANNEL", "EXTEN", "AGISTATUS", "BRIDGERESULT"})
"""Variables Asterisk itself provides to the dialplan nobat ships."""
CLINIC_IDENTITY = frozenset({"NOBAT_CLINIC_NUMBER", "NOBAT_CLINIC_NAME"})
"""The identity the dialer sends with every leg, and [globals] holds for the office's calls."""
JUMPS = (r"CONNECTED_LINE_SEND_SUB=([\w-]+),([^,)]+),",
         r"(?:Goto|Gosub)\(([\w-]+),([^,)]+),[^)]+\)",
         r"Bridge\([^,]+,F\(([\w-]+)\^([^^]+)\^")
"""(context, extension) targets in the dialplan: a subroutine, a jump, a bridge's F()."""
LOCAL_GOTO = r"Goto\(([^,()]+),[^,()]+\)"
"""Goto(extension,priority): a jump within the same context."""
LINT_CONFIG = """\
import sys
from asterisklint import FileConfigParser
from asterisklint.defines import MessageDefManager
parser = FileConfigParser()
parser.include(sys.argv[1])
for _ in parser:
    pass
sys.exit(1 if any(not m[0].muted for m in MessageDefManager.raised.values()) else 0)
"""


@dataclass
class Dialplan:
    """Contexts with their extensions, and the variables the dialplan reads and sets."""

    contexts: dict[str, list[str]] = field(default_factory=dict)
    reads: dict[str, set[str]] = field(default_factory=dict)
    sets: set[str] = field(default_factory=set)
    globals: dict[str, str] = field(default_factory=dict)
    named: set[str] = field(default_factory=set)
    """Contexts the dialplan itself sends calls to (Goto, Gosub, CONNECTED_LINE_SEND_SUB, F())."""
    jumps: dict[str, set[str]] = field(default_factory=dict)
    """Extensions, by context, the dialplan itself sends calls to (also within a context)."""


def sections(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(section, its lines without comments), in file order."""
    name, lines = "", []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(";", 1)[0].rstrip()
        header = re.fullmatch(r"\[([^\]]+)\].*", line)
        if header:
            if name:
                yield name, lines
            name, lines = header.group(1), []
        elif line.strip():
            lines.append(line.strip())
    if name:
        yield name, lines


def read_dialplan() -> Dialplan:
    plan = Dialplan()
    for name, lines in sections(ASTERISK / "extensions.conf"):
        if name == "globals":
            plan.globals = dict(line.split("=", 1) for line in lines)
            continue
        if name == "general":
            continue
        plan.contexts[name] = [m.group(1) for line in lines
                               if (m := re.match(r"exten\s*=>\s*([^,]+),", line))]
        body = "\n".join(lines)
        plan.reads[name] = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", body))
        plan.sets |= set(re.findall(r"Set\(([A-Z_][A-Z0-9_]*)=", body))
        targets = [(name, exten) for exten in re.findall(LOCAL_GOTO, body)]
        for pattern in JUMPS:
            found = re.findall(pattern, body)
            plan.named |= {context for context, _ in found}
            targets += found
        for context, exten in targets:
            plan.jumps.setdefault(context, set()).add(exten)
    return plan


def matches(pattern: str, exten: str) -> bool:
    """Asterisk's extension matching: literal, or "_" with X Z N [..] . ! as Asterisk reads them."""
    if not pattern.startswith("_"):
        return pattern == exten
    rules = {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]", ".": ".+", "!": ".*"}
    regex, rest = "", pattern[1:]
    while rest:
        if rest[0] == "[":
            end = rest.index("]")
            regex, rest = regex + rest[: end + 1], rest[end + 1:]
        else:
            regex, rest = regex + rules.get(rest[0], re.escape(rest[0])), rest[1:]
    return re.fullmatch(regex, exten) is not None


def pjsip_objects() -> dict[str, dict[str, dict[str, str]]]:
    """pjsip.conf's objects by type, then name: their settings."""
    objects: dict[str, dict[str, dict[str, str]]] = {}
    for name, lines in sections(ASTERISK / "pjsip.conf"):
        settings = dict(line.split("=", 1) for line in lines)
        objects.setdefault(settings["type"], {})[name] = settings
    return objects


@dataclass
class DialerUse:
    """What nobat's dialer sends Asterisk, found by running its call logic."""

    contexts: dict[str, set[str]] = field(default_factory=dict)
    variables: set[str] = field(default_factory=set)

    def add(self, effects: list[Effect]) -> None:
        for effect in effects:
            if not isinstance(effect, SendAction):
                continue
            fields = effect.action.fields
            if "Context" in fields:
                self.contexts.setdefault(fields.get("Context") or "", set()).add(
                    fields.get("Exten") or "")
            for assignment in fields.getall("Variable"):
                self.variables.add(assignment.split("=", 1)[0])


def dialer_use() -> DialerUse:
    """Run the consultation logic through both answering, and through each failure kind
    that leaves a party waiting, and ring a patient for each purpose, collecting every
    context, extension and variable."""
    start = dt.datetime(2026, 11, 28, 8, tzinfo=dt.UTC)
    booked = DueConsultation(7, 70, start, "dialling", 1, start,
                             start + dt.timedelta(minutes=10), "dr-1", "دکتر", "Dr",
                             "+989121000001", "+989351110001", "fa", 1, "021", "Clinic")
    use = DialerUse()
    for attempt, policy in ((1, RetryPolicy(attempts=3)), (3, RetryPolicy(attempts=3))):
        for waiting in (*Leg, None):
            claim = Claim(booked, attempt=attempt, instance="nobat-1",
                          lease=dt.timedelta(minutes=1), lease_until=start)
            call = ConsultationCall(claim, CallPlan("PJSIP/{number}@clinic-trunk", "021",
                                                    "Clinic"), policy)
            use.add(call.start())
            for leg in Leg:
                if waiting is None or leg is waiting:
                    use.add(call.on_event(Event("UserEvent", Fields.of(
                        UserEvent="NobatLegReady", Leg=str(leg), Consultation="7",
                        Uniqueid=claim.channel_id(leg), Chan=f"PJSIP/{leg}-1")), start))
            if waiting is not None:
                other = Leg.PATIENT if waiting is Leg.DOCTOR else Leg.DOCTOR
                use.add(call.on_event(Event("OriginateResponse", Fields.of(
                    ActionID=claim.channel_id(other), Response="Failure", Reason="5")), start))
            else:
                use.add(call.on_refused(Action("Bridge"), "gone", start))
    for purpose in Purpose:
        due = DuePatientCall(9, 70, purpose, "", start, start, "dialling", 1, None, start,
                             "booked", 1, "+989351110001", "fa", False, 1, "021", "Clinic",
                             "Asia/Tehran")
        claim = PatientCallClaim(due, attempt=1, instance="nobat-1",
                                 lease=dt.timedelta(minutes=1), lease_until=start)
        use.add(PatientCallAttempt(claim, CallPlan("PJSIP/{number}@clinic-trunk", "021",
                                               "Clinic"), lambda claim, now: None).start())
    return use


def lint_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", LINT_CONFIG, str(path)], capture_output=True,
                          text=True, cwd=path.parent, check=False)


def test_asterisklint_finds_nothing_in_the_dialplan() -> None:
    lint = Path(sys.executable).with_name("asterisklint")
    result = subprocess.run([str(lint), "dialplan-check", "extensions.conf"], cwd=ASTERISK,
                            capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("name", ["manager.conf", "modules.conf", "pjsip.conf"])
def test_asterisklint_finds_nothing_in_the_other_files(name: str) -> None:
    result = lint_config(ASTERISK / name)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_asterisklint_would_catch_a_mistake(tmp_path: Path) -> None:
    (tmp_path / "manager.conf").write_text("[general]\nenabled = yes\n")
    result = lint_config(tmp_path / "manager.conf")
    assert result.returncode == 1 and "W_WSH_VARSET" in result.stderr


def test_every_context_extension_and_variable_the_dialer_uses_is_in_the_dialplan() -> None:
    plan, use = read_dialplan(), dialer_use()
    for context, extens in use.contexts.items():
        assert context in plan.contexts, context
        for exten in extens:
            assert any(matches(p, exten) for p in plan.contexts[context]), (context, exten)
    told = use.contexts["nobat-consult-end"]
    reasons = {key.removeprefix("consult/") for key in PROMPTS}
    assert told <= reasons and {"doctor-unavailable", "patient-unavailable-final"} <= told
    dialer_reads = set().union(*(plan.reads[c] for c in plan.contexts
                                 if c.startswith("nobat-consult")
                                 or c in ("nobat-mask-connected-line", "nobat-patient-call")))
    # Every variable the dialer sets is read there, and every one read there is set by
    # the dialer, the dialplan itself, [globals], Asterisk or nobat's AGI session.
    assert use.variables <= dialer_reads
    assert dialer_reads <= (use.variables | plan.sets | set(plan.globals) | ASTERISK_SETS
                            | {TRANSFER_VARIABLE})


def test_the_ivr_entry_uses_what_nobat_sets_and_serves() -> None:
    plan = read_dialplan()
    ivr = plan.reads["nobat-ivr"]
    assert {SESSION_VARIABLE, RESULT_VARIABLE, TRANSFER_VARIABLE} <= ivr
    assert ivr <= {SESSION_VARIABLE, RESULT_VARIABLE, TRANSFER_VARIABLE} | plan.sets | set(
        plan.globals) | ASTERISK_SETS
    text = (ASTERISK / "extensions.conf").read_text()
    assert f"AGI(agi://${{NOBAT_FASTAGI}}/{IVR_ROUTE}?" in text
    assert f"AGI(agi://${{NOBAT_FASTAGI}}/{PATIENT_CALL_ROUTE}?" in text
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    [classic] = re.findall(r"AGI\(([\w-]+),", text)
    assert classic in scripts


def test_every_request_to_nobat_carries_the_secret_and_calls_it_dialled_their_token() -> None:
    plan = read_dialplan()
    text = (ASTERISK / "extensions.conf").read_text()
    requests = re.findall(r"AGI\((agi://\$\{NOBAT_FASTAGI\}/[^)]*)\)", text)
    assert len(requests) == 3
    for request in requests:
        assert request.endswith(f",{SECRET_ARGUMENT}=${{NOBAT_FASTAGI_SECRET}}"), request
        if f"/{PATIENT_CALL_ROUTE}?" in request:
            assert f",{TOKEN_ARGUMENT}=${{{TOKEN_VARIABLE}}}," in request, request
    assert plan.globals["NOBAT_FASTAGI_SECRET"] == ""  # shipped without, like the AMI one


def test_config_toml_and_the_asterisk_files_name_the_same_things() -> None:
    config = load_config(ROOT / "config.toml", {})
    plan, pjsip = read_dialplan(), pjsip_objects()
    endpoints = pjsip["endpoint"]
    trunk = re.fullmatch(r"PJSIP/\{\w+\}@([\w-]+)", config.consultations.dial)
    assert trunk is not None and trunk.group(1) in endpoints
    assert config.ivr.office == plan.globals["NOBAT_OFFICE"] == "PJSIP/office"
    assert "office" in endpoints
    assert plan.globals["NOBAT_FASTAGI"] == f"{config.fastagi.host}:{config.fastagi.port}"
    manager = dict(sections(ASTERISK / "manager.conf"))
    assert config.ami.username in manager
    general = dict(line.split("=", 1) for line in manager["general"])
    assert (general["bindaddr"], int(general["port"])) == (config.ami.host, config.ami.port)


def test_every_context_is_entered_from_somewhere() -> None:
    plan, use = read_dialplan(), dialer_use()
    entered = set(use.contexts) | plan.named | {
        settings["context"] for settings in pjsip_objects()["endpoint"].values()}
    assert set(plan.contexts) == entered


def dialled_in() -> dict[str, set[str]]:
    """The number each registered trunk's calls arrive on (its DID), by the endpoint's context."""
    pjsip = pjsip_objects()
    return {pjsip["endpoint"][name]["context"]: {registration["contact_user"]}
            for name, registration in pjsip["registration"].items()}


def reached(plan: Dialplan, use: DialerUse) -> dict[str, set[str]]:
    """Extensions calls are sent to, by context: by the dialer (Originate, Redirect), by the
    dialplan's own jumps, and by the carrier (the DID)."""
    found: dict[str, set[str]] = {}
    for source in (use.contexts, plan.jumps, dialled_in()):
        for context, extens in source.items():
            found.setdefault(context, set()).update(extens)
    return found


def test_every_extension_nobat_drives_is_reached_and_every_jump_lands() -> None:
    # The other way round from the dialer's test: no extension in nobat's contexts is dead.
    # [clinic-office] is left out: its extension is whatever number the office phone dials.
    plan = read_dialplan()
    entries = reached(plan, dialer_use())
    for context, patterns in plan.contexts.items():
        if context.startswith("nobat-"):
            for pattern in patterns:
                assert any(matches(pattern, exten) for exten in entries.get(context, ())), (
                    context, pattern)
    for context, extens in plan.jumps.items():
        for exten in extens:
            assert any(matches(p, exten) for p in plan.contexts[context]), (context, exten)


def test_the_office_context_reads_only_the_clinic_identity_nobat_sends() -> None:
    # An office phone's own call carries no Originate variable and runs no AGI: what
    # [clinic-office] reads comes from [globals] or Asterisk, and the identity it shows
    # is under the same names the dialer sends, so one setting serves both.
    plan, use = read_dialplan(), dialer_use()
    office = plan.reads["clinic-office"]
    assert office <= set(plan.globals) | ASTERISK_SETS
    assert office - ASTERISK_SETS == CLINIC_IDENTITY
    assert CLINIC_IDENTITY <= use.variables
    config = load_config(ROOT / "config.toml", {})
    trunk = re.fullmatch(r"PJSIP/\{\w+\}@([\w-]+)", config.consultations.dial)
    body = "\n".join(dict(sections(ASTERISK / "extensions.conf"))["clinic-office"])
    assert trunk is not None and f"@{trunk.group(1)}," in body
    [pattern] = plan.contexts["clinic-office"]
    assert all(matches(pattern, national(number)) for number in ("+989121234567", "+982188776655"))


def test_every_global_is_read_somewhere() -> None:
    plan = read_dialplan()
    assert set(plan.globals) <= set().union(*plan.reads.values())


def required_modules() -> set[str]:
    """The modules asterisk/modules.conf makes Asterisk refuse to start without."""
    [(_, lines)] = list(sections(ASTERISK / "modules.conf"))
    return {line.split("=", 1)[1].strip() for line in lines if line.startswith("require")}


PJSIP_MODULES: dict[tuple[str, str | None], set[str]] = {
    ("transport", None): {"res_pjsip.so", "res_pjproject.so", "res_sorcery_config.so",
                          "res_sorcery_memory.so", "res_sorcery_astdb.so"},
    ("endpoint", None): {"chan_pjsip.so", "res_pjsip_session.so", "res_pjsip_pubsub.so",
                         "res_pjsip_sdp_rtp.so", "res_rtp_asterisk.so"},
    ("endpoint", "trust_id_inbound"): {"res_pjsip_caller_id.so"},
    ("endpoint", "send_pai"): {"res_pjsip_caller_id.so"},
    ("endpoint", "auth"): {"res_pjsip_authenticator_digest.so",
                           "res_pjsip_endpoint_identifier_user.so"},
    ("endpoint", "outbound_auth"): {"res_pjsip_outbound_authenticator_digest.so"},
    ("identify", None): {"res_pjsip_endpoint_identifier_ip.so"},
    ("registration", None): {"res_pjsip_outbound_registration.so"},
    ("aor", "max_contacts"): {"res_pjsip_registrar.so"},
}
"""What a pjsip.conf object (or one of its settings) needs loaded to work at all."""


def test_modules_conf_requires_every_module_the_shipped_pjsip_conf_relies_on() -> None:
    # Autoload would load them too, but a module that fails to load would leave the trunk
    # dead (no caller id by P-Asserted-Identity, no digest auth) while Asterisk starts happily.
    needed: set[str] = set()
    for kind, objects in pjsip_objects().items():
        for settings in objects.values():
            for (wanted_kind, setting), modules in PJSIP_MODULES.items():
                if wanted_kind == kind and (setting is None or setting in settings):
                    needed |= modules
    assert "res_pjsip_caller_id.so" in needed
    assert needed <= required_modules(), needed - required_modules()


def test_the_trunk_takes_no_connected_line_updates_and_sends_none() -> None:
    pjsip = pjsip_objects()
    config = load_config(ROOT / "config.toml", {})
    trunk_name = re.fullmatch(r"PJSIP/\{\w+\}@([\w-]+)", config.consultations.dial)
    assert trunk_name is not None
    trunk = pjsip["endpoint"][trunk_name.group(1)]
    # The caller's number still comes in by P-Asserted-Identity, the clinic's goes out so;
    # answering phones' identities neither cross to the other party nor go out as updates.
    assert (trunk["trust_id_inbound"], trunk["send_pai"]) == ("yes", "yes")
    assert (trunk["trust_connected_line"], trunk["send_connected_line"]) == ("no", "no")
    assert {auth["auth_type"] for auth in pjsip["auth"].values()} == {"digest"}


def test_the_fake_holds_a_leg_as_long_as_the_shipped_dialplan() -> None:
    """The dialer's fake rigs wait on nobat's hold as long as the real one would."""
    assert float(read_dialplan().globals["NOBAT_HOLD_SECONDS"]) == NOBAT_HOLD_SECONDS


def test_the_hold_marks_a_leg_ready_just_before_it_says_so() -> None:
    """nobat reads NOBAT_LEG_READY to resume an attempt whose NobatLegReady it missed."""
    text = (ROOT / "asterisk" / "extensions.conf").read_text(encoding="utf-8")
    hold = text.split("\n[nobat-consult-hold]\n", 1)[1].split("\n[", 1)[0]
    steps = [line.strip() for line in hold.splitlines() if line.strip().startswith("same =>")]
    ready = steps.index(f"same => n,Set({READY_VARIABLE}=1)")
    assert steps[ready + 1].startswith("same => n,UserEvent(NobatLegReady,")
