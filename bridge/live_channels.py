"""What Asterisk says of a channel when nobat missed its events: a CoreShowChannel item, and
for an answered leg of nobat's whether it waits (NOBAT_LEG_READY, read with Getvar).

On a real PJSIP line (issue 19's capture, docs/phone-line.md) an originated leg shows, while
it rings, state Ringing with Application AppDial2 "(Outgoing Line)": no dialplan runs on it
yet. Answered, it runs [nobat-consult-hold]: Playback while it hears who calls, then
NOBAT_LEG_READY=1 and Wait. Bridged, both legs carry the same BridgeId.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bridge.ami_protocol import Event

READY_VARIABLE = "NOBAT_LEG_READY"
"""Set to 1 by [nobat-consult-hold] just before UserEvent NobatLegReady: the leg waits."""
UP = "6"
"""ChannelState of an answered channel (AST_STATE_UP)."""


@dataclass(frozen=True)
class LiveChannel:
    """One channel as CoreShowChannels lists it, with what nobat asked of it since."""

    channel: str
    up: bool = False
    context: str = ""
    application: str = ""
    bridge_id: str = ""
    ready: bool = False
    """NOBAT_LEG_READY was 1: the leg heard its announcement and waits for the bridge."""

    @classmethod
    def listed(cls, item: Event) -> LiveChannel:
        """From one CoreShowChannel event."""
        fields = item.fields
        return cls(fields.get("Channel") or "", fields.get("ChannelState") == UP,
                   fields.get("Context") or "", fields.get("Application") or "",
                   fields.get("BridgeId") or "")


Live = Mapping[str, LiveChannel]
"""Uniqueid -> channel: every channel Asterisk has now."""
