"""RTP a SIP phone sends, written as pcap files for SIPp's play_pcap_audio.

A phone's call is one RTP stream (one SSRC): PCMA silence, as a phone sends while nobody
speaks (the trunk's rtp_timeout would end a call that sends nothing), and RFC 2833 / 4733
events for the keys its owner presses. SIPp plays one file at a time, from the first packet's
moment to the last's, and starts the next file when the test says a key is pressed
(tests/sippbx/*.xml); a file still playing is cut off then. So each file here is "press these
keys, then stay silent for a long while", and every file of a call carries on the stream's
sequence numbers and timestamps past everything the file before could have sent: Asterisk
ignores an event whose timestamp is not later than the last one's (one of SIPp's bundled
dtmf_2833_N.pcap files played twice in a call is heard once).

The file format is what SIPp reads (libpcap, Ethernet, IPv4, UDP); SIPp keeps only the UDP
part and the times, and rewrites the ports to its media port and the far end's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

RATE = 8000
"""G.711 and telephone-event clock: samples per second."""
PACKET_MS = 20
SAMPLES = RATE * PACKET_MS // 1000
PCMA = 8
TELEPHONE_EVENT = 101
"""The payload types tests/sippbx/*.xml offer and answer with."""
PCMA_SILENCE = b"\xd5" * SAMPLES
KEY_MS = 160
"""How long a key is held."""
GAP_MS = 240
"""Silence between two keys pressed in one go (a number typed in)."""
REACTION_MS = 400
"""Silence before the first key of a step: a person hears the prompt start, then presses."""
EVENTS = {**{str(n): n for n in range(10)}, "*": 10, "#": 11}
PCAP_PORT = 10000
"""UDP ports in the file; SIPp replaces them with the call's own."""


@dataclass
class Packet:
    """One RTP packet and when, from the file's start, SIPp sends it."""

    at_ms: int
    payload: bytes


class RtpStream:
    """One phone's RTP stream in one call: its SSRC, next sequence number and timestamp."""

    def __init__(self, ssrc: int, first_seq: int = 1000, first_timestamp: int = 16000) -> None:
        self.ssrc = ssrc
        self.seq = first_seq
        self.timestamp = first_timestamp

    def _header(self, payload_type: int, marker: bool, timestamp: int) -> bytes:
        """An RTP header taking the stream's next sequence number."""
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | payload_type,
                             self.seq & 0xFFFF, timestamp & 0xFFFFFFFF, self.ssrc)
        self.seq += 1
        return header

    def silence(self, at_ms: int, ms: int) -> list[Packet]:
        """PCMA silence for `ms` from `at_ms`, advancing the stream's clock."""
        packets = []
        for n in range(ms // PACKET_MS):
            packets.append(Packet(at_ms + n * PACKET_MS,
                                   self._header(PCMA, False, self.timestamp) + PCMA_SILENCE))
            self.timestamp += SAMPLES
        return packets

    def key(self, at_ms: int, key: str) -> list[Packet]:
        """One key as an RFC 4733 event: updates every 20 ms, then the end sent three times
        (one sequence number, as phones do); all with the event's start as timestamp."""
        event, start = EVENTS[key], self.timestamp
        packets = []
        steps = KEY_MS // PACKET_MS
        for n in range(1, steps + 1):
            body = struct.pack("!BBH", event, 10, n * SAMPLES)
            packets.append(Packet(at_ms + (n - 1) * PACKET_MS,
                                   self._header(TELEPHONE_EVENT, n == 1, start) + body))
        end = struct.pack("!BBH", event, 0x80 | 10, steps * SAMPLES)
        header = self._header(TELEPHONE_EVENT, False, start)
        packets += [Packet(at_ms + steps * PACKET_MS, header + end)] * 3
        self.timestamp += (steps + 1) * SAMPLES
        return packets

    def step(self, keys: str, silence_s: float) -> list[Packet]:
        """Press `keys` one after another, then stay silent for `silence_s`; the stream then
        moves on past all of it, so the next step starts later whenever it is played."""
        packets = self.silence(0, REACTION_MS)
        at = REACTION_MS
        for key in keys:
            packets += self.key(at, key)
            at += KEY_MS + PACKET_MS
            packets += self.silence(at, GAP_MS)
            at += GAP_MS
        packets += self.silence(at, int(silence_s * 1000))
        return packets


def write_pcap(path: Path, packets: list[Packet]) -> Path:
    """`packets` as a classic libpcap file of Ethernet/IPv4/UDP frames."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for packet in packets:
        udp = struct.pack("!HHHH", PCAP_PORT, PCAP_PORT, 8 + len(packet.payload), 0)
        ip_len = 20 + len(udp) + len(packet.payload)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, 0, 0, 64, 17, 0,
                         bytes([127, 0, 0, 2]), bytes([127, 0, 0, 1]))
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp + packet.payload
        seconds, millis = divmod(packet.at_ms, 1000)
        out.append(struct.pack("<IIII", seconds, millis * 1000, len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path


def key_steps(folder: Path, name: str, steps: list[str], ssrc: int, silence_s: float,
              slots: int) -> dict[str, Path]:
    """Write a phone's pcap files for one call: step0 (silence) and one file per entry of
    `steps` (the keys pressed at once), padded to the `slots` the scenario names; returns
    SIPp's -key arguments (step0 ... step<slots>) by keyword."""
    if len(steps) > slots:
        raise ValueError(f"{len(steps)} key steps, but the scenario has {slots} slots")
    stream = RtpStream(ssrc)
    files = {"step0": write_pcap(folder / f"{name}-step0.pcap", stream.step("", silence_s))}
    for n, keys in enumerate(steps, start=1):
        files[f"step{n}"] = write_pcap(folder / f"{name}-step{n}.pcap",
                                       stream.step(keys, silence_s))
    unused = write_pcap(folder / f"{name}-unused.pcap", stream.silence(0, PACKET_MS))
    for n in range(len(steps) + 1, slots + 1):
        files[f"step{n}"] = unused
    return files
