"""The fake PBX lists a consultation's legs as Asterisk 22 did on a real PJSIP line (capture
i_consult_legs.json): what nobat reads to resume an attempt after missing its events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.ami_client import AmiClient
from bridge.ami_protocol import Action, Fields
from bridge.live_channels import READY_VARIABLE
from clinic.call_kinds import Leg
from db.engine import Database
from tests.captures import captures_dir
from tests.fakepbx.channels import State
from tests.fakepbx.script import Answers
from tests.support.dialer_line import Line, line
from tests.test_dialer import START, book, doctor, leg_channel, legs_are, patient, settled

COMPARED = ("ChannelStateDesc", "Application", "InBridge", "NOBAT_LEG_READY")
"""Compared on every leg; an answered leg's Context and Priority too (a ringing PJSIP leg
shows its endpoint's context, a Local one its own: nobat reads neither)."""


async def listed(client: AmiClient, ident: int) -> dict[str, Any]:
    """The attempt's legs as CoreShowChannels and Getvar give them, in the capture's terms."""
    _, items = await client.send_list(Action("CoreShowChannels"))
    legs, bridges = [], set()
    for leg in Leg:
        [item] = [e.fields for e in items if e.fields.get("Uniqueid") == f"nobat-c{ident}-a1-{leg}"]
        ready = await client.send(Action("Getvar", Fields.of(Channel=item["Channel"],
                                                             Variable=READY_VARIABLE)))
        bridges |= {item["BridgeId"]} - {""}
        legs.append({"leg": str(leg), **{k: item[k] for k in (
            "ChannelStateDesc", "Context", "Priority", "Application")},
            "InBridge": bool(item["BridgeId"]), "NOBAT_LEG_READY": ready.fields.get("Value")})
    return {"one_bridge": len(bridges) == 1 if bridges else None, "legs": legs}


def reduced(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A snapshot, captured or listed by the fake, reduced to what is compared."""
    legs = [{k: v for k, v in leg.items()
             if k in (*COMPARED, "leg") or (leg["ChannelStateDesc"] == "Up"
                                            and k in ("Context", "Priority"))}
            for leg in snapshot["legs"]]
    return {"one_bridge": snapshot["one_bridge"], "legs": legs}


async def test_the_fake_lists_a_consultations_legs_as_asterisk_did(database: Database) -> None:
    capture = json.loads((captures_dir() / "i_consult_legs.json").read_text(encoding="utf-8"))
    [ident] = await book(database, 1)
    phones = [doctor(1, Answers(6.0)), patient(1, Answers(0.1, talk=60))]
    async with line(database, phones, START) as pbx_line:
        client = AmiClient("127.0.0.1", pbx_line.pbx.port, "ctrl", "ctrlsecret")
        await client.start()
        await client.wait_ready(2.0)
        moments: list[Callable[[], Awaitable[bool]]] = [
            lambda: playing(pbx_line, ident, State.Ringing),
            lambda: waiting_for_the_doctor(pbx_line, ident),
            settled(database, [ident], "bridged"),
        ]
        try:
            for moment, snapshot in zip(moments, capture["snapshots"], strict=True):
                await pbx_line.until(moment, seconds=10.0)
                assert reduced(await listed(client, ident)) == reduced(snapshot), \
                    snapshot["moment"]
        finally:
            await client.close()


async def playing(pbx_line: Line, ident: int, doctor_state: State) -> bool:
    """The patient hears who calls while the doctor's leg is in `doctor_state`."""
    patient_leg = leg_channel(pbx_line, ident, Leg.PATIENT)
    return (await legs_are(pbx_line, ident, doctor_state, State.Up)()
            and patient_leg is not None and patient_leg.application == "Playback")


async def waiting_for_the_doctor(pbx_line: Line, ident: int) -> bool:
    """The patient waits; the doctor answered and hears who calls."""
    doctor_leg, patient_leg = (leg_channel(pbx_line, ident, leg) for leg in Leg)
    await asyncio.sleep(0)
    return (doctor_leg is not None and patient_leg is not None
            and doctor_leg.application == "Playback" and patient_leg.application == "Wait")
