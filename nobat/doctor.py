"""`nobat doctor`: check a deployment the way docs/deployment.md sets it up, and say what to
do about each thing that is wrong, before a patient finds it."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.engine import make_url

from bridge.ami_client import AmiClient, AmiError
from clinic.staff_toml import StaffFileError
from db.availability import ClinicProfile
from db.booking import BookingService
from db.engine import Database, one_line
from db.schema import current_revision, head_revision
from ivr.prompts import LANGUAGES, PromptLibrary
from nobat.config import Config
from nobat.ivr_wiring import MANIFEST, clinic_words

WAIT_S = 5.0
READ, WRITE, ENTER = 4, 2, 1


@dataclass(frozen=True)
class Finding:
    """One check: what was looked at, whether it is right, and if not what to do."""

    what: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        """As `nobat doctor` prints it."""
        head = f"{'ok  ' if self.ok else 'FAIL'} {self.what}: {self.detail}"
        return head if self.ok or not self.fix else f"{head}\n     fix: {self.fix}"


@dataclass(frozen=True)
class User:
    """Someone the files must let in: a uid and every group it is in."""

    name: str
    uid: int
    groups: frozenset[int]

    @classmethod
    def named(cls, name: str) -> User:
        """Look a user up by name (KeyError if there is none)."""
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, frozenset(os.getgrouplist(name, entry.pw_gid)))

    def may(self, path: Path, want: int) -> bool:
        """Whether the mode bits let this user read/write/enter `path` (root may anything)."""
        if self.uid == 0:
            return True
        info = path.stat()
        if info.st_uid == self.uid:
            bits = info.st_mode >> 6
        elif info.st_gid in self.groups:
            bits = info.st_mode >> 3
        else:
            bits = info.st_mode
        return bits & want == want

    def reaches(self, path: Path, want: int) -> bool:
        """`may`, and every folder above it can be entered."""
        return (all(self.may(folder, ENTER) for folder in path.resolve().parents)
                and self.may(path, want))


async def doctor(config: Config, asterisk_user: str | None) -> list[Finding]:
    """Every check, in the order a deployment is built."""
    found = [_config(config)]
    stored, profile = await _store(config)
    found += [*stored, _prompts_present(config, profile)]
    if asterisk_user is not None:
        found += _asterisk_files(config, asterisk_user)
    found += [await _ami(config), await _fastagi(config), await _page(config)]
    return found


def _config(config: Config) -> Finding:
    return Finding("config", True, f"{config.path} reads")


async def _store(config: Config) -> tuple[list[Finding], ClinicProfile | None]:
    url = make_url(config.database.url)
    file = Path(url.database or "") if url.drivername.startswith("sqlite") else None
    if file is not None and url.database not in ("", ":memory:") and not file.exists():
        return [Finding("store", False, f"there is no store at {file}",
                        "run `nobat db upgrade` as nobat (umask 0007)")], None
    database = Database.from_url(config.database.url)
    try:
        schema = await current_revision(database)
        profile = await BookingService(database, config.booking).clinic_profile()
    except Exception as exc:  # any driver error: the store does not answer
        return [Finding("store", False, f"{config.database.safe_url}: {one_line(exc)}",
                        "check database.url, the file's folder and its modes")], None
    finally:
        await database.close()
    head = head_revision()
    findings = [Finding("store", schema == head, f"{config.database.safe_url} at schema "
                        f"{schema} (this nobat expects {head})", "run `nobat db upgrade`")]
    findings.append(Finding("clinic", profile is not None,
                            f"{profile.name_en or profile.name}, {len(profile.doctors)} "
                            "doctors" if profile else "no clinic loaded",
                            "run `nobat clinic load /etc/nobat/clinic.toml`"))
    return findings, profile


def _prompts_present(config: Config, profile: ClinicProfile | None) -> Finding:
    """Every prompt the flows may play has its file (Asterisk skips a missing one)."""
    folder = config.ivr.prompts
    try:
        library = PromptLibrary.load(folder / MANIFEST, str(folder), clinic_words(profile))
    except (OSError, StaffFileError) as exc:
        return Finding("prompts", False, f"{folder / MANIFEST}: {one_line(exc)}",
                       "check ivr.prompts")
    missing = [f"{lang}/{key}" for lang in LANGUAGES for key in library.texts[lang]
               if not (folder / lang / f"{key}.wav").exists()]
    return Finding("prompts", not missing,
                   f"{len(missing)} missing in {folder}: {', '.join(missing[:5])}"
                   if missing else f"every prompt has its file in {folder}",
                   "run `nobat prompts build` as nobat")


def _asterisk_files(config: Config, name: str) -> list[Finding]:
    """What Asterisk's user (running nobat-agi, playing prompts) must be let do."""
    try:
        user = User.named(name)
    except KeyError:
        return [Finding("asterisk user", False, f"there is no user {name!r}",
                        "pass the user Asterisk runs as: --asterisk-user asterisk")]
    groups = ", ".join(sorted(g.gr_name for g in grp.getgrall() if g.gr_gid in user.groups))
    findings = [Finding("asterisk user", True, f"{name} (groups: {groups})")]
    wants: list[tuple[Path, int, str]] = [(config.path, READ, "read the config")]
    url = make_url(config.database.url)
    if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:"):
        store = Path(url.database)
        wants += [(store.parent, WRITE | ENTER, "make the store's -wal and -shm files"),
                  (store, READ | WRITE, "write the store")]
        wants += [(side, READ | WRITE, "write the store's journal")
                  for side in (Path(f"{store}-wal"), Path(f"{store}-shm")) if side.exists()]
    wants += [(path, READ, "play the prompts") for path in _some_prompts(config.ivr.prompts)]
    for path, want, why in wants:
        if not path.exists():
            continue
        ok = user.reaches(path, want)
        info = path.stat()
        owner = f"{_name(info.st_uid, pwd.getpwuid)}:{_name(info.st_gid, grp.getgrgid)}"
        findings.append(Finding(
            f"{path}", ok, f"{owner} {stat.filemode(info.st_mode)}: {name} "
            f"{'may' if ok else 'may not'} {why}",
            f"usermod --append --groups {_name(info.st_gid, grp.getgrgid)} {name} (then "
            f"restart Asterisk), and the modes in docs/deployment.md"))
    return findings


