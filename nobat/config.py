"""config.toml: read strictly, secrets from the environment, every mistake named by file and key."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from clinic import phones
from clinic.calendar import Weekday
from clinic.call_times import (
    COUNTS,
    SURVEY_MODES,
    is_quiet,
    parse_no_call_days,
    parse_quiet_hours,
)
from clinic.office import (
    OFFICE_HOURS_FORMAT,
    OfficeWeek,
    parse_dial_target,
    parse_office_hours,
)
from clinic.schedule import parse_clock
from clinic.staff_toml import KeyPath, Problem, StaffToml, dotted, in_range, one_of
from db.booking import BookingPolicy
from ivr.fastagi_gate import LOOPBACK, Network, networks
from web.settings import LOOPBACK_NAMES
from web.token_strength import requirement, weakness

DEFAULT_PATH = Path("config.toml")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
FASTAGI_SECRET = re.compile(r"[A-Za-z0-9_-]{16,128}")


class Secret:
    """A value that never shows itself in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the value, at the one place that must send it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True)
class ServerConfig:
    """What `nobat serve` loads and how it logs."""

    clinic_file: Path | None
    log_level: str
    log_format: str


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the booking store lives; the URL may hold a password, so it stays out of reprs."""

    url: str = field(repr=False)
    pool_size: int
    busy_timeout_seconds: float = 30.0
    """How long a SQLite write waits for another process's lock before it fails."""

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for logs and the status page."""
        return make_url(self.url).render_as_string(hide_password=True)


@dataclass(frozen=True)
class WebConfig:
    """The status page's address, token, the names it answers to and its sessions."""

    host: str
    port: int
    token: Secret
    token_problem: str | None
    """Why `nobat serve` refuses the token (one line naming the key), or None."""
    public_url: str
    """Where browsers reach the page ("" = this host and port, plain HTTP); https:// turns
    on the Secure, __Host- cookie."""
    allowed_hosts: tuple[str, ...]
    session_idle_minutes: int
    session_max_hours: int
    login_lock_max_seconds: int


@dataclass(frozen=True)
class FastAgiConfig:
    """Where Asterisk reaches the IVR (AGI(agi://host:port/ivr)), the secret and peers it
    must come with, and how many connections at once."""

    host: str
    port: int
    max_calls: int
    secret: Secret
    allow: tuple[Network, ...]


@dataclass(frozen=True)
class IvrConfig:
    """The flows and prompts the IVR runs, and where the office is."""

    flows: Path
    prompts: Path
    asterisk_prompts: str
    office: str
    office_hours: OfficeWeek
    watch_seconds: float


@dataclass(frozen=True)
class AmiConfig:
    """How nobat logs in to Asterisk's manager; no secret means no consultations are dialled."""

    host: str
    port: int
    username: str
    secret: Secret
    action_timeout: float


@dataclass(frozen=True)
class ConsultationConfig:
    """How phone consultations are dialled and retried."""

    dial: str
    ring_seconds: int
    grace_minutes: int
    attempts: int
    retry_minutes: int
    max_channels: int
    """Outbound channels at once, for consultations (two each) and patient calls (one)."""
    poll_seconds: float
    warn_minutes: int
    missed_grace_minutes: int
    """How late after its time a consultation due while nobat was down is still dialled."""
    lease_seconds: int = 60
    """How long a call's claim holds without renewal: after a crash, the call is taken
    over (by another instance, or this one restarted) this long after it was last seen."""
    practice_share_percent: int = 100
    """The most of max_channels one practice's calls hold at once, when several practices
    share the line: one practice's rush leaves the rest to the others."""


@dataclass(frozen=True)
class PatientCallConfig:
    """Reminders, absence calls and surveys: which are made, and when patients may be rung."""

    reminders: bool
    reminder_days_before: int
    reminder_at: int
    absence_calls: bool
    survey: str
    """"in-call" (the patient stays on the line after the consultation), "call-back"
    (rung `survey_after_minutes` later) or "off"."""
    survey_after_minutes: int
    quiet_hours: tuple[int, int]
    no_call_days: frozenset[Weekday]
    ring_seconds: int
    attempts: int
    retry_minutes: int
    max_calls: int


@dataclass(frozen=True)
class Config:
    """The whole server configuration."""

    path: Path
    server: ServerConfig
    database: DatabaseConfig
    web: WebConfig
    booking: BookingPolicy
    fastagi: FastAgiConfig
    ivr: IvrConfig
    ami: AmiConfig
    consultations: ConsultationConfig
    patient_calls: PatientCallConfig


