"""Reads of one moment as one statement (db/batches.py): every asker gets its own answer, from
a statement that asked it, and practices' callers asking at once still each read their own."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest

from clinic.clinic_file import read_clinic
from clinic.schedule import VisitKind
from db.batches import Batches
from db.booking import Booked, BookingPolicy, BookingService
from db.clinic_sync import load_clinic
from db.engine import Database
from tests.support.clinics import Clock
from tests.test_booking import DEMO, PATIENT, SATURDAY
from tests.test_schedule import at


class Store:
    """A statement's stand-in: answers each item with the statement's number and its value
    as it left; out for one turn of the loop, or until `release` while `held`."""

    def __init__(self) -> None:
        self.value = 0
        self.sent: list[frozenset[Any]] = []
        self.held = False
        self.release = asyncio.Event()
        self.left = asyncio.Event()

    async def run(self, items: frozenset[Any]) -> Mapping[Any, Any]:
        self.sent.append(items)
        seen = (len(self.sent), self.value)
        self.left.set()
        await asyncio.sleep(0)  # on the wire: others ask meanwhile
        if self.held:
            await self.release.wait()
        if "broken" in items:
            raise ConnectionResetError("the store went away")
        return {item: (item, *seen) for item in items}


async def test_a_lone_asker_sends_its_own_statement_at_once_in_its_own_turn() -> None:
    batches, store = Batches(), Store()
    senders: list[asyncio.Task[Any] | None] = []

    async def run(items: frozenset[Any]) -> Mapping[Any, Any]:
        senders.append(asyncio.current_task())
        return await store.run(items)

    asker = asyncio.create_task(batches.get("kind", "a", run))
    assert await asker == ("a", 1, 0)
    assert senders == [asker]


async def test_askers_of_one_moment_go_in_two_statements_each_with_its_answer() -> None:
    batches, store = Batches(), Store()
    answers = await asyncio.gather(*(batches.get("kind", n % 7, store.run) for n in range(30)))
    assert store.sent == [frozenset({0}), frozenset(range(1, 7))]
    assert answers == [(n % 7, 1 if n % 7 == 0 else 2, 0) for n in range(30)]


async def test_a_question_on_its_way_takes_that_answer_and_another_goes_in_the_next(
        ) -> None:
    batches, store = Batches(), Store()
    store.held = True
    first = asyncio.create_task(batches.get("kind", "a", store.run))
    await store.left.wait()
    store.value = 1  # written after the first statement left, before the second asker
    second = [asyncio.create_task(batches.get("kind", item, store.run)) for item in "ab"]
    await asyncio.sleep(0)
    store.release.set()
    assert await first == ("a", 1, 0)
    assert [await s for s in second] == [("a", 1, 0), ("b", 2, 1)]
    assert store.sent == [frozenset("a"), frozenset("b")]


async def test_an_asker_that_does_not_join_sends_its_own_beside_the_one_out() -> None:
    batches, store = Batches(), Store()
    store.held = True
    first = asyncio.create_task(batches.get("kind", "a", store.run, joins=False))
    await store.left.wait()
    store.value = 1
    again = asyncio.create_task(batches.get("kind", "a", store.run, joins=False))
    other = asyncio.create_task(batches.get("kind", "b", store.run, joins=False))
    await asyncio.sleep(0)
    assert store.sent == [frozenset("a"), frozenset("a")]
    store.release.set()
    assert [await first, await again, await other] == [("a", 1, 0), ("a", 2, 1), ("b", 3, 1)]


async def test_kinds_do_not_wait_for_each_other() -> None:
    batches, store = Batches(), Store()
    store.held = True
    held = asyncio.create_task(batches.get("held", "a", store.run))
    await store.left.wait()
    other = Store()
    assert await batches.get("other", "b", other.run) == ("b", 1, 0)
    store.release.set()
    assert await held == ("a", 1, 0)


async def test_a_failed_statement_fails_each_of_its_askers_and_the_next_one_runs() -> None:
    batches, store = Batches(), Store()
    store.held = True
    first = asyncio.create_task(batches.get("kind", "broken", store.run))
    await store.left.wait()
    joined = [asyncio.create_task(batches.get("kind", item, store.run))
              for item in ("broken", "a", "b")]
    await asyncio.sleep(0)
    store.release.set()
    failed = await asyncio.gather(first, *joined, return_exceptions=True)
    assert [type(f) for f in failed[:2]] == [ConnectionResetError, ConnectionResetError]
    assert failed[2:] == [("a", 2, 0), ("b", 2, 0)]
    sent = await asyncio.gather(*(batches.get("kind", item, store.run)
                                  for item in ("c", "broken", "d")), return_exceptions=True)
    assert sent[0] == ("c", 3, 0)
    assert [type(f) for f in sent[1:]] == [ConnectionResetError, ConnectionResetError]
    assert await batches.get("kind", "e", store.run) == ("e", 5, 0)


async def test_an_asker_hanging_up_leaves_the_others_their_answer() -> None:
    batches, store = Batches(), Store()
    store.held = True
    gone = asyncio.create_task(batches.get("kind", "a", store.run))
    await store.left.wait()
    staying = asyncio.create_task(batches.get("kind", "a", store.run))
    joined_gone = asyncio.create_task(batches.get("kind", "b", store.run))
    later = asyncio.create_task(batches.get("kind", "b", store.run))
    await asyncio.sleep(0)
    gone.cancel()
    joined_gone.cancel()
    store.release.set()
    assert await staying == ("a", 2, 0)
    assert await later == ("b", 2, 0)
    assert gone.cancelled() and joined_gone.cancelled()


async def test_a_lone_asker_hanging_up_leaves_nothing_to_send() -> None:
    batches, store = Batches(), Store()
    store.held = True
    gone = asyncio.create_task(batches.get("kind", "a", store.run))
    await store.left.wait()
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    store.held = False
    assert await batches.get("kind", "b", store.run) == ("b", 2, 0)
    assert store.sent == [frozenset("a"), frozenset("b")]


async def test_an_item_the_statement_did_not_find_is_none() -> None:
    async def nothing(items: frozenset[Any]) -> Mapping[Any, Any]:
        return {}

    assert await Batches().get("kind", "a", nothing) is None


@pytest.fixture
def clock() -> Clock:
    return Clock(at(SATURDAY, "09:00"))


async def test_two_practices_callers_reading_at_once_each_see_their_own_bookings(
        database: Database, clock: Clock) -> None:
    demo = read_clinic(DEMO)
    await load_clinic(database, demo, clock=clock)
    await load_clinic(database, dataclasses.replace(
        demo, key="other", phone="+982122223333", numbers=("+982122223333",),
        doctors=tuple(dataclasses.replace(d, code=f"2{d.code[1:]}") for d in demo.doctors)),
        clock=clock)
    lines = {key: BookingService(database, BookingPolicy(), clock, practice=key)
             for key in ("nobat-demo", "other")}
    doctors = {key: {d.key: d.id for d in await line.doctors()} for key, line in lines.items()}
    booked = await lines["other"].book(PATIENT, doctors["other"]["dr-ahmadi"],
                                       at(SATURDAY, "16:20"), VisitKind.IN_PERSON)
    assert isinstance(booked, Booked)

    async def free(key: str, doctor: str) -> list[dt.datetime]:
        return [s.start for s in await lines[key].free_slots(doctors[key][doctor], SATURDAY)]

    asked = [(key, doctor) for key in lines for doctor in doctors[key]]
    at_once = await asyncio.gather(*(free(key, doctor) for key, doctor in asked))
    alone = [await free(key, doctor) for key, doctor in asked]
    assert at_once == alone
    seen = dict(zip(asked, at_once, strict=True))
    assert at(SATURDAY, "16:20") in seen["nobat-demo", "dr-ahmadi"]
    assert at(SATURDAY, "16:20") not in seen["other", "dr-ahmadi"]
    assert seen["other", "dr-ahmadi"][:2] == [at(SATURDAY, "16:00"), at(SATURDAY, "16:40")]
    # a doctor of another practice, asked through this one's line (or the keyless line of
    # the first practice loaded), is no doctor of it
    first = BookingService(database, BookingPolicy(), clock)
    assert await first.doctors() == await lines["nobat-demo"].doctors()
    for line in (lines["nobat-demo"], first):
        assert await line.free_slots(doctors["other"]["dr-ahmadi"], SATURDAY) == []
        assert [d.id for d in await line.doctors()] == list(doctors["nobat-demo"].values())
