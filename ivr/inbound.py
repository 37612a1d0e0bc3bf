"""An inbound call from answer to hang-up: log it, run the flow, and always close the record."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

from db.call_log import CallLog, CallRecord
from ivr.call import Call, CallEnd, Services
from ivr.conditions import caller_number
from ivr.engine import FlowEngine, FlowsOf
from ivr.flow_store import FlowStore
from ivr.practice_routes import SHARED_FLOW
from ivr.session import CallerHungUp, CallSession

log = logging.getLogger(__name__)
ENTRY_FLOW = "main"


class InboundLine:
    """What every carrier hands its calls to; each call runs on the flows current at its start."""

    def __init__(self, engine: FlowEngine, services: Services, call_log: CallLog,
                 flows: FlowStore) -> None:
        self.engine = engine
        self.services = services
        self.call_log = call_log
        self.flows = flows
        self.calls: dict[int, Call] = {}
        self.logging_calls = True
        """False for try-outs in the terminal: staff walking a flow are not patients calling."""
        self.on_call_end: list[Callable[[CallRecord], None]] = []
        """Told of every logged call once it ended (the metrics' call-duration histogram)."""
        self._ids = itertools.count(1)

    async def answer(self, session: CallSession) -> Call:
        """Run one call to its end, in the practice its dialled number reaches or else on the
        shared number's menu; a hang-up at any step ends it cleanly."""
        snapshot = self.flows.current()
        services = snapshot.routes.line(session.info.dialled)
        entry = session.info.options.get("flow", ENTRY_FLOW)
        if services is None:
            services, entry = snapshot.routes.shared, SHARED_FLOW
        call = self.new_call(session, services)
        known = snapshot.flows_for(services.practice)
        return await self.run(call, snapshot.flows_for, entry if entry in known else ENTRY_FLOW,
                              logged=self.logging_calls)

    def new_call(self, session: CallSession, services: Services) -> Call:
        """A call on a practice's services, in the language the PBX asked for."""
        call = Call(session, services)
        if session.info.options.get("lang") in ("fa", "en"):
            call.language = session.info.options["lang"]
        return call

    async def run(self, call: Call, flows: FlowsOf, entry: str, logged: bool) -> Call:
        """Run `entry` on a call; `logged` calls are written to the call log when they end."""
        session, info = call.session, call.session.info
        started = call.started_at = call.now()
        call_id = next(self._ids)
        self.calls[call_id] = call
        try:
            await session.begin(call_id)
            await call.enter(call.services)
            await self.engine.run(call, flows, entry)
            if call.outcome is not CallEnd.OFFICE:
                await session.finish()
        except CallerHungUp:
            call.outcome = CallEnd.HUNG_UP
            raise
        except Exception:
            call.outcome = CallEnd.FAILED
            raise
        finally:
            del self.calls[call_id]
            if logged:
                record = CallRecord(started, call.now(),
                                    caller_number(info.caller_id), info.dialled,
                                    call.language, call.outcome, call.services.practice)
                for listener in self.on_call_end:
                    listener(record)
                await asyncio.shield(self.call_log.record(record))
        return call
