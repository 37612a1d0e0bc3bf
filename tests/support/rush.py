"""The midnight rush: many callers in several processes racing for the same few slots."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time
from dataclasses import dataclass

from clinic.schedule import VisitKind
from db.booking import Booked, BookingService, Refused, SlotTaken
from db.engine import Database


@dataclass(frozen=True)
class Attempt:
    """One caller's try: what came back and how long it took."""

    outcome: str
    seconds: float


@dataclass(frozen=True)
class RushResult:
    """Every attempt, and the wall time from the starting gun to the last answer."""

    attempts: list[Attempt]
    wall_seconds: float


async def _one(service: BookingService, phone: str, doctor_id: int, start: dt.datetime
               ) -> Attempt:
    began = time.perf_counter()
    try:
        result = await service.book(phone, doctor_id, start, VisitKind.IN_PERSON)
    except Exception as exc:
        outcome = f"error: {type(exc).__name__}: {exc}"
    else:
        outcome = {Booked: "booked", SlotTaken: "taken", Refused: "refused"}[type(result)]
    return Attempt(outcome, time.perf_counter() - began)


async def _worker(job: dict[str, object]) -> list[Attempt]:
    database = Database.from_url(str(job["url"]), pool_size=int(job.get("pool", 10)))
    service = BookingService(database)
    await database.ping()
    await asyncio.sleep(max(0.0, float(job["go_at"]) - time.time()))
    try:
        return await asyncio.gather(*(
            _one(service, phone, int(job["doctor_id"]), dt.datetime.fromisoformat(start))
            for phone, start in job["calls"]))
    finally:
        await database.close()


async def rush(url: str, doctor_id: int, calls: list[tuple[str, dt.datetime]],
               processes: int) -> RushResult:
    """Split the calls over worker processes that all start booking at the same instant."""
    shares = [calls[n::processes] for n in range(processes)]
    go_at = time.time() + 1.5 + 0.3 * processes
    workers = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.rush", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
        for _ in shares]
    outputs = await asyncio.gather(*(
        worker.communicate(json.dumps({
            "url": url, "doctor_id": doctor_id, "go_at": go_at,
            "calls": [(phone, start.isoformat()) for phone, start in share]}).encode())
        for worker, share in zip(workers, shares, strict=True)))
    attempts: list[Attempt] = []
    finished = go_at
    for worker, (stdout, _) in zip(workers, outputs, strict=True):
        if worker.returncode != 0:
            raise RuntimeError(f"rush worker failed with exit code {worker.returncode}")
        report = json.loads(stdout)
        attempts.extend(Attempt(**a) for a in report["attempts"])
        finished = max(finished, report["finished"])
    return RushResult(attempts, finished - go_at)


if __name__ == "__main__":
    results = asyncio.run(_worker(json.loads(sys.stdin.read())))
    print(json.dumps({"attempts": [a.__dict__ for a in results], "finished": time.time()}))