def load_config(path: Path | str = DEFAULT_PATH, env: dict[str, str] | None = None) -> Config:
    """Read config.toml; raises StaffFileError naming file, line, key and what was expected."""
    env = dict(os.environ) if env is None else env
    doc = StaffToml.load(path)
    base = Path(path).resolve().parent
    doc.table((), ("server", "database", "web", "booking", "fastagi", "ivr", "ami",
                   "consultations", "patient_calls"))
    server = _server(doc, base)
    database = _database(doc, base, env)
    web = _web(doc, env)
    booking = _booking(doc)
    fastagi = _fastagi(doc, env)
    ivr = _ivr(doc, base)
    ami = _ami(doc, env)
    consultations = _consultations(doc)
    patient_calls = _patient_calls(doc)
    doc.raise_problems()
    return Config(Path(path), server, database, web, booking, fastagi, ivr, ami,
                  consultations, patient_calls)


def _section(doc: StaffToml, name: str, keys: tuple[str, ...]) -> tuple[dict[str, Any], KeyPath]:
    return doc.table((name,), keys), (name,)


def _server(doc: StaffToml, base: Path) -> ServerConfig:
    table, path = _section(doc, "server", ("clinic_file", "log_level", "log_format"))
    clinic = doc.value(table, path, "clinic_file", str, default="")
    return ServerConfig(
        clinic_file=(base / clinic) if clinic else None,
        log_level=doc.value(table, path, "log_level", str, default="info",
                            convert=one_of(LOG_LEVELS)),
        log_format=doc.value(table, path, "log_format", str, default="text",
                             convert=one_of(LOG_FORMATS)),
    )


def _database(doc: StaffToml, base: Path, env: dict[str, str]) -> DatabaseConfig:
    table, path = _section(doc, "database", ("url", "pool_size", "busy_timeout_seconds"))
    url = env.get("NOBAT_DATABASE_URL") or doc.value(
        table, path, "url", str, default="sqlite+aiosqlite:///nobat.db")
    try:
        parsed = make_url(url)
    except ArgumentError:
        doc.error(path + ("url",), f"expected a database URL such as "
                  f"sqlite+aiosqlite:///nobat.db or postgresql+asyncpg://host/db, got {url!r}")
        parsed = make_url("sqlite+aiosqlite:///nobat.db")
    if parsed.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        doc.error(path + ("url",), "expected the driver sqlite+aiosqlite or postgresql+asyncpg, "
                  f"got {parsed.drivername}")
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        parsed = parsed.set(database=str(base / parsed.database))
    if env.get("NOBAT_DATABASE_PASSWORD"):
        parsed = parsed.set(password=env["NOBAT_DATABASE_PASSWORD"])
    return DatabaseConfig(
        url=parsed.render_as_string(hide_password=False),
        pool_size=doc.value(table, path, "pool_size", int, default=10, convert=in_range(1, 200)),
        busy_timeout_seconds=float(doc.value(table, path, "busy_timeout_seconds", (int, float),
                                             default=30, convert=in_range(0, 600))),
    )


def _web(doc: StaffToml, env: dict[str, str]) -> WebConfig:
    table, path = _section(doc, "web", (
        "host", "port", "token", "public_url", "allowed_hosts", "session_idle_minutes",
        "session_max_hours", "login_lock_max_seconds"))
    token = env.get("NOBAT_WEB_TOKEN") or doc.value(table, path, "token", str, default="")
    return WebConfig(
        host=doc.value(table, path, "host", str, default="127.0.0.1"),
        port=doc.value(table, path, "port", int, default=8080, convert=in_range(0, 65535)),
        token=Secret(token),
        token_problem=_token_problem(doc, token, from_env=bool(env.get("NOBAT_WEB_TOKEN"))),
        public_url=doc.value(table, path, "public_url", str, default="", convert=_public_url),
        allowed_hosts=doc.value(table, path, "allowed_hosts", list, default=LOOPBACK_NAMES,
                                convert=_host_names, what="a list of host names"),
        session_idle_minutes=doc.value(table, path, "session_idle_minutes", int, default=30,
                                       convert=in_range(1, 24 * 60)),
        session_max_hours=doc.value(table, path, "session_max_hours", int, default=12,
                                    convert=in_range(1, 30 * 24)),
        login_lock_max_seconds=doc.value(table, path, "login_lock_max_seconds", int,
                                         default=300, convert=in_range(1, 24 * 3600)),
    )


_HOST_NAME = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)(:[0-9]{1,5})?")


