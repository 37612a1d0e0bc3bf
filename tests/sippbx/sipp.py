"""SIPp phones for the SIP tier and the capture recorder: processes, the SIP messages they saw,
and their key presses.

Each `Sipp` runs a scenario (the SIP tier's beside this file: phones.xml, caller.xml,
register.xml; the recorder's beside tests/realpbx/record.py) on its own loopback address,
with `-trace_msg` writing every message it sent or received to a file the test reads
(`messages()`). A test presses a phone's keys by sending the call an INFO (`press`), which
starts the next pcap of key presses the phone was given (tests/sippbx/rtp.py); a NOTIFY
(`notify`) makes a caller hang up, or a phone refresh the call with a re-INVITE. Those
requests come from the test's own socket, never from Asterisk.

SIPp is Debian's sip-tester (`/usr/bin/sipp`), or $NOBAT_SIPP.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENV_SIPP = "NOBAT_SIPP"
HOW_TO_GET_SIPP = (
    "The SIP tier needs SIPp 3.6 with pcap play: install Debian's sip-tester "
    "(apt-get install sip-tester, which gives /usr/bin/sipp) or set NOBAT_SIPP to a sipp "
    "binary; see tests/sippbx/README.md.")
TEST_REQUESTS = ("INFO", "NOTIFY")
"""The requests a test sends a phone (press a key, hang up or refresh); Asterisk sends
neither to these phones (its keys are RFC 4733 events, and it subscribes to nothing)."""
WAIT_SECONDS = 20.0
POLL_SECONDS = 0.05
_BLOCK = re.compile(r"^-{47} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)$", re.MULTILINE)
_HEAD = re.compile(r"^\w+ (?:message received \[\d+\] bytes :|message sent \(\d+ bytes\):)$")


class SippNotFound(RuntimeError):
    """No SIPp to run: the tier fails (never skips) with this message."""


def find_sipp() -> Path:
    """The SIPp binary: $NOBAT_SIPP, else `sipp` on PATH."""
    configured = os.environ.get(ENV_SIPP)
    found = configured or shutil.which("sipp")
    if not found or not (Path(found).is_file() and os.access(found, os.X_OK)):
        where = f"{ENV_SIPP}={configured} is not an executable file" if configured else \
            "there is no `sipp` on PATH"
        raise SippNotFound(f"{where}. {HOW_TO_GET_SIPP}")
    return Path(found).resolve()


def free_udp_port(address: str) -> int:
    """A UDP port free on `address` now (with the next one too: SIPp's media takes two)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
            first.bind((address, 0))
            port = first.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
                    second.bind((address, port + 2))
            except OSError:
                continue
            return port


@dataclass(frozen=True)
class SipMessage:
    """One SIP message a SIPp sent or received, as its trace shows it."""

    received: bool
    """True for a message that reached this phone (from Asterisk, or from the test)."""
    at: dt.datetime
    """When SIPp sent or received it (its trace's clock, local time)."""
    start_line: str
    headers: tuple[tuple[str, str], ...]
    body: str

    @property
    def method(self) -> str | None:
        """The request's method; None for a response."""
        return None if self.start_line.startswith("SIP/2.0") else self.start_line.split()[0]

    @property
    def status(self) -> int | None:
        """The response's status code; None for a request."""
        return int(self.start_line.split()[1]) if self.method is None else None

    @property
    def cseq_method(self) -> str:
        """The method a response answers (CSeq), or the request's own."""
        return (self.header("CSeq") or " ").split()[-1]

    def header(self, name: str) -> str | None:
        """The first value of a header, by name (case-insensitive)."""
        values = self.headers_named(name)
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        """Every value of a header, in order (a header may come more than once)."""
        return [value for key, value in self.headers if key.lower() == name.lower()]

    @property
    def call_id(self) -> str:
        """The dialogue this message belongs to."""
        return self.header("Call-ID") or ""

    @property
    def request_user(self) -> str | None:
        """The user part of a request's URI (the number dialled)."""
        match = re.match(r"\w+ sips?:([^@;> ]+)@", self.start_line)
        return match.group(1) if match else None

    def __str__(self) -> str:
        lines = [self.start_line, *(f"{k}: {v}" for k, v in self.headers)]
        return "\n".join(lines) + ("\n\n" + self.body if self.body else "")


def parse_trace(text: str) -> list[SipMessage]:
    """The messages in a SIPp `-trace_msg` file, in order."""
    messages = []
    parts = _BLOCK.split(text)
    for stamp, block in zip(parts[1::2], parts[2::2], strict=True):
        lines = block.strip("\n").split("\n")
        if not lines or not _HEAD.match(lines[0].strip()):
            continue
        raw = "\n".join(lines[1:]).replace("\r\n", "\n").strip("\n")
        head, _, body = raw.partition("\n\n")
        head_lines = head.split("\n")
        headers = []
        for line in head_lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers.append((name.strip(), value.strip()))
        messages.append(SipMessage("received" in lines[0], dt.datetime.fromisoformat(stamp),
                                   head_lines[0].strip(), tuple(headers), body))
    return messages


@dataclass
class Sipp:
    """One SIPp process playing `scenario` (a file beside this module, or a path) on
    `address`."""

    scenario: str | Path
    address: str
    folder: Path
    name: str
    remote: str | None = None
    """host:port a UAC sends to; None for a UAS."""
    keys: Mapping[str, str] = field(default_factory=dict)
    """SIPp -key keywords (pcap files by step, the caller's identity, ...)."""
    options: Sequence[str] = ()
    binary: Path = field(default_factory=find_sipp)

    def __post_init__(self) -> None:
        self.port = free_udp_port(self.address)
        self.media_port = free_udp_port(self.address)
        self.trace = self.folder / f"{self.name}-messages.log"
        self.errors_file = self.folder / f"{self.name}-errors.log"
        self.output = self.folder / f"{self.name}-output.log"
        self.process: asyncio.subprocess.Process | None = None
        self._cseq = itertools.count(1)

    @property
    def uri_host(self) -> str:
        """address:port where this phone takes SIP (for pjsip.conf, a Contact)."""
        return f"{self.address}:{self.port}"

    def command(self) -> list[str]:
        """The sipp command line (also shown when SIPp fails)."""
        command = [str(self.binary), *([self.remote] if self.remote else []),
                   "-sf", str(HERE / self.scenario), "-i", self.address, "-p", str(self.port),
                   "-mi", self.address, "-mp", str(self.media_port), "-nostdin",
                   "-trace_msg", "-message_file", str(self.trace),
                   "-trace_err", "-error_file", str(self.errors_file)]
        for key, value in self.keys.items():
            command += ["-key", key, str(value)]
        return command + list(self.options)

    async def start(self) -> Sipp:
        """Start SIPp; return once its SIP port is taken (it is then ready for messages)."""
        with self.output.open("wb") as output:
            self.process = await asyncio.create_subprocess_exec(
                *self.command(), cwd=self.folder, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=output, start_new_session=True)
        deadline = time.monotonic() + WAIT_SECONDS
        while not self._port_taken():
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"SIPp {self.name} did not start: {self.report()}")
            await asyncio.sleep(POLL_SECONDS)
        return self

    def _port_taken(self) -> bool:
        """Whether SIPp has bound its SIP port yet."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((self.address, self.port))
            except OSError:
                return True
        return False

    def messages(self) -> list[SipMessage]:
        """Every message this phone sent or received so far."""
        if not self.trace.is_file():
            return []
        return parse_trace(self.trace.read_text(encoding="utf-8", errors="replace"))

    async def wait_for(self, found: Callable[[SipMessage], bool], what: str,
                       within: float = WAIT_SECONDS) -> SipMessage:
        """The first message (so far or to come) for which `found` holds."""
        deadline = time.monotonic() + within
        while True:
            for message in self.messages():
                if found(message):
                    return message
            if time.monotonic() > deadline:
                raise AssertionError(f"SIPp {self.name}: no {what} within {within} s; "
                                     + self.report())
            if self.process is not None and self.process.returncode is not None:
                raise AssertionError(f"SIPp {self.name} exited while waiting for {what}; "
                                     + self.report())
            await asyncio.sleep(POLL_SECONDS)

    async def wait_ended(self, within: float = WAIT_SECONDS) -> int:
        """Wait for a SIPp that plays a set number of calls (-m) to finish; its exit code."""
        assert self.process is not None
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            raise AssertionError(f"SIPp {self.name} still running after {within} s; "
                                 + self.report()) from None

    def _tell(self, method: str, call_id: str) -> None:
        """Send the call a request from the test's own socket (each with its own CSeq, or
        SIPp would take it for a retransmission)."""
        cseq = next(self._cseq)
        request = (f"{method} sip:phone@{self.uri_host} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-nobat-test-{cseq}\r\n"
                   f"From: <sip:test@127.0.0.1>;tag=nobat-test\r\n"
                   f"To: <sip:phone@{self.uri_host}>\r\n"
                   f"Call-ID: {call_id}\r\n"
                   f"CSeq: {cseq} {method}\r\n"
                   "Max-Forwards: 70\r\n"
                   "Content-Length: 0\r\n\r\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(request.encode(), (self.address, self.port))

    def press(self, call_id: str) -> None:
        """The phone's owner keys in the next step of this call (its next pcap plays)."""
        self._tell("INFO", call_id)

    def notify(self, call_id: str) -> None:
        """A caller (caller.xml) hangs up with BYE; a phone (phones.xml) refreshes the call
        with a re-INVITE asserting its own number again."""
        self._tell("NOTIFY", call_id)

    def unexpected(self) -> str:
        """What SIPp logged as unexpected (messages its scenario did not expect)."""
        if not self.errors_file.is_file():
            return ""
        return self.errors_file.read_text(encoding="utf-8", errors="replace")

    def report(self, tail: int = 40) -> str:
        """SIPp's own output and unexpected messages, for a failure message."""
        parts = [f"command: {' '.join(self.command())}"]
        for path in (self.output, self.errors_file):
            if path.is_file():
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
                parts.append(f"--- {path.name} ---\n" + "\n".join(lines[-tail:]))
        return "\n".join(parts)

    async def stop(self) -> None:
        """End SIPp (SIGTERM, then SIGKILL) if it is still running."""
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