def _some_prompts(folder: Path) -> Iterable[Path]:
    """The prompt folders and one file of each: enough to see the modes Asterisk meets."""
    for lang in LANGUAGES:
        sub = folder / lang
        if sub.is_dir():
            yield sub
            first = next(iter(sorted(sub.glob("*.wav"))), None)
            if first is not None:
                yield first


def _name(ident: int, look_up: Callable[[int], Any]) -> str:
    """A uid's or gid's name, or the number when it has none."""
    try:
        return str(look_up(ident)[0])
    except KeyError:
        return str(ident)


async def _ami(config: Config) -> Finding:
    ami = config.ami
    where = f"{ami.username}@{ami.host}:{ami.port}"
    if not ami.secret:
        return Finding("AMI", False, "no secret set: nobat dials no consultation",
                       "set NOBAT_AMI_SECRET, the same as manager.conf [nobat] secret=")
    client = AmiClient(ami.host, ami.port, ami.username, ami.secret.reveal(),
                       action_timeout=WAIT_S)
    await client.start()
    try:
        await client.wait_ready(WAIT_S)
    except AmiError as exc:
        return Finding("AMI", False, f"{where}: {exc}",
                       "check manager.conf [nobat] (secret=, permit=) and `manager reload`, "
                       "then restart nobat")
    finally:
        await client.close()
    return Finding("AMI", True, f"logged in as {where}")


async def _fastagi(config: Config) -> Finding:
    fastagi = config.fastagi
    host = "127.0.0.1" if fastagi.host in ("0.0.0.0", "") else fastagi.host
    if not fastagi.secret:
        return Finding("FastAGI", False, "no secret set: nobat refuses every call",
                       "set NOBAT_FASTAGI_SECRET, the same as in extensions.conf [globals]")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, fastagi.port), WAIT_S)
    except (OSError, TimeoutError) as exc:
        return Finding("FastAGI", False, f"{host}:{fastagi.port}: {one_line(exc)}",
                       "is `nobat serve` running? (systemctl status nobat)")
    writer.close()
    return Finding("FastAGI", True, f"{host}:{fastagi.port} takes connections, as "
                   "Asterisk's AGI(agi://...) makes them")


async def _page(config: Config) -> Finding:
    host = "127.0.0.1" if config.web.host in ("0.0.0.0", "") else config.web.host
    url = f"http://{host}:{config.web.port}/healthz"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as http, \
                http.get(url) as reply:
            body = await reply.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Finding("status page", False, f"{url}: {one_line(exc)}",
                       "is `nobat serve` running? (systemctl status nobat)")
    return Finding("status page", reply.status == 200, f"{url} answered {reply.status} "
                   f"{body.strip()[:300]}", "read the page's health table and nobat's log")
