"""A real Asterisk for the real-PBX tier, and a small AMI client to drive it.

`RealAsterisk` lays out a throwaway configuration in a temporary folder (nobat's own
asterisk/*.conf, a generated [fake-phones] context, and the few files Asterisk wants beside
them), starts `asterisk -f -C <folder>/asterisk.conf` in the foreground, waits until AMI on
127.0.0.1:<free port> reports FullyBooted, and stops it with SIGTERM. Nothing but AMI on
loopback listens: no channel driver that talks to a network is loaded.

Asterisk itself is built outside the repository (tests/realpbx/README.md says how); point
NOBAT_ASTERISK at its binary or put `asterisk` on PATH.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from bridge.ami_protocol import (
    NEED_DATA,
    Action,
    AmiClientConnection,
    Banner,
    ConnectionClosed,
    Event,
    Fields,
    Response,
)
from tests.realpbx.dialplan import FakePhones

ENV_BINARY = "NOBAT_ASTERISK"
ENV_MODULES = "NOBAT_ASTERISK_MODULES"
ENV_SOUNDS = "NOBAT_ASTERISK_SOUNDS"
ENV_KEEP = "NOBAT_KEEP_ASTERISK"

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "asterisk"
"""nobat's Asterisk configuration, as an admin installs it."""

MANAGER_USER = "nobat"
HARNESS_MODULES = ("app_senddtmf.so",)
"""Modules the fake phones use on top of nobat's own list (SendDTMF)."""
BOOT_SECONDS = 30.0
ACTION_SECONDS = 10.0

HOW_TO_GET_ASTERISK = (
    "The real-PBX tier needs an Asterisk 22 binary: build one outside the repository as "
    "tests/realpbx/README.md describes, then run NOBAT_ASTERISK=/path/to/sbin/asterisk "
    "make test-real."
)


class AsteriskNotFound(RuntimeError):
    """No Asterisk to run: the tier fails (never skips) with this message."""


class AsteriskFailed(RuntimeError):
    """Asterisk did not start, or misbehaved; the message ends with its log."""


def find_asterisk() -> Path:
    """The Asterisk binary: $NOBAT_ASTERISK, else `asterisk` on PATH."""
    configured = os.environ.get(ENV_BINARY)
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise AsteriskNotFound(f"{ENV_BINARY}={configured} is not an executable file. "
                                   + HOW_TO_GET_ASTERISK)
        return path.resolve()
    found = shutil.which("asterisk")
    if found is None:
        raise AsteriskNotFound(f"{ENV_BINARY} is not set and there is no `asterisk` on PATH. "
                               + HOW_TO_GET_ASTERISK)
    return Path(found).resolve()


def _prefix(binary: Path) -> Path:
    """The install prefix: <prefix>/sbin/asterisk."""
    return binary.parent.parent


def module_dir(binary: Path) -> Path:
    """Where the build's modules are: $NOBAT_ASTERISK_MODULES, else beside the binary."""
    configured = os.environ.get(ENV_MODULES)
    candidates = [Path(configured)] if configured else [
        _prefix(binary) / "lib" / "asterisk" / "modules",
        _prefix(binary) / "lib64" / "asterisk" / "modules",
        Path("/usr/lib/asterisk/modules"),
        Path("/usr/lib/x86_64-linux-gnu/asterisk/modules"),
    ]
    for candidate in candidates:
        if (candidate / "res_agi.so").is_file():
            return candidate
    raise AsteriskNotFound(f"no Asterisk module folder with res_agi.so among "
                           f"{[str(c) for c in candidates]}; set {ENV_MODULES}")


def data_dir(binary: Path) -> Path | None:
    """The install's astdatadir: its documentation XML is needed to start (stasis)."""
    for candidate in (_prefix(binary) / "var" / "lib" / "asterisk",
                      _prefix(binary) / "share" / "asterisk", Path("/usr/share/asterisk")):
        if (candidate / "documentation").is_dir():
            return candidate
    return None


