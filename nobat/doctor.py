"""`nobat doctor`: check a deployment the way docs/deployment.md sets it up, and say what to
do about each thing that is wrong, before a patient finds it."""

from __future__ import annotations

import asyncio
import grp
import hmac
import os
import pwd
import re
import socket
import stat
import sysconfig
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from sqlalchemy.engine import make_url

from bridge.ami_client import AmiClient, AmiError
from clinic.staff_toml import StaffFileError
from db.availability import ClinicProfile
from db.engine import Database, one_line
from db.schema import current_revision, head_revision
from db.unreadable import named
from ivr.fastagi_gate import peer_allowed
from ivr.prompts import LANGUAGES, PromptLibrary
from nobat.config import Config
from nobat.ivr_wiring import MANIFEST, PracticeLines, practice_words
from nobat.page_token import TOKEN_FILE, token_folder

WAIT_S = 5.0
READ, WRITE, ENTER = 4, 2, 1
RUN = READ | ENTER
"""What running a script takes: its x bit, and reading it for the interpreter it names."""
DIALPLAN = Path("/etc/asterisk/extensions.conf")
"""Where docs/deployment.md installs asterisk/extensions.conf."""
AGI_BIN = Path("/var/lib/asterisk/agi-bin")
"""Asterisk's astagidir, where the dialplan's AGI(nobat-agi) fallback finds nobat-agi."""
NOBAT_AGI = "nobat-agi"
USUAL_ASTERISK_USER = "asterisk"
"""The user Asterisk runs as in docs/deployment.md, assumed when none is named."""
AGI_PORT = 4573
"""The port Asterisk connects to for an agi:// address that names none."""
SECRETS_ENV = "secrets.env"
"""The guide's file of secrets for nobat.service, beside config.toml."""
CONFIG_SECRETS = (("ami", "secret", "NOBAT_AMI_SECRET"),
                  ("fastagi", "secret", "NOBAT_FASTAGI_SECRET"),
                  ("web", "token", "NOBAT_WEB_TOKEN"))
"""The config keys that hold a secret, and the variable that takes each instead."""
WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
"""Listen addresses that take connections on every address, and where to reach each here."""
COMMENT = re.compile(r"(?<!\\);.*")
"""An Asterisk config comment: from a `;` that is not escaped as `\\;` to the line's end."""


@dataclass(frozen=True)
class Finding:
    """One check: what was looked at, whether it is right, and if not what to do."""

    what: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False

    @classmethod
    def skip(cls, what: str, detail: str) -> Finding:
        """A check that cannot be made here: said, so nobody takes it for passed, but not
        failed, so a script's exit code stays about the deployment."""
        return cls(what, True, detail, skipped=True)

    def line(self) -> str:
        """As `nobat doctor` prints it."""
        verdict = "skip" if self.skipped else "ok  " if self.ok else "FAIL"
        head = f"{verdict} {self.what}: {self.detail}"
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
        """Whether the mode bits let this user read/write/enter `path` (root may anything but
        run a file nobody may run)."""
        info = path.stat()
        if self.uid == 0:
            return not (want & ENTER and stat.S_ISREG(info.st_mode) and not info.st_mode & 0o111)
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


async def doctor(config: Config, asterisk_user: str | None, dialplan: Path = DIALPLAN,
                 agi_bin: Path = AGI_BIN, usual_asterisk_user: str = USUAL_ASTERISK_USER
                 ) -> list[Finding]:
    """Every check, in the order a deployment is built; with no `asterisk_user`, Asterisk's
    side is checked for `usual_asterisk_user` if there is one."""
    found = [_config(config)]
    stored, profiles = await _store(config)
    found += [*stored, _prompts_present(config, profiles), *_secrets_closed(config)]
    found += _asterisk_files(config, asterisk_user, usual_asterisk_user, agi_bin)
    found += [await _ami(config), await _fastagi(config), *_dialplan(config, dialplan),
              await _page(config)]
    return found


def _config(config: Config) -> Finding:
    return Finding("config", True, f"{config.path} reads")


