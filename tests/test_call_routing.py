"""AMI events reach the inbox of the one call they concern, by the ids nobat gave its
channels and actions, and the dialplan's NobatLegReady by its Consultation field."""

from __future__ import annotations

from collections.abc import Callable

from bridge.ami_protocol import Event, Fields
from bridge.call_routing import CallInboxes, call_key
from clinic.call_kinds import CallKind, Leg

CONSULTATION, PATIENT_CALL = CallKind.CONSULTATION, CallKind.PATIENT_CALL


class AmiLink:
    """The AMI client's subscriptions, and nothing else of it."""

    def __init__(self) -> None:
        self.subscribers: list[Callable[[Event], None]] = []

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    def emit(self, name: str, **fields: str) -> None:
        for callback in self.subscribers:
            callback(Event(name, Fields.of(**fields)))


def test_an_event_names_its_call_by_actionid_uniqueid_or_linkedid() -> None:
    doctor = CONSULTATION.channel_id(12, 1, Leg.DOCTOR)
    assert call_key(Fields.of(ActionID=doctor)) == (CONSULTATION, 12)
    assert call_key(Fields.of(Uniqueid=f"{doctor}-2")) == (CONSULTATION, 12)
    assert call_key(Fields.of(Uniqueid="1700000000.5",
                              Linkedid=PATIENT_CALL.channel_id(7, 2))) == (PATIENT_CALL, 7)
    assert call_key(Fields.of(ActionID="42", Consultation="12")) == (CONSULTATION, 12)
    assert call_key(Fields.of(Uniqueid="1700000000.5", Consultation="")) is None


def test_each_event_goes_to_its_own_call_alone() -> None:
    link = AmiLink()
    inboxes = CallInboxes(link.subscribe)
    with inboxes.open((CONSULTATION, 12)) as consultation, \
            inboxes.open((PATIENT_CALL, 12)) as patient_call:
        assert len(link.subscribers) == 1  # one subscription for every call
        link.emit("OriginateResponse", ActionID=CONSULTATION.channel_id(12, 1, Leg.PATIENT))
        link.emit("Hangup", Uniqueid=PATIENT_CALL.channel_id(12, 1) + "-2")
        link.emit("UserEvent", UserEvent="NobatLegReady", Consultation="12")
        link.emit("Hangup", Uniqueid=CONSULTATION.channel_id(13, 1, Leg.DOCTOR))  # not here
        link.emit("FullyBooted")
        assert [consultation.get_nowait().name for _ in range(consultation.qsize())] == [
            "OriginateResponse", "UserEvent"]
        assert [patient_call.get_nowait().name for _ in range(patient_call.qsize())] == [
            "Hangup"]
    link.emit("Hangup", Uniqueid=CONSULTATION.channel_id(12, 1, Leg.DOCTOR))
    assert consultation.empty()  # the call is over: its inbox is closed
    inboxes.close()
    assert link.subscribers == []