def sounds_dir(binary: Path) -> Path | None:
    """English prompts (beep, demo-congrats, digits/...): $NOBAT_ASTERISK_SOUNDS, the build's
    own, or Debian's asterisk-core-sounds-en-wav. None when there are none."""
    configured = os.environ.get(ENV_SOUNDS)
    candidates = [Path(configured)] if configured else [
        _prefix(binary) / "var" / "lib" / "asterisk" / "sounds" / "en",
        _prefix(binary) / "share" / "asterisk" / "sounds" / "en",
        Path("/usr/share/asterisk/sounds/en_US_f_Allison"),
        Path("/usr/share/asterisk/sounds/en"),
    ]
    for candidate in candidates:
        if any(candidate.glob("beep.*")):
            return candidate
    return None


def free_port() -> int:
    """Ask the kernel for a free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def required_modules(modules_conf: str) -> list[str]:
    """The modules nobat's modules.conf requires or loads, in order."""
    found = []
    for line in modules_conf.splitlines():
        match = re.match(r"\s*(?:require|load)\s*=>?\s*([\w.-]+)", line.split(";", 1)[0])
        if match:
            found.append(match.group(1))
    return found


def set_globals(extensions_conf: str, values: Mapping[str, str]) -> str:
    """Change [globals] entries of an extensions.conf, refusing names it does not define."""
    head, found, rest = extensions_conf.partition("[globals]\n")
    if not found:
        raise ValueError("extensions.conf has no [globals] section")
    body, next_section, tail = rest.partition("\n[")
    for name, value in values.items():
        body, count = re.subn(rf"(?m)^{re.escape(name)}\s*=.*$",
                              lambda _m, n=name, v=value: f"{n}={v}", body)
        if count != 1:
            raise ValueError(f"[globals] does not define {name} exactly once")
    return head + found + body + next_section + tail


def manager_conf(shipped: str, port: int, secret: str | None) -> str:
    """nobat's manager.conf with the test's port, and the secret an admin adds (none: as
    shipped)."""
    text, ports = re.subn(r"(?m)^port=.*$", f"port={port}", shipped)
    if ports != 1 or re.search(r"(?m)^secret\s*=", text):
        raise ValueError("asterisk/manager.conf must have one `port=` line and no secret")
    if secret is None:
        return text
    return text.replace("[nobat]\n", f"[nobat]\nsecret={secret}\n", 1)


_INDICATIONS = """\
[general]
country = us

[us]
description = United States / North America
ringcadence = 2000,4000
dial = 350+440
busy = 480+620/500,0/500
ring = 440+480/2000,0/4000
congestion = 480+620/250,0/250
callwaiting = 440/300,0/10000
"""


@dataclass(frozen=True)
class Received:
    """A message from Asterisk and when it came (the loop's clock)."""

    at: float
    message: Response | Event


