"""Record capture i (tests/captures/i_consult_legs.json): how Asterisk lists a consultation's
legs (CoreShowChannels, Getvar NOBAT_LEG_READY) while they ring, hear who calls, wait and
talk, on the SIP tier's real PJSIP line with `nobat serve` dialling.

    NOBAT_ASTERISK=/path/to/sbin/asterisk python -m tests.sippbx.record_legs [OUT.json]

The doctor's phone (a number ending in 180) answers 6 s after its INVITE, the patient's at
once; the legs are listed every second for 20 s and three moments kept.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bridge.ami_protocol import Action, Fields
from bridge.live_channels import READY_VARIABLE
from tests.captures import captures_dir
from tests.sippbx.pbx import build_prompts, clinic_line

MOMENTS = {0: "doctor ringing, patient hearing who calls",
           9: "doctor hearing who calls, patient waiting", 14: "both bridged"}
"""Seconds after the Originates -> what the legs do then (the doctor's intro ends ~13 s)."""
FIELDS = ("ChannelState", "ChannelStateDesc", "Context", "Exten", "Priority", "Application")


async def record(folder: Path, prompts: Path) -> list[dict[str, Any]]:
    """Dial one consultation and list its legs each second; the snapshots of MOMENTS."""
    snapshots = []
    async with clinic_line(folder, prompts, start_nobat=False, late_ms=6000,
                           edits=[("grace_minutes = 2", "grace_minutes = 0"),
                                  ('survey = "in-call"', 'survey = "off"')]) as line:
        await line.book_due_now("dr-karimi", "+989351110002", dt.timedelta(seconds=60))
        await line.start_nobat()
        began = time.monotonic()
        for second in range(20):
            await asyncio.sleep(max(0.0, began + second - time.monotonic()))
            _, items = await line.ami.list_action(Action("CoreShowChannels"))
            legs, bridges = [], set()
            for item in sorted(items, key=lambda e: e.fields.get("Uniqueid") or ""):
                fields = item.fields
                if not (fields.get("Uniqueid") or "").startswith("nobat-c"):
                    continue
                ready = await line.ami.send(Action("Getvar", Fields.of(
                    Channel=fields.get("Channel") or "", Variable=READY_VARIABLE)))
                bridges |= {fields.get("BridgeId") or ""} - {""}
                legs.append({"leg": (fields.get("Uniqueid") or "").rsplit("-", 1)[1],
                             **{k: fields.get(k) for k in FIELDS},
                             "InBridge": bool(fields.get("BridgeId")),
                             "NOBAT_LEG_READY": ready.fields.get("Value")})
            if second in MOMENTS:
                snapshots.append({"moment": MOMENTS[second],
                                  "seconds_after_originate": float(second),
                                  "one_bridge": len(bridges) == 1 if bridges else None,
                                  "legs": legs})
    return snapshots


def main() -> None:
    """Record into the given file, or the captures folder's i_consult_legs.json."""
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else captures_dir() / "i_consult_legs.json"
    folder = Path(tempfile.mkdtemp(prefix="nobat-record-legs-"))
    prompts = build_prompts(folder / "prompts-build")
    (folder / "line").mkdir()
    snapshots = asyncio.run(record(folder / "line", prompts))
    out.write_text(json.dumps({"recorded": __doc__.split("\n\n")[0].replace("\n", " "),
                               "snapshots": snapshots}, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