async def _store(config: Config
                 ) -> tuple[list[Finding], Mapping[str | None, ClinicProfile | None]]:
    url = make_url(config.database.url)
    file = Path(url.database or "") if url.drivername.startswith("sqlite") else None
    if file is not None and url.database not in ("", ":memory:") and not file.exists():
        return [Finding("store", False, f"there is no store at {file}",
                        "run `nobat db upgrade` as nobat (umask 0007)")], {}
    database = Database.from_url(config.database.url)
    try:
        schema = await current_revision(database)
        profiles, unreadable = await PracticeLines(config, database).profiles()
    except Exception as exc:  # any driver error: the store does not answer
        return [Finding("store", False, f"{config.database.safe_url}: {one_line(exc)}",
                        "check database.url, the file's folder and its modes")], {}
    finally:
        await database.close()
    head = head_revision()
    findings = [Finding("store", schema == head, f"{config.database.safe_url} at schema "
                        f"{schema} (this nobat expects {head})", "run `nobat db upgrade`")]
    loaded = [profile for profile in profiles.values() if profile is not None]
    findings.append(Finding("clinic", bool(loaded), "; ".join(
        f"{profile.name_en or profile.name}, {len(profile.doctors)} doctors"
        for profile in loaded) or ("no clinic readable" if unreadable else "no clinic loaded"),
        "run `nobat clinic load /etc/nobat/clinic.toml`"))
    if unreadable:
        findings.append(Finding("practices", False, f"rows that cannot be read "
                                f"({len(unreadable)}): {named(unreadable)}",
                                "run `nobat clinic load --compare` on their files"))
    return findings, profiles


def _prompts_present(config: Config, profiles: Mapping[str | None, ClinicProfile | None]
                     ) -> Finding:
    """Every prompt the flows may play has its file where Asterisk plays it (ivr.asterisk_prompts,
    which defaults to ivr.prompts): Asterisk skips a missing one."""
    manifest, folder = config.ivr.prompts / MANIFEST, Path(config.ivr.asterisk_prompts)
    try:
        library = PromptLibrary.load(manifest, str(folder), practice_words(profiles))
    except (OSError, StaffFileError) as exc:
        return Finding("prompts", False, f"{manifest}: {one_line(exc)}", "check ivr.prompts")
    missing = [f"{lang}/{key}" for lang in LANGUAGES for key in library.texts[lang]
               if not (folder / lang / f"{key}.wav").exists()]
    fix = "run `nobat prompts build` as nobat"
    if folder != config.ivr.prompts:
        fix += (f", then copy {config.ivr.prompts} to {folder}, where Asterisk plays them "
                "(ivr.asterisk_prompts)")
    return Finding("prompts", not missing,
                   f"{len(missing)} missing in {folder}: {', '.join(missing[:5])}"
                   if missing else f"every prompt has its file in {folder}", fix)


def _secrets_closed(config: Config) -> list[Finding]:
    """The files that hold secrets are their owner's alone, and the config Asterisk's user
    reads holds none."""
    findings = [_secrets_env(config.path.parent / SECRETS_ENV)]
    token = token_folder(config) / TOKEN_FILE
    if token.is_symlink() or token.exists():
        findings.append(_token_file(token))
    return [*findings, _config_secrets(config)]


def _secrets_env(path: Path) -> Finding:
    """secrets.env is root's alone (systemd reads it for nobat.service), or nobat's."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return Finding.skip("secrets.env", f"there is none at {path}")
    problems = []
    if info.st_mode & 0o077:
        problems.append("users besides its owner may open it")
    if info.st_uid not in (0, os.geteuid()):
        problems.append(f"it belongs to {_name(info.st_uid, pwd.getpwuid)}, not root")
    return Finding("secrets.env", not problems, f"{_modes(path, info)}: "
                   f"{'; '.join(problems) or 'only its owner may read it'}",
                   f"chown root:root {path} && chmod 0600 {path}")


def _token_file(path: Path) -> Finding:
    """The page token a first run made is a plain file only nobat's user may read (doctor runs
    as that user, as `nobat serve` does)."""
    info = path.lstat()
    foreign = []  # nobat refuses such a token file: it must go
    if not stat.S_ISREG(info.st_mode):
        foreign.append("it is not a plain file")
    if info.st_uid != os.geteuid():
        foreign.append(f"it belongs to {_name(info.st_uid, pwd.getpwuid)}, not to "
                       f"{_name(os.geteuid(), pwd.getpwuid)}, nobat's user")
    problems = [*foreign, *(["users besides its owner may open it"]
                            if info.st_mode & 0o077 else [])]
    return Finding("web-token", not problems, f"{_modes(path, info)}: "
                   f"{'; '.join(problems) or 'only its owner may read it'}",
                   f"rm {path}: nobat makes a new one at its next start and logs a login link"
                   if foreign else f"chmod 600 {path}")


def _config_secrets(config: Config) -> Finding:
    """A secret in config.toml is open to the group that reads it, Asterisk's user among them."""
    with config.path.open("rb") as file:
        written = tomllib.load(file)
    held = [(f"{section}.{key}", variable) for section, key, variable in CONFIG_SECRETS
            if written.get(section, {}).get(key)]
    info = config.path.stat()
    names = ", ".join(name for name, _ in held)
    if not held or not info.st_mode & 0o044:
        return Finding("config secrets", True, f"{config.path} holds "
                       f"{f'{names}, which only its owner may read' if held else 'no secret'}")
    readers = ("everyone" if info.st_mode & 0o004
               else f"the group {_name(info.st_gid, grp.getgrgid)}")
    variables = ", ".join(f"{variable}=..." for _, variable in held)
    return Finding("config secrets", False, f"{_modes(config.path, info)} holds {names}, "
                   f"which {readers} may read",
                   f"move them to {config.path.parent / SECRETS_ENV} ({variables}), set them "
                   f"to \"\" in {config.path}, then `systemctl restart nobat`")