class AmiLink:
    """A logged-in test client for AMI: every message kept in order, actions by ActionID."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._codec = AmiClientConnection()
        self.banner: Banner | None = None
        self.received: list[Received] = []
        self.closed = False
        self._changed = asyncio.Condition()
        self._ids = (f"t{n}" for n in range(1, 1_000_000))
        self._task = asyncio.create_task(self._read_loop())

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> AmiLink:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        link = cls(reader, writer)
        await link.wait_until(lambda: link.banner is not None, within=5, what="the banner")
        return link

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(65536)
                self._codec.receive_data(data)
                async with self._changed:
                    while (message := self._codec.next_event()) is not NEED_DATA:
                        if isinstance(message, Banner):
                            self.banner = message
                        elif isinstance(message, ConnectionClosed):
                            self.closed = True
                            return
                        else:
                            now = asyncio.get_running_loop().time()
                            self.received.append(Received(now, message))
                    self._changed.notify_all()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            async with self._changed:
                self._changed.notify_all()

    def next_id(self) -> str:
        return next(self._ids)

    def send_nowait(self, action: Action) -> None:
        """Write an action without waiting (two Originates back to back, as nobat sends)."""
        self._writer.write(AmiClientConnection().send(action))

    async def send(self, action: Action, within: float = ACTION_SECONDS) -> Response:
        """Send an action and wait for the Response with its ActionID."""
        if action.action_id is None:
            action = Action(action.name, action.fields, self.next_id())
        self.send_nowait(action)
        await self._writer.drain()
        return await self.response(action.action_id, within)

    async def response(self, action_id: str | None, within: float = ACTION_SECONDS) -> Response:
        received = await self.wait(
            lambda m: isinstance(m, Response) and m.action_id == action_id,
            within=within, what=f"the response to {action_id}")
        assert isinstance(received, Response)
        return received

    async def list_action(self, action: Action, within: float = ACTION_SECONDS
                          ) -> tuple[Response, list[Event]]:
        """Send a list action (CoreShowChannels, ...) and collect its items until Complete."""
        response = await self.send(action, within)
        action_id = response.action_id
        if response.status != "Success":
            return response, []
        await self.wait(lambda m: isinstance(m, Event) and m.action_id == action_id
                        and m.fields.get("EventList") == "Complete",
                        within=within, what=f"the end of {action.name}'s list")
        items = [m for m in self.messages() if isinstance(m, Event) and m.action_id == action_id
                 and m.fields.get("EventList") != "Complete"]
        return response, items

    async def login(self, username: str, secret: str) -> Response:
        return await self.send(Action("Login", Fields.of(Username=username, Secret=secret),
                                      self.next_id()))

    def messages(self) -> list[Response | Event]:
        return [r.message for r in self.received]

    def events(self, name: str | None = None) -> list[Event]:
        return [m for m in self.messages()
                if isinstance(m, Event) and (name is None or m.name == name)]

    async def wait_until(self, ready: Callable[[], bool], *, within: float = ACTION_SECONDS,
                         what: str = "a message") -> None:
        """Wait until `ready()` holds, checked after every read; fail after `within`."""

        async def waiting() -> None:
            async with self._changed:
                while not ready():
                    if self.closed:
                        raise AsteriskFailed(f"AMI closed while waiting for {what}")
                    await self._changed.wait()

        try:
            await asyncio.wait_for(waiting(), within)
        except TimeoutError:
            raise AssertionError(f"no {what} within {within} s") from None

    async def wait(self, found: Callable[[Response | Event], bool], *,
                   within: float = ACTION_SECONDS, what: str = "a message") -> Response | Event:
        """Wait until a message (any so far) satisfies `found`, and return the first such."""
        hits: list[Response | Event] = []

        def ready() -> bool:
            hits[:] = [m for m in self.messages() if found(m)][:1]
            return bool(hits)

        await self.wait_until(ready, within=within, what=what)
        return hits[0]

    async def wait_event(self, name: str, within: float = ACTION_SECONDS,
                         **fields: str) -> Event:
        """Wait for an event by name whose fields have the given values."""

        def found(message: Response | Event) -> bool:
            return (isinstance(message, Event) and message.name == name
                    and all(message.fields.get(k) == v for k, v in fields.items()))

        event = await self.wait(found, within=within, what=f"{name} {fields}")
        assert isinstance(event, Event)
        return event

    async def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@dataclass
class RealAsterisk:
    """One Asterisk process with nobat's configuration and a scenario's fake phones.

    `globals` changes [globals] entries of nobat's extensions.conf (NOBAT_FASTAGI points at
    the test's FastAGI server, NOBAT_OFFICE at a fake phone). `edit_extensions` may rewrite
    the dialplan text (a control test removes the masking to show the leak is real).
    `agi_scripts` are classic AGI programs put in the agi-bin folder. `configs` adds or
    replaces configuration files by name (the SIP tier's pjsip.conf and rtp.conf).
    """

    phones: FakePhones = field(default_factory=FakePhones)
    globals: Mapping[str, str] = field(default_factory=dict)
    edit_extensions: Callable[[str], str] | None = None
    agi_scripts: Mapping[str, str] = field(default_factory=dict)
    configs: Mapping[str, str] = field(default_factory=dict)
    binary: Path = field(default_factory=find_asterisk)
    secret: str | None = field(default_factory=lambda: secrets.token_hex(16))
    """The AMI secret put into nobat's manager.conf; None leaves it as shipped (none)."""

    def __post_init__(self) -> None:
        self.modules = module_dir(self.binary)
        self.sounds = sounds_dir(self.binary)
        self.data = data_dir(self.binary)
        if self.data is None:
            raise AsteriskNotFound(f"no documentation folder beside {self.binary} (was "
                                   "`make install` run?). " + HOW_TO_GET_ASTERISK)
        self.port = free_port()
        self.username = MANAGER_USER
        self.base = Path(tempfile.mkdtemp(prefix="nobat-asterisk-"))
        self.log = ""
        self.process: asyncio.subprocess.Process | None = None
        self._links: list[AmiLink] = []

    # ---- layout -------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        path = self.base / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def extensions_conf(self) -> str:
        text = (SHIPPED / "extensions.conf").read_text(encoding="utf-8")
        if self.globals:
            text = set_globals(text, self.globals)
        if self.edit_extensions is not None:
            text = self.edit_extensions(text)
        if not (self.phones.callers or self.phones.phones):
            return text  # no fake phones (the SIP tier's phones are SIP phones)
        return text + "\n\n" + self.phones.render()

    def modules_conf(self) -> str:
        wanted = [*required_modules((SHIPPED / "modules.conf").read_text(encoding="utf-8")),
                  *HARNESS_MODULES]
        missing = [name for name in wanted if not (self.modules / name).is_file()]
        if missing:
            raise AsteriskFailed(f"the Asterisk build in {self.modules} lacks modules nobat "
                                 f"needs: {missing}. " + HOW_TO_GET_ASTERISK)
        lines = ["[modules]", "autoload = no",
                 *(f"require = {name}" for name in dict.fromkeys(wanted))]
        return "\n".join(lines) + "\n"

    def layout(self) -> Path:
        """Write every configuration file; return the path of asterisk.conf."""
        etc = self._dir("etc")
        dirs = {name: self._dir(name) for name in
                ("varlib", "data", "agi-bin", "spool", "run", "log")}
        for entry in self.data.iterdir():  # type: ignore[union-attr]
            if entry.name != "sounds":
                (dirs["data"] / entry.name).symlink_to(entry)
        if self.sounds is not None:
            (dirs["data"] / "sounds").mkdir(exist_ok=True)
            (dirs["data"] / "sounds" / "en").symlink_to(self.sounds)
        for name, text in self.agi_scripts.items():
            script = dirs["agi-bin"] / name
            script.write_text(text, encoding="utf-8")
            script.chmod(0o755)
        files = {
            "asterisk.conf": "\n".join([
                "[directories]",
                f"astetcdir => {etc}",
                f"astmoddir => {self.modules}",
                f"astvarlibdir => {dirs['varlib']}",
                f"astdbdir => {dirs['varlib']}",
                f"astkeydir => {dirs['varlib']}",
                f"astdatadir => {dirs['data']}",
                f"astagidir => {dirs['agi-bin']}",
                f"astspooldir => {dirs['spool']}",
                f"astrundir => {dirs['run']}",
                f"astlogdir => {dirs['log']}",
                f"astsbindir => {self.binary.parent}",
                "",
                "[options]",
                "defaultlanguage = en",
                "verbose = 3",
                "",
            ]),
            "logger.conf": "[general]\n[logfiles]\nmessages.log => notice,warning,error,verbose\n",
            "modules.conf": self.modules_conf(),
            "manager.conf": manager_conf(
                (SHIPPED / "manager.conf").read_text(encoding="utf-8"), self.port, self.secret),
            "extensions.conf": self.extensions_conf(),
            "cdr.conf": "[general]\nenable = no\n",
            "cel.conf": "[general]\nenable = no\n",
            "http.conf": "[general]\nenabled = no\n",
            "indications.conf": _INDICATIONS,
            **{name: "" for name in ("features.conf", "acl.conf", "udptl.conf", "ccss.conf",
                                     "stasis.conf")},
            **self.configs,
        }
        for name, text in files.items():
            (etc / name).write_text(text, encoding="utf-8")
        return etc / "asterisk.conf"

    # ---- life cycle ---------------------------------------------------------------------
    async def start(self) -> RealAsterisk:
        """Start Asterisk (again, after `kill`, on the files it had) and wait until it has
        booted fully."""
        laid_out = self.base / "etc" / "asterisk.conf"
        conf = laid_out if laid_out.is_file() else self.layout()
        output = (self.base / "log" / "console.log").open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                str(self.binary), "-f", "-n", "-C", str(conf),
                stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True)
        finally:
            output.close()
        deadline = time.monotonic() + BOOT_SECONDS
        while True:
            if self.process.returncode is not None:
                raise AsteriskFailed(f"Asterisk exited with {self.process.returncode} while "
                                     f"starting\n{self.read_log()}")
            try:
                if self.secret is None:  # nobody can log in: the banner is all there is
                    await (await AmiLink.open(self.port)).close()
                    return self
                link = await self.connect()
                await link.wait_event("FullyBooted", within=max(deadline - time.monotonic(), 1))
                await link.close()
                self._links.remove(link)
                return self
            except (OSError, AsteriskFailed):
                if time.monotonic() > deadline:
                    raise AsteriskFailed(f"AMI on 127.0.0.1:{self.port} did not come up in "
                                         f"{BOOT_SECONDS} s\n{self.read_log()}") from None
                await asyncio.sleep(0.1)

    async def connect(self, username: str | None = None, secret: str | None = None) -> AmiLink:
        """A new AMI connection, logged in as nobat unless told otherwise."""
        link = await AmiLink.open(self.port)
        self._links.append(link)
        response = await link.login(username or self.username,
                                    secret or self.secret or "")
        if response.status != "Success":
            raise AsteriskFailed(f"AMI login failed: {response}")
        return link

    async def kill(self) -> int:
        """SIGKILL, as a crash or the OOM killer would end Asterisk: no Shutdown event, every
        call and AMI connection simply gone. `start` brings it back."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        code = await self.process.wait()
        self._links.clear()
        return code

    async def stop(self) -> int | None:
        """SIGTERM, as an init system stops Asterisk; SIGKILL if it hangs."""
        for link in self._links:
            await link.close()
        self._links.clear()
        code = None
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                code = await self.process.wait()
        elif self.process is not None:
            code = self.process.returncode
        self.log = self.read_log()
        if not os.environ.get(ENV_KEEP):
            shutil.rmtree(self.base, ignore_errors=True)
        return code

    def read_log(self, tail: int = 200) -> str:
        """The last lines of Asterisk's messages log and console output."""
        parts = []
        for name in ("messages.log", "console.log"):
            path = self.base / "log" / name
            if path.is_file():
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
                parts.append(f"--- {name} ---\n" + "\n".join(lines[-tail:]))
        return "\n".join(parts) or self.log

    async def __aenter__(self) -> RealAsterisk:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    # ---- what a test asks ---------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def listening(self) -> list[str]:
        """Every socket the Asterisk process listens on, as `ss` prints its local address."""
        import subprocess

        out = subprocess.run(["ss", "-Hlntup"], capture_output=True, text=True, check=True)
        mine = [line.split() for line in out.stdout.splitlines() if f"pid={self.pid}," in line]
        return [f"{cols[0]} {cols[4]}" for cols in mine]


def channel_events(events: Iterable[Event], prefix: str) -> list[Event]:
    """The events about channels whose name starts with `prefix` (both Local halves)."""
    return [e for e in events if (e.fields.get("Channel") or "").startswith(prefix)]