def _token_problem(doc: StaffToml, token: str, from_env: bool) -> str | None:
    """An empty token keeps the page shut; a weak one stops `nobat serve`."""
    reason = weakness(token) if token else None
    if reason is None:
        return None
    key = ("web", "token")
    file, line = ("NOBAT_WEB_TOKEN", None) if from_env else (doc.file, doc.line_of(key))
    return str(Problem(file, line, dotted(key), requirement(reason)))


def _public_url(text: str) -> str:
    """The page's origin as browsers send it (scheme://host[:port], no default port)."""
    if not text:
        return ""
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.username
            or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment
            or port == -1):
        raise ValueError(f"expected the page's address with no path, such as "
                         f"\"https://status.clinic.example\", got {text!r}")
    netloc = parts.netloc.lower()
    if (parts.scheme, port) in (("http", 80), ("https", 443)):
        netloc = netloc.rsplit(":", 1)[0]
    return f"{parts.scheme}://{netloc}"


def _host_names(names: list[Any]) -> tuple[str, ...]:
    if not names:
        raise ValueError("expected at least one host name (the page would answer nobody)")
    for name in names:
        if not isinstance(name, str) or not _HOST_NAME.fullmatch(name.lower()):
            raise ValueError(f"expected host names such as \"127.0.0.1\", \"[::1]\" or "
                             f"\"nobat.clinic.lan:8080\", got {name!r}")
    return tuple(name.lower() for name in names)


def _booking(doc: StaffToml) -> BookingPolicy:
    table, path = _section(doc, "booking", ("min_notice_minutes", "change_cutoff_minutes",
                                            "horizon_days"))
    minutes = in_range(0, 7 * 24 * 60)
    return BookingPolicy(
        min_notice=dt.timedelta(minutes=doc.value(table, path, "min_notice_minutes", int,
                                                  default=30, convert=minutes)),
        change_cutoff=dt.timedelta(minutes=doc.value(table, path, "change_cutoff_minutes", int,
                                                     default=120, convert=minutes)),
        horizon_days=doc.value(table, path, "horizon_days", int, default=14,
                               convert=in_range(1, 90)),
    )


def _fastagi(doc: StaffToml, env: dict[str, str]) -> FastAgiConfig:
    table, path = _section(doc, "fastagi", ("host", "port", "max_calls", "secret", "allow"))
    secret = env.get("NOBAT_FASTAGI_SECRET") or doc.value(table, path, "secret", str,
                                                          default="")
    if secret and not FASTAGI_SECRET.fullmatch(secret):
        doc.error(path + ("secret",), "expected 16 to 128 letters, digits, '-' or '_' (for "
                  "example from `openssl rand -hex 24`): the dialplan passes it as an AGI "
                  "argument, where a comma or a quote would cut it")
        secret = ""
    return FastAgiConfig(
        host=doc.value(table, path, "host", str, default="127.0.0.1"),
        port=doc.value(table, path, "port", int, default=4573, convert=in_range(0, 65535)),
        max_calls=doc.value(table, path, "max_calls", int, default=200,
                            convert=in_range(1, 10000)),
        secret=Secret(secret),
        allow=doc.value(table, path, "allow", list, default=networks(LOOPBACK),
                        convert=_networks, what="a list of addresses or networks"),
    )


def _networks(entries: list[Any]) -> tuple[Network, ...]:
    if not all(isinstance(entry, str) for entry in entries):
        raise ValueError(f"expected addresses or networks as strings, got {entries!r}")
    try:
        return networks(entries)
    except ValueError as exc:
        raise ValueError(f"expected addresses or networks such as 127.0.0.1 or "
                         f"10.0.0.0/24: {exc}") from None


def _ivr(doc: StaffToml, base: Path) -> IvrConfig:
    table, path = _section(doc, "ivr", ("flows", "prompts", "asterisk_prompts", "office",
                                        "office_hours", "watch_seconds"))
    prompts = base / doc.value(table, path, "prompts", str, default="prompts")
    return IvrConfig(
        flows=base / doc.value(table, path, "flows", str, default="flows"),
        prompts=prompts,
        asterisk_prompts=doc.value(table, path, "asterisk_prompts", str, default="")
        or str(prompts),
        office=doc.value(table, path, "office", str, default="PJSIP/office",
                         convert=parse_dial_target),
        office_hours=doc.value(table, path, "office_hours", dict, convert=parse_office_hours,
                               default=DEFAULT_OFFICE_HOURS,
                               what=OFFICE_HOURS_FORMAT),
        watch_seconds=float(doc.value(table, path, "watch_seconds", (int, float), default=2,
                                      convert=in_range(0, 3600))),
    )


DEFAULT_OFFICE_HOURS = {day: (8 * 60, 20 * 60) for day in Weekday if day is not Weekday.FRIDAY}


