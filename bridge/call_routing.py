"""AMI events to the one call they concern, by the ids nobat put on its channels and actions,
so a thousand calls in progress do not each look at every event."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bridge.ami_protocol import Event, Fields
from clinic.call_kinds import CallKind, call_of

CallKey = tuple[CallKind, int]
"""A call in progress: its kind and its row's id."""
Inbox = asyncio.Queue[Event | dt.datetime]
"""What one call is told: its AMI events, and the times it asked to be woken at."""
Subscribe = Callable[[Callable[[Event], None]], Callable[[], None]]
"""AmiClient.subscribe: every event to a callback, until the returned unsubscribe."""


def call_key(fields: Fields) -> CallKey | None:
    """The call an event concerns: named by its ActionID, Uniqueid or Linkedid (a
    ChannelId), or by the Consultation field of the dialplan's UserEvent NobatLegReady."""
    for name in ("ActionID", "Uniqueid", "Linkedid"):
        found = call_of(fields.get(name))
        if found is not None:
            return found
    consultation = fields.get("Consultation") or ""
    return (CallKind.CONSULTATION, int(consultation)) if consultation.isdigit() else None


class CallInboxes:
    """One inbox per call in progress; events for no such call are dropped."""

    def __init__(self, subscribe: Subscribe) -> None:
        self.subscribe = subscribe
        self._inboxes: dict[CallKey, Inbox] = {}
        self._unsubscribe: Callable[[], None] | None = None

    @contextmanager
    def open(self, key: CallKey) -> Iterator[Inbox]:
        """The call's inbox while it runs; open it before its Originate to see the answer."""
        inbox: Inbox = asyncio.Queue()
        self._inboxes[key] = inbox
        if self._unsubscribe is None:
            self._unsubscribe = self.subscribe(self.route)
        try:
            yield inbox
        finally:
            self._inboxes.pop(key, None)

    def route(self, event: Event) -> None:
        """Hand an event to the one call it concerns, if that call is in progress here."""
        if not self._inboxes:
            return
        key = call_key(event.fields)
        inbox = self._inboxes.get(key) if key is not None else None
        if inbox is not None:
            inbox.put_nowait(event)

    def close(self) -> None:
        """Stop listening to the AMI link (nobat is stopping)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
