"""The status page's views of nobat's parts, assembled here so web/ reads plain views and
callables and never imports the parts' classes (pyproject.toml's import contracts)."""

from __future__ import annotations

import datetime as dt

from bridge.dialer import Dialer
from clinic.phones import mask
from db.booking import BookingService
from db.engine import Database
from ivr.call import Call
from ivr.conditions import caller_number
from ivr.fastagi import FastAgiServer
from ivr.inbound import InboundLine
from nobat.supervisor import Supervisor
from web.metrics import Metrics
from web.status import LiveCall, Sources


def status_sources(database: Database, ivr: FastAgiServer, line: InboundLine,
                   dialer: Dialer | None, metrics: Metrics, parts: Supervisor) -> Sources:
    """What the status page reports on; the line and dialer feed the metrics' histograms."""
    line.on_call_end.append(metrics.call_ended)
    ivr.on_turnaround.append(metrics.turnaround)
    if dialer is not None:
        dialer.on_dispatch.append(metrics.dispatched)
    ami = dialer.ami if dialer is not None else None
    return Sources(database, line.services.clinic.tz, lambda key: practice_booking(line, key),
                   flows=line.flows,
                   live_calls=lambda now: live_calls(line, now),
                   fastagi=lambda: fastagi_state(ivr),
                   ami=(lambda: ami.status) if ami is not None else None, parts=parts.views)


def fastagi_state(ivr: FastAgiServer) -> str:
    """The FastAGI door as the page words it."""
    if not ivr.listening:
        return "stopped"
    return "listening" if ivr.access.secret else "no_secret"


def practice_booking(line: InboundLine, key: str) -> BookingService | None:
    """A practice's booking service as the line's current routes hold it (with one practice
    too, whose route is not keyed); None for a practice the line does not serve yet."""
    return next((services.booking for services in line.flows.current().routes.practices.values()
                 if services.practice == key), None)


def live_calls(line: InboundLine, now: dt.datetime) -> list[LiveCall]:
    """IVR calls on this instance's line, oldest first, callers masked, each with the
    practice it is in now (a caller on the shared number's menu is in none yet)."""
    calls = sorted(line.calls.values(), key=lambda c: c.started_at or now)
    return [LiveCall(_caller(c), c.step, c.language,
                     int((now - (c.started_at or now)).total_seconds()), c.services.practice)
            for c in calls]


def _caller(call: Call) -> str:
    """The patient's number, masked: the caller id, or whom nobat called."""
    number = call.patient_phone if call.about is not None else caller_number(
        call.session.info.caller_id)
    return mask(number) if number else "unknown"
