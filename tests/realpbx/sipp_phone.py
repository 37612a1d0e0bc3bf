"""SIP phones for the recorder: SIPp (Debian's sip-tester) as a phone that answers or calls.

A `SippPhone` answers one call from Asterisk after ringing, and its 200 OK asserts its own
identity in P-Asserted-Identity and Remote-Party-ID, as a carrier trunk trusted for identity
does; it accepts re-INVITEs and UPDATEs and ends when Asterisk sends BYE. A `SippCaller`
places one call to Asterisk and waits for Asterisk's BYE. Both keep every SIP message they
received (SIPp's -trace_msg), so a recording can say what identity each phone was shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

SIPP = "/usr/bin/sipp"
IDENTITY_HEADERS = ("From", "To", "P-Asserted-Identity", "Remote-Party-ID")

_SDP = """\
v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
"""

_ANSWERING = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="phone that answers with its own identity">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]></send>
  <pause/>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
P-Asserted-Identity: "[display]" <sip:[number]@[local_ip]>
Remote-Party-ID: "[display]" <sip:[number]@[local_ip]>;party=called;privacy=off;screen=no
Content-Type: application/sdp
Content-Length: [len]

{_SDP}]]></send>
  <recv request="ACK" crlf="true"/>
  <label id="in-call"/>
  <recv request="INVITE" optional="true" next="reinvite"/>
  <recv request="UPDATE" optional="true" next="update"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <nop next="done"/>
  <label id="reinvite"/>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

{_SDP}]]></send>
  <recv request="ACK" next="in-call"/>
  <label id="update"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]></send>
  <nop next="in-call"/>
  <label id="done"/>
</scenario>
"""

_CALLING = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="caller through a trunk that asserts the caller's number">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "[display]" <sip:[user]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:[user]@[local_ip]:[local_port];transport=[transport]>
P-Asserted-Identity: "[display]" <sip:[number]@[local_ip]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{_SDP}]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "[display]" <sip:[user]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:[user]@[local_ip]:[local_port];transport=[transport]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"""


def free_udp_port() -> int:
    """A UDP port on loopback that nothing uses now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class SipMessage:
    """A SIP message a phone received: its first line and its identity headers."""

    first_line: str
    headers: dict[str, str]

    @property
    def name(self) -> str:
        """INVITE, UPDATE, BYE, ... or the response code and text."""
        parts = self.first_line.split(" ", 2)
        return parts[0] if not parts[0].startswith("SIP/") else " ".join(parts[1:])


def received_messages(log: str) -> list[SipMessage]:
    """The messages SIPp's -trace_msg file says it received, in order."""
    messages = []
    for block in re.split(r"\n-{20,}[^\n]*\n", "\n" + log):
        _, found, body = block.partition("message received")
        if not found:
            continue
        lines = body.split("\n")[2:]  # "[n] bytes :" and an empty line
        lines = [line.rstrip("\r") for line in lines]
        if not lines or not lines[0]:
            continue
        headers = {}
        for line in lines[1:]:
            if not line:
                break
            key, _, value = line.partition(":")
            if key.strip() in IDENTITY_HEADERS:
                headers[key.strip()] = value.strip()
        messages.append(SipMessage(lines[0], headers))
    return messages


@dataclass
class _Sipp:
    """One SIPp process running one call of a scenario on 127.0.0.1."""

    folder: Path
    name: str
    keys: dict[str, str]
    port: int = field(default_factory=free_udp_port)
    media_port: int = field(default_factory=free_udp_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def message_file(self) -> Path:
        return self.folder / f"sipp-{self.name}-messages.log"

    async def _run(self, scenario: str, *options: str) -> None:
        if shutil.which(SIPP) is None:
            raise FileNotFoundError(f"{SIPP} is missing: apt-get install sip-tester")
        xml = self.folder / f"sipp-{self.name}.xml"
        xml.write_text(scenario, encoding="latin-1")
        keys = [arg for key, value in self.keys.items() for arg in ("-key", key, value)]
        log = (self.folder / f"sipp-{self.name}.out").open("wb")
        try:
            self.process = await asyncio.create_subprocess_exec(
                SIPP, *options, "-sf", str(xml), "-i", "127.0.0.1", "-p", str(self.port),
                "-mp", str(self.media_port), "-m", "1", "-timeout", "120s", "-nostdin",
                "-trace_msg", "-message_file", str(self.message_file), "-trace_err",
                "-error_file", str(self.folder / f"sipp-{self.name}-errors.log"), *keys,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                cwd=self.folder)
        finally:
            log.close()
        await asyncio.sleep(0.3)
        if self.process.returncode is not None:
            out = (self.folder / f"sipp-{self.name}.out").read_text(errors="replace")
            raise RuntimeError(f"SIPp {self.name} exited at once:\n{out[-2000:]}")

    async def finished(self, within: float = 30.0) -> int:
        """Wait for SIPp to end its one call; its exit code (0: the scenario passed)."""
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), within)

    async def stop(self) -> None:
        """End SIPp if it is still running."""
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 5)
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()

    def received(self) -> list[SipMessage]:
        """What this phone received so far."""
        if not self.message_file.is_file():
            return []
        return received_messages(self.message_file.read_text(encoding="latin-1"))


@dataclass
class SippPhone(_Sipp):
    """A phone Asterisk dials: rings, answers after `answer_seconds` asserting its identity."""

    async def start(self, number: str, display: str, answer_seconds: float) -> None:
        """Start listening for the one call."""
        self.keys |= {"number": number, "display": display}
        await self._run(_ANSWERING, "-d", str(int(answer_seconds * 1000)))


@dataclass
class SippCaller(_Sipp):
    """A caller that reaches Asterisk through a trunk asserting the caller's number."""

    async def call(self, asterisk_port: int, dialled: str, user: str, number: str,
                   display: str) -> None:
        """Send the INVITE to Asterisk on 127.0.0.1:`asterisk_port`."""
        self.keys |= {"number": number, "display": display, "user": user}
        await self._run(_CALLING, f"127.0.0.1:{asterisk_port}", "-s", dialled)