def _asterisk_files(config: Config, given: str | None, usual: str, agi_bin: Path
                    ) -> list[Finding]:
    """What Asterisk's user (running nobat-agi, playing prompts) must be let do."""
    name = given or usual
    try:
        user = User.named(name)
    except KeyError:
        if given is None:
            return [Finding.skip("asterisk user", f"no --asterisk-user given and there is no "
                                 f"user {usual!r}: what Asterisk's user may read, write and "
                                 "run was not checked; name it with --asterisk-user NAME")]
        return [Finding("asterisk user", False, f"there is no user {name!r}",
                        "pass the user Asterisk runs as: --asterisk-user asterisk")]
    groups = ", ".join(sorted(g.gr_name for g in grp.getgrall() if g.gr_gid in user.groups))
    assumed = "" if given else ", assumed as no --asterisk-user was given"
    findings = [Finding("asterisk user", True, f"{name} (groups: {groups}){assumed}")]
    wants: list[tuple[Path, int, str]] = [(config.path, READ, "read the config")]
    url = make_url(config.database.url)
    if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:"):
        store = Path(url.database)
        wants += [(store.parent, WRITE | ENTER, "make the store's -wal and -shm files"),
                  (store, READ | WRITE, "write the store")]
        wants += [(side, READ | WRITE, "write the store's journal")
                  for side in (Path(f"{store}-wal"), Path(f"{store}-shm")) if side.exists()]
    wants += [(path, READ, "read the flows") for path in _some_files(config.ivr.flows, "*.toml")]
    prompts = Path(config.ivr.asterisk_prompts)
    wants += [(path, READ, "play the prompts")
              for lang in LANGUAGES for path in _some_files(prompts / lang, "*.wav")]
    for path, want, why in wants:
        if not path.exists():
            continue
        ok = user.reaches(path, want)
        info = path.stat()
        findings.append(Finding(
            f"{path}", ok, f"{_owner(info)} {stat.filemode(info.st_mode)}: {name} "
            f"{'may' if ok else 'may not'} {why}",
            f"usermod --append --groups {_name(info.st_gid, grp.getgrgid)} {name} (then "
            f"restart Asterisk), and the modes in docs/deployment.md"))
    return [*findings, _nobat_agi(user, agi_bin)]


def _nobat_agi(user: User, agi_bin: Path) -> Finding:
    """AGI(nobat-agi) runs it from agi-bin as Asterisk's user: else a call nobat does not take
    rings the office, unnoticed while nobat is up."""
    path = agi_bin / NOBAT_AGI
    installed = Path(sysconfig.get_path("scripts")) / NOBAT_AGI
    if not path.exists():
        where = f"{path} links to {path.readlink()}, which" if path.is_symlink() else str(path)
        return Finding(NOBAT_AGI, False, f"{where} is missing: a call nobat does not take "
                       "skips the IVR's fallback and rings the office",
                       f"ln -sf {installed} {path}")
    target = path.resolve()
    ok = user.reaches(agi_bin, ENTER) and user.reaches(target, RUN)
    info = target.stat()
    link = f" -> {target}" if path.is_symlink() else ""
    return Finding(NOBAT_AGI, ok, f"{path}{link} ({_owner(info)} {stat.filemode(info.st_mode)}): "
                   f"{user.name} {'may' if ok else 'may not'} run it, as AGI(nobat-agi) does "
                   "when nobat does not take a call",
                   f"chmod 0755 {target}, and let {user.name} enter {agi_bin} and every folder "
                   f"above {target}")


def _some_files(folder: Path, pattern: str) -> Iterable[Path]:
    """A folder and its first file: enough to see the modes Asterisk's user meets there."""
    if folder.is_dir():
        yield folder
        first = next(iter(sorted(folder.glob(pattern))), None)
        if first is not None:
            yield first


def _owner(info: os.stat_result) -> str:
    """user:group, as `ls -l` shows them."""
    return f"{_name(info.st_uid, pwd.getpwuid)}:{_name(info.st_gid, grp.getgrgid)}"


def _modes(path: Path, info: os.stat_result) -> str:
    """A path with its owners and mode, as `ls -l` shows them."""
    return f"{path} ({_owner(info)} {stat.filemode(info.st_mode)})"


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
    host = _local(fastagi.host)
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