def _ami(doc: StaffToml, env: dict[str, str]) -> AmiConfig:
    table, path = _section(doc, "ami", ("host", "port", "username", "secret",
                                        "action_timeout"))
    return AmiConfig(
        host=doc.value(table, path, "host", str, default="127.0.0.1"),
        port=doc.value(table, path, "port", int, default=5038, convert=in_range(1, 65535)),
        username=doc.value(table, path, "username", str, default="nobat"),
        secret=Secret(env.get("NOBAT_AMI_SECRET") or doc.value(table, path, "secret", str,
                                                               default="")),
        action_timeout=float(doc.value(table, path, "action_timeout", (int, float),
                                       default=10, convert=in_range(1, 120))),
    )


def _consultations(doc: StaffToml) -> ConsultationConfig:
    table, path = _section(doc, "consultations", (
        "dial", "ring_seconds", "grace_minutes", "attempts", "retry_minutes", "max_channels",
        "poll_seconds", "warn_minutes", "missed_grace_minutes", "lease_seconds",
        "practice_share_percent"))
    return ConsultationConfig(
        dial=doc.value(table, path, "dial", str, default="PJSIP/{national}@clinic-trunk",
                       convert=phones.parse_dial_template),
        ring_seconds=doc.value(table, path, "ring_seconds", int, default=45,
                               convert=in_range(5, 300)),
        grace_minutes=doc.value(table, path, "grace_minutes", int, default=2,
                                convert=in_range(0, 60)),
        attempts=doc.value(table, path, "attempts", int, default=3, convert=in_range(1, 10)),
        retry_minutes=doc.value(table, path, "retry_minutes", int, default=2,
                                convert=in_range(1, 60)),
        max_channels=doc.value(table, path, "max_channels", int, default=200,
                               convert=in_range(2, 20000)),
        poll_seconds=float(doc.value(table, path, "poll_seconds", (int, float), default=5,
                                     convert=in_range(0, 300))),
        warn_minutes=doc.value(table, path, "warn_minutes", int, default=1,
                               convert=in_range(0, 30)),
        missed_grace_minutes=doc.value(table, path, "missed_grace_minutes", int, default=5,
                                       convert=in_range(0, 120)),
        lease_seconds=doc.value(table, path, "lease_seconds", int, default=60,
                                convert=in_range(2, 600)),
        practice_share_percent=doc.value(table, path, "practice_share_percent", int,
                                         default=100, convert=in_range(1, 100)),
    )


def _patient_calls(doc: StaffToml) -> PatientCallConfig:
    table, path = _section(doc, "patient_calls", (
        "reminders", "reminder_days_before", "reminder_at", "absence_calls", "survey",
        "survey_after_minutes", "quiet_hours", "no_call_days", "ring_seconds", "attempts",
        "retry_minutes", "max_calls"))
    quiet = doc.value(table, path, "quiet_hours", str, default=(21 * 60, 8 * 60),
                      convert=parse_quiet_hours)
    reminder_at = doc.value(table, path, "reminder_at", str, default=18 * 60,
                            convert=parse_clock)
    if is_quiet(reminder_at, quiet):
        doc.error(path + ("reminder_at",), "falls inside quiet_hours, when nobody is called")
    return PatientCallConfig(
        reminders=doc.value(table, path, "reminders", bool, default=True),
        reminder_days_before=doc.value(table, path, "reminder_days_before", int, default=1,
                                       convert=in_range(*COUNTS["reminder_days_before"])),
        reminder_at=reminder_at,
        absence_calls=doc.value(table, path, "absence_calls", bool, default=True),
        survey=doc.value(table, path, "survey", str, default="in-call",
                         convert=one_of(SURVEY_MODES)),
        survey_after_minutes=doc.value(table, path, "survey_after_minutes", int, default=5,
                                       convert=in_range(*COUNTS["survey_after_minutes"])),
        quiet_hours=quiet,
        no_call_days=doc.value(table, path, "no_call_days", list,
                               default=frozenset({Weekday.FRIDAY}),
                               convert=parse_no_call_days, what="a list of weekday names"),
        ring_seconds=doc.value(table, path, "ring_seconds", int, default=30,
                               convert=in_range(*COUNTS["ring_seconds"])),
        attempts=doc.value(table, path, "attempts", int, default=3,
                           convert=in_range(*COUNTS["attempts"])),
        retry_minutes=doc.value(table, path, "retry_minutes", int, default=30,
                                convert=in_range(*COUNTS["retry_minutes"])),
        max_calls=doc.value(table, path, "max_calls", int, default=20,
                            convert=in_range(1, 10000)),
    )