def _dialplan(config: Config, path: Path) -> list[Finding]:
    """Asterisk's side of FastAGI: where the dialplan's AGI() lines connect
    (agi://${NOBAT_FASTAGI}/...) and the secret they carry (key=${NOBAT_FASTAGI_SECRET})."""
    try:
        variables = _dialplan_globals(path.read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        return [Finding("dialplan", False, f"cannot read {path}: {exc.strerror or exc}",
                        "install asterisk/extensions.conf there (docs/deployment.md, step 3), "
                        "and run doctor in Asterisk's group (sudo -u nobat -g asterisk) so "
                        "that it may read it")]
    return [*_dialplan_address(config, path, variables.get("NOBAT_FASTAGI", "")),
            _dialplan_secret(config, path, variables.get("NOBAT_FASTAGI_SECRET", ""))]


def _dialplan_globals(text: str) -> dict[str, str]:
    """The variables a dialplan's [globals] sections set (the last setting wins, as in Asterisk)."""
    variables: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = COMMENT.sub("", raw).strip()
        if line.startswith("["):
            section = line[1:].partition("]")[0].strip()
        elif section == "globals" and "=" in line:
            name, _, value = line.partition("=")
            variables[name.strip()] = value.removeprefix(">").strip()
    return variables


def _dialplan_address(config: Config, path: Path, value: str) -> list[Finding]:
    """The dialplan connects where nobat listens, from an address fastagi.allow lets in."""
    fastagi = config.fastagi
    listening = _address(fastagi.host or "0.0.0.0", fastagi.port)
    fix = (f"set NOBAT_FASTAGI={_address(_local(fastagi.host), fastagi.port)} in [globals] of "
           f"{path}, then `asterisk -rx \"dialplan reload\"`")
    parts = urlsplit(value if "://" in value else f"agi://{value}")
    try:
        port = parts.port or AGI_PORT
    except ValueError:
        port = 0
    host = parts.hostname or ""
    if parts.scheme != "agi" or not host or not port:
        return [Finding("dialplan address", False, f"{path}: NOBAT_FASTAGI in [globals] is "
                        f"{value!r}, not the host:port nobat listens on", fix)]
    addresses = _addresses(host)
    if not addresses:
        return [Finding("dialplan address", False, f"{path}: NOBAT_FASTAGI's host {host} has "
                        "no address", fix)]
    same = port == fastagi.port and (fastagi.host in WILDCARDS
                                     or bool(addresses & _addresses(fastagi.host)))
    allowed = any(peer_allowed(address, fastagi.allow) for address in addresses)
    networks = ", ".join(str(network) for network in fastagi.allow)
    return [Finding("dialplan address", same, f"{path}: Asterisk connects to "
                    f"{_address(host, port)}, {'where' if same else 'but'} nobat listens on "
                    f"{listening} (fastagi.host, fastagi.port)", fix),
            Finding("dialplan peer", allowed, f"Asterisk on this machine connects from {host}, "
                    f"which fastagi.allow ({networks}) {'lets' if allowed else 'does not let'} "
                    "in", f"add \"{min(addresses)}\" to fastagi.allow in {config.path}, then "
                    "`systemctl restart nobat`")]


def _dialplan_secret(config: Config, path: Path, value: str) -> Finding:
    """The dialplan's FastAGI secret is nobat's; neither is ever printed."""
    secret = config.fastagi.secret.reveal()
    same = bool(value) and hmac.compare_digest(value.encode(), secret.encode())
    if same:
        detail = "is nobat's fastagi secret"
    else:
        detail = ("differs from nobat's fastagi secret" if value else "is empty") + \
            ": nobat refuses every call it sends"
    return Finding("dialplan secret", same, f"NOBAT_FASTAGI_SECRET in [globals] of {path} {detail}",
                   f"set it to nobat's (NOBAT_FASTAGI_SECRET in "
                   f"{config.path.parent / SECRETS_ENV}), then `asterisk -rx \"dialplan reload\"`")


def _addresses(host: str) -> set[str]:
    """The addresses a host name or address stands for (none if it does not resolve)."""
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None,
                                                              type=socket.SOCK_STREAM)}
    except (OSError, UnicodeError):
        return set()


def _local(host: str) -> str:
    """Where to reach a server from this machine: a wildcard listen address is loopback."""
    return WILDCARDS.get(host, host)


def _address(host: str, port: int) -> str:
    """host:port, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _page(config: Config) -> Finding:
    url = f"http://{_address(_local(config.web.host), config.web.port)}/healthz"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as http, \
                http.get(url) as reply:
            body = await reply.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Finding("status page", False, f"{url}: {one_line(exc)}",
                       "is `nobat serve` running? (systemctl status nobat)")
    return Finding("status page", reply.status == 200, f"{url} answered {reply.status} "
                   f"{body.strip()[:300]}", "read the page's health table and nobat's log")
